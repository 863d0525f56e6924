/** Deploy: boot a configuration's VMs on this node for one job, wait until each answers, record all. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureConfiguration } from '../configure/create.js';
import { builderFor } from '../configure/stage.js';
import type { Description } from '../descriptor/model.js';
import type { JobContext } from '../rm/context.js';
import type { SiteConfig } from '../site/config.js';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import { chooseAccel } from './accel.js';
import { cleanupJob } from './cleanup.js';
import { isSameProcess, sleep, startTimeOf } from './proc.js';
import { QEMU, qemuArgs } from './qemu.js';
import { type DeploymentRecord, type VmRecord, jobDir, makeJobDir, writeRecord } from './state.js';
import { waitReady } from '../guest/ready.js';

export interface DeployEvents {
  vmStarting?(vm: VmRecord): void;
  vmReady?(vm: VmRecord): void;
}

export interface DeployOptions {
  ctx: JobContext;
  description: Description;
  site: SiteConfig;
  log: Logger;
  events?: DeployEvents;
}

const QEMU_IMG = '/usr/bin/qemu-img';

/** VM names are `<job>-<node>-<index>`: unique on the host and usable as a guest hostname. */
export function vmName(ctx: JobContext, index: number): string {
  return `${ctx.jobId}-${ctx.node}-${index}`.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63);
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

/** Boot every VM the description asks for on this node; on failure nothing of the job is left. */
export async function deploy(o: DeployOptions): Promise<DeploymentRecord> {
  const { ctx, description: d, site, log } = o;
  const dir = jobDir(site.stateDir, ctx.jobId, ctx.node);
  if (existsSync(dir)) {
    log.warn(`${dir} exists (a retried prolog?); cleaning it up first`);
    await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log });
  }
  makeJobDir(dir, ctx.gid);
  const rec: DeploymentRecord = {
    version: 1, job: ctx.jobId, node: ctx.node, uid: ctx.uid, gid: ctx.gid, user: ctx.user, scheduler: ctx.scheduler,
    dir, state: 'deploying', createdAt: new Date().toISOString(),
    description: { name: d.name, file: ctx.descriptionFile }, driver: 'qemu', vms: [],
  };
  writeRecord(rec);
  // Record writes are serialised so that parallel VM starts never lose each other's updates.
  let writes = Promise.resolve();
  const save = (): Promise<void> => (writes = writes.then(() => writeRecord(rec)));
  try {
    const config = await ensureConfiguration(d, { site, log, builder: builderFor(ctx.uid, ctx.gid, ctx.user) });
    rec.configuration = { key: config.key, dir: config.dir, kernelPackage: config.kernelPackage };
    const accel = await chooseAccel(site.accel, config.kernel, site.stateDir, log);
    rec.accel = accel.accel;
    rec.accelReason = accel.reason;
    log.info(`accel ${accel.accel} (${accel.reason})`);
    const asRoot = process.getuid?.() === 0;
    rec.vms = Array.from({ length: d.vm.perNode }, (_, index) => ({
      index, name: vmName(ctx, index), state: 'starting' as const, memoryMiB: d.vm.memoryMiB, vcpus: d.vm.vcpus,
      overlay: join(dir, `vm${index}.qcow2`), qmpSocket: join(dir, `vm${index}.qmp`), channelSocket: join(dir, `vm${index}.chan`),
      consoleLog: join(dir, `vm${index}.console.log`), pidFile: join(dir, `vm${index}.pid`),
    }));
    await save();
    // Every start settles before the outcome counts: a failure must not race a sibling still starting.
    let aborted: string | undefined;
    const starts = await Promise.allSettled(rec.vms.map(async (vm) => {
      o.events?.vmStarting?.(vm);
      await run([QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', config.disk, vm.overlay], { log });
      const started = Date.now();
      await run([QEMU, ...qemuArgs({
        name: vm.name, accel: accel.accel, memoryMiB: vm.memoryMiB, vcpus: vm.vcpus, kernel: config.kernel, initrd: config.initrd,
        cmdline: `${config.cmdline} vse.hostname=${vm.name}`, overlay: vm.overlay, qmpSocket: vm.qmpSocket,
        channelSocket: vm.channelSocket, consoleLog: vm.consoleLog, pidFile: vm.pidFile,
        runAs: asRoot ? site.qemuUser : undefined, sandbox: true,
        ...(d.os.base === 'debian' ? { agentSocket: join(dir, `vm${vm.index}.qga`) } : {}),
      })], { log, timeoutMs: 60_000 });
      vm.pid = await readPid(vm.pidFile);
      vm.startTime = startTimeOf(vm.pid);
      vm.startedAt = new Date(started).toISOString();
      await save();
      const pid = vm.pid;
      const startTime = vm.startTime;
      await waitReady({
        name: vm.name, channelSocket: vm.channelSocket, consoleLog: vm.consoleLog, timeoutMs: site.bootTimeoutSec * 1000,
        check: () => aborted ?? (isSameProcess(pid, startTime) ? undefined : `QEMU (pid ${pid}) exited during boot`),
      });
      vm.state = 'ready';
      vm.bootMs = Date.now() - started;
      await save();
      log.info(`${vm.name} ready in ${(vm.bootMs / 1000).toFixed(2)} s (pid ${pid}, ${accel.accel})`);
      o.events?.vmReady?.(vm);
    }).map((p, i) => p.catch((err: unknown) => {
      aborted ??= `deploy aborted: VM ${i} failed`;
      throw err;
    })));
    const failed = starts.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    rec.state = 'ready';
    await save();
    return rec;
  } catch (err) {
    rec.state = 'failed';
    rec.error = err instanceof Error ? err.message : String(err);
    await writes.catch(() => undefined);
    log.error(`deploy of job ${ctx.jobId} on ${ctx.node} failed; removing what was started`);
    await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log });
    throw err;
  }
}
