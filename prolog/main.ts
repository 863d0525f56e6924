/** Slurm Prolog: deploy the job's VMs on this node before the job starts (see docs/admin.md). */
import { resolveBundle } from '../lib/descriptor/resolve.js';
import { deploy } from '../lib/deploy/deploy.js';
import { runHook } from '../lib/rm/hook.js';
import { slurmContext } from '../lib/rm/slurm.js';

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runHook('prolog', () => `job=${env.SLURM_JOB_ID ?? '?'} node=${env.SLURMD_NODENAME ?? '?'}`, async (site, log) => {
    if (env.SPANK_VSE_DESC === undefined) return; // not a vse job: nothing to do
    const ctx = slurmContext(env);
    const description = resolveBundle(env.SPANK_VSE_DESC, ctx.descriptionFile ?? 'SPANK_VSE_DESC', site);
    const t0 = Date.now();
    const rec = await deploy({ ctx, description, site, log });
    log.info(`${rec.vms.length} VM(s) of "${description.name}" ready in ${((Date.now() - t0) / 1000).toFixed(2)} s (${rec.accel})`);
  });
}
