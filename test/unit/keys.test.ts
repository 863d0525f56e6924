/** The SSH keys vse writes itself (no ssh-keygen, no dropbearkey at deploy): read back by the tools that use them. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DROPBEAR } from '../../lib/configure/guest-files.js';
import { freePort } from '../../lib/deploy/deploy.js';
import { makeHostKey, makeJobKey } from '../../lib/guest/ssh.js';

const { Client, utils } = createRequire(import.meta.url)('ssh2') as typeof import('ssh2');
const dir = mkdtempSync('/tmp/vse-keys-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the job key (OpenSSH format, read by the ssh2 client)', () => {
  it('is a private key of the job\'s user alone whose public half is the one the guest trusts', async () => {
    const job = join(dir, 'job');
    spawnSync('mkdir', [job]);
    const k = await makeJobKey(job, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
    expect(statSync(k.file).mode & 0o777).toBe(0o600);
    expect(statSync(join(job, 'ssh')).mode & 0o777).toBe(0o700);
    const parsed = utils.parseKey(readFileSync(k.file));
    if (parsed instanceof Error) throw parsed;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    expect(key?.type).toBe('ssh-ed25519');
    expect(key?.comment).toBe('vse-job');
    expect(key?.getPublicSSH().toString('base64')).toBe(k.publicBlob);
    // the private half signs what the public half verifies
    const data = Buffer.from('vse');
    expect(key?.verify(data, key.sign(data))).toBe(true);
    expect(readFileSync(`${k.file}.pub`, 'utf8')).toBe(`ssh-ed25519 ${k.publicBlob} vse-job\n`);
  });
  it('differs from job to job', async () => {
    const [a, b] = [join(dir, 'a'), join(dir, 'b')];
    spawnSync('mkdir', [a, b]);
    const ka = await makeJobKey(a, 0, 0);
    const kb = await makeJobKey(b, 0, 0);
    expect(ka.publicBlob).not.toBe(kb.publicBlob);
  });
});

describe('a VM\'s host key (dropbear\'s format, read by the guest\'s SSH server)', () => {
  it('is private, and dropbear derives from it the public key vse verifies connections with', async () => {
    const file = join(dir, 'vm0.hostkey');
    const pub = await makeHostKey(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(pub).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=*$/);
    const r = spawnSync('/usr/bin/dropbearkey', ['-y', '-f', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('ssh-ed25519 '));
    expect(line?.split(' ').slice(0, 2).join(' ')).toBe(pub);
  });
  it('is what the minimal guest\'s own dropbear serves: a client sees exactly that key', async () => {
    const file = join(dir, 'vm1.hostkey');
    const pub = await makeHostKey(file);
    const port = await freePort();
    const server = spawn(DROPBEAR, ['-F', '-E', '-s', '-m', '-p', `127.0.0.1:${port}`, '-P', join(dir, 'dropbear.pid'), '-r', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    server.stderr.on('data', (d: Buffer) => (log += d.toString()));
    try {
      const seen = await new Promise<string>((resolve, reject) => {
        let tries = 0;
        const attempt = (): void => {
          const c = new Client();
          c.on('error', (err: Error & { level?: string }) => {
            c.end();
            if (err.level === 'client-socket' && ++tries < 100) setTimeout(attempt, 20); // not listening yet
            else reject(new Error(`${err.message}\n${log}`));
          });
          // the handshake is the point: the key is seen before any login is tried
          c.connect({ host: '127.0.0.1', port, username: 'vse-test', hostVerifier: (key: Buffer) => {
            resolve(`ssh-ed25519 ${key.toString('base64')}`);
            c.end();
            return false;
          } });
        };
        attempt();
      });
      expect(seen).toBe(pub);
    } finally {
      server.kill('SIGKILL');
    }
  });
});
