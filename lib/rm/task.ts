/**
 * A scheduler's task as vse relays it into a VM: which job, node and task it is, from the
 * environment slurmstepd gives every task (the SPANK plugin hands the task over with it intact).
 */
import { UserError } from '../util/errors.js';
import { checkIdent } from './context.js';

export interface SchedulerTask {
  job: string;
  /** The node the task runs on (SLURMD_NODENAME; several can share a host). */
  node: string;
  /** The step (`0`, `batch`), for messages. */
  step: string;
  /** Task id on this node (SLURM_LOCALID): what picks the VM. */
  localId: number;
  /** Task id in the step (SLURM_PROCID), for messages. */
  procId: number;
}

function count(env: NodeJS.ProcessEnv, name: string, fallback?: number): number {
  const v = env[name];
  if (v !== undefined && /^\d+$/.test(v)) return Number(v);
  if (fallback !== undefined) return fallback;
  throw new UserError(`${name} is ${v === undefined ? 'not set' : `"${v}"`}; expected a task id: vse exec --task runs as a task of a Slurm step (the SPANK plugin starts it)`);
}

/** The Slurm task this process is (`batch`: the batch script, task 0 of the batch step). */
export function slurmTask(env: NodeJS.ProcessEnv, batch = false): SchedulerTask {
  const job = env.SLURM_JOB_ID;
  if (job === undefined) throw new UserError('SLURM_JOB_ID is not set: vse exec --task and --batch run as Slurm tasks (the SPANK plugin starts them); hint: vse exec -- CMD for a command of your own');
  return {
    job: checkIdent('SLURM_JOB_ID', job),
    node: checkIdent('SLURMD_NODENAME', env.SLURMD_NODENAME),
    step: batch ? 'batch' : (env.SLURM_STEP_ID ?? '?'),
    localId: batch ? 0 : count(env, 'SLURM_LOCALID'),
    procId: batch ? 0 : count(env, 'SLURM_PROCID', 0),
  };
}

/** The documented rule: task i of a node runs on VM i mod (VMs per node); the batch script on VM 0. */
export function vmOfTask(localId: number, vms: number): number {
  if (vms < 1) throw new Error('vmOfTask: no VMs');
  return localId % vms;
}
