/**
 * `vse doctor`: what this host can do, checked by trying where it matters: the accelerator (KVM
 * is used only when a probe boot works, TCG otherwise), the tools deploy and the builders run,
 * the kernel features they need (tun, user namespaces), the site's directories, libvirt.
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import type { SiteConfig } from '../site/config.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import { chooseAccel } from './accel.js';
import { QEMU } from './qemu.js';
import { USERNS, VIRTIOFSD } from './shares.js';

export interface Check {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
}

function tool(name: string, path: string, needed: string, required = true): Check {
  let ok = false;
  try {
    accessSync(path, constants.X_OK);
    ok = true;
  } catch {
    // missing
  }
  return { name, status: ok ? 'ok' : required ? 'fail' : 'warn', detail: ok ? path : `${path} is missing: ${needed}` };
}

export async function runDoctor(site: SiteConfig, log: Logger): Promise<Check[]> {
  const { TASK_BINARY, DROPBEAR } = await import('../configure/guest-files.js');
  const checks: Check[] = [
    { name: 'site config', status: 'ok', detail: site.sources.join(', ') || 'built-in defaults' },
    tool('qemu', QEMU, 'apt-get install qemu-system-x86'),
    tool('qemu-img', '/usr/bin/qemu-img', 'apt-get install qemu-utils'),
    tool('virtiofsd', VIRTIOFSD, 'host directories in guests (<mount>) need it: apt-get install qemu-system-x86', false),
    tool('dropbear', DROPBEAR, 'the minimal guest\'s SSH server: make build builds it from Debian\'s source'),
    tool('vse-task', TASK_BINARY, 'make build compiles it'),
    tool('vse-userns', USERNS, 'make build compiles it', false),
    tool('ip', '/usr/sbin/ip', 'the job network: apt-get install iproute2'),
    tool('bwrap', '/usr/bin/bwrap', 'offline build steps on the minimal base: apt-get install bubblewrap', false),
    tool('mmdebstrap', '/usr/bin/mmdebstrap', 'the Debian base: apt-get install mmdebstrap', false),
  ];
  checks.push(existsSync('/dev/net/tun')
    ? { name: 'tun', status: 'ok', detail: '/dev/net/tun (job networks: a bridge and a tap per VM)' }
    : { name: 'tun', status: 'warn', detail: '/dev/net/tun is missing: jobs get no private network bridge (modprobe tun)' });
  let userns = 0;
  try {
    userns = Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim());
  } catch {
    // old kernel
  }
  checks.push({ name: 'user namespaces', status: userns > 0 ? 'ok' : 'warn', detail: userns > 0 ? `up to ${userns}` : 'disabled: no Debian builds, no shares' });
  const subuid = existsSync('/etc/subuid') && /^root:/m.test(readFileSync('/etc/subuid', 'utf8'));
  checks.push({ name: 'subordinate ids', status: subuid ? 'ok' : 'warn', detail: subuid ? 'root has a range in /etc/subuid (Debian builds)' : 'root has no range in /etc/subuid: Debian builds fail (make setup adds one)' });
  for (const [name, dir] of [['state dir', site.stateDir], ['cache dir', site.cacheDir], ['log dir', site.logDir]] as const) {
    let w = false;
    try {
      accessSync(existsSync(dir) ? dir : '/', constants.W_OK);
      w = true;
    } catch {
      // not writable
    }
    checks.push({ name, status: w ? 'ok' : 'warn', detail: `${dir}${w ? '' : ' (not writable by you: the prolog runs as root)'}` });
  }
  // the accelerator: by trying, with the minimal guest's kernel (built or fetched once per host)
  try {
    const { ensureMinimalGuest } = await import('../configure/minimal.js');
    const guest = await ensureMinimalGuest({ cacheDir: site.cacheDir, kernelPackage: site.kernelPackage, log });
    const a = await chooseAccel(site.accel, guest.kernel, site.stateDir, log);
    checks.push({ name: 'accelerator', status: a.accel === 'kvm' ? 'ok' : 'warn', detail: `${a.accel}: ${a.reason}` });
  } catch (err) {
    checks.push({ name: 'accelerator', status: 'fail', detail: `cannot probe: ${(err as Error).message.split('\n')[0]}` });
  }
  if (site.allowedHypervisors.includes('libvirt')) {
    const r = await run(['virsh', '-c', 'qemu:///system', 'version'], { log, allowFailure: true, timeoutMs: 15_000 }).catch(() => undefined);
    const ok = r !== undefined && r.exitCode === 0;
    checks.push({ name: 'libvirt', status: ok ? 'ok' : 'warn', detail: ok ? (r.stdout.split('\n').find((l) => l.includes('hypervisor')) ?? 'qemu:///system answers').trim() : 'qemu:///system does not answer: descriptions with hypervisor="libvirt" fail here (start libvirtd, or drop libvirt from allowedHypervisors)' });
  }
  return checks;
}

export function formatChecks(checks: Check[]): string {
  const w = Math.max(...checks.map((c) => c.name.length));
  return checks.map((c) => `${c.status.toUpperCase().padEnd(4)}  ${c.name.padEnd(w)}  ${c.detail}`).join('\n');
}
