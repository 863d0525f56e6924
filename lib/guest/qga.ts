/**
 * A client for QEMU's guest agent (qemu-guest-agent in the Debian guest, on a virtio-serial port):
 * run a command inside the guest and collect its exit code and output, shut the guest down.
 */
import { connect, type Socket } from 'node:net';
import { HostError } from '../util/errors.js';

export interface GuestExecResult {
  exitCode: number | null;
  signal: number | null;
  stdout: string;
  stderr: string;
  truncated: boolean;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** One connection to a guest agent socket. Requests are answered in order. */
export class GuestAgent {
  private buf = Buffer.alloc(0);
  /** While set, replies are skipped until the one that returns this sync id (the flush byte draws an error reply). */
  private syncId: number | undefined;
  private readonly queue: Pending[] = [];

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (let i = this.buf.indexOf(0x0a); i >= 0; i = this.buf.indexOf(0x0a)) {
        const raw = this.buf.subarray(0, i);
        this.buf = this.buf.subarray(i + 1);
        // the agent puts a 0xFF byte before its answer to a delimited sync
        const line = Buffer.from(raw.filter((b) => b !== 0xff)).toString('utf8').trim();
        if (!line) continue;
        let msg: { return?: unknown; error?: { desc?: string } };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          continue; // noise before a sync
        }
        if (this.syncId !== undefined) {
          if (msg.return !== this.syncId) continue;
          this.syncId = undefined;
        }
        const p = this.queue.shift();
        if (!p) continue;
        if (msg.error) p.reject(new HostError(`guest agent: ${msg.error.desc ?? 'error'}`));
        else p.resolve(msg.return);
      }
    });
    const fail = (e: Error): void => {
      for (const p of this.queue.splice(0)) p.reject(e);
    };
    sock.on('error', (e) => fail(new HostError(`guest agent: ${e.message}`)));
    sock.on('close', () => fail(new HostError('guest agent: connection closed')));
  }

  /** Connect, and synchronise (the agent may hold a half-read request from an earlier client). */
  static async open(path: string, timeoutMs = 30_000): Promise<GuestAgent> {
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const agent = new GuestAgent(sock);
    const id = Math.floor(Math.random() * 2 ** 31);
    agent.syncId = id;
    sock.write(Buffer.from([0xff])); // flushes whatever a previous client left half-written
    const got = await agent.request('guest-sync-delimited', { id }, timeoutMs);
    if (got !== id) throw new HostError(`guest agent: sync answered ${String(got)}, expected ${id}`);
    return agent;
  }

  /** Send one command; resolves with its `return`. */
  request(execute: string, args?: object, timeoutMs = 30_000): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new HostError(`guest agent: no answer to ${execute} in ${timeoutMs / 1000} s`)), timeoutMs);
      this.queue.push({ resolve: (v) => (clearTimeout(timer), resolve(v)), reject: (e) => (clearTimeout(timer), reject(e)) });
      this.sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    });
  }

  /** Run argv in the guest (no shell unless argv asks for one); waits for it to end. */
  async exec(argv: string[], opts: { env?: string[]; timeoutMs?: number } = {}): Promise<GuestExecResult> {
    const [path, ...arg] = argv;
    const started = await this.request('guest-exec', { path, arg, env: opts.env, 'capture-output': true }) as { pid: number };
    const deadline = Date.now() + (opts.timeoutMs ?? 3_600_000);
    for (;;) {
      const st = await this.request('guest-exec-status', { pid: started.pid }) as {
        exited: boolean; exitcode?: number; signal?: number; 'out-data'?: string; 'err-data'?: string; 'out-truncated'?: boolean; 'err-truncated'?: boolean;
      };
      if (st.exited) {
        return {
          exitCode: st.exitcode ?? null, signal: st.signal ?? null,
          stdout: Buffer.from(st['out-data'] ?? '', 'base64').toString(), stderr: Buffer.from(st['err-data'] ?? '', 'base64').toString(),
          truncated: Boolean(st['out-truncated'] || st['err-truncated']),
        };
      }
      if (Date.now() > deadline) throw new HostError(`guest command ${argv.join(' ')} did not end in time`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Ask the guest to power off (no answer comes: the agent goes away; wait for QEMU to end before close()). */
  shutdown(): void {
    this.sock.write(`${JSON.stringify({ execute: 'guest-shutdown', arguments: { mode: 'powerdown' } })}\n`);
  }

  close(): void {
    this.sock.destroy();
  }
}
