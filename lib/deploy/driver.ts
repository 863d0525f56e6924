/**
 * Hypervisor drivers: how one VM is started, found and stopped. Deploy, cleanup and status go
 * through this interface; a description's `<vm hypervisor>` picks the driver (`any` is QEMU's).
 *
 * Both drivers run the same QEMU with the same devices, so what happens once a VM runs is the
 * same for each: readiness is the guest's line on its `org.vse.0` port (lib/guest/ready.ts, on
 * the socket the spec names), exec is SSH to the forwarded port (lib/guest/ssh.ts), and the VM's
 * process is known by pid and start time (proc.ts), which status and cleanup check.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Description } from '../descriptor/model.js';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
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

async function readPid(pidFile: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0) return pid;
    }
    await sleep(10);
  }
  throw new HostError(`QEMU wrote no pid to ${pidFile}`);
}

/** QEMU started directly: `-daemonize`, `-runas`, its pid file. */
export const qemuDriver: VmDriver = {
  name: 'qemu',
  async start(vm, log, lastTry) {
    const r = await run([QEMU, ...qemuArgs(vm)], { log, timeoutMs: 60_000, allowFailure: !lastTry });
    if (r.exitCode !== 0) {
      if (PORT_TAKEN.test(r.stderr)) return 'portTaken';
      throw new HostError(`QEMU failed to start VM ${vm.name}: ${r.stderr.trim()}`);
    }
    const pid = await readPid(vm.pidFile);
    return { pid, startTime: startTimeOf(pid) };
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
