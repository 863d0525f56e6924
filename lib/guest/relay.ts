/**
 * A scheduler's task relayed into the job's VM: the SPANK plugin makes each task of a `--vse` step
 * `vse exec --task -- ARGV...` (the batch script with --vse-batch=inside: `--batch`), in the task's
 * own process, so that slurmstepd's stdio, signals and exit-status handling apply to it as to any
 * task. This picks the VM (local task id modulo the VMs per node), runs ARGV there as the job's
 * user with the task's environment, in the same directory when a share covers it (else the
 * user's home in the guest), passes signals in, and resolves with how the command ended.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { guestPathOf } from '../deploy/shares.js';
import type { DeploymentRecord } from '../deploy/state.js';
import { type SchedulerTask, slurmTask, vmOfTask } from '../rm/task.js';
import { HostError, UserError } from '../util/errors.js';
import { findDeployment, forwardSignals, targetOf } from './exec.js';
import { taskEnvironment } from './request.js';
import { type ExecOutcome, type GuestTarget, type RunningExec, guestExec } from './ssh.js';

export interface RelayOptions {
  stateDir: string;
  /** `task`: a step's task; `batch`: the batch script (ARGV[0] is the script on the host). */
  mode: 'task' | 'batch';
  argv: string[];
  /** The task's environment, as slurmstepd made it. */
  env: NodeJS.ProcessEnv;
  /** The task's working directory on the host. */
  cwd: string;
}

export interface RelayIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

/** The task's working directory in the guest: the same place through a share, else the user's home there. */
export function taskCwd(rec: Pick<DeploymentRecord, 'user' | 'uid'>, shares: Parameters<typeof guestPathOf>[0], hostCwd: string): string {
  return guestPathOf(shares, hostCwd) ?? (rec.uid === 0 ? '/root' : `/home/${rec.user}`);
}

/** "task 3 (step 12.0 on n1)": how messages name the task. */
function taskName(t: SchedulerTask): string {
  return t.step === 'batch' ? `the batch script of job ${t.job} (on ${t.node})` : `task ${t.procId} (step ${t.job}.${t.step} on ${t.node})`;
}

/** Copy the batch script into the guest, readable by the job's user alone; returns its path there. */
async function stageScript(target: GuestTarget, rec: DeploymentRecord, t: SchedulerTask, script: string, stderr: Writable): Promise<string> {
  let text: Buffer;
  try {
    text = readFileSync(script);
  } catch (err) {
    throw new HostError(`cannot read the batch script ${script}: ${(err as Error).message}`);
  }
  const dir = `/tmp/vse-batch.${t.job}`;
  const path = `${dir}/${basename(script)}`;
  const r = await guestExec(target, {
    uid: rec.uid, gid: rec.gid, cwd: '/', env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'],
    argv: ['/bin/sh', '-c', 'umask 077 && mkdir -p "$1" && cat >"$2" && chmod 700 "$2"', 'sh', dir, path],
  }, { stdin: Readable.from([text]), stdout: stderr, stderr });
  const done = await r.done;
  if (done.code !== 0) throw new HostError(`cannot copy the batch script into ${target.name} (${done.code === null ? `signal ${done.signal ?? '?'}` : `exit ${done.code}`})`);
  return path;
}

/** End this process by signal `name` (without SIG), with the default action. */
function endBy(name: string): void {
  const sig = `SIG${name}` as NodeJS.Signals;
  process.removeAllListeners(sig);
  process.kill(process.pid, sig);
}

/** Run the task in its VM; resolves with how it ended there. Errors name the task and why it cannot run. */
export async function relayTask(o: RelayOptions, io: RelayIo): Promise<ExecOutcome> {
  if (o.argv.length === 0) throw new UserError('vse exec --task: no command');
  const t = slurmTask(o.env, o.mode === 'batch');
  // every failure says which task it is about; a user's mistake stays one, the host's stays the host's
  const wrap = (err: unknown, what: string): Error => {
    const text = `vse: ${taskName(t)} ${what}: ${err instanceof Error ? err.message : String(err)}`;
    return err instanceof UserError ? new UserError(text, { cause: err }) : new HostError(text, { cause: err });
  };
  let rec: DeploymentRecord;
  let target: GuestTarget;
  let vmIndex: number;
  try {
    rec = findDeployment({ stateDir: o.stateDir, job: t.job, node: t.node }, o.env, process.getuid?.() ?? 0);
    vmIndex = o.mode === 'batch' ? 0 : vmOfTask(t.localId, rec.vms.length);
    target = targetOf(rec, rec.vms[vmIndex] as DeploymentRecord['vms'][number]);
  } catch (err) {
    const e = wrap(err, 'cannot run in the job\'s VMs');
    e.message += '; hint: the prolog\'s log on the node (slurmd\'s log, /var/log/vse/prolog.log) says what became of the VMs';
    throw e;
  }
  const vm = rec.vms[vmIndex] as DeploymentRecord['vms'][number];
  const cwd = taskCwd(rec, vm.shares ?? [], o.cwd);
  const env = taskEnvironment({ user: rec.user, uid: rec.uid, from: o.env, cwd, set: { VSE_VM_INDEX: String(vmIndex), VSE_VM_NAME: vm.name } });
  // until the command runs, a signal ends this task the way it ends any task before its exec
  const beforeStart: RunningExec = { signal: endBy, abort: () => endBy('INT'), done: new Promise(() => undefined) };
  const running: RunningExec[] = [beforeStart];
  const undo = forwardSignals(() => running, undefined, (line) => io.stderr.write(`vse: ${line}\n`));
  try {
    const argv = o.mode === 'batch' ? [await stageScript(target, rec, t, o.argv[0] as string, io.stderr), ...o.argv.slice(1)] : o.argv;
    const r = await guestExec(target, { uid: rec.uid, gid: rec.gid, cwd, env, argv }, io);
    running[0] = r;
    return await r.done;
  } catch (err) {
    throw wrap(err, `in ${vm.name}`);
  } finally {
    undo();
  }
}
