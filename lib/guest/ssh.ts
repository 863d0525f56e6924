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

/** An SSH string: a 32-bit big-endian length, then the bytes. */
function sshString(b: Buffer | string): Buffer {
  const bytes = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

/** A fresh ed25519 key: the 32-byte seed, the 32-byte public key, and the public key's SSH blob. */
async function ed25519(): Promise<{ seed: Buffer; pub: Buffer; blob: Buffer }> {
  const { generateKeyPairSync } = await import('node:crypto');
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = Buffer.from(privateKey.export({ format: 'jwk' }).d ?? '', 'base64url');
  const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
  if (seed.length !== 32 || pub.length !== 32) throw new HostError('ed25519 key generation gave a key of the wrong size');
  return { seed, pub, blob: Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]) };
}

/** An unencrypted private key in OpenSSH's format (PROTOCOL.key: "openssh-key-v1"), as `ssh-keygen` writes it. */
export function openSshPrivateKey(k: { seed: Buffer; pub: Buffer; blob: Buffer }, comment: string, check: number): string {
  const checkBytes = Buffer.alloc(8);
  checkBytes.writeUInt32BE(check >>> 0, 0);
  checkBytes.writeUInt32BE(check >>> 0, 4);
  let priv = Buffer.concat([checkBytes, sshString('ssh-ed25519'), sshString(k.pub), sshString(Buffer.concat([k.seed, k.pub])), sshString(comment)]);
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const one = Buffer.alloc(4);
  one.writeUInt32BE(1);
  const body = Buffer.concat([Buffer.from('openssh-key-v1\0'), sshString('none'), sshString('none'), sshString(''), one, sshString(k.blob), sshString(priv)]);
  const b64 = body.toString('base64').replace(/.{70}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

/** A fresh key pair for one job on one node, in `<jobdir>/ssh/`, readable by the job's user alone. */
export async function makeJobKey(jobDir: string, uid: number, gid: number): Promise<JobKey> {
  const { randomBytes } = await import('node:crypto');
  const k = await ed25519();
  const dir = join(jobDir, 'ssh');
  mkdirSync(dir, { mode: 0o700 });
  const file = join(dir, 'id_ed25519');
  const publicBlob = k.blob.toString('base64');
  writeFileSync(file, openSshPrivateKey(k, 'vse-job', randomBytes(4).readUInt32BE()), { mode: 0o600 });
  writeFileSync(`${file}.pub`, `ssh-ed25519 ${publicBlob} vse-job\n`, { mode: 0o644 });
  if (process.getuid?.() === 0) {
    for (const p of [dir, file, `${file}.pub`]) chownSync(p, uid, gid);
  }
  chmodSync(dir, 0o700);
  return { file, publicBlob };
}

/**
 * A host key for one VM's SSH server, made here rather than in the guest (key generation under TCG
 * takes more than a second), in dropbear's own format: string "ssh-ed25519", then a string of the
 * 32-byte seed followed by the 32-byte public key. The guest reads it from QEMU's firmware config
 * (root-only in the guest), so it never appears on a command line. Returns `ssh-ed25519 BASE64`.
 */
export async function makeHostKey(file: string): Promise<string> {
  const k = await ed25519();
  writeFileSync(file, Buffer.concat([sshString('ssh-ed25519'), sshString(Buffer.concat([k.seed, k.pub]))]), { mode: 0o600 });
  chmodSync(file, 0o600);
  return `ssh-ed25519 ${k.blob.toString('base64')}`;
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
