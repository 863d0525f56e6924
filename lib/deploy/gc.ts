/**
 * Garbage collection of jobs: what a job left on this host after it ended without its epilog (a
 * slurmd crash, a reboot, a prolog killed by its timeout, a `vse run` killed with SIGKILL). A job
 * is over when the host rebooted since it was deployed, when the process it lived with is gone
 * (no scheduler), or when Slurm says so (unknown job id, or a finished state other than
 * COMPLETING). When that cannot be told (Slurm does not answer), the job is kept.
 */
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import { cleanupJob } from './cleanup.js';
import { bootId, isSameProcess, pidsMentioning } from './proc.js';
import { type DeploymentRecord, listJobDirs, readRecord } from './state.js';

export type Verdict = { over: true; why: string } | { over: false; why: string };

const SLURM_ENDED = new Set(['BOOT_FAIL', 'CANCELLED', 'COMPLETED', 'DEADLINE', 'FAILED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'PREEMPTED', 'TIMEOUT', 'SPECIAL_EXIT', 'REVOKED']);

/** What Slurm says of a job: over, running, or unknown (no answer). */
export async function slurmJobState(job: string, log: Logger): Promise<'over' | 'alive' | 'unknown'> {
  const r = await run(['scontrol', '-o', 'show', 'job', job], { log, allowFailure: true, timeoutMs: 20_000 }).catch(() => undefined);
  if (!r) return 'unknown';
  if (/Invalid job id specified/i.test(r.stderr)) return 'over';
  const state = /\bJobState=(\S+)/.exec(r.stdout)?.[1];
  if (r.exitCode !== 0 || !state) return 'unknown';
  return SLURM_ENDED.has(state) ? 'over' : 'alive';
}

/** Whether a deployment's job is over. Records without a readable state are judged by age and live QEMUs. */
export async function judge(dir: string, rec: DeploymentRecord | undefined, log: Logger): Promise<Verdict> {
  if (!rec) {
    // a deployer killed before it wrote its record: wait a while (it may still be writing it)
    let ageMs: number;
    try {
      ageMs = Date.now() - statSync(dir).mtimeMs;
    } catch {
      return { over: false, why: 'gone while looking (its own cleanup ran)' };
    }
    if (pidsMentioning(`${dir}/`).length > 0) return { over: false, why: 'no record, but processes use it' };
    return ageMs > 10 * 60_000 ? { over: true, why: 'no record, nothing runs, older than 10 minutes' } : { over: false, why: 'no record yet (a deploy may be starting)' };
  }
  if (rec.bootId !== undefined && rec.bootId !== bootId()) return { over: true, why: 'deployed before the host rebooted' };
  if (rec.scheduler === 'local') {
    if (rec.owner && !isSameProcess(rec.owner.pid, rec.owner.startTime)) return { over: true, why: `its vse run (pid ${rec.owner.pid}) is gone` };
    return { over: false, why: 'its vse run is alive' };
  }
  const state = await slurmJobState(rec.job, log);
  if (state === 'over') return { over: true, why: `Slurm says job ${rec.job} is over` };
  return { over: false, why: state === 'alive' ? `Slurm says job ${rec.job} runs` : 'Slurm did not answer: kept' };
}

export interface JobGcResult {
  removed: { job: string; node: string; why: string }[];
  kept: { job: string; node: string; why: string }[];
}

/** Remove what ended jobs left on this host (VMs, virtiofsd, taps, bridge, files). */
export async function gcJobs(stateDir: string, log: Logger, dryRun = false): Promise<JobGcResult> {
  const out: JobGcResult = { removed: [], kept: [] };
  for (const dir of listJobDirs(stateDir)) {
    const rec = readRecord(dir);
    const name = basename(dir);
    const dot = name.indexOf('.');
    const job = rec?.job ?? name.slice(0, dot);
    const node = rec?.node ?? name.slice(dot + 1);
    const v = await judge(dir, rec, log);
    if (!v.over) {
      out.kept.push({ job, node, why: v.why });
      continue;
    }
    if (!dryRun) await cleanupJob({ stateDir, job, node, log });
    out.removed.push({ job, node, why: v.why });
  }
  return out;
}
