/**
 * The guest side of the Debian base, as text: the files the build installs into the image and the
 * hook script that installs them, plus the units it masks.
 *
 * The guest: systemd, udev, D-Bus, qemu-guest-agent, an initramfs with only the virtio disk
 * drivers, no gettys, root on /dev/vda (ext4, the whole disk), and vse-ready.service, which runs
 * lib/guest/setup.sh (as in every guest: name, user, network, SSH server, shares, the ready line
 * on the org.vse.0 port) and vse-task.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setupScript, taskBinary } from './guest-files.js';
import type { Normalized } from './debian-spec.js';

/** Units masked for a fast, login-less boot (firstboot would prompt on the console: machine-id is empty). */
export const DEBIAN_MASKED_UNITS = ['systemd-firstboot.service', 'serial-getty@ttyS0.service', 'getty@tty1.service', 'getty-static.service'] as const;

/** The unit that runs the readiness agent. */
export const READY_UNIT = `[Unit]
Description=Tell the vse host that this guest is ready
After=systemd-udev-trigger.service systemd-udevd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /usr/lib/vse/setup.sh
TimeoutStartSec=90

[Install]
WantedBy=multi-user.target
`;

/** Loaded early by systemd-modules-load, so the readiness port and the NICs exist before udev gets to them. */
export const MODULES_LOAD = '# vse: the readiness agent talks on a virtio-serial port; the host reaches the guest over the network\nvirtio_console\nvirtio_net\nvirtiofs\nqemu_fw_cfg\n';

/** Root is the whole virtio disk; a fresh overlay every boot, so no fsck pass. */
export const FSTAB = '# <file system> <mount point> <type> <options> <dump> <pass>\n/dev/vda / ext4 rw,errors=remount-ro 0 0\n';

/** The initramfs holds only the modules that find and mount the root disk: smaller, and faster to boot under TCG. */
export const INITRAMFS_CONF = 'MODULES=list\n';
export const INITRAMFS_HOOK = `#!/bin/sh
# vse: the modules the initramfs needs to mount the root filesystem on the virtio disk
case "$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk ext4; do manual_add_modules "$m"; done
`;

/**
 * The essential and customize hook, run by mmdebstrap inside its namespace (root there, an
 * unprivileged id outside) as `"$VSE_HOOK" essential|pre|post ROOT`. Fixed text: names come from files in $VSE_HOOK_DATA.
 */
export const HOOK_SCRIPT = `#!/bin/sh
# vse customize hook for the Debian base (written by lib/configure/debian.ts).
set -eu
phase=$1
root=$2
data=$VSE_HOOK_DATA
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
step() { echo "vse: $*"; }
# each LIST CMD...: run CMD with the names in $data/LIST (one per line) as separate arguments
each() { list=$1; shift; xargs -r -d '\\n' -a "$data/$list" "$@"; }
names() { tr '\\n' ' ' <"$data/$1"; }

case "$phase" in
essential)
  # before the kernel is installed, so that its initramfs is built once, small: only what finds /dev/vda
  step "initramfs: MODULES=list with the virtio disk drivers"
  install -D -m 0644 "$data/initramfs.conf" "$root/etc/initramfs-tools/conf.d/vse.conf"
  install -D -m 0755 "$data/initramfs-hook" "$root/etc/initramfs-tools/hooks/vse"
  ;;
pre)
  step "installing the guest side of vse (/usr/lib/vse: setup.sh, vse-task; vse-ready.service), /etc/fstab, /etc/hostname, /etc/modules-load.d/vse.conf"
  install -D -m 0755 "$data/setup.sh" "$root/usr/lib/vse/setup.sh"
  install -D -m 0755 "$data/vse-task" "$root/usr/lib/vse/vse-task"
  install -D -m 0644 "$data/vse-ready.service" "$root/etc/systemd/system/vse-ready.service"
  install -m 0644 "$data/fstab" "$root/etc/fstab"
  install -m 0644 "$data/hostname" "$root/etc/hostname"
  install -D -m 0644 "$data/modules-load" "$root/etc/modules-load.d/vse.conf"
  if [ -s "$data/purge" ]; then
    step "removing packages: $(names purge)"
    sim="$root/tmp/vse-purge.sim"
    each purge chroot "$root" apt-get -s -o APT::Get::Show-User-Simulation-Note=false purge >"$sim"
    sed -n 's/^Purg \\([^ :]*\\).*/\\1/p' "$sim" | sort -u >"$sim.gone"
    sort -u "$data/keep" >"$sim.keep"
    kept=$(comm -12 "$sim.keep" "$sim.gone" | tr '\\n' ' ')
    if [ -n "$kept" ]; then
      echo "vse-error: removing $(names purge)would also remove $kept(needed by the base or listed as present)" >&2
      exit 1
    fi
    rm -f "$sim" "$sim.gone" "$sim.keep"
    each purge chroot "$root" apt-get -y -o Dpkg::Use-Pty=0 purge
    chroot "$root" apt-get -y -o Dpkg::Use-Pty=0 autoremove --purge
  fi
  ;;
post)
  if [ -s "$data/enable" ]; then
    step "enabling services: $(names enable)"
    each enable chroot "$root" systemctl enable
  fi
  if [ -s "$data/disable" ]; then
    step "disabling services: $(names disable)"
    each disable chroot "$root" systemctl disable
  fi
  step "masking $(names mask)for a fast boot; enabling vse-ready.service"
  each mask chroot "$root" systemctl mask
  chroot "$root" systemctl enable vse-ready.service
  ;;
*)
  echo "vse hook: unknown phase $phase" >&2
  exit 2
  ;;
esac
`;


/** Writes the hook script and its inputs (files above, name lists one per line) into dir, which becomes $VSE_HOOK_DATA. */
export function writeData(dir: string, n: Normalized, includes: string[]): void {
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  const file = (name: string, text: string, mode = 0o644): void => {
    writeFileSync(join(dir, name), text, { mode });
    chmodSync(join(dir, name), mode);
  };
  const list = (items: readonly string[]): string => items.map((i) => `${i}\n`).join('');
  file('hook', HOOK_SCRIPT, 0o755);
  writeFileSync(join(dir, 'setup.sh'), setupScript(), { mode: 0o755 });
  writeFileSync(join(dir, 'vse-task'), taskBinary(), { mode: 0o755 });
  file('vse-ready.service', READY_UNIT);
  file('fstab', FSTAB);
  file('hostname', 'vse\n');
  file('keep', list(includes));
  file('purge', list(n.absent));
  file('enable', list(n.enable));
  file('disable', list(n.disable));
  file('mask', list(DEBIAN_MASKED_UNITS));
  file('initramfs.conf', INITRAMFS_CONF);
  file('modules-load', MODULES_LOAD);
  file('initramfs-hook', INITRAMFS_HOOK, 0o755);
}
