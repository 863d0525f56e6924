/**
 * Faults with real QEMU: a deployer killed with SIGKILL at several points of a deploy (the epilog
 * then leaves nothing: no process, file, tap or bridge); a QEMU that crashes while the job runs
 * (status says so, vse exec says so, the epilog still ends clean); two jobs deploying on one node
 * at once; a `vse run` killed with SIGKILL (its VMs outlive it: vse gc finds them and removes them).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { networkNames } from '../../lib/deploy/net.js';
import { bin, hello, qemuMentioning, root, runHook, slurmEnv, testSite, vseLinks, vseStatus } from './env.js';

const site = testSite();
const env = { VSE_SITE_CONFIG: site.file };
// Slurm cannot be asked about jobs here (no cluster configuration): vse gc must keep their VMs
const noSlurm = { ...env, SLURM_CONF: '/nonexistent/slurm.conf' };
const jobDir = (job: string, node: string): string => join(site.stateDir, 'jobs', `${job}.${node}`);

async function expectClean(job: string, node: string): Promise<void> {
  const dir = jobDir(job, node);
  expect(existsSync(dir)).toBe(false);
  expect(qemuMentioning(`${dir}/`)).toEqual([]);
  const { bridge, tapPrefix } = networkNames(dir, 0);
  expect((await vseLinks()).filter((l) => l === bridge || l.startsWith(tapPrefix))).toEqual([]);
}

async function until(what: () => boolean | Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await what())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

function readyVms(job: string, node: string): number {
  try {
    const rec = JSON.parse(readFileSync(join(jobDir(job, node), 'state.json'), 'utf8')) as { vms: { state: string }[] };
    return rec.vms.filter((v) => v.state === 'ready').length;
  } catch {
    return 0;
  }
}

beforeAll(async () => {
  await execa(bin('vse'), ['create', join(root, 'examples', 'hello.xml')], { env });
}, 180_000);

describe('a deployer killed with SIGKILL', () => {
  const points: [string, (job: string, node: string) => boolean | Promise<boolean>][] = [
    ['as soon as the job directory exists', (job, node) => existsSync(jobDir(job, node))],
    ['once the job\'s bridge exists', async (job, node) => (await vseLinks()).includes(networkNames(jobDir(job, node), 0).bridge)],
    ['once QEMU runs', (job, node) => qemuMentioning(`${jobDir(job, node)}/`).length > 0],
    ['with one VM ready and one booting', (job, node) => readyVms(job, node) === 1],
  ];
  for (const [i, [when, reached]] of points.entries()) {
    it(`${when}: the epilog leaves nothing behind`, async () => {
      const job = `730${i}`;
      const child = execa(bin('prolog'), [], { env: { ...env, ...slurmEnv(job, 'f1', hello(2)) }, extendEnv: false, reject: false, detached: true });
      await until(() => reached(job, 'f1'));
      process.kill(-(child.pid as number), 'SIGKILL');
      expect((await child).signal).toBe('SIGKILL');
      const e = await runHook('epilog', site.file, slurmEnv(job, 'f1'));
      expect(e.exitCode, e.stderr).toBe(0);
      await expectClean(job, 'f1');
    });
  }
});

describe('a QEMU that crashes while the job runs', () => {
  it('shows as dead in vse status, vse exec says so, and the epilog still ends clean', async () => {
    const job = '7310';
    expect((await runHook('prolog', site.file, slurmEnv(job, 'f1', hello(2)))).exitCode).toBe(0);
    const [vm0] = await vseStatus(site.file, ['--job', job]);
    process.kill(vm0!.pid, 'SIGKILL');
    await until(async () => (await vseStatus(site.file, ['--job', job]))[0]?.state === 'dead', 10_000);
    expect((await vseStatus(site.file, ['--job', job])).map((v) => v.state)).toEqual(['dead', 'running']);
    const x = await execa(bin('vse'), ['exec', '--job', job, '--', 'true'], { env, reject: false });
    expect(x.exitCode).toBe(1);
    expect(String(x.stderr)).toContain(`VM ${job}-f1-0 is not running (its QEMU, pid ${vm0!.pid}, is gone); see ${vm0!.console}`);
    expect((await execa(bin('vse'), ['exec', '--job', job, '--vm', '1', '--', 'true'], { env, reject: false })).exitCode).toBe(0);
    const e = await runHook('epilog', site.file, slurmEnv(job, 'f1'));
    expect(e.exitCode, e.stderr).toBe(0);
    await expectClean(job, 'f1');
  });
});

describe('two jobs deploying on one node at the same time', () => {
  it('each gets its own VMs and network; one\'s epilog leaves the other working', async () => {
    const [a, b] = await Promise.all(['7320', '7321'].map((job) => runHook('prolog', site.file, slurmEnv(job, 'f2', hello(2)))));
    expect(a!.exitCode, a!.stderr).toBe(0);
    expect(b!.exitCode, b!.stderr).toBe(0);
    for (const job of ['7320', '7321']) {
      const r = await execa(bin('vse'), ['exec', '--job', job, '--all', '--root', '--', 'sh', '-c', `ping -c1 -W5 ${job}-f2-1 >/dev/null && hostname`], { env, reject: false });
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stdout).split('\n').sort()).toEqual([`${job}-f2-0: ${job}-f2-0`, `${job}-f2-1: ${job}-f2-1`]);
    }
    expect((await runHook('epilog', site.file, slurmEnv('7320', 'f2'))).exitCode).toBe(0);
    await expectClean('7320', 'f2');
    expect((await execa(bin('vse'), ['exec', '--job', '7321', '--vm', '1', '--', 'true'], { env, reject: false })).exitCode).toBe(0);
    expect((await runHook('epilog', site.file, slurmEnv('7321', 'f2'))).exitCode).toBe(0);
    await expectClean('7321', 'f2');
  });
});

describe('vse gc', () => {
  it('removes what a vse run killed with SIGKILL left, and keeps a job it cannot tell is over', async () => {
    expect((await runHook('prolog', site.file, slurmEnv('7330', 'f3', hello(1)))).exitCode).toBe(0); // Slurm cannot be asked here: kept
    const run = execa(bin('vse'), ['run', '-q', join(root, 'examples', 'hello.xml'), '--', 'sleep', '600'], { env, reject: false });
    await until(async () => (await vseStatus(site.file)).filter((v) => v.job.startsWith('local-') && v.state === 'running').length === 2);
    const local = (await vseStatus(site.file)).find((v) => v.job.startsWith('local-'))!;
    run.kill('SIGKILL');
    await run;
    expect((await vseStatus(site.file, ['--job', local.job])).map((v) => v.state)).toEqual(['running', 'running']); // left behind
    const dry = await execa(bin('vse'), ['gc', '--dry-run'], { env: noSlurm, reject: false });
    expect(String(dry.stderr)).toContain(`would remove job ${local.job} on ${local.node}: its vse run (pid ${local.job.slice(6)}) is gone`);
    expect((await vseStatus(site.file, ['--job', local.job])).length).toBe(2);
    const gc = await execa(bin('vse'), ['gc', '--json'], { env: noSlurm, reject: false });
    expect(gc.exitCode, String(gc.stderr)).toBe(0);
    const jobs = (JSON.parse(String(gc.stdout)) as { jobs: { removed: { job: string }[]; kept: { job: string; why: string }[] } }).jobs;
    expect(jobs.removed.map((j) => j.job)).toEqual([local.job]);
    expect(jobs.kept).toEqual([{ job: '7330', node: 'f3', why: 'Slurm did not answer: kept' }]);
    await expectClean(local.job, local.node);
    expect((await vseStatus(site.file, ['--job', '7330'])).map((v) => v.state)).toEqual(['running']);
    expect((await runHook('epilog', site.file, slurmEnv('7330', 'f3'))).exitCode).toBe(0);
  });
});
