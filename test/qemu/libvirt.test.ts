/**
 * The libvirt driver with the real system daemon and real QEMU: a job whose description asks for
 * hypervisor="libvirt" boots its VMs as transient domains through the prolog; vse exec reaches
 * them as it reaches QEMU's own; QEMU runs as the job's user; the epilog, from the job's names
 * alone, leaves no domain, process, file, bridge or tap behind, also when run twice, and another
 * node's epilog of the same job leaves them alone.
 */
import { chmodSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { networkNames } from '../../lib/deploy/net.js';
import { isAlive } from '../../lib/deploy/proc.js';
import { bin, endJob, hello, installedVse, jobUser, prologAs, qemuMentioning, runHook, slurmEnv, testSite, vseLinks, vseStatus } from './env.js';
import { ensureLibvirtd, virsh } from './libvirtd.js';

const site = testSite();
chmodSync(dirname(site.file), 0o755); // the job's user reads the site config and its job's record
const job = '7201';
const node = 'l1';
const dir = join(site.stateDir, 'jobs', `${job}.${node}`);
const names = [0, 1].map((i) => `${job}-${node}-${i}`);
let user: { user: string; uid: number; gid: number };
let pids: number[] = [];

async function status(): Promise<{ vm: string; state: string; pid: number; driver: string; handle: string }[]> {
  return await vseStatus(site.file, ['--job', job]) as never;
}

const domains = async (): Promise<string[]> => String((await virsh(['list', '--all', '--name'])).stdout).split('\n').map((l) => l.trim()).filter((n) => n.startsWith(`vse-${job}-`)).sort();

function vexec(args: string[]) {
  return execa(installedVse(), ['exec', '--job', job, ...args], {
    env: { VSE_SITE_CONFIG: site.file, PATH: '/usr/bin:/bin' }, extendEnv: false, reject: false, uid: user.uid, gid: user.gid, stdin: 'ignore',
  });
}

beforeAll(async () => {
  await ensureLibvirtd();
  user = await jobUser();
  await prologAs(site.file, job, node, hello(2, 'libvirt'), user);
}, 300_000);

afterAll(async () => {
  await endJob(site.file, job, node);
});

describe('a job with hypervisor="libvirt"', () => {
  it('boots its VMs as transient libvirt domains, and the record and vse status say so', async () => {
    expect(await domains()).toEqual(names.map((n) => `vse-${n}`));
    // transient: libvirt keeps no definition of them
    expect(String((await virsh(['list', '--persistent', '--name'])).stdout)).not.toContain(`vse-${job}-`);
    expect((JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { driver: string }).driver).toBe('libvirt');
    expect((await status()).map((v) => [v.vm, v.state, v.driver, v.handle])).toEqual(names.map((n) => [n, 'running', 'libvirt', `libvirt:vse-${n}`]));
    const table = await execa(bin('vse'), ['status', '--job', job], { env: { VSE_SITE_CONFIG: site.file } });
    expect(String(table.stdout)).toMatch(/\bDRIVER\b/);
    expect(String(table.stdout)).toContain(`libvirt:vse-${names[0]}`);
  });

  it('vse exec runs commands in them as the job\'s user: the host name is the VM\'s, the exit code comes back', async () => {
    const r = await vexec(['--', 'sh', '-c', 'echo "$(hostname) $(id -u)"; exit 3']);
    expect(r.exitCode, String(r.stderr)).toBe(3);
    expect(String(r.stdout)).toBe(`${names[0]} ${user.uid}`);
  });

  it('the VMs reach each other on the job\'s private network', async () => {
    const r = await vexec(['--all', '--root', '--', 'sh', '-c', `ping -c1 -W5 ${names[0]} >/dev/null && ping -c1 -W5 ${names[1]} >/dev/null && echo ok`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout).split('\n').sort()).toEqual(names.map((n) => `${n}: ok`));
  });

  it('QEMU runs as the job\'s user and group, not root', async () => {
    pids = (await status()).map((v) => v.pid);
    expect(pids).toHaveLength(2);
    for (const pid of pids) {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(`guest=vse-${job}-${node}-`);
      expect(/^Uid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/)).toEqual(Array(4).fill(String(user.uid)));
      expect(/^Gid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/)).toEqual(Array(4).fill(String(user.gid)));
    }
  });

  it('the epilog destroys the domains from the job\'s names alone and removes everything else, leaves another node\'s alone, and can run again', async () => {
    // the same job's epilog on another node touches none of these domains
    const other = await runHook('epilog', site.file, slurmEnv(job, 'l2'));
    expect(other.exitCode, other.stderr).toBe(0);
    expect(await domains()).toHaveLength(2);

    // as after a prolog killed before it wrote its record: the domains are found by name and by their files in the job directory
    rmSync(join(dir, 'state.json'));
    const e = await runHook('epilog', site.file, { ...slurmEnv(job, node), SLURM_SCRIPT_CONTEXT: 'epilog_slurmd' });
    expect(e.exitCode, e.stderr).toBe(0);
    expect(e.stderr).toContain('clean: stopped 2 VM(s)');
    expect(e.stderr).toContain(`destroyed libvirt domain vse-${names[0]}`);
    expect(await domains()).toEqual([]);
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    expect(qemuMentioning(`${dir}/`)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    const { bridge, taps } = networkNames(dir, 2);
    const links = await vseLinks();
    for (const l of [bridge, ...taps]) expect(links).not.toContain(l);

    const again = await runHook('epilog', site.file, slurmEnv(job, node));
    expect(again.exitCode, again.stderr).toBe(0);
    const c = await execa(bin('vse'), ['cleanup', '--job', job, '--node', node], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(c.exitCode, String(c.stderr)).toBe(0);
    expect(await domains()).toEqual([]);
  });
});
