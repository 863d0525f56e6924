/**
 * Build VMs: a configuration's disk (an overlay the caller made) booted under QEMU in the
 * foreground, so that work can be done inside the guest and the changed disk kept once the guest
 * has powered off cleanly. Nothing of that work runs on the host.
 *
 * Online build steps use it with the guest's own init: the guest boots, each step runs inside it
 * through the guest agent, and the guest powers off. offline-vm.ts boots the same way with an init
 * of its own for the files and offline steps of a Debian child.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Description } from '../descriptor/model.js';
import { chooseAccel } from '../deploy/accel.js';
import { QEMU, qemuArgs } from '../deploy/qemu.js';
import { GuestAgent } from '../guest/qga.js';
import { waitReady } from '../guest/ready.js';
import type { SiteConfig } from '../site/config.js';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { tail } from '../util/run.js';

export interface BuildVmOptions {
  /** The disk to boot and change (an overlay the caller made). */
  disk: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** A directory for the VM's sockets and console log. */
  work: string;
  memoryMiB: number;
  site: SiteConfig;
  log: Logger;
  /** Give the VM a guest agent socket (work/qga). */
  agent?: boolean;
  /** More QEMU arguments (extra drives). */
  extraArgs?: string[];
}

export interface BuildVm {
  name: string;
  /** The console log (the guest's serial port). */
  consoleLog: string;
  /** Resolves once QEMU has exited. */
  ended: Promise<void>;
  exited(): boolean;
  /** The end of QEMU's standard error. */
  stderr(): string;
  /** Wait for QEMU to exit on its own; past `ms` it is killed, and the answer is false. */
  waitExit(ms: number): Promise<boolean>;
  /** Kill QEMU if it still runs, and wait for it. */
  stop(): Promise<void>;
}

export const BUILD_VM_NAME = 'vse-build';

/** Start a build VM (QEMU in the foreground, a child of this process, unprivileged when we are root). */
export async function startBuildVm(o: BuildVmOptions): Promise<BuildVm> {
  const name = BUILD_VM_NAME;
  const f = (n: string): string => join(o.work, n);
  const { accel } = await chooseAccel(o.site.accel, o.kernel, o.site.stateDir, o.log);
  const args = qemuArgs({
    name, accel, tcgCacheMiB: o.site.tcgCacheMiB, memoryMiB: o.memoryMiB, vcpus: 1, kernel: o.kernel, initrd: o.initrd, cmdline: o.cmdline,
    overlay: o.disk, qmpSocket: f('qmp'), channelSocket: f('chan'), consoleLog: f('console.log'), pidFile: f('pid'),
    ...(o.agent ? { agentSocket: f('qga') } : {}), sandbox: true, runAs: process.getuid?.() === 0 ? (o.site.qemuUser === 'job' ? 'nobody' : o.site.qemuUser) : undefined,
  });
  o.log.info(`build VM: booting ${o.disk}`);
  const vm = spawn(QEMU, [...args, ...(o.extraArgs ?? [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  vm.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  let exited = false;
  const ended = new Promise<void>((resolve) => vm.once('exit', () => {
    exited = true;
    resolve();
  }));
  const waitExit = async (ms: number): Promise<boolean> => {
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      vm.kill('SIGKILL');
    }, ms);
    await ended;
    clearTimeout(timer);
    return !killed;
  };
  return {
    name, consoleLog: f('console.log'), ended, exited: () => exited, stderr: () => stderr, waitExit,
    stop: async () => {
      if (!exited) {
        vm.kill('SIGKILL');
        await ended;
      }
    },
  };
}

export interface OnlineBuild extends Omit<BuildVmOptions, 'agent' | 'extraArgs'> {
  steps: Description['build'];
  progress?: (line: string) => void;
}

const POWEROFF_MS = 120_000;

/** Boot, run the steps inside, power off. Returns the steps' output for the build log. */
export async function runOnlineSteps(o: OnlineBuild): Promise<string> {
  const vm = await startBuildVm({ ...o, cmdline: `${o.cmdline} vse.hostname=${BUILD_VM_NAME}`, agent: true });
  let agent: GuestAgent | undefined;
  let out = '';
  try {
    await waitReady({ name: vm.name, channelSocket: join(o.work, 'chan'), consoleLog: vm.consoleLog, timeoutMs: o.site.bootTimeoutSec * 1000, check: () => (vm.exited() ? `QEMU exited: ${tail(vm.stderr(), 5)}` : undefined) });
    agent = await GuestAgent.open(join(o.work, 'qga'), 120_000);
    for (const s of o.steps) {
      o.progress?.(`online step ${s.name}`);
      const started = Date.now();
      const argv = s.workdir ? ['/bin/sh', '-c', `cd "$1" && exec /bin/sh -c "$2"`, 'vse-step', s.workdir, s.run] : ['/bin/sh', '-c', s.run];
      const r = await agent.exec(argv, { env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'DEBIAN_FRONTEND=noninteractive'] });
      const text = `${r.stdout}${r.stderr}`;
      out += `--- step ${s.name} (online, exit ${r.exitCode ?? `signal ${r.signal}`}, ${Date.now() - started} ms)\n${text}${text.endsWith('\n') || !text ? '' : '\n'}`;
      if (r.exitCode !== 0) throw new UserError(`build step "${s.name}" failed in the guest (${r.exitCode === null ? `signal ${r.signal}` : `exit ${r.exitCode}`}):\n${tail(text, 20) || '(no output)'}`);
    }
    // a clean power-off, so that everything the steps wrote is on the disk
    agent.request('guest-exec', { path: '/bin/systemctl', arg: ['poweroff'] }).catch(() => undefined);
    if (!(await vm.waitExit(POWEROFF_MS))) throw new HostError(`the build VM did not power off within ${POWEROFF_MS / 1000} s; its disk is not kept`);
    return out;
  } finally {
    agent?.close();
    await vm.stop();
  }
}
