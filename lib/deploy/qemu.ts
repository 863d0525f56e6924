/** The QEMU command line, built as data: one function, tested as an array. */

export interface QemuVmSpec {
  name: string;
  accel: 'kvm' | 'tcg';
  /** Under TCG: the size of QEMU's translation cache (`tb-size`, MiB); QEMU's own default (up to 1 GiB) when unset. */
  tcgCacheMiB?: number;
  memoryMiB: number;
  vcpus: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** The VM's disk: a qcow2 overlay (none for a guest that runs from memory). */
  overlay?: string;
  qmpSocket: string;
  channelSocket: string;
  consoleLog: string;
  pidFile: string;
  /** Drop root to this user once set up (only when started as root). */
  runAs?: string;
  /** A socket for the guest agent (qemu-guest-agent in Debian guests). */
  agentSocket?: string;
  /** Where QEMU's own messages go (its stdout and stderr), when the driver starts it detached. */
  qemuLog?: string;
  /** Use QEMU's seccomp sandbox: no obsolete system calls, no changes to resource limits or scheduling, no new processes or programs. */
  sandbox: boolean;
  /** The host's channel: user-mode network, isolated (restrict=on), the guest's SSH port forwarded to loopback. */
  mgmt?: { mac: string; sshPort: number };
  /** The job's private network: a tap on the job's bridge (root), or a loopback multicast group. */
  jobNet?: { mac: string; tap?: string; mcast?: string };
  /** The guest's SSH host key (dropbear format), handed over through the firmware config. */
  hostKeyFile?: string;
  /** Host directories over virtio-fs (each served by a virtiofsd on `socket`); guest RAM is then shared memory. */
  shares?: { tag: string; socket: string }[];
}

function shareArgs(vm: QemuVmSpec): string[] {
  if (!vm.shares?.length) return [];
  return [
    '-object', `memory-backend-memfd,id=mem,size=${vm.memoryMiB}M,share=on`, '-numa', 'node,memdev=mem',
    ...vm.shares.flatMap((s, k) => ['-chardev', `socket,id=fs${k},path=${s.socket}`, '-device', `vhost-user-fs-pci,chardev=fs${k},tag=${s.tag}`]),
  ];
}

/** Where the guest finds its SSH host key (/sys/firmware/qemu_fw_cfg/by_name/<this>/raw). */
export const HOSTKEY_FW_CFG = 'opt/org.vse/hostkey';

/** MAC of the management NIC (the same in every VM: each has a user-mode network of its own). */
export const MGMT_MAC = '52:54:00:12:34:56';

/** MAC of VM index's NIC on the job's private network (unique on that network). */
export function jobNetMac(index: number): string {
  return `52:54:01:00:${((index >> 8) & 0xff).toString(16).padStart(2, '0')}:${(index & 0xff).toString(16).padStart(2, '0')}`;
}

/** QEMU's message when the forwarded SSH port was taken before it bound it (deploy then picks another). */
export const PORT_TAKEN = /host forwarding|Address already in use/i;

/** The management NIC: user-mode network, isolated, the guest's port 22 on loopback (`placement`: more -device properties). */
export function mgmtArgs(mgmt: NonNullable<QemuVmSpec['mgmt']>, placement = ''): string[] {
  return ['-netdev', `user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:${mgmt.sshPort}-:22`,
    '-device', `virtio-net-pci,netdev=mgmt,mac=${mgmt.mac},romfile=${placement}`];
}

function netArgs(vm: QemuVmSpec): string[] {
  const a: string[] = [];
  if (vm.mgmt) a.push(...mgmtArgs(vm.mgmt));
  if (vm.jobNet) {
    const n = vm.jobNet;
    const backend = n.tap !== undefined ? `tap,id=jobnet,ifname=${n.tap},script=no,downscript=no`
      : n.mcast !== undefined ? `socket,id=jobnet,mcast=${n.mcast},localaddr=127.0.0.1` : undefined;
    if (backend === undefined) throw new Error('qemuArgs: jobNet needs a tap or a multicast group');
    a.push('-netdev', backend, '-device', `virtio-net-pci,netdev=jobnet,mac=${n.mac},romfile=`);
  }
  return a;
}

export const QEMU = '/usr/bin/qemu-system-x86_64';

/**
 * The machine type: q35, not pc. On pc (i440FX + PIIX) the guest enables one ACPI PCI interrupt link
 * per device as it probes them, and under TCG each took 100 ms (4 devices: 0.4 s of every boot); q35's
 * GSI links take about 2 ms. Slot 0x1f holds q35's own LPC bridge.
 */
export const MACHINE = 'q35';

/**
 * The accelerator, and under TCG the size of its translation cache: QEMU's default lets it grow to
 * 1 GiB. Under a cap the cache is flushed when full and what runs next is translated again. A boot
 * of the minimal guest generates about 50 MiB of code: the site's default cap (60 MiB) holds it; a
 * cap of 32 MiB flushed it once in the boot and once just after, and the kernel's common paths,
 * translated twice, cost 0.1-0.15 s of every boot (bench/deploy).
 */
export function accelArgs(accel: 'kvm' | 'tcg', tcgCacheMiB?: number): string[] {
  return ['-accel', accel === 'tcg' && tcgCacheMiB !== undefined ? `tcg,tb-size=${tcgCacheMiB}` : accel];
}

/**
 * The memory balloon, for free page reporting only (no inflation): the guest hands the pages it
 * does not use back to the host (lib/guest/setup.sh loads the driver once the guest is ready).
 */
export const BALLOON = ['-device', 'virtio-balloon-pci,free-page-reporting=on'];

/**
 * A hardware random number generator fed from the host's /dev/urandom. Without it a guest's kernel
 * had its random pool ready only about a second after the guest said it was ready (under TCG the
 * vCPU has no RDRAND), and the SSH server held the first connection until then.
 */
export const RNG = ['-object', 'rng-random,id=rng0,filename=/dev/urandom', '-device', 'virtio-rng-pci,rng=rng0'];

/**
 * The full argv (without the binary) of one VM. QEMU stays in the foreground of its own process:
 * the driver detaches it (setsid), its messages in a log (with `-daemonize` they went
 * to /dev/null once it ran), and build VMs run as children of the build. Nothing forks after that,
 * so the sandbox denies it.
 */
export function qemuArgs(vm: QemuVmSpec): string[] {
  const args = [
    '-name', `${vm.name},process=vse-${vm.name}`,
    '-machine', MACHINE,
    ...accelArgs(vm.accel, vm.tcgCacheMiB),
    ...(vm.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-m', `${vm.memoryMiB}M`,
    '-smp', String(vm.vcpus),
    '-kernel', vm.kernel,
    '-initrd', vm.initrd,
    '-append', vm.cmdline,
    '-serial', `file:${vm.consoleLog}`,
    '-qmp', `unix:${vm.qmpSocket},server=on,wait=off`,
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,id=vsechan,path=${vm.channelSocket},server=on,wait=off`,
    '-device', 'virtserialport,bus=vser0.0,chardev=vsechan,name=org.vse.0',
    ...(vm.agentSocket !== undefined ? ['-chardev', `socket,id=qga,path=${vm.agentSocket},server=on,wait=off`, '-device', 'virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0'] : []),
    ...(vm.overlay !== undefined ? ['-drive', `file=${vm.overlay},if=virtio,format=qcow2,cache=writeback,discard=unmap`] : []),
    ...netArgs(vm),
    ...BALLOON,
    ...RNG,
    ...shareArgs(vm),
    ...(vm.hostKeyFile !== undefined ? ['-fw_cfg', `name=${HOSTKEY_FW_CFG},file=${vm.hostKeyFile}`] : []),
    '-no-reboot',
    '-pidfile', vm.pidFile,
  ];
  if (vm.sandbox) args.push('-sandbox', 'on,obsolete=deny,resourcecontrol=deny,spawn=deny');
  if (vm.runAs !== undefined) args.push('-runas', vm.runAs);
  return args;
}
