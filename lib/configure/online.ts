/**
 * Online build steps: the configuration's disk is booted in a VM, each step runs inside the guest
 * (through the guest agent), the guest powers off cleanly, and the changed disk becomes the new
 * configuration's disk. Nothing of it runs on the host.
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

export interface OnlineBuild {
  /** The disk to boot and change (an overlay the caller made). */
  disk: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** A directory for the VM's sockets and console log. */
  work: string;
  steps: Description['build'];
  memoryMiB: number;
  site: SiteConfig;
  log: Logger;
  progress?: (line: string) => void;
}

const POWEROFF_MS = 120_000;

/** Boot, run the steps inside, power off. Returns the steps' output for the build log. */
export async function runOnlineSteps(o: OnlineBuild): Promise<string> {
  const name = 'vse-build';
  const f = (n: string): string => join(o.work, n);
  const { accel } = await chooseAccel(o.site.accel, o.kernel, o.site.stateDir, o.log);
  const args = qemuArgs({
    name, accel, memoryMiB: o.memoryMiB, vcpus: 1, kernel: o.kernel, initrd: o.initrd, cmdline: `${o.cmdline} vse.hostname=${name}`,
    overlay: o.disk, qmpSocket: f('qmp'), channelSocket: f('chan'), consoleLog: f('console.log'), pidFile: f('pid'),
    agentSocket: f('qga'), foreground: true, sandbox: true, runAs: process.getuid?.() === 0 ? (o.site.qemuUser === 'job' ? 'nobody' : o.site.qemuUser) : undefined,
  });
  o.log.info(`online build: booting ${o.disk}`);
  const vm = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  vm.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  let exited = false;
  const ended = new Promise<void>((resolve) => vm.once('exit', () => {
    exited = true;
    resolve();
  }));
  let agent: GuestAgent | undefined;
  let out = '';
  try {
    await waitReady({ name, channelSocket: f('chan'), consoleLog: f('console.log'), timeoutMs: o.site.bootTimeoutSec * 1000, check: () => (exited ? `QEMU exited: ${tail(stderr, 5)}` : undefined) });
    agent = await GuestAgent.open(f('qga'), 120_000);
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
    const timer = setTimeout(() => vm.kill('SIGKILL'), POWEROFF_MS);
    await ended;
    clearTimeout(timer);
    if (vm.signalCode === 'SIGKILL') throw new HostError(`the build VM did not power off within ${POWEROFF_MS / 1000} s; its disk is not kept`);
    return out;
  } finally {
    agent?.close();
    if (!exited) {
      vm.kill('SIGKILL');
      await ended;
    }
  }
}
