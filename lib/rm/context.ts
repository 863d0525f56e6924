/** JobContext: what deploy and cleanup need to know about a job, whatever scheduler started it. */
import { UserError } from '../util/errors.js';

export interface JobContext {
  /** Scheduler job id (`123`) or a local id (`local-4711`). */
  jobId: string;
  /** The node this program runs for (SLURMD_NODENAME; several can share a host). */
  node: string;
  uid: number;
  gid: number;
  user: string;
  /** The job's description, resolved and fixed at submission (JSON). */
  descriptionJson?: string;
  /** Where the description came from (for messages only: never read again). */
  descriptionFile?: string;
  scheduler: 'slurm' | 'local';
}

const SAFE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Job ids and node names become path components: refuse anything else. */
export function checkIdent(what: string, value: string | undefined): string {
  if (value === undefined || !SAFE.test(value)) {
    throw new UserError(`${what} "${value ?? ''}" is not usable; expected letters, digits, ".", "_" or "-"`);
  }
  return value;
}
