/** The QEMU command line, built as data: one function, tested as an array. */

export interface QemuVmSpec {
  name: string;
  accel: 'kvm' | 'tcg';
  memoryMiB: number;
  vcpus: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  overlay: string;
  qmpSocket: string;
  channelSocket: string;
  consoleLog: string;
  pidFile: string;
  /** Drop root to this user once set up (only when started as root). */
  runAs?: string;
  /** A socket for the guest agent (qemu-guest-agent in Debian guests). */
  agentSocket?: string;
  /** Start in the foreground instead of -daemonize (builds that wait for the VM to end). */
  foreground?: boolean;
  /** Use QEMU's seccomp sandbox (spawn stays allowed: -daemonize forks after it is installed). */
  sandbox: boolean;
}

export const QEMU = '/usr/bin/qemu-system-x86_64';

/** The full argv (without the binary) to start one VM detached (`-daemonize`). */
export function qemuArgs(vm: QemuVmSpec): string[] {
  const args = [
    '-name', `${vm.name},process=vse-${vm.name}`,
    '-machine', `pc,accel=${vm.accel}`,
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
    '-drive', `file=${vm.overlay},if=virtio,format=qcow2,cache=writeback,discard=unmap`,
    '-no-reboot',
    '-pidfile', vm.pidFile,
    ...(vm.foreground ? [] : ['-daemonize']),
  ];
  if (vm.sandbox) args.push('-sandbox', 'on,obsolete=deny,resourcecontrol=deny');
  if (vm.runAs !== undefined) args.push('-runas', vm.runAs);
  return args;
}
