/** Deploy: boot a configuration's VMs on this node for one job, wait until each answers, record all. */
import { existsSync } from 'node:fs';
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
import { driverFor } from './driver.js';
import { bootId, isSameProcess, startTimeOf } from './proc.js';
import { MGMT_MAC, jobNetMac } from './qemu.js';
import { type DeploymentRecord, type VmRecord, jobDir, makeJobDir, vmName, writeRecord } from './state.js';
import { JOB_PREFIX_LEN, type JobNetwork, createJobNetwork, jobAddress, raiseJobNetwork } from './net.js';
import { waitReady } from '../guest/ready.js';
import { makeHostKey, makeJobKey } from '../guest/ssh.js';
import { mountsParam, startShares } from './shares.js';

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

/** A TCP port on loopback that nothing listens on right now (QEMU may still lose a race for it: deploy retries). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new HostError('no free port'))));
    });
  });
}

/** The user QEMU runs as: the job's own (so each job's VMs are apart from every other job's), or the site's fixed one. */
export function qemuRunAs(site: SiteConfig, ctx: JobContext): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return site.qemuUser === 'job' ? (ctx.uid === 0 ? 'nobody' : ctx.user) : site.qemuUser;
}

/** The kernel command line of one VM: what lib/guest/setup.sh reads. */
export function guestCmdline(base: string, o: { vm: VmRecord; ctx: JobContext; keyBlob: string; net?: JobNetwork; all: VmRecord[] }): string {
  const parts = [base, `vse.hostname=${o.vm.name}`, `vse.user=${o.ctx.user}:${o.ctx.uid}:${o.ctx.gid}`, `vse.key=${o.keyBlob}`, `vse.mgmt=${MGMT_MAC}`];
  if (o.net && o.vm.address && o.vm.mac) {
    parts.push(`vse.net=${o.vm.mac},${o.vm.address}/${JOB_PREFIX_LEN}`, `vse.hosts=${o.all.map((v) => `${v.name}=${v.address ?? ''}`).join(',')}`);
  }
  return parts.join(' ');
}

/** Like Promise.all, but every promise settles first (nothing still starts while a failure is cleaned up). */
async function allOrFirstError<T extends readonly unknown[]>(ps: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const r = await Promise.allSettled(ps);
  const failed = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw failed.reason;
  return r.map((x) => (x as PromiseFulfilledResult<unknown>).value) as unknown as T;
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
  const driver = driverFor(d.vm.hypervisor);
  const rec: DeploymentRecord = {
    version: 1, job: ctx.jobId, node: ctx.node, uid: ctx.uid, gid: ctx.gid, user: ctx.user, scheduler: ctx.scheduler,
    dir, state: 'deploying', createdAt: new Date().toISOString(),
    description: { name: d.name, file: ctx.descriptionFile }, driver: driver.name, vms: [],
    bootId: bootId(),
    // without a scheduler the job lives as long as the process that deployed it (vse run): gc checks it
    ...(ctx.scheduler === 'local' ? { owner: { pid: process.pid, startTime: startTimeOf(process.pid) } } : {}),
  };
  writeRecord(rec);
  // Record writes are serialised so that parallel VM starts never lose each other's updates.
  let writes = Promise.resolve();
  const save = (): Promise<void> => (writes = writes.then(() => writeRecord(rec)));
  // host-side work started in parallel: all of it settles before a failed deploy cleans up
  const pending: Promise<unknown>[] = [];
  try {
    const config = await ensureConfiguration(d, { site, log, builder: builderFor(ctx.uid, ctx.gid, ctx.user) });
    rec.configuration = { key: config.key, dir: config.dir, kernelPackage: config.kernelPackage };
    const accel = await chooseAccel(site.accel, config.kernel, site.stateDir, log);
    rec.accel = accel.accel;
    rec.accelReason = accel.reason;
    log.info(`accel ${accel.accel} (${accel.reason})`);
    const privateNet = d.resources.network.mode === 'private';
    rec.vms = Array.from({ length: d.vm.perNode }, (_, index) => ({
      index, name: vmName(ctx.jobId, ctx.node, index), state: 'starting' as const, memoryMiB: d.vm.memoryMiB, vcpus: d.vm.vcpus,
      ...(config.disk !== undefined ? { overlay: join(dir, `vm${index}.qcow2`) } : {}), qmpSocket: join(dir, `vm${index}.qmp`), channelSocket: join(dir, `vm${index}.chan`),
      consoleLog: join(dir, `vm${index}.console.log`), pidFile: join(dir, `vm${index}.pid`),
      ...(privateNet ? { mac: jobNetMac(index), address: jobAddress(index) } : {}),
    }));
    await save();
    // What the VMs need from the host is made at once, side by side: the job's key, its network, and
    // (below) each VM's overlay, host key and shares. Each VM waits for what it uses; a failure of a
    // shared part fails every VM, and the first failure is the one reported.
    const keyReady = makeJobKey(dir, ctx.uid, ctx.gid).then((key) => {
      rec.keyFile = key.file;
      return key;
    });
    const netReady = (privateNet ? createJobNetwork(dir, rec.vms.length, log) : Promise.resolve(undefined)).then(async (net) => {
      if (net) {
        rec.network = net;
        rec.vms.forEach((vm, i) => (vm.tap = net.taps[i]));
        await save();
      }
      return net;
    });
    // the taps join the bridge and go up while the VMs start: a VM is ready only once that is done
    const netUp = netReady.then((net) => (net ? raiseJobNetwork(net, log) : undefined));
    // handled here, so that a failure before a VM awaits it is not an unhandled rejection
    pending.push(keyReady.catch(() => undefined), netReady.catch(() => undefined), netUp.catch(() => undefined));
    const runAs = qemuRunAs(site, ctx);
    // Every start settles before the outcome counts: a failure must not race a sibling still starting.
    let aborted: string | undefined;
    let firstFailure: unknown;
    const starts = await Promise.allSettled(rec.vms.map(async (vm) => {
      o.events?.vmStarting?.(vm);
      const started = Date.now();
      const hostKeyFile = join(dir, `vm${vm.index}.hostkey`);
      const [, hostKey, shares] = await allOrFirstError([
        config.disk !== undefined && vm.overlay !== undefined ? run([QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', config.disk, vm.overlay], { log }) : Promise.resolve(undefined),
        makeHostKey(hostKeyFile),
        startShares({ dir, index: vm.index, uid: ctx.uid, gid: ctx.gid, mounts: d.resources.mounts, log }),
      ] as const);
      vm.shares = shares;
      await save();
      const [key, net] = await Promise.all([keyReady, netReady]);
      const mounts = mountsParam(vm.shares);
      const cmdline = guestCmdline(config.cmdline, { vm, ctx, keyBlob: key.publicBlob, net, all: rec.vms }) + (mounts ? ` ${mounts}` : '');
      // the forwarded SSH port is picked free, but another process may take it first: QEMU then
      // fails at once, and we try another
      for (let attempt = 1; ; attempt++) {
        vm.sshPort = await freePort();
        const r = await driver.start({
          name: vm.name, accel: accel.accel, tcgCacheMiB: site.tcgCacheMiB, memoryMiB: vm.memoryMiB, vcpus: vm.vcpus, kernel: config.kernel, initrd: config.initrd,
          cmdline, overlay: vm.overlay, qmpSocket: vm.qmpSocket,
          channelSocket: vm.channelSocket, consoleLog: vm.consoleLog, pidFile: vm.pidFile, qemuLog: join(dir, `vm${vm.index}.qemu.log`),
          runAs, sandbox: true,
          mgmt: { mac: MGMT_MAC, sshPort: vm.sshPort },
          shares: vm.shares,
          hostKeyFile,
          ...(net && vm.mac ? { jobNet: { mac: vm.mac, tap: vm.tap, mcast: net.mcast } } : {}),
          ...(d.os.base === 'debian' ? { agentSocket: join(dir, `vm${vm.index}.qga`) } : {}),
        }, log, attempt >= 3);
        if (r !== 'portTaken') {
          vm.pid = r.pid;
          vm.startTime = r.startTime;
          break;
        }
        log.warn(`port ${vm.sshPort} was taken before QEMU got it; trying another`);
      }
      vm.startedAt = new Date(started).toISOString();
      await save();
      const pid = vm.pid as number;
      const startTime = vm.startTime;
      const [ready] = await Promise.all([waitReady({
        name: vm.name, channelSocket: vm.channelSocket, consoleLog: vm.consoleLog, timeoutMs: site.bootTimeoutSec * 1000,
        check: () => aborted ?? (isSameProcess(pid, startTime) ? undefined : `QEMU (pid ${pid}) exited during boot`),
      }), netUp]);
      // a guest that could not read the key it was given made its own and announced it (on a port only QEMU writes)
      vm.hostKey = ready.hostKey ?? hostKey;
      vm.state = 'ready';
      vm.bootMs = Date.now() - started;
      await save();
      log.info(`${vm.name} ready in ${(vm.bootMs / 1000).toFixed(2)} s (pid ${pid}, ${accel.accel})`);
      o.events?.vmReady?.(vm);
    }).map((p, i) => p.catch((err: unknown) => {
      // the first failure is the cause; siblings it aborted fail after it and are not reported
      if (aborted === undefined) {
        aborted = `deploy aborted: VM ${i} failed`;
        firstFailure = err;
      }
      throw err;
    })));
    if (starts.some((s) => s.status === 'rejected')) throw firstFailure;
    rec.state = 'ready';
    await save();
    return rec;
  } catch (err) {
    rec.state = 'failed';
    rec.error = err instanceof Error ? err.message : String(err);
    await Promise.allSettled(pending);
    await writes.catch(() => undefined);
    log.error(`deploy of job ${ctx.jobId} on ${ctx.node} failed; removing what was started`);
    await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log });
    throw err;
  }
}
