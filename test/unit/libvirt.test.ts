import { createRequire } from 'node:module';
import type * as Fxp from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { driverFor, driverNamed } from '../../lib/deploy/driver.js';
import { type XmlData, domainName, domainXml, jobDomainPrefix, renderXml, virshArgs } from '../../lib/deploy/libvirt.js';
import { MGMT_MAC, mgmtArgs, qemuArgs } from '../../lib/deploy/qemu.js';
import { vmName } from '../../lib/deploy/state.js';

const { XMLParser } = createRequire(import.meta.url)('fast-xml-parser') as typeof Fxp;

const spec = {
  name: '42-n1-0', accel: 'tcg' as const, memoryMiB: 128, vcpus: 2, kernel: '/c/vmlinuz', initrd: '/c/initrd.img',
  cmdline: 'console=ttyS0 vse.hostname=42-n1-0', overlay: '/s/vm0.qcow2', qmpSocket: '/s/vm0.qmp', channelSocket: '/s/vm0.chan',
  consoleLog: '/s/vm0.console.log', pidFile: '/s/vm0.pid', sandbox: true, runAs: 'u1',
  mgmt: { mac: MGMT_MAC, sshPort: 40022 }, jobNet: { mac: '52:54:01:00:00:00', tap: 'vsetabcdef120' },
};
const label = { uid: 1001, gid: 1002 };

const dom = (x: XmlData): XmlData => x.domain as XmlData;
const devices = (x: XmlData): XmlData => dom(x).devices as XmlData;

describe('the libvirt domain', () => {
  const x = domainXml(spec, label);
  it('is a transient domain named after the VM, of its size, under TCG (KVM with the host CPU)', () => {
    expect(dom(x)['@_type']).toBe('qemu');
    expect(dom(x).name).toBe('vse-42-n1-0');
    expect(dom(x).memory).toEqual({ '@_unit': 'MiB', '#text': '128' });
    expect(dom(x).vcpu).toBe('2');
    expect(dom(x).cpu).toBeUndefined();
    const kvm = dom(domainXml({ ...spec, accel: 'kvm' }, label));
    expect(kvm['@_type']).toBe('kvm');
    expect(kvm.cpu).toEqual({ '@_mode': 'host-passthrough' });
  });
  it('boots the configuration kernel and initrd with the per-VM command line, and ends on reboot or crash', () => {
    expect(dom(x).os).toEqual({ type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' }, kernel: '/c/vmlinuz', initrd: '/c/initrd.img', cmdline: spec.cmdline });
    expect([dom(x).on_poweroff, dom(x).on_reboot, dom(x).on_crash]).toEqual(['destroy', 'destroy', 'destroy']);
  });
  it('has the overlay on virtio, the console in the console log and the readiness port on the same socket as QEMU\'s driver', () => {
    expect(devices(x).disk).toEqual({
      '@_type': 'file', '@_device': 'disk',
      driver: { '@_name': 'qemu', '@_type': 'qcow2', '@_cache': 'writeback', '@_discard': 'unmap' },
      source: { '@_file': '/s/vm0.qcow2' }, target: { '@_dev': 'vda', '@_bus': 'virtio' },
    });
    expect(devices(x).serial).toEqual({ '@_type': 'file', source: { '@_path': '/s/vm0.console.log', '@_append': 'on' } });
    expect(devices(x).channel).toEqual([{ '@_type': 'unix', source: { '@_mode': 'bind', '@_path': '/s/vm0.chan' }, target: { '@_type': 'virtio', '@_name': 'org.vse.0' } }]);
    const agent = devices(domainXml({ ...spec, agentSocket: '/s/vm0.qga' }, label)).channel as XmlData[];
    expect(agent[1]).toEqual({ '@_type': 'unix', source: { '@_mode': 'bind', '@_path': '/s/vm0.qga' }, target: { '@_type': 'virtio', '@_name': 'org.qemu.guest_agent.0' } });
  });
  it('has no disk for a guest that runs from memory; a balloon for free page reporting; TCG\'s translation cache capped when asked', () => {
    expect(devices(domainXml({ ...spec, overlay: undefined }, label)).disk).toBeUndefined();
    expect(devices(x).memballoon).toEqual({ '@_model': 'virtio', '@_freePageReporting': 'on' });
    expect(devices(x).rng).toEqual({ '@_model': 'virtio', backend: { '@_model': 'random', '#text': '/dev/urandom' } });
    expect(dom(x).features).toEqual({ acpi: '' });
    expect(dom(domainXml({ ...spec, tcgCacheMiB: 32 }, label)).features).toEqual({ acpi: '', tcg: { 'tb-cache': { '@_unit': 'MiB', '#text': '32' } } });
    expect(dom(domainXml({ ...spec, accel: 'kvm', tcgCacheMiB: 32 }, label)).features).toEqual({ acpi: '' });
  });
  it('puts the job NIC on the job\'s own tap, by its MAC', () => {
    expect(devices(x).interface).toEqual([{
      '@_type': 'ethernet', target: { '@_dev': 'vsetabcdef120', '@_managed': 'no' }, mac: { '@_address': '52:54:01:00:00:00' },
      model: { '@_type': 'virtio' }, rom: { '@_enabled': 'no' },
    }]);
    expect(devices(domainXml({ ...spec, jobNet: undefined }, label)).interface).toBeUndefined();
    expect(() => domainXml({ ...spec, jobNet: { mac: '52:54:01:00:00:00', mcast: '239.255.1.2:20000' } }, label)).toThrow(/needs its tap/);
  });
  it('passes QEMU\'s own management NIC through: isolated, the guest\'s SSH port on loopback, on a PCI slot libvirt leaves free', () => {
    const args = ((dom(x)['qemu:commandline'] as XmlData)['qemu:arg'] as XmlData[]).map((a) => a['@_value']);
    expect(args).toEqual([
      '-netdev', 'user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22',
      '-device', 'virtio-net-pci,netdev=mgmt,mac=52:54:00:12:34:56,romfile=,bus=pci.0,addr=0x1f',
    ]);
    // the same network as the QEMU driver's
    expect(qemuArgs(spec)).toEqual(expect.arrayContaining(mgmtArgs(spec.mgmt)));
    expect(args[1]).toBe(mgmtArgs(spec.mgmt)[1]);
  });
  it('runs QEMU as the given uid and gid from its start, and has libvirt change no file\'s owner', () => {
    expect(dom(x).seclabel).toEqual({ '@_type': 'static', '@_model': 'dac', '@_relabel': 'no', label: '+1001:+1002' });
  });
  it('renders to XML that reads back as the same data, with odd characters escaped', () => {
    const odd = domainXml({ ...spec, overlay: `/s/a&b<'">.qcow2`, cmdline: 'x="1 & 2"' }, label);
    const text = renderXml(odd);
    expect(text).toContain('<domain type="qemu" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">');
    expect(text).toContain('<acpi/>');
    const parser = new XMLParser({
      ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false, parseAttributeValue: false,
      isArray: (n) => n === 'channel' || n === 'interface' || n === 'qemu:arg',
    });
    expect(parser.parse(text)).toEqual(odd);
  });
});

describe('virsh command lines', () => {
  it('all go to the system daemon', () => {
    const base = ['/usr/bin/virsh', '--quiet', '--connect', 'qemu:///system'];
    expect(virshArgs({ op: 'create', file: '/s/vse-42-n1-0.xml' })).toEqual([...base, 'create', '/s/vse-42-n1-0.xml']);
    expect(virshArgs({ op: 'list' })).toEqual([...base, 'list', '--name']);
    expect(virshArgs({ op: 'xml', domain: 'vse-42-n1-0' })).toEqual([...base, 'dumpxml', 'vse-42-n1-0']);
    expect(virshArgs({ op: 'destroy', domain: 'vse-42-n1-0', graceful: true })).toEqual([...base, 'destroy', '--graceful', 'vse-42-n1-0']);
    expect(virshArgs({ op: 'destroy', domain: 'vse-42-n1-0', graceful: false })).toEqual([...base, 'destroy', 'vse-42-n1-0']);
  });
});

describe('driver choice and names', () => {
  it('libvirt when the description says so; QEMU for qemu and any, and for records without a known driver', () => {
    expect(driverFor('libvirt').name).toBe('libvirt');
    expect(driverFor('qemu').name).toBe('qemu');
    expect(driverFor('any').name).toBe('qemu');
    expect(driverNamed('libvirt').name).toBe('libvirt');
    expect(driverNamed(undefined).name).toBe('qemu');
    expect(driverNamed('libvirt').describe({ name: '42-n1-0' } as never)).toBe('libvirt:vse-42-n1-0');
  });
  it('a job\'s domain prefix covers its VMs on that node and no other job\'s or node\'s', () => {
    for (const [job, node] of [['42', 'n1'], ['42_1', 'node.a'], ['7', 'x'.repeat(70)]] as const) {
      for (const i of [0, 1, 12]) expect(domainName(vmName(job, node, i)).startsWith(jobDomainPrefix(job, node))).toBe(true);
    }
    expect(domainName(vmName('42', 'n10', 0)).startsWith(jobDomainPrefix('42', 'n1'))).toBe(false);
    expect(domainName(vmName('421', 'n1', 0)).startsWith(jobDomainPrefix('42', 'n1'))).toBe(false);
  });
});
