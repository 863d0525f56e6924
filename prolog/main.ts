/** Slurm Prolog: deploy the job's VMs on this node before the job starts (see docs/admin.md). */
import { resolveBundle } from '../lib/descriptor/resolve.js';
import { deploy } from '../lib/deploy/deploy.js';
import { writeFailedRecord } from '../lib/deploy/state.js';
import { runHook } from '../lib/rm/hook.js';
import { slurmContext } from '../lib/rm/slurm.js';
import { HostError, UserError } from '../lib/util/errors.js';

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runHook('prolog', () => `job=${env.SLURM_JOB_ID ?? '?'} node=${env.SLURMD_NODENAME ?? '?'}`, async (site, log) => {
    if (env.SPANK_VSE_DESC === undefined) return; // not a vse job: nothing to do
    const ctx = slurmContext(env);
    try {
      const description = resolveBundle(env.SPANK_VSE_DESC, ctx.descriptionFile ?? 'SPANK_VSE_DESC', site);
      const t0 = Date.now();
      const rec = await deploy({ ctx, description, site, log });
      log.info(`${rec.vms.length} VM(s) of "${description.name}" ready in ${((Date.now() - t0) / 1000).toFixed(2)} s (${rec.accel})`);
    } catch (err) {
      // the job runs after a user's mistake (no drain): its tasks must fail saying why, not run on the host
      if (err instanceof UserError && !(err instanceof HostError)) {
        try {
          writeFailedRecord(site.stateDir, { ...ctx, job: ctx.jobId }, err.message);
        } catch (e) {
          log.warn(`cannot record why job ${ctx.jobId} has no VMs: ${(e as Error).message}`);
        }
      }
      throw err;
    }
  });
}
