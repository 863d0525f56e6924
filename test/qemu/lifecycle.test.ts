/**
 * The node's side of a job with real QEMU: the prolog boots the VMs and they outlive it, the epilog
 * leaves nothing behind, also after a killed prolog, without a prolog, and when run twice.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { isAlive } from '../../lib/deploy/proc.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { bin, hello, qemuMentioning, root, runHook, sidOf, slurmEnv, testSite, vseStatus } from './env.js';

const site = testSite();
const jobDir = (job: string, node: string): string => join(site.stateDir, 'jobs', `${job}.${node}`);

function expectClean(job: string, node: string): void {
  expect(existsSync(jobDir(job, node))).toBe(false);
  expect(qemuMentioning(`${jobDir(job, node)}/`)).toEqual([]);
}

beforeAll(async () => {
  // build (or reuse) the guest once, so each test measures deploy, not the guest build
  await execa(bin('vse'), ['create', join(root, 'examples', 'hello.xml')], { env: { VSE_SITE_CONFIG: site.file } });
});

describe('vse run (no scheduler)', () => {
  it('boots the VMs hello.xml asks for, shows them running, and removes them', async () => {
    const r = await execa(bin('vse'), ['run', join(root, 'examples', 'hello.xml')], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const rows = String(r.stdout).split('\n').filter((l) => / running /.test(l));
    expect(rows).toHaveLength(2); // perNode="2"
    expect(String(r.stdout)).toMatch(/^JOB\s+NODE\s+VM\s+STATE\s+PID\s+BOOT/);
    const job = rows[0]?.split(/\s+/)[0] ?? '';
    expect(String(r.stderr)).toContain('stopped 2 VM(s)');
    expect(readdirSync(join(site.stateDir, 'jobs')).filter((d) => d.startsWith(`${job}.`))).toEqual([]);
    expect(qemuMentioning(`/jobs/${job}.`)).toEqual([]);
  });
});

describe('prolog and epilog', () => {
  it('the prolog boots the job\'s VMs, which outlive it, run unprivileged and detached; the epilog removes them', async () => {
    const job = '7001';
    const p = await runHook('prolog', site.file, slurmEnv(job, 'q1', hello(2)));
    expect(p.exitCode, p.stderr).toBe(0);
    const vms = await vseStatus(site.file, ['--job', job]);
    expect(vms.map((v) => [v.vm, v.node, v.state])).toEqual([[`${job}-q1-0`, 'q1', 'running'], [`${job}-q1-1`, 'q1', 'running']]);
    for (const v of vms) {
      const status = readFileSync(`/proc/${v.pid}/status`, 'utf8');
      const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
      expect(uid).toBe(String((await execa('id', ['-u', 'nobody'])).stdout).trim());
      // detached by setsid: slurmd's kill of the prolog's process group cannot reach it
      expect(sidOf(v.pid)).not.toBe(sidOf(process.pid));
      expect(sidOf(v.pid)).toBeGreaterThan(1);
      expect(readFileSync(v.console, 'utf8')).toContain(`vse-guest: ready ${v.vm}`);
    }
    const state = JSON.parse(readFileSync(join(jobDir(job, 'q1'), 'state.json'), 'utf8')) as { accel: string; accelReason: string };
    expect(['kvm', 'tcg']).toContain(state.accel);
    expect(state.accelReason).not.toBe('');

    const e = await runHook('epilog', site.file, { ...slurmEnv(job, 'q1'), SLURM_SCRIPT_CONTEXT: 'epilog_slurmd' });
    expect(e.exitCode, e.stderr).toBe(0);
    expect(e.stderr).toContain('clean: stopped 2 VM(s)');
    expectClean(job, 'q1');
    for (const v of vms) expect(isAlive(v.pid)).toBe(false);

    const again = await runHook('epilog', site.file, slurmEnv(job, 'q1'));
    expect(again.exitCode, again.stderr).toBe(0);
    expectClean(job, 'q1');
  });

  it('two nodes on one host keep their VMs apart, and one node\'s epilog leaves the other\'s alone', async () => {
    const job = '7002';
    const [a, b] = await Promise.all([runHook('prolog', site.file, slurmEnv(job, 'q1', hello(1))), runHook('prolog', site.file, slurmEnv(job, 'q2', hello(1)))]);
    expect(a.exitCode, a.stderr).toBe(0);
    expect(b.exitCode, b.stderr).toBe(0);
    expect((await vseStatus(site.file, ['--job', job])).map((v) => [v.node, v.state])).toEqual([['q1', 'running'], ['q2', 'running']]);
    expect((await runHook('epilog', site.file, slurmEnv(job, 'q1'))).exitCode).toBe(0);
    expectClean(job, 'q1');
    expect((await vseStatus(site.file, ['--job', job])).map((v) => [v.node, v.state])).toEqual([['q2', 'running']]);
    expect((await runHook('epilog', site.file, slurmEnv(job, 'q2'))).exitCode).toBe(0);
    expectClean(job, 'q2');
  });

  it('a prolog killed half-way (as slurmd kills on timeout) is cleaned up by the epilog', async () => {
    const job = '7003';
    const child = execa(bin('prolog'), [], { env: { VSE_SITE_CONFIG: site.file, ...slurmEnv(job, 'q1', hello(2)) }, extendEnv: false, reject: false, detached: true });
    // kill once QEMU is up but before the guests are ready
    const deadline = Date.now() + 60_000;
    while (qemuMentioning(`${jobDir(job, 'q1')}/`).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(qemuMentioning(`${jobDir(job, 'q1')}/`).length).toBeGreaterThan(0);
    process.kill(-(child.pid as number), 'SIGKILL'); // the whole process group, like slurmd
    const killed = await child;
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(jobDir(job, 'q1'))).toBe(true); // something was left to clean

    const e = await runHook('epilog', site.file, slurmEnv(job, 'q1'));
    expect(e.exitCode, e.stderr).toBe(0);
    expectClean(job, 'q1');
  });

  it('the epilog of a job whose prolog never ran, or that had no --vse, exits 0 and touches nothing', async () => {
    const other = await runHook('prolog', site.file, slurmEnv('7004', 'q1', hello(1)));
    expect(other.exitCode).toBe(0);
    const e = await runHook('epilog', site.file, slurmEnv('7005', 'q1'));
    expect(e.exitCode, e.stderr).toBe(0);
    expect((await vseStatus(site.file, ['--job', '7004'])).map((v) => v.state)).toEqual(['running']);
    const noVse = await runHook('prolog', site.file, slurmEnv('7006', 'q1'));
    expect(noVse.exitCode).toBe(0);
    expect(existsSync(jobDir('7006', 'q1'))).toBe(false);
    expect((await runHook('epilog', site.file, slurmEnv('7004', 'q1'))).exitCode).toBe(0);
    expectClean('7004', 'q1');
  });

  it('a description over this node\'s limits is the user\'s mistake: logged, no VM, the node is not drained (exit 0)', async () => {
    const p = await runHook('prolog', site.file, slurmEnv('7007', 'q1', hello(500)));
    expect(p.exitCode).toBe(0);
    expect(p.stderr).toContain('/home/u/hello.xml:2:21: /vse/vm/@perNode: VMs per node 500 exceeds the site limit; expected at most 16');
    expect(readFileSync(join(site.logDir, 'prolog.log'), 'utf8')).toContain('job=7007 node=q1: error:');
    // no VM, but a record that says why, so that the job's tasks fail saying it; the epilog removes it
    expect(qemuMentioning(`${jobDir('7007', 'q1')}/`)).toEqual([]);
    expect(JSON.parse(readFileSync(join(jobDir('7007', 'q1'), 'state.json'), 'utf8'))).toMatchObject({
      state: 'failed', vms: [], error: expect.stringContaining('VMs per node 500 exceeds the site limit'),
    });
    expect((await runHook('epilog', site.file, slurmEnv('7007', 'q1'))).exitCode).toBe(0);
    expectClean('7007', 'q1');
  });
});

describe('a guest that never becomes ready', () => {
  it('fails after the boot timeout with the console tail, and leaves nothing behind', async () => {
    const slow = testSite({ bootTimeoutSec: 0.5 });
    const p = await runHook('prolog', slow.file, slurmEnv('7008', 'q1', hello(1)));
    expect(p.exitCode).toBe(1); // the host could not boot the guest: that is the node's problem
    expect(p.stderr).toMatch(/VM 7008-q1-0 did not become ready: no ready signal within 0.5 s\n--- console \(.*vm0\.console\.log\) ---/);
    expect(existsSync(join(slow.stateDir, 'jobs', '7008.q1'))).toBe(false);
    expect(qemuMentioning('/jobs/7008.q1/')).toEqual([]);
  });
});

describe('vse doctor', () => {
  it('reports the accelerator found by trying, the same one deployments record, and the tools deploy needs', async () => {
    const r = await execa(bin('vse'), ['doctor', '--json'], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const checks = JSON.parse(String(r.stdout)) as { name: string; status: string; detail: string }[];
    const accel = checks.find((c) => c.name === 'accelerator');
    expect(accel?.detail).toMatch(/^(kvm|tcg): ./);
    const state = JSON.parse(readFileSync(join(site.stateDir, 'accel.json'), 'utf8')) as Record<string, unknown>;
    expect(JSON.stringify(state)).toContain(accel!.detail.split(':')[0]!);
    for (const name of ['qemu', 'qemu-img', 'vse-task', 'dropbear', 'ip']) expect(checks.find((c) => c.name === name)?.status).toBe('ok');
  });
});
