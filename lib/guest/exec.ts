/**
 * `vse exec`: run a command in a job's VM(s) with stdin, stdout and stderr streamed, the exit code
 * or signal passed back, signals passed in (Ctrl-C, SIGTERM, ...), and a timeout that ends in SIGKILL.
 * Only the job's user and root can: the job's key is readable by them alone.
 */
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { checkIdent } from '../rm/context.js';
import { type DeploymentRecord, type VmRecord, listJobDirs, readRecord } from '../deploy/state.js';
import { isSameProcess } from '../deploy/proc.js';
import { HostError, UserError } from '../util/errors.js';
import { guestEnvironment } from './request.js';
import { type ExecOutcome, type GuestTarget, type RunningExec, guestExec } from './ssh.js';

export interface ExecOptions {
  stateDir: string;
  job?: string;
  node?: string;
  /** VM index; ignored with all. */
  vm?: number;
  all?: boolean;
  root?: boolean;
  cwd?: string;
  /** Variables to forward (`NAME`, `PREFIX*`) or set (`NAME=value`). */
  env?: string[];
  timeoutSec?: number;
  argv: string[];
}

/** The deployment a command is for: --job/--node, else the Slurm job we run in, else the caller's only one on this host. */
export function findDeployment(o: Pick<ExecOptions, 'stateDir' | 'job' | 'node'>, env: NodeJS.ProcessEnv, uid: number): DeploymentRecord {
  const job = o.job ?? env.SLURM_JOB_ID;
  const node = o.node ?? (job !== undefined && job === env.SLURM_JOB_ID ? env.SLURMD_NODENAME : undefined);
  if (job !== undefined) checkIdent('job id', job);
  const dirs = listJobDirs(o.stateDir);
  const recs = dirs.map((d) => readRecord(d)).filter((r): r is DeploymentRecord => r !== undefined)
    .filter((r) => (job === undefined ? r.uid === uid || uid === 0 : r.job === job) && (node === undefined || r.node === node));
  if (recs.length === 0 && job !== undefined && uid !== 0) {
    // a job directory is readable by the job's group only: someone else's job looks like this
    const theirs = dirs.find((d) => basename(d).startsWith(`${job}.`) && (node === undefined || basename(d) === `${job}.${node}`));
    if (theirs !== undefined && readRecord(theirs) === undefined && existsSync(theirs)) {
      throw new UserError(`job ${job} is not yours (${theirs} is not readable by you); only its user and root can run commands in its VMs`);
    }
  }
  if (recs.length === 0) {
    throw new UserError(job === undefined ? 'no VMs of yours run on this host; hint: give --job ID (vse status lists the jobs)' : `job ${job} has no VMs on this host${node ? ` for node ${node}` : ''}; hint: vse status lists them`);
  }
  if (recs.length > 1) {
    throw new UserError(`${recs.length} deployments match (${recs.map((r) => `job ${r.job} node ${r.node}`).join(', ')}); hint: give --job ID and --node NAME`);
  }
  const rec = recs[0] as DeploymentRecord;
  if (uid !== 0 && rec.uid !== uid) throw new UserError(`job ${rec.job} belongs to ${rec.user}; only its user and root can run commands in its VMs`);
  if (rec.state === 'failed') throw new UserError(`the VMs of job ${rec.job} on ${rec.node} were not deployed: ${rec.error ?? 'the prolog failed'}`);
  if (rec.state !== 'ready') throw new HostError(`the VMs of job ${rec.job} on ${rec.node} are not ready yet (${rec.state})`);
  return rec;
}

/** Where to reach a VM of a deployment; throws when it is not up (not ready, or its QEMU is gone). */
export function targetOf(rec: DeploymentRecord, vm: VmRecord): GuestTarget {
  if (!rec.keyFile) throw new UserError(`job ${rec.job} was deployed without a guest channel`);
  if (vm.state !== 'ready' || vm.sshPort === undefined || vm.hostKey === undefined) throw new HostError(`VM ${vm.name} is not ready (${vm.state})`);
  if (vm.pid === undefined || !isSameProcess(vm.pid, vm.startTime)) throw new HostError(`VM ${vm.name} is not running (its QEMU, pid ${vm.pid ?? '?'}, is gone); see ${vm.consoleLog}`);
  return { name: vm.name, port: vm.sshPort, hostKey: vm.hostKey, keyFile: rec.keyFile };
}

/** Prefix every line with `name: ` (for --all, like srun -l). */
function labelled(name: string, out: Writable): Transform {
  let partial = '';
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const text = partial + chunk.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      cb(null, lines.map((l) => `${name}: ${l}\n`).join(''));
    },
    flush(cb) {
      cb(null, partial ? `${name}: ${partial}\n` : '');
    },
  });
  t.pipe(out, { end: false });
  return t;
}

export interface ExecResult {
  outcomes: { vm: string; outcome: ExecOutcome }[];
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

/** Run the command; resolves with each VM's outcome. Signals to this process go to the command(s). */
export async function execInJob(o: ExecOptions, io: { stdin: NodeJS.ReadableStream & import('node:stream').Readable; stdout: Writable; stderr: Writable }, env: NodeJS.ProcessEnv = process.env): Promise<ExecResult> {
  if (o.argv.length === 0) throw new UserError('give the command to run after --; e.g. vse exec -- hostname');
  const uid = process.getuid?.() ?? 0;
  const rec = findDeployment(o, env, uid);
  if (!rec.keyFile) throw new UserError(`job ${rec.job} was deployed without a guest channel`);
  let vms: VmRecord[];
  if (o.all) vms = rec.vms;
  else {
    const vm = rec.vms.find((v) => v.index === (o.vm ?? 0));
    if (!vm) throw new UserError(`job ${rec.job} has no VM ${o.vm ?? 0} on ${rec.node}; it has ${rec.vms.length} (0..${rec.vms.length - 1})`);
    vms = [vm];
  }
  const targets = vms.map((vm) => targetOf(rec, vm));
  const forward: string[] = [];
  const set: Record<string, string> = {};
  for (const e of o.env ?? []) {
    const eq = e.indexOf('=');
    if (eq > 0) set[e.slice(0, eq)] = e.slice(eq + 1);
    else forward.push(e);
  }
  const asRoot = o.root === true;
  const guestUid = asRoot ? 0 : rec.uid;
  const guestGid = asRoot ? 0 : rec.gid;
  const environment = guestEnvironment({ user: rec.user, uid: guestUid, from: env, forward, set });
  const cwd = o.cwd ?? (guestUid === 0 ? '/root' : `/home/${rec.user}`);
  const running: RunningExec[] = [];
  const undo = forwardSignals(() => running, o.timeoutSec, (line) => io.stderr.write(`vse exec: ${line}\n`));
  try {
    return {
      outcomes: await Promise.all(vms.map(async (vm, i) => {
        const stdout = o.all ? labelled(vm.name, io.stdout) : io.stdout;
        const stderr = o.all ? labelled(vm.name, io.stderr) : io.stderr;
        const r = await guestExec(
          targets[i] as GuestTarget,
          { uid: guestUid, gid: guestGid, cwd, env: environment, argv: o.argv },
          { stdin: i === 0 ? io.stdin : undefined, stdout, stderr },
        );
        running.push(r);
        const outcome = await r.done;
        if (o.all) {
          (stdout as Transform).end();
          (stderr as Transform).end();
        }
        return { vm: vm.name, outcome };
      })),
    };
  } finally {
    undo();
  }
}

/**
 * Wire this process's signals and the timeout to running commands; returns an undo function.
 * A second Ctrl-C within a second drops the connection (the guest then kills the command).
 */
export function forwardSignals(getRunning: () => RunningExec[], timeoutSec: number | undefined, warn: (s: string) => void): () => void {
  let lastInt = 0;
  const handlers = FORWARDED.map((sig) => {
    const h = (): void => {
      const now = Date.now();
      if (sig === 'SIGINT' && now - lastInt < 1000) {
        warn('second interrupt: dropping the connection (the guest kills the command)');
        for (const r of getRunning()) r.abort();
        return;
      }
      if (sig === 'SIGINT') lastInt = now;
      for (const r of getRunning()) r.signal(sig.slice(3));
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  const timers: NodeJS.Timeout[] = [];
  if (timeoutSec !== undefined && timeoutSec > 0) {
    timers.push(setTimeout(() => {
      warn(`time limit of ${timeoutSec} s reached: SIGTERM`);
      for (const r of getRunning()) r.signal('TERM');
      timers.push(setTimeout(() => {
        warn('still running 5 s later: SIGKILL');
        for (const r of getRunning()) r.signal('KILL');
        timers.push(setTimeout(() => getRunning().forEach((r) => r.abort()), 2000).unref());
      }, 5000).unref());
    }, timeoutSec * 1000).unref());
  }
  return () => {
    for (const [sig, h] of handlers) process.off(sig, h);
    for (const t of timers) clearTimeout(t);
  };
}
