/** Slurm Epilog: remove everything of the job on this node; succeeds after a failed or missing prolog. */
import { cleanupJob } from '../lib/deploy/cleanup.js';
import { existsSync } from 'node:fs';
import { jobDir } from '../lib/deploy/state.js';
import { checkIdent } from '../lib/rm/context.js';
import { runHook } from '../lib/rm/hook.js';
import { isAlive, pidsMentioning } from '../lib/deploy/proc.js';
import { HostError } from '../lib/util/errors.js';

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runHook('epilog', () => `job=${env.SLURM_JOB_ID ?? '?'} node=${env.SLURMD_NODENAME ?? '?'}`, async (site, log) => {
    const job = checkIdent('SLURM_JOB_ID', env.SLURM_JOB_ID);
    const node = checkIdent('SLURMD_NODENAME', env.SLURMD_NODENAME);
    // Always clean, --vse or not: the job's copy of the description is not needed for teardown.
    const dir = jobDir(site.stateDir, job, node);
    if (!existsSync(dir) && pidsMentioning(`${dir}/`).length === 0) return;
    const r = await cleanupJob({ stateDir: site.stateDir, job, node, log });
    const left = r.stopped.filter(isAlive);
    if (left.length > 0 || existsSync(dir)) throw new HostError(`node not clean after cleanup: pids ${left.join(' ')} ${existsSync(dir) ? dir : ''}`);
    log.info(`clean: stopped ${r.stopped.length} VM(s)`);
  });
}
