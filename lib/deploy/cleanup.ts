/**
 * Cleanup: remove everything one job left on this node, from what is on disk and in /proc alone
 * (never from the description). Idempotent; touches nothing outside the job's directory.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../util/log.js';
import { checkIdent } from '../rm/context.js';
import { stopOwnedVms } from './driver.js';
import { argvOf, isSameProcess, pidsMentioning, startTimeOf, terminate } from './proc.js';
import { QEMU } from './qemu.js';
import { jobDir, readRecord } from './state.js';
import { teardownJobNetwork } from './net.js';
import { sharePids } from './shares.js';

/** A QEMU process started for this job directory (a user's process naming the path does not count). */
function isOurQemu(pid: number, marker: string): boolean {
  const argv = argvOf(pid);
  return argv !== undefined && argv[0] === QEMU && argv.some((a) => a.includes(marker));
}

export interface CleanupResult {
  dir: string;
  /** VM processes stopped (pid list). */
  stopped: number[];
  /** Whether the job directory existed and was removed. */
  removed: boolean;
  /** Network interfaces (bridge, taps) removed. */
  links: string[];
}

export interface CleanupOptions {
  stateDir: string;
  job: string;
  node: string;
  log: Logger;
}

/**
 * Stop the job's VMs (through their driver's daemon, then by pid and start time, or by their argv
 * naming the job directory) and remove its files.
 */
export async function cleanupJob(o: CleanupOptions): Promise<CleanupResult> {
  const dir = jobDir(o.stateDir, checkIdent('job id', o.job), checkIdent('node name', o.node));
  const marker = `${dir}/`;
  const rec = readRecord(dir);
  // VMs that a daemon owns (libvirt's domains) go through it first, so that it forgets them too
  const stopped = await stopOwnedVms({ job: o.job, node: o.node, dir, ...(rec ? { rec } : {}) }, o.log);
  const victims = new Set<number>();
  for (const vm of rec?.vms ?? []) {
    if (vm.pid !== undefined && isSameProcess(vm.pid, vm.startTime)) victims.add(vm.pid);
  }
  // Pid files cover a deployer killed before it wrote its record; the argv scan covers one killed
  // before QEMU wrote its pid file. Both only accept processes whose argv names this job's directory.
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.pid'))) {
      const pid = Number(readFileSync(join(dir, f), 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && isOurQemu(pid, marker)) victims.add(pid);
    }
  }
  for (const pid of pidsMentioning(marker)) if (isOurQemu(pid, marker)) victims.add(pid);
  // virtiofsd ends when its QEMU does, but not if QEMU never came
  for (const pid of sharePids(dir)) victims.add(pid);
  await Promise.all([...victims].map(async (pid) => {
    const before = startTimeOf(pid);
    const how = await terminate(pid);
    if (how !== 'gone' && before !== undefined) {
      stopped.push(pid);
      o.log.info(`stopped pid ${pid} (${how})`);
    }
  }));
  // the taps go once their QEMU has (a tap in use cannot be deleted), then the bridge
  const links = await teardownJobNetwork(dir, o.log);
  if (links.length) o.log.info(`removed ${links.join(' ')}`);
  const removed = existsSync(dir);
  rmSync(dir, { recursive: true, force: true });
  if (removed) o.log.info(`removed ${dir}`);
  return { dir, stopped, removed, links };
}
