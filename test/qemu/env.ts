/** Shared set-up of the QEMU suite: a private state and log directory, the shared guest cache. */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, expect, onTestFinished } from 'vitest';
import { join, resolve } from 'node:path';
import { execa } from 'execa';

export const root = resolve(import.meta.dirname, '../..');
export const bin = (p: 'vse' | 'prolog' | 'epilog'): string => join(root, 'build', 'bin', p);

/** A site config of our own (state and logs in a temp dir); the guest cache is the host's. */
export function testSite(extra: Record<string, unknown> = {}): { file: string; stateDir: string; logDir: string } {
  const dir = mkdtempSync('/tmp/vse-qemu-test-');
  // whatever a failed test left running is stopped, and the directory goes
  const cleanup = async (): Promise<void> => {
    for (const d of existsSync(join(dir, 'state', 'jobs')) ? readdirSync(join(dir, 'state', 'jobs')) : []) {
      const [job, ...node] = d.split('.');
      await execa(bin('vse'), ['cleanup', '--job', job as string, '--node', node.join('.')], { env: { VSE_SITE_CONFIG: join(dir, 'site.json') }, reject: false });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    onTestFinished(cleanup); // made inside a test
  } catch {
    afterAll(cleanup);
  }
  const stateDir = join(dir, 'state');
  const logDir = join(dir, 'log');
  const file = join(dir, 'site.json');
  writeFileSync(file, JSON.stringify({ stateDir, logDir, ...extra }));
  return { file, stateDir, logDir };
}

export interface Hook {
  exitCode: number | undefined;
  stderr: string;
  signal?: string;
}

/** Run the prolog or epilog as slurmd does: as root, no PATH, no HOME, only Slurm's variables. */
export async function runHook(which: 'prolog' | 'epilog', site: string, env: Record<string, string>): Promise<Hook> {
  const r = await execa(bin(which), [], { env: { VSE_SITE_CONFIG: site, ...env }, extendEnv: false, reject: false, stdin: 'ignore' });
  return { exitCode: r.exitCode, stderr: String(r.stderr), signal: r.signal };
}

export function slurmEnv(job: string, node: string, desc?: object): Record<string, string> {
  return {
    SLURM_JOB_ID: job, SLURMD_NODENAME: node, SLURM_JOB_UID: '0', SLURM_JOB_GID: '0', SLURM_JOB_USER: 'root',
    SLURM_SCRIPT_CONTEXT: 'prolog_slurmd', ...(desc ? { SPANK_VSE_DESC: JSON.stringify(desc), SPANK_VSE_FILE: '/home/u/hello.xml' } : {}),
  };
}

/** What the SPANK plugin hands the prolog: the job's copy of the user's layers (`vse validate --emit`). */
export const hello = (perNode = 1, hypervisor?: 'qemu' | 'libvirt' | 'any'): object => ({
  v: 1, file: '/home/u/hello.xml',
  layers: [{ path: '/home/u/hello.xml', text: `<vse name="hello" extends="minimal">\n  <vm memory="128M" perNode="${perNode}"${hypervisor ? ` hypervisor="${hypervisor}"` : ''}/>\n</vse>\n` }],
});

/** Build hello.xml's guest (or find it built), then boot a job's VMs through the prolog, for the job's user. */
export async function prologAs(site: string, job: string, node: string, bundle: object, user: { user: string; uid: number; gid: number }): Promise<void> {
  await execa(bin('vse'), ['create', join(root, 'examples', 'hello.xml')], { env: { VSE_SITE_CONFIG: site } });
  const p = await runHook('prolog', site, { ...slurmEnv(job, node, bundle), SLURM_JOB_UID: String(user.uid), SLURM_JOB_GID: String(user.gid), SLURM_JOB_USER: user.user });
  expect(p.exitCode, p.stderr).toBe(0);
}

/**
 * End a job as slurmd does after it (the epilog), and check that it ended clean: exit 0, no QEMU of
 * the job left. What a failed epilog left is removed all the same before the check fails (vitest
 * skips the remaining afterAll hooks, testSite's among them, once one fails).
 */
export async function endJob(site: string, job: string, node: string): Promise<void> {
  const e = await runHook('epilog', site, slurmEnv(job, node));
  const left = qemuMentioning(`/jobs/${job}.${node}/`);
  if (e.exitCode !== 0 || left.length > 0) {
    await execa(bin('vse'), ['cleanup', '--job', job, '--node', node], { env: { VSE_SITE_CONFIG: site }, reject: false });
    for (const pid of qemuMentioning(`/jobs/${job}.${node}/`)) process.kill(pid, 'SIGKILL');
  }
  expect(e.exitCode, e.stderr).toBe(0);
  expect(left, `QEMU of job ${job} on ${node} left running after its epilog`).toEqual([]);
}

/** The setsid id of a process (field 6 of /proc/PID/stat): a detached process leads its own. */
export function sidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

/** QEMU processes whose command line mentions the text (a job's state directory). */
export function qemuMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const zombie = stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
      if (!zombie && argv.startsWith('/usr/bin/qemu-system') && argv.includes(text)) pids.push(Number(p));
    } catch {
      // gone
    }
  }
  return pids;
}

export async function vseStatus(site: string, args: string[] = []): Promise<{ job: string; vm: string; node: string; state: string; pid: number; accel: string; console: string }[]> {
  const r = await execa(bin('vse'), ['status', '--json', ...args], { env: { VSE_SITE_CONFIG: site } });
  return JSON.parse(String(r.stdout)) as never;
}

/** The unprivileged job user of the suites (made here when missing, as the Slurm suite does). */
export async function jobUser(name = 'vsetest'): Promise<{ user: string; uid: number; gid: number }> {
  let r = await execa('id', ['-u', name], { reject: false });
  if (r.exitCode !== 0) {
    await execa('useradd', ['-m', '-d', `/home/${name}`, '-s', '/bin/bash', name]);
    r = await execa('id', ['-u', name]);
  }
  const gid = Number(String((await execa('id', ['-g', name])).stdout).trim());
  return { user: name, uid: Number(String(r.stdout).trim()), gid };
}

/** The installed vse (make install into VSE_PREFIX), which an unprivileged user can run wherever the checkout is. */
export function installedVse(): string {
  const prefix = process.env.VSE_PREFIX;
  if (!prefix) throw new Error('VSE_PREFIX is not set: run this suite through make test-qemu');
  return join(prefix, 'bin', 'vse');
}

/** Network interfaces whose names start with vse (bridges and taps of jobs). */
export async function vseLinks(): Promise<string[]> {
  const r = await execa('ip', ['-o', 'link', 'show']);
  return String(r.stdout).split('\n').map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '').filter((n) => n.startsWith('vse'));
}
