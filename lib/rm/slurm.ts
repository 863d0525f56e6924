/** Slurm: the JobContext from the environment slurmd gives Prolog and Epilog (see docs/admin.md). */
import { type JobContext, checkIdent } from './context.js';

function num(env: NodeJS.ProcessEnv, name: string): number {
  const v = env[name];
  if (v === undefined || !/^\d+$/.test(v)) throw new Error(`${name} is missing or not a number ("${v ?? ''}")`);
  return Number(v);
}

/** Build the context of a slurmd Prolog/Epilog run. The description comes from the SPANK plugin. */
export function slurmContext(env: NodeJS.ProcessEnv): JobContext {
  return {
    jobId: checkIdent('SLURM_JOB_ID', env.SLURM_JOB_ID),
    node: checkIdent('SLURMD_NODENAME', env.SLURMD_NODENAME),
    uid: num(env, 'SLURM_JOB_UID'),
    gid: num(env, 'SLURM_JOB_GID'),
    user: env.SLURM_JOB_USER ?? String(env.SLURM_JOB_UID),
    descriptionJson: env.SPANK_VSE_DESC,
    descriptionFile: env.SPANK_VSE_FILE,
    scheduler: 'slurm',
  };
}
