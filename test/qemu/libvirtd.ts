/**
 * The system libvirt daemon for the libvirt tests. CI machines have no systemd to start it, so it
 * is started here when it does not answer (with virtlogd, which writes its domains' console
 * logs), and left running. A daemon that already runs is used as it is.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { execa } from 'execa';

export const virsh = (args: string[]) => execa('virsh', ['--quiet', '--connect', 'qemu:///system', ...args], { reject: false, stdin: 'ignore' });

async function answers(): Promise<boolean> {
  return (await virsh(['version'])).exitCode === 0;
}

/**
 * /dev/kvm as udev leaves it on Debian (group kvm, which `make setup` put libvirt-qemu in). When
 * libvirt's user cannot open a /dev/kvm that exists, libvirt 9.0 takes its cached QEMU
 * capabilities for stale at every look-up and probes QEMU again: tens of seconds per domain.
 */
async function kvmForLibvirt(): Promise<void> {
  if (!existsSync('/dev/kvm')) return;
  const kvm = String((await execa('getent', ['group', 'kvm'], { reject: false })).stdout).split(':')[2];
  if (kvm === undefined || kvm === '') return;
  const st = statSync('/dev/kvm');
  if (st.gid === Number(kvm) && (st.mode & 0o060) === 0o060) return;
  chownSync('/dev/kvm', st.uid, Number(kvm));
  chmodSync('/dev/kvm', (st.mode & 0o7777) | 0o060);
}

export async function ensureLibvirtd(): Promise<void> {
  await kvmForLibvirt();
  if (await answers()) return;
  // the daemons log there; libvirt-daemon-system would have made it
  mkdirSync('/var/log/libvirt', { recursive: true, mode: 0o700 });
  // -d: they detach; their stdio must not hold the test's pipes open
  await execa('/usr/sbin/virtlogd', ['-d'], { stdio: 'ignore', reject: false });
  const d = await execa('/usr/sbin/libvirtd', ['-d'], { stdio: 'ignore', reject: false });
  for (let i = 0; i < 150; i++) {
    if (await answers()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`libvirtd (exit ${d.exitCode}) does not answer on qemu:///system; see /var/log/libvirt/libvirtd.log`);
}
