/**
 * The channel into a guest: SSH (dropbear in the guest, the ssh2 client here), with a key pair per
 * job that only the job's user can read, to a host key the guest announced on its virtio port at
 * boot (so no one else on the host can stand in for the guest). Commands run through vse-task,
 * which gives them the job user's identity, the environment and working directory asked for, and
 * passes signals to their whole process group.
 */
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { HostError } from '../util/errors.js';
import { type TaskRequest, signalCommand, taskInvocation } from './request.js';

export interface JobKey {
  /** OpenSSH private key file, owned by the job's user, mode 0600. */
  file: string;
  /** Base64 of the ssh-ed25519 public key blob (what the guest's authorized_keys holds). */
  publicBlob: string;
}

type Ssh2 = typeof import('ssh2');
let ssh2: Ssh2 | undefined;
async function load(): Promise<Ssh2> {
  ssh2 ??= (await import('ssh2')).default as unknown as Ssh2;
  return ssh2;
}

/** A fresh key pair for one job on one node, in `<jobdir>/ssh/`, readable by the job's user alone. */
export async function makeJobKey(jobDir: string, uid: number, gid: number): Promise<JobKey> {
  const { utils } = await load();
  const pair = utils.generateKeyPairSync('ed25519', { comment: 'vse-job' });
  const dir = join(jobDir, 'ssh');
  mkdirSync(dir, { mode: 0o700 });
  const file = join(dir, 'id_ed25519');
  writeFileSync(file, pair.private, { mode: 0o600 });
  writeFileSync(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 });
  if (process.getuid?.() === 0) {
    for (const p of [dir, file, `${file}.pub`]) chownSync(p, uid, gid);
  }
  chmodSync(dir, 0o700);
  const publicBlob = pair.public.split(' ')[1];
  if (!publicBlob) throw new HostError('ssh key generation gave no public key');
  return { file, publicBlob };
}

/**
 * A host key for one VM's SSH server, made here (dropbear's format) rather than in the guest: key
 * generation under TCG takes more than a second. The guest reads it from QEMU's firmware config
 * (root-only in the guest), so it never appears on a command line. Returns its public half.
 */
export async function makeHostKey(file: string, log?: import('../util/log.js').Logger): Promise<string> {
  const { run } = await import('../util/run.js');
  const env = { PATH: '/usr/bin:/bin', LC_ALL: 'C' };
  await run(['/usr/bin/dropbearkey', '-t', 'ed25519', '-f', file], { log, env });
  chmodSync(file, 0o600);
  const pub = (await run(['/usr/bin/dropbearkey', '-y', '-f', file], { log, env })).stdout.split('\n').find((l) => l.startsWith('ssh-ed25519 '));
  const [type, blob] = (pub ?? '').split(' ');
  if (!type || !blob) throw new HostError(`dropbearkey gave no public key for ${file}`);
  return `${type} ${blob}`;
}

export interface GuestTarget {
  name: string;
  port: number;
  /** `ssh-ed25519 BASE64`, as the guest announced it. */
  hostKey: string;
  keyFile: string;
}

export interface ExecIo {
  stdin?: Readable;
  stdout: Writable;
  stderr: Writable;
}

export interface ExecOutcome {
  /** Exit code, or null when the command ended by a signal. */
  code: number | null;
  /** Signal name without SIG (`TERM`), when it ended by one. */
  signal: string | null;
}

export interface RunningExec {
  /** Send a signal (name without SIG) to the command's process group in the guest. */
  signal(name: string): void;
  /** Drop the connection: the guest's vse-task stops the command (SIGTERM, SIGKILL after 2 s). */
  abort(): void;
  done: Promise<ExecOutcome>;
}

/** Run a request in the guest with streamed stdio; resolves once the command ended and its output was delivered. */
export async function guestExec(t: GuestTarget, request: Omit<TaskRequest, 'id'>, io: ExecIo, opts: { connectTimeoutMs?: number } = {}): Promise<RunningExec> {
  const { Client } = await load();
  const { randomBytes } = await import('node:crypto');
  const { constants } = await import('node:os');
  const req: TaskRequest = { ...request, id: randomBytes(8).toString('hex') };
  const invocation = taskInvocation(req);
  let privateKey: Buffer;
  try {
    privateKey = readFileSync(t.keyFile);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new HostError(`cannot read the job's key ${t.keyFile}: ${code === 'EACCES' ? 'permission denied (only the job\'s user and root can run commands in its VMs)' : code ?? String(err)}`);
  }
  const [type, blob] = t.hostKey.split(' ');
  if (type !== 'ssh-ed25519' || !blob) throw new HostError(`VM ${t.name} announced no usable host key`);
  const expected = Buffer.from(blob, 'base64');
  const conn = new Client();
  let stream: import('ssh2').ClientChannel | undefined;
  let pendingSignals: string[] = [];
  let ended = false;
  // a signal travels as a second command on the same connection (vse-task finds the first by its id)
  const sendSignal = (name: string): void => {
    const num = (constants.signals as Record<string, number>)[`SIG${name}`];
    if (num === undefined || ended) return;
    conn.exec(signalCommand(req.id, num), (err, ch) => {
      if (err) return;
      ch.resume();
      ch.stderr.resume();
      ch.end();
    });
  };
  const done = new Promise<ExecOutcome>((resolve, reject) => {
    let outcome: ExecOutcome | undefined;
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      conn.end();
      if (err) reject(err);
      else resolve(outcome ?? { code: null, signal: 'HUP' });
    };
    conn.on('error', (e) => finish(new HostError(`VM ${t.name}: ${e.message}`)));
    conn.on('close', () => finish(outcome ? undefined : new HostError(`VM ${t.name}: the connection closed before the command ended`)));
    conn.on('ready', () => {
      conn.exec(invocation.command, (err, ch) => {
        if (err) return finish(new HostError(`VM ${t.name}: ${err.message}`));
        stream = ch;
        for (const s of pendingSignals) sendSignal(s);
        pendingSignals = [];
        ch.on('exit', (code: number | null, sig?: string) => {
          // ssh2 names signals SIGxxx
          outcome = typeof code === 'number' ? { code, signal: null } : { code: null, signal: (sig ?? 'KILL').replace(/^SIG/, '') };
        });
        ch.on('close', () => {
          ended = true;
          finish();
        });
        ch.pipe(io.stdout, { end: false });
        ch.stderr.pipe(io.stderr, { end: false });
        if (invocation.stdinPrefix) ch.write(invocation.stdinPrefix);
        if (io.stdin) {
          io.stdin.on('data', (d: Buffer) => ch.write(d));
          io.stdin.on('end', () => ch.end());
          io.stdin.on('error', () => ch.end());
        } else {
          ch.end();
        }
      });
    });
  });
  // Nagle's algorithm holds each small handshake message until the guest acknowledges the one
  // before, and the guest acknowledges late (delayed ACK): 80 of a command's 145 ms under TCG
  conn.on('connect', () => conn.setNoDelay(true));
  conn.connect({
    host: '127.0.0.1', port: t.port, username: 'root', privateKey,
    hostVerifier: (key: Buffer) => key.equals(expected),
    readyTimeout: opts.connectTimeoutMs ?? 20_000,
    keepaliveInterval: 15_000, keepaliveCountMax: 4,
  });
  return {
    signal: (name) => {
      if (stream) sendSignal(name);
      else pendingSignals.push(name);
    },
    abort: () => conn.end(),
    done,
  };
}
