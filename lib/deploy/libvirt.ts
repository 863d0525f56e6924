/**
 * The libvirt driver: each VM is a transient domain `vse-<vm name>` of the system daemon
 * (`virsh -c qemu:///system create FILE`), with the devices QEMU's own driver gives it: direct
 * kernel boot with the same command line, the qcow2 overlay on virtio (bases with a disk), the
 * memory balloon for free page reporting, the serial console to the
 * console log, the `org.vse.0` port on the same socket, the management NIC with the guest's SSH
 * port on loopback, and the job's NIC on the job's tap.
 *
 * - The management NIC is QEMU's user-mode network passed through (`<qemu:commandline>`), as the
 *   QEMU driver has it: isolated (restrict=on) with one forwarded port. libvirt 9.0 forwards ports
 *   only with its passt backend, which gives the guest the host's outbound network.
 * - The job's NIC is the tap net.ts made on the job's bridge (`<interface type='ethernet'>`,
 *   `managed='no'`): libvirt opens it and hands it to QEMU. A tap libvirt made itself would carry
 *   an IPv6 link-local address, so the host would be on the job's network.
 * - QEMU runs as the user the QEMU driver would drop to, with the job directory's group, from its
 *   start (a static DAC label, relabel='no': libvirt changes no file's owner, not the shared
 *   guest cache's either). The overlay is that user's; the rest QEMU gets from libvirt as file
 *   descriptors (sockets, console) or reads (kernel, initrd, base disk: world-readable cache).
 */
import { chmodSync, chownSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as Fxp from 'fast-xml-parser';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import type { JobRef, StartedVm, VmDriver, VmSpec } from './driver.js';
import { argvOf, isAlive, startTimeOf } from './proc.js';
import { PORT_TAKEN, QEMU, mgmtArgs } from './qemu.js';
import { vmNamePrefix } from './state.js';

export const VIRSH = '/usr/bin/virsh';
export const LIBVIRT_URI = 'qemu:///system';
/** Where the system daemon's QEMU driver keeps a running domain's pid file. */
const LIBVIRT_QEMU_RUN = '/run/libvirt/qemu';
/** The sockets of a running system daemon: libvirtd, or the modular virtqemud. */
const LIBVIRT_SOCKETS = ['/run/libvirt/libvirt-sock', '/run/libvirt/virtqemud-sock'];
/** The management NIC's PCI slot: the last one of the pc machine's bus, which libvirt fills from the first. */
const MGMT_PCI = ',bus=pci.0,addr=0x1f';

/** The libvirt domain of a VM. */
export function domainName(vmName: string): string {
  return `vse-${vmName}`;
}

/** The start of the names of a job's domains on one node. */
export function jobDomainPrefix(job: string, node: string): string {
  return domainName(vmNamePrefix(job, node)).slice(0, 4 + 63);
}

/** The uid and gid QEMU runs as. */
export interface DacLabel {
  uid: number;
  gid: number;
}

/** An element in fast-xml-parser's form: `@_name` attributes, `#text`, children by name (arrays when repeated). */
export type XmlData = { [name: string]: string | XmlData | XmlData[] };

const el = (attrs: Record<string, string>, children: XmlData = {}): XmlData =>
  ({ ...Object.fromEntries(Object.entries(attrs).map(([k, v]) => [`@_${k}`, v])), ...children });

/** The domain of one VM, as data (rendered by renderXml). */
export function domainXml(vm: VmSpec, label: DacLabel): XmlData {
  const kvm = vm.accel === 'kvm';
  if (vm.shares?.length) throw new UserError('host directories (<resources><mount>) are shared by the qemu driver only; hint: <vm hypervisor="qemu"/> (or any)');
  const channel = (path: string, name: string): XmlData =>
    el({ type: 'unix' }, { source: el({ mode: 'bind', path }), target: el({ type: 'virtio', name }) });
  const interfaces: XmlData[] = [];
  if (vm.jobNet) {
    if (vm.jobNet.tap === undefined) throw new Error('domainXml: the job network needs its tap (libvirt runs as root: no multicast)');
    interfaces.push(el({ type: 'ethernet' }, {
      target: el({ dev: vm.jobNet.tap, managed: 'no' }), mac: el({ address: vm.jobNet.mac }), model: el({ type: 'virtio' }), rom: el({ enabled: 'no' }),
    }));
  }
  return {
    domain: el({ type: kvm ? 'kvm' : 'qemu', 'xmlns:qemu': 'http://libvirt.org/schemas/domain/qemu/1.0' }, {
      name: domainName(vm.name),
      memory: el({ unit: 'MiB' }, { '#text': String(vm.memoryMiB) }),
      vcpu: String(vm.vcpus),
      os: {
        type: el({ arch: 'x86_64', machine: 'pc' }, { '#text': 'hvm' }),
        kernel: vm.kernel,
        initrd: vm.initrd,
        cmdline: vm.cmdline,
      },
      features: { acpi: '', ...(!kvm && vm.tcgCacheMiB !== undefined ? { tcg: { 'tb-cache': el({ unit: 'MiB' }, { '#text': String(vm.tcgCacheMiB) }) } } : {}) },
      ...(kvm ? { cpu: el({ mode: 'host-passthrough' }) } : {}),
      // a reboot or crash ends the VM, as -no-reboot does
      on_poweroff: 'destroy',
      on_reboot: 'destroy',
      on_crash: 'destroy',
      devices: {
        emulator: QEMU,
        ...(vm.overlay !== undefined ? {
          disk: el({ type: 'file', device: 'disk' }, {
            driver: el({ name: 'qemu', type: 'qcow2', cache: 'writeback', discard: 'unmap' }),
            source: el({ file: vm.overlay }),
            target: el({ dev: 'vda', bus: 'virtio' }),
          }),
        } : {}),
        ...(interfaces.length ? { interface: interfaces } : {}),
        serial: el({ type: 'file' }, { source: el({ path: vm.consoleLog, append: 'on' }) }),
        channel: [
          channel(vm.channelSocket, 'org.vse.0'),
          ...(vm.agentSocket !== undefined ? [channel(vm.agentSocket, 'org.qemu.guest_agent.0')] : []),
        ],
        controller: el({ type: 'usb', model: 'none' }),
        // free page reporting only, as QEMU's driver has it (qemu.ts BALLOON)
        memballoon: el({ model: 'virtio', freePageReporting: 'on' }),
        // the guest's random pool seeded at boot (qemu.ts RNG)
        rng: el({ model: 'virtio' }, { backend: el({ model: 'random' }, { '#text': '/dev/urandom' }) }),
      },
      seclabel: el({ type: 'static', model: 'dac', relabel: 'no' }, { label: `+${label.uid}:+${label.gid}` }),
      ...(vm.mgmt ? { 'qemu:commandline': { 'qemu:arg': mgmtArgs(vm.mgmt, MGMT_PCI).map((value) => el({ value })) } } : {}),
    }),
  };
}

type Fxp = typeof Fxp;
let fxp: Fxp | undefined;
const xmlOptions = { ignoreAttributes: false, attributeNamePrefix: '@_' } as const;

/** XML text of data in domainXml's form. */
export function renderXml(data: XmlData): string {
  fxp ??= createRequire(import.meta.url)('fast-xml-parser') as Fxp;
  return new fxp.XMLBuilder({ ...xmlOptions, format: true, suppressEmptyNode: true }).build(data) as string;
}

/** Every virsh command of the driver. */
export type VirshCommand =
  | { op: 'create'; file: string }
  | { op: 'list' }
  | { op: 'xml'; domain: string }
  | { op: 'destroy'; domain: string; graceful: boolean };

/** The command line of a virsh command, as data: always against the system daemon. */
export function virshArgs(c: VirshCommand): string[] {
  const base = [VIRSH, '--quiet', '--connect', LIBVIRT_URI];
  switch (c.op) {
    case 'create': return [...base, 'create', c.file];
    case 'list': return [...base, 'list', '--name'];
    case 'xml': return [...base, 'dumpxml', c.domain];
    case 'destroy': return [...base, 'destroy', ...(c.graceful ? ['--graceful'] : []), c.domain];
  }
}

async function uidOf(user: string, log: Logger): Promise<number> {
  const r = await run(['/usr/bin/id', '-u', user], { log, allowFailure: true });
  const uid = Number(r.stdout.trim());
  if (r.exitCode !== 0 || !Number.isInteger(uid)) throw new HostError(`the user QEMU runs as, ${user}, does not exist: ${r.stderr.trim()}`);
  return uid;
}

/** The QEMU process of a running domain (libvirt's pid file, checked against the process's argv). */
function domainPid(domain: string): number {
  const file = join(LIBVIRT_QEMU_RUN, `${domain}.pid`);
  const pid = Number(existsSync(file) ? readFileSync(file, 'utf8').trim() : NaN);
  if (!Number.isInteger(pid) || pid <= 0 || !argvOf(pid)?.some((a) => a.startsWith(`guest=${domain},`))) {
    throw new HostError(`libvirt started ${domain} but its QEMU process is not in ${file}`);
  }
  return pid;
}

const notFound = (stderr: string): boolean => /failed to get domain|domain not found|domain is not running/i.test(stderr);

/** Destroy one domain: SIGTERM (--graceful), then libvirt's SIGTERM-then-SIGKILL. */
async function destroy(domain: string, log: Logger): Promise<'gone' | 'terminated' | 'killed'> {
  const graceful = await run(virshArgs({ op: 'destroy', domain, graceful: true }), { log, allowFailure: true, timeoutMs: 60_000 });
  if (graceful.exitCode === 0) return 'terminated';
  if (notFound(graceful.stderr)) return 'gone';
  const forced = await run(virshArgs({ op: 'destroy', domain, graceful: false }), { log, allowFailure: true, timeoutMs: 60_000 });
  if (forced.exitCode === 0) return 'killed';
  if (notFound(forced.stderr)) return 'gone';
  throw new HostError(`cannot destroy the libvirt domain ${domain}: ${forced.stderr.trim()}`);
}

export const libvirtDriver: VmDriver = {
  name: 'libvirt',

  async start(vm, log, lastTry): Promise<StartedVm | 'portTaken'> {
    if (vm.runAs === undefined) throw new UserError(`hypervisor="libvirt" runs VMs through ${LIBVIRT_URI}, which needs root; use hypervisor="qemu" or "any"`);
    const dir = dirname(vm.consoleLog);
    const label: DacLabel = { uid: await uidOf(vm.runAs, log), gid: statSync(dir).gid };
    // QEMU writes its overlay as that user (the job directory itself stays root's)
    if (vm.overlay !== undefined) chownSync(vm.overlay, label.uid, label.gid);
    const domain = domainName(vm.name);
    const file = join(dir, `${domain}.xml`);
    writeFileSync(file, renderXml(domainXml(vm, label)), { mode: 0o640 });
    const r = await run(virshArgs({ op: 'create', file }), { log, timeoutMs: 120_000, allowFailure: true });
    if (r.exitCode !== 0) {
      if (PORT_TAKEN.test(r.stderr) && !lastTry) return 'portTaken';
      const down = /failed to connect socket|no such file or directory/i.test(r.stderr) && !LIBVIRT_SOCKETS.some((s) => existsSync(s));
      throw new HostError(`libvirt failed to start VM ${vm.name}${down ? ' (is libvirtd running? docs/admin.md)' : ''}: ${r.stderr.trim()}`);
    }
    const pid = domainPid(domain);
    writeFileSync(vm.pidFile, `${pid}\n`, { mode: 0o644 });
    // virtlogd writes the console log as root, 0600: the job's group reads it, as with the QEMU driver
    try {
      chownSync(vm.consoleLog, 0, label.gid);
      chmodSync(vm.consoleLog, 0o640);
    } catch {
      // not there yet: only the job's user misses it
    }
    return { pid, startTime: startTimeOf(pid) };
  },

  async stopJob(ref: JobRef, log: Logger): Promise<number[]> {
    // no daemon, no domains (a QEMU it left behind is cleanup's /proc scan's); only root makes them
    if (!LIBVIRT_SOCKETS.some((s) => existsSync(s)) || process.getuid?.() !== 0) return [];
    const list = await run(virshArgs({ op: 'list' }), { log, allowFailure: true, timeoutMs: 60_000 });
    if (list.exitCode !== 0) {
      log.warn(`cannot list libvirt's domains: ${list.stderr.trim()}`);
      return [];
    }
    const prefix = jobDomainPrefix(ref.job, ref.node);
    const named = list.stdout.split('\n').map((l) => l.trim()).filter((n) => n.startsWith(prefix));
    const stopped: number[] = [];
    await Promise.all(named.map(async (domain) => {
      // ours only when its files (console log, sockets, disk) are in this job's directory (a name alone could be another job's)
      const xml = await run(virshArgs({ op: 'xml', domain }), { log, allowFailure: true });
      if (xml.exitCode !== 0 || !xml.stdout.includes(`'${ref.dir}/`)) return;
      let pid: number | undefined;
      try {
        pid = domainPid(domain);
      } catch {
        // gone meanwhile, or libvirt lost it: destroy says which
      }
      const how = await destroy(domain, log);
      if (how !== 'gone') log.info(`destroyed libvirt domain ${domain} (${how})`);
      if (pid !== undefined && how !== 'gone' && !isAlive(pid)) stopped.push(pid);
    }));
    return stopped;
  },

  describe: (vm) => `libvirt:${domainName(vm.name)}`,
};
