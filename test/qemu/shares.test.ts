/**
 * Host directories in the guest (virtio-fs), with real QEMU: what the site allows is there at the
 * requested path, read-only or read-write as asked, with the job user's rights on the host (a file
 * only root may read stays unreadable, even to root in the guest); what the site does not allow is
 * refused before a VM starts; cleanup leaves no virtiofsd behind.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bin, endJob, installedVse, jobUser, root, runHook, slurmEnv, testSite } from './env.js';

const data = mkdtempSync('/tmp/vse-share-');
const site = testSite({ allowedHostPaths: [{ path: data, modes: ['ro', 'rw'] }] });
chmodSync(dirname(site.file), 0o755);
const job = '7201';
const node = 's1';
let user: { user: string; uid: number; gid: number };

const xml = (mounts: string): string => `<vse name="shares" extends="minimal">\n  <resources>\n${mounts}\n  </resources>\n</vse>\n`;
const bundle = (text: string): object => ({ v: 1, file: '/home/u/shares.xml', layers: [{ path: '/home/u/shares.xml', text }] });

async function virtiofsds(): Promise<string[]> {
  const r = await execa('ps', ['-eo', 'pid,stat,args'], { reject: false });
  return String(r.stdout).split('\n').filter((l) => l.includes('/usr/lib/qemu/virtiofsd') && l.includes(`source=${data}`) && !/\sZ/.test(l));
}

function vexec(args: string[]) {
  return execa(installedVse(), ['exec', '--job', job, ...args], {
    env: { VSE_SITE_CONFIG: site.file, PATH: '/usr/bin:/bin' }, extendEnv: false, reject: false, uid: user.uid, gid: user.gid, stdin: 'ignore',
  });
}

beforeAll(async () => {
  user = await jobUser();
  chmodSync(data, 0o755);
  mkdirSync(join(data, 'ro'));
  mkdirSync(join(data, 'rw'));
  writeFileSync(join(data, 'ro', 'input.txt'), 'shared input\n');
  writeFileSync(join(data, 'ro', 'root-only.txt'), 'secret\n', { mode: 0o600 });
  for (const p of [join(data, 'ro'), join(data, 'ro', 'input.txt'), join(data, 'rw')]) chownSync(p, user.uid, user.gid);
  await execa(bin('vse'), ['create', join(root, 'examples', 'hello.xml')], { env: { VSE_SITE_CONFIG: site.file } });
  const text = xml(`    <mount guest="/input" host="${data}/ro" mode="ro"/>\n    <mount guest="/output" host="${data}/rw" mode="rw"/>`);
  const p = await runHook('prolog', site.file, { ...slurmEnv(job, node, bundle(text)), SLURM_JOB_UID: String(user.uid), SLURM_JOB_GID: String(user.gid), SLURM_JOB_USER: user.user });
  expect(p.exitCode, p.stderr).toBe(0);
}, 180_000);

afterAll(async () => {
  try {
    await endJob(site.file, job, node);
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
});

describe('host directories in the guest', () => {
  it('are mounted at the requested paths, read-only and read-write as asked', async () => {
    const r = await vexec(['--', 'sh', '-c', 'cat /input/input.txt; grep -E " /(input|output) " /proc/mounts | cut -d" " -f2,3,4 | cut -d, -f1']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('shared input\n/input virtiofs ro\n/output virtiofs rw');
  });

  it('a read-only share cannot be written, not even by root in the guest', async () => {
    const r = await vexec(['--root', '--', 'sh', '-c', 'echo x > /input/new']);
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toContain('Read-only file system');
  });

  it('what the job writes lands on the host as the job\'s user', async () => {
    const r = await vexec(['--', 'sh', '-c', 'echo result > /output/result.txt']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const st = statSync(join(data, 'rw', 'result.txt'));
    expect([st.uid, st.gid]).toEqual([user.uid, user.gid]);
  });

  it('the host sees the files with the job user\'s rights: root in the guest cannot read a root-only file', async () => {
    const r = await vexec(['--root', '--', 'cat', '/input/root-only.txt']);
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toContain('Permission denied');
    expect((await virtiofsds()).length).toBe(4); // per share and VM: virtiofsd and its sandboxed child
    for (const line of await virtiofsds()) {
      const pid = line.trim().split(/\s+/)[0] as string;
      expect(String((await execa('ps', ['-o', 'uid=', '-p', pid])).stdout).trim()).toBe(String(user.uid));
    }
  });

  it('the epilog leaves no virtiofsd behind', async () => {
    const other = '7202';
    const p = await runHook('prolog', site.file, { ...slurmEnv(other, node, bundle(xml(`    <mount guest="/x" host="${data}/ro"/>`))), SLURM_JOB_UID: String(user.uid), SLURM_JOB_GID: String(user.gid), SLURM_JOB_USER: user.user });
    expect(p.exitCode, p.stderr).toBe(0);
    expect((await virtiofsds()).length).toBe(6);
    expect((await runHook('epilog', site.file, slurmEnv(other, node))).exitCode).toBe(0);
    expect((await virtiofsds()).length).toBe(4);
  });
});

describe('a host path the site does not allow', () => {
  it('is refused before any VM starts, with the reason', async () => {
    const file = join(dirname(site.file), 'bad.xml');
    writeFileSync(file, xml('    <mount guest="/etc-host" host="/etc"/>'));
    const r = await execa(bin('vse'), ['run', file, '--', 'true'], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(r.exitCode, String(r.stderr)).toBe(2);
    expect(String(r.stderr)).toContain('/vse/resources/mount[/etc-host]/@host: host path /etc is outside the host paths the site allows');
    expect(String(r.stderr)).not.toContain('starting');
  });
});
