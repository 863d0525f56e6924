/**
 * Hypervisor drivers: how one VM is started, found and stopped. Deploy, cleanup and status go
 * through this interface; a description's `<vm hypervisor>` picks the driver (`any` is QEMU's).
 *
 * Both drivers run the same QEMU with the same devices, so what happens once a VM runs is the
 * same for each: readiness is the guest's line on its `org.vse.0` port (lib/guest/ready.ts, on
 * the socket the spec names), exec is SSH to the forwarded port (lib/guest/ssh.ts), and the VM's
 * process is known by pid and start time (proc.ts), which status and cleanup check.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import type { Description } from '../descriptor/model.js';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { quoteCommand, tail } from '../util/run.js';
import { libvirtDriver } from './libvirt.js';
import { sleep, startTimeOf } from './proc.js';
import { PORT_TAKEN, QEMU, type QemuVmSpec, qemuArgs } from './qemu.js';
import type { DeploymentRecord, VmRecord } from './state.js';

export type DriverName = DeploymentRecord['driver'];

/**
 * One VM to start: the same spec for every driver. A driver that has its own way for a part uses
 * that instead (libvirt keeps the monitor socket to itself and brings its own seccomp sandbox).
 */
export type VmSpec = QemuVmSpec;

/** A VM's process once it runs. */
export interface StartedVm {
  pid: number;
  /** Clock ticks since boot at which it started (proc.ts: guards against pid reuse). */
  startTime?: number;
}

/** A job on a node, as cleanup knows it: names and directory, and the record when there is one. */
export interface JobRef {
  job: string;
  node: string;
  dir: string;
  rec?: DeploymentRecord;
}

export interface VmDriver {
  readonly name: DriverName;
  /**
   * Create and start one VM, detached from the caller (slurmd kills the prolog's process group),
   * and return its process. `portTaken` when the forwarded SSH port was taken before QEMU bound it
   * (the caller tries another); any other failure throws, and so does this one on the last try.
   */
  start(vm: VmSpec, log: Logger, lastTry: boolean): Promise<StartedVm | 'portTaken'>;
  /**
   * Stop the job's VMs that a daemon of this driver owns, gracefully and then by force, finding
   * them from the job's names alone; the pids stopped. QEMU's own VMs have no such owner: their
   * processes are found and stopped by cleanup's scan of /proc, which catches any QEMU that names
   * the job directory, whichever driver started it.
   */
  stopJob?(ref: JobRef, log: Logger): Promise<number[]>;
  /** The VM's driver as `vse status` shows it. */
  describe(vm: VmRecord): string;
}

/**
 * Whether QEMU is up: its monitor on `path` answers a command. The greeting alone is not enough:
 * QMP's own thread sends it while QEMU may still be making devices (and may yet fail, e.g. on a
 * taken port); commands are answered by the main loop, which runs once everything is made.
 */
function answers(path: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    let text = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('data', (d: Buffer) => {
      if (text === '') s.write('{"execute":"qmp_capabilities"}\n');
      text += d.toString();
      if (text.includes('"return"')) done(true);
    });
    s.once('error', () => done(false));
    s.once('close', () => done(false));
  });
}

/** How long QEMU may take to make its devices before it counts as hung. */
const START_TIMEOUT_MS = 60_000;

/**
 * QEMU started directly, detached by setsid (slurmd kills the prolog's process group, not
 * QEMU's) with its messages in the VM's log; up once its monitor answers (every device made, the
 * forwarded port bound), failed when it ends first (its messages say why). It drops root itself
 * (`-runas`) and writes its pid file.
 */
export const qemuDriver: VmDriver = {
  name: 'qemu',
  async start(vm, log, lastTry) {
    const argv = [QEMU, ...qemuArgs(vm)];
    log.info(`run: ${quoteCommand(argv)}`);
    const logFile = vm.qemuLog ?? '/dev/null';
    // what this start says: the log may hold an earlier try's messages already
    const offset = vm.qemuLog !== undefined && existsSync(logFile) ? statSync(logFile).size : 0;
    const fd = openSync(logFile, 'a', 0o640);
    let ended: string | undefined;
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(QEMU, argv.slice(1), { detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    child.once('error', (err) => (ended = err.message));
    child.once('exit', (code, signal) => (ended = signal ? `killed by ${signal}` : `exit code ${code}`));
    const deadline = Date.now() + START_TIMEOUT_MS;
    let up = false;
    while (ended === undefined && !up && Date.now() < deadline) {
      up = await answers(vm.qmpSocket, Math.max(deadline - Date.now(), 1));
      if (!up) await sleep(5);
    }
    child.unref();
    if (up && child.pid !== undefined) return { pid: child.pid, startTime: startTimeOf(child.pid) };
    if (ended === undefined) {
      child.kill('SIGKILL');
      throw new HostError(`QEMU did not set VM ${vm.name} up within ${START_TIMEOUT_MS / 1000} s (killed)`);
    }
    let messages = '';
    try {
      messages = readFileSync(logFile, 'utf8').slice(offset).trim();
    } catch {
      // unreadable: the exit status says enough
    }
    if (PORT_TAKEN.test(messages) && !lastTry) return 'portTaken';
    throw new HostError(`QEMU failed to start VM ${vm.name} (${ended})${messages ? `:\n${tail(messages)}` : ''}`);
  },
  describe: () => 'qemu',
};

const drivers: Record<DriverName, VmDriver> = { qemu: qemuDriver, libvirt: libvirtDriver };

/** The driver a description asks for: libvirt when it says so, QEMU for `qemu` and `any`. */
export function driverFor(hypervisor: Description['vm']['hypervisor']): VmDriver {
  return hypervisor === 'libvirt' ? libvirtDriver : qemuDriver;
}

/** The driver a deployment record names (records from before drivers say `qemu`). */
export function driverNamed(name: string | undefined): VmDriver {
  return drivers[name as DriverName] ?? qemuDriver;
}

/**
 * Cleanup's first step: every driver whose daemon may own VMs of the job stops them. Without a
 * record the job's driver is unknown, so each such driver looks.
 */
export async function stopOwnedVms(ref: JobRef, log: Logger): Promise<number[]> {
  const candidates = ref.rec ? [driverNamed(ref.rec.driver)] : Object.values(drivers);
  const stopped: number[] = [];
  for (const d of candidates) if (d.stopJob) stopped.push(...await d.stopJob(ref, log));
  return stopped;
}
