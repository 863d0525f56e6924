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

/** Resolves once the guest has announced itself; rejects with the console tail otherwise. */
export function waitReady(o: WaitReadyOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let buffer = '';
    let retry: NodeJS.Timeout | undefined;
    let sock: ReturnType<typeof connect> | undefined;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(watch);
      if (retry) clearTimeout(retry);
      sock?.destroy();
      if (err) reject(err);
      else resolve();
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
        if (buffer.includes(`VSE-READY ${o.name}`)) finish();
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
