/** Status: the VMs on this host, from the state records and /proc. */
import { driverNamed } from './driver.js';
import { isSameProcess } from './proc.js';
import { listJobDirs, readRecord } from './state.js';

export interface VmStatus {
  job: string;
  node: string;
  vm: string;
  index: number;
  /** running: QEMU alive and the guest answered; booting: alive, not yet; dead: the process is gone. */
  state: 'running' | 'booting' | 'dead' | 'failed';
  pid: number | null;
  bootMs: number | null;
  uptimeSec: number | null;
  /** The driver's name (`qemu`, `libvirt`). */
  driver: string;
  /** How the driver knows the VM (`qemu`, `libvirt:<domain>`). */
  handle: string;
  accel: string | null;
  console: string;
  user: string;
}

/** Every VM recorded on this host, optionally for one job and/or node. */
export function listVms(stateDir: string, filter: { job?: string; node?: string } = {}): VmStatus[] {
  const out: VmStatus[] = [];
  for (const dir of listJobDirs(stateDir)) {
    const rec = readRecord(dir);
    if (!rec) continue;
    if (filter.job !== undefined && rec.job !== filter.job) continue;
    if (filter.node !== undefined && rec.node !== filter.node) continue;
    const driver = driverNamed(rec.driver);
    for (const vm of rec.vms) {
      const alive = vm.pid !== undefined && isSameProcess(vm.pid, vm.startTime);
      out.push({
        job: rec.job, node: rec.node, vm: vm.name, index: vm.index,
        state: vm.state === 'failed' ? 'failed' : !alive ? 'dead' : vm.state === 'ready' ? 'running' : 'booting',
        pid: vm.pid ?? null, bootMs: vm.bootMs ?? null,
        uptimeSec: alive && vm.startedAt ? Math.round((Date.now() - Date.parse(vm.startedAt)) / 1000) : null,
        driver: driver.name, handle: driver.describe(vm), accel: rec.accel ?? null, console: vm.consoleLog, user: rec.user,
      });
    }
  }
  return out.sort((a, b) => a.job.localeCompare(b.job) || a.node.localeCompare(b.node) || a.index - b.index);
}

/** A plain-text table, one VM a line. */
export function formatTable(vms: VmStatus[]): string {
  const rows = [['JOB', 'NODE', 'VM', 'STATE', 'PID', 'BOOT', 'UPTIME', 'DRIVER', 'ACCEL', 'CONSOLE']];
  for (const v of vms) {
    rows.push([v.job, v.node, v.vm, v.state, v.pid === null ? '-' : String(v.pid), v.bootMs === null ? '-' : `${(v.bootMs / 1000).toFixed(2)}s`,
      v.uptimeSec === null ? '-' : `${v.uptimeSec}s`, v.handle, v.accel ?? '-', v.console]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}
