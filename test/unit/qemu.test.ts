import { describe, expect, it } from 'vitest';
import { qemuArgs } from '../../lib/deploy/qemu.js';

const spec = {
  name: '42-n1-0', accel: 'tcg' as const, memoryMiB: 128, vcpus: 2, kernel: '/c/vmlinuz', initrd: '/c/initrd.img',
  cmdline: 'console=ttyS0 vse.hostname=42-n1-0', overlay: '/s/vm0.qcow2', qmpSocket: '/s/vm0.qmp', channelSocket: '/s/vm0.chan',
  consoleLog: '/s/vm0.console.log', pidFile: '/s/vm0.pid', sandbox: true, runAs: 'nobody',
};

const value = (args: string[], flag: string): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ''] : []));

describe('the QEMU command line', () => {
  const args = qemuArgs(spec);
  it('stays in the foreground of its process (the driver detaches it) and writes a pid file', () => {
    expect(args).not.toContain('-daemonize');
    expect(value(args, '-pidfile')).toEqual(['/s/vm0.pid']);
  });
  it('boots the configuration kernel and initrd with the per-VM command line', () => {
    expect(value(args, '-kernel')).toEqual(['/c/vmlinuz']);
    expect(value(args, '-initrd')).toEqual(['/c/initrd.img']);
    expect(value(args, '-append')).toEqual(['console=ttyS0 vse.hostname=42-n1-0']);
  });
  it('gives the VM its size, a copy-on-write disk, a QMP socket, a console log and the readiness port', () => {
    expect(value(args, '-m')).toEqual(['128M']);
    expect(value(args, '-smp')).toEqual(['2']);
    expect(value(args, '-drive')).toEqual(['file=/s/vm0.qcow2,if=virtio,format=qcow2,cache=writeback,discard=unmap']);
    expect(value(args, '-qmp')).toEqual(['unix:/s/vm0.qmp,server=on,wait=off']);
    expect(value(args, '-serial')).toEqual(['file:/s/vm0.console.log']);
    expect(value(args, '-chardev')).toEqual(['socket,id=vsechan,path=/s/vm0.chan,server=on,wait=off']);
    expect(value(args, '-device')).toContain('virtserialport,bus=vser0.0,chardev=vsechan,name=org.vse.0');
  });
  it('drops root and sandboxes itself', () => {
    expect(value(args, '-runas')).toEqual(['nobody']);
    expect(value(args, '-sandbox')).toEqual(['on,obsolete=deny,resourcecontrol=deny,spawn=deny']);
  });
  it('says which accelerator it uses, with TCG\'s translation cache capped when asked, and KVM gets the host CPU', () => {
    expect(value(args, '-machine')).toEqual(['q35']);
    expect(value(args, '-accel')).toEqual(['tcg']);
    expect(value(qemuArgs({ ...spec, tcgCacheMiB: 32 }), '-accel')).toEqual(['tcg,tb-size=32']);
    expect(args).not.toContain('-cpu');
    const kvm = qemuArgs({ ...spec, accel: 'kvm', tcgCacheMiB: 32, runAs: undefined, sandbox: false });
    expect(value(kvm, '-machine')).toEqual(['q35']);
    expect(value(kvm, '-accel')).toEqual(['kvm']);
    expect(value(kvm, '-cpu')).toEqual(['host']);
    expect(kvm).not.toContain('-runas');
    expect(kvm).not.toContain('-sandbox');
  });
  it('adds the guest agent port when asked', () => {
    const a = qemuArgs({ ...spec, agentSocket: '/s/vm0.qga' });
    expect(value(a, '-chardev')).toContain('socket,id=qga,path=/s/vm0.qga,server=on,wait=off');
    expect(value(a, '-device')).toContain('virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0');
    expect(args).not.toContain('org.qemu.guest_agent.0');
  });
  it('has no disk for a guest that runs from memory', () => {
    expect(qemuArgs({ ...spec, overlay: undefined })).not.toContain('-drive');
  });
  it('has a memory balloon for free page reporting only', () => {
    expect(value(args, '-device')).toContain('virtio-balloon-pci,free-page-reporting=on');
  });
  it('has a random number generator fed from the host\'s /dev/urandom', () => {
    expect(value(args, '-object')).toContain('rng-random,id=rng0,filename=/dev/urandom');
    expect(value(args, '-device')).toContain('virtio-rng-pci,rng=rng0');
  });
  it('exits instead of rebooting, so a guest crash ends the process', () => {
    expect(args).toContain('-no-reboot');
  });
});
