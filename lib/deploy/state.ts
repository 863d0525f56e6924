/** The per-job, per-node state record: everything cleanup needs, written atomically. */
import { chmodSync, chownSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HostError } from '../util/errors.js';

export interface VmRecord {
  index: number;
  name: string;
  pid?: number;
  /** Clock ticks since boot at which `pid` started (guards against pid reuse). */
  startTime?: number;
  state: 'starting' | 'ready' | 'failed';
  bootMs?: number;
  startedAt?: string;
  memoryMiB: number;
  vcpus: number;
  /** Copy-on-write overlay of the configuration's disk (none for the minimal guest, which runs from memory). */
  overlay?: string;
  qmpSocket: string;
  channelSocket: string;
  consoleLog: string;
  pidFile: string;
  /** Loopback port forwarded to the guest's SSH server. */
  sshPort?: number;
  /** `ssh-ed25519 BASE64`, announced by the guest on its virtio port. */
  hostKey?: string;
  /** On the job's private network. */
  mac?: string;
  address?: string;
  tap?: string;
  /** Host directories shared over virtio-fs. */
  shares?: import('./shares.js').ShareRecord[];
  error?: string;
}

export interface DeploymentRecord {
  version: 1;
  job: string;
  node: string;
  uid: number;
  gid: number;
  user: string;
  scheduler: string;
  dir: string;
  state: 'deploying' | 'ready' | 'failed';
  createdAt: string;
  description: { name: string; file?: string };
  configuration?: { key: string; dir: string; kernelPackage: string };
  /** Which driver runs the job's VMs (lib/deploy/driver.ts). */
  driver: 'qemu' | 'libvirt';
  /** The host's boot when deployed: after a reboot nothing of the job runs any more. */
  bootId?: string;
  /** The process the job lives as long as (vse run, no scheduler). */
  owner?: { pid: number; startTime?: number };
  /** The job's SSH key (owned by the job's user). */
  keyFile?: string;
  network?: { mode: 'bridge' | 'mcast'; bridge?: string; mcast?: string; taps: string[] };
  accel?: 'kvm' | 'tcg';
  accelReason?: string;
  vms: VmRecord[];
  error?: string;
}

export const STATE_FILE = 'state.json';

/** Directory of one job on one node. Both parts were checked by checkIdent. */
export function jobDir(stateDir: string, job: string, node: string): string {
  return join(stateDir, 'jobs', `${job}.${node}`);
}

/** The start of the names of a job's VMs on one node: `<job>-<node>-`, usable in a host name. */
export function vmNamePrefix(job: string, node: string): string {
  return `${job}-${node}-`.replace(/[^A-Za-z0-9-]/g, '-');
}

/** VM names are `<job>-<node>-<index>`: unique on the host and usable as a guest hostname. */
export function vmName(job: string, node: string, index: number): string {
  return `${vmNamePrefix(job, node)}${index}`.slice(0, 63);
}

/** Create the job directory: root-owned, readable by the job's group only. */
export function makeJobDir(dir: string, gid: number): void {
  // the state and jobs directories stay traversable, so each user can see their own job's record
  const jobs = dirname(dir);
  mkdirSync(jobs, { recursive: true, mode: 0o755 });
  if (process.getuid?.() === 0) {
    chmodSync(jobs, 0o755); // repairs a directory made with a tighter mode (umask, an older version)
    chmodSync(dirname(jobs), 0o755);
  }
  mkdirSync(dir, { mode: 0o750 });
  if (process.getuid?.() === 0) chownSync(dir, 0, gid);
}

/** Replace the record atomically (write a temporary file, then rename over). */
export function writeRecord(rec: DeploymentRecord): void {
  const file = join(rec.dir, STATE_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(rec, null, 2)}\n`, { mode: 0o640 });
  if (process.getuid?.() === 0) chownSync(tmp, 0, rec.gid);
  renameSync(tmp, file);
}

/**
 * After a user's mistake stopped the prolog (it exits 0 then, so the job runs): a record of no VMs
 * that says why, readable by the job's group, so that the job's tasks fail saying it instead of
 * running on the host. The epilog removes it like any job directory.
 */
export function writeFailedRecord(stateDir: string, o: { job: string; node: string; uid: number; gid: number; user: string; scheduler: string; descriptionFile?: string }, error: string): DeploymentRecord {
  const dir = jobDir(stateDir, o.job, o.node);
  makeJobDir(dir, o.gid);
  const rec: DeploymentRecord = {
    version: 1, job: o.job, node: o.node, uid: o.uid, gid: o.gid, user: o.user, scheduler: o.scheduler, dir,
    state: 'failed', createdAt: new Date().toISOString(), description: { name: '', ...(o.descriptionFile ? { file: o.descriptionFile } : {}) },
    driver: 'qemu', vms: [], error,
  };
  writeRecord(rec);
  return rec;
}

export function readRecord(dir: string): DeploymentRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as DeploymentRecord;
  } catch {
    return undefined;
  }
}

/** All job directories on this host (`<job>.<node>` names); none when no job ever ran here. */
export function listJobDirs(stateDir: string): string[] {
  const jobs = join(stateDir, 'jobs');
  try {
    return readdirSync(jobs).filter((n) => !n.startsWith('.')).map((n) => join(jobs, n));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new HostError(`cannot read ${jobs}: ${(err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (err as Error).message}`, { cause: err });
  }
}
