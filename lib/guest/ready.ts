/** Readiness: the guest itself says `VSE-READY <name>` on its vse virtio-serial port. */
import { connect } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { HostError } from '../util/errors.js';
import { tail } from '../util/run.js';

export interface WaitReadyOptions {
  channelSocket: string;
  consoleLog: string;
  timeoutMs: number;
  /** Called while waiting; return a reason to stop (e.g. the QEMU process died). */
  check: () => string | undefined;
  name: string;
}

function consoleTail(file: string): string {
  try {
    return existsSync(file) ? tail(readFileSync(file, 'utf8'), 15) : '(no console output)';
  } catch {
    return '(console log unreadable)';
  }
}

export interface ReadyLine {
  /** `ssh-ed25519 BASE64` of the guest's SSH server, when it runs one. */
  hostKey?: string;
}

/** Parse what the guest said: `VSE-READY NAME [KEYTYPE KEY]` or `VSE-FAILED NAME WHY`. */
export function parseReady(buffer: string, name: string): ReadyLine | { failed: string } | undefined {
  for (const line of buffer.split('\n')) {
    const words = line.trim().split(' ');
    if (words[1] !== name) continue;
    if (words[0] === 'VSE-FAILED') return { failed: words.slice(2).join(' ') || 'the guest gave no reason' };
    if (words[0] === 'VSE-READY' && buffer.includes(`${line}\n`)) {
      return words[2] && words[3] ? { hostKey: `${words[2]} ${words[3]}` } : {};
    }
  }
  return undefined;
}

/** Resolves once the guest has announced itself; rejects with the console tail otherwise. */
export function waitReady(o: WaitReadyOptions): Promise<ReadyLine> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let buffer = '';
    let retry: NodeJS.Timeout | undefined;
    let sock: ReturnType<typeof connect> | undefined;
    let got: ReadyLine = {};
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(watch);
      if (retry) clearTimeout(retry);
      sock?.destroy();
      if (err) reject(err);
      else resolve(got);
    };
    const fail = (why: string): void => {
      finish(new HostError(`VM ${o.name} did not become ready: ${why}\n--- console (${o.consoleLog}) ---\n${consoleTail(o.consoleLog)}`));
    };
    const timer = setTimeout(() => fail(`no ready signal within ${o.timeoutMs / 1000} s`), o.timeoutMs);
    const watch = setInterval(() => {
      const why = o.check();
      if (why) fail(why);
    }, 100);
    const attempt = (): void => {
      if (settled) return;
      const s = connect(o.channelSocket);
      sock = s;
      s.on('data', (d: Buffer) => {
        buffer += d.toString('utf8');
        const r = parseReady(buffer, o.name);
        if (r && 'failed' in r) fail(`the guest reports: ${r.failed}`);
        else if (r) {
          got = r;
          finish();
        }
        if (buffer.length > 65536) buffer = buffer.slice(-1024);
      });
      s.on('error', () => s.destroy()); // 'close' follows and retries
      s.on('close', () => {
        if (!settled) retry = setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}
