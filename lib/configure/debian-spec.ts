/**
 * What a Debian base is asked to be: the spec (release, variant, mirror, kernel, packages,
 * services, disk size), checked and normalised before any of it reaches mmdebstrap or a cache key.
 */
import { UserError } from '../util/errors.js';

export interface DebianSpec {
  release: string;
  /** mmdebstrap variant; "" means the default, "apt". */
  variant: string;
  /** A mirror URL; default: the host's Debian sources for this release, else deb.debian.org. */
  mirror?: string;
  kernelPackage: string;
  packages: { name: string; state: 'present' | 'absent' }[];
  services: { name: string; state: 'enabled' | 'disabled' }[];
  diskMiB: number;
}

/** Packages every Debian base has: an init, udev (it loads the virtio drivers). */
/** The channel into the guest needs the SSH server (dropbear) and `ip` (lib/guest/setup.sh). */
export const DEBIAN_REQUIRED_PACKAGES = ['systemd-sysv', 'udev', 'dropbear-bin', 'iproute2'] as const;
/**
 * Packages the base adds unless the description lists them as absent: the guest agent (commands
 * from the host), and D-Bus, without which logind cannot run, so that neither the agent's
 * guest-shutdown (`shutdown -P +0`) nor an ACPI power button would power the guest off.
 */
export const DEBIAN_DEFAULT_PACKAGES = ['qemu-guest-agent', 'dbus'] as const;
export const DEBIAN_VARIANTS = ['essential', 'apt', 'required', 'minbase', 'buildd', 'important', 'debootstrap', 'standard'] as const;
export const DEBIAN_DEFAULT_VARIANT = 'apt';

/** Names the spec accepts (RELEASE_RE and MIRROR_RE also vet what the host's os-release and apt sources say). */
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const SERVICE_RE = /^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,254}$/;
export const RELEASE_RE = /^[a-z][a-z0-9.-]{0,63}$/;
export const MIRROR_RE = /^(https?|ftp|file):\/\/[^\s"'\\[\]]+$/;

export interface Normalized {
  release: string;
  variant: string;
  mirror?: string;
  kernelPackage: string;
  present: string[];
  absent: string[];
  enable: string[];
  disable: string[];
  diskMiB: number;
}

/** A spec checked (a UserError names what is wrong) with its defaults filled in and its lists split by state. */
export function normalize(spec: DebianSpec): Normalized {
  if (!RELEASE_RE.test(spec.release)) throw new UserError(`os release "${spec.release}": not a Debian suite or codename (e.g. bookworm)`);
  const variant = spec.variant === '' ? DEBIAN_DEFAULT_VARIANT : spec.variant;
  if (!(DEBIAN_VARIANTS as readonly string[]).includes(variant)) {
    throw new UserError(`os variant "${spec.variant}": expected one of ${DEBIAN_VARIANTS.join(', ')}`);
  }
  if (spec.mirror !== undefined && !MIRROR_RE.test(spec.mirror)) {
    throw new UserError(`os mirror "${spec.mirror}": expected an http(s)://, ftp:// or file:// URL without spaces or quotes`);
  }
  const pkg = (name: string, what: string): string => {
    if (!PACKAGE_RE.test(name)) throw new UserError(`${what} "${name}": not a Debian package name (lowercase letters, digits, + - ., at least two characters)`);
    return name;
  };
  const kernelPackage = pkg(spec.kernelPackage, 'kernel package');
  const present = [...new Set(spec.packages.filter((p) => p.state === 'present').map((p) => pkg(p.name, 'package')))];
  const absent = [...new Set(spec.packages.filter((p) => p.state === 'absent').map((p) => pkg(p.name, 'package')))];
  const both = present.filter((p) => absent.includes(p));
  if (both.length > 0) throw new UserError(`package ${both.join(', ')} is listed both present and absent`);
  const needed = [kernelPackage, ...DEBIAN_REQUIRED_PACKAGES, 'systemd', 'init'];
  const vital = absent.filter((p) => needed.includes(p));
  if (vital.length > 0) throw new UserError(`package ${vital.join(', ')} cannot be absent: the Debian base boots with it`);
  const svc = (name: string): string => {
    if (!SERVICE_RE.test(name)) throw new UserError(`service "${name}": not a systemd unit name`);
    return name;
  };
  const enable = [...new Set(spec.services.filter((s) => s.state === 'enabled').map((s) => svc(s.name)))];
  const disable = [...new Set(spec.services.filter((s) => s.state === 'disabled').map((s) => svc(s.name)))];
  const twice = enable.filter((s) => disable.includes(s));
  if (twice.length > 0) throw new UserError(`service ${twice.join(', ')} is listed both enabled and disabled`);
  if (!Number.isInteger(spec.diskMiB) || spec.diskMiB < 64) throw new UserError(`disk size ${spec.diskMiB} MiB: expected a whole number of MiB, at least 64`);
  return { release: spec.release, variant, ...(spec.mirror !== undefined ? { mirror: spec.mirror } : {}), kernelPackage, present, absent, enable, disable, diskMiB: spec.diskMiB };
}

/** The packages mmdebstrap installs: kernel, init, udev, the guest agent (unless absent), the present ones. */
export function debianIncludes(spec: DebianSpec): string[] {
  const n = normalize(spec);
  return [...new Set([n.kernelPackage, ...DEBIAN_REQUIRED_PACKAGES, ...DEBIAN_DEFAULT_PACKAGES.filter((p) => !n.absent.includes(p)), ...n.present])];
}
