/**
 * The Debian OS base: a root filesystem built by mmdebstrap, packed into an ext4 image without
 * mounting, plus the kernel and initramfs that the image itself installed.
 *
 * Nothing here runs as real root. mmdebstrap runs in --mode=unshare: an unprivileged caller's
 * subordinate ids (/etc/subuid) become root in a user namespace; when the caller is root,
 * mmdebstrap would *not* make a user namespace (it only does that for non-root callers), so we
 * start it inside one ourselves (`unshare --user --map-users=<root's subuid range>`). The same
 * mapping packs the tree (mkfs.ext4 -d sees root-owned files and writes them root-owned into the
 * image) and removes it afterwards.
 *
 * Description strings never reach a shell: mmdebstrap hooks are shell strings, so ours is a fixed
 * command (`"$VSE_HOOK" pre|post "$1"`) running a fixed script that reads package and service
 * names from files, one per line, and hands them to apt-get and systemctl as separate arguments
 * (`xargs -d '\n'`). Callers' extra hooks are argv arrays that we quote word by word.
 */
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { userInfo } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { packageRoot } from '../site/paths.js';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { quoteCommand, run, tail } from '../util/run.js';
import { BASE_CMDLINE } from './minimal.js';

/** Bumped whenever buildDebian changes what it produces (part of cache keys). */
export const DEBIAN_BUILDER_VERSION = 1;

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

export interface DebianBuildOptions {
  /** Where the result goes; must not exist yet (it appears complete, by rename, or not at all). */
  outDir: string;
  /** Scratch space (a private directory is made inside and removed). */
  workDir: string;
  log: Logger;
  /**
   * Extra mmdebstrap customize hooks, run after packages are added/removed and before services are
   * set. Each is an argv: a word that is exactly `$1` stands for the root directory of the new
   * system; every other word is passed literally (quoted, never interpreted by a shell). An argv
   * starting with one of mmdebstrap's special hooks (copy-in, copy-out, tar-in, tar-out, upload,
   * download, sync-in, sync-out) is handed to mmdebstrap as that special hook.
   */
  customizeHooks?: string[][];
  /** Progress lines (mmdebstrap's I:/W:/E: lines and ours). */
  onProgress?: (line: string) => void;
  /** Limit for the mmdebstrap run (default 30 min). */
  timeoutMs?: number;
}

export interface DebianBase {
  kernel: string;
  initrd: string;
  disk: string;
  cmdline: string;
  /** Every installed package with its version, sorted by name. */
  packages: { name: string; version: string }[];
  /** The full mmdebstrap output (also in outDir/build.log). */
  log: string;
  /** The versioned kernel package the kernel and initrd come from. */
  kernelPackage: string;
  kernelVersion: string;
  /** The apt sources lines the image was built from. */
  sources: string[];
  /** Size of the root filesystem (diskMiB, or more when the tree needed it). */
  diskMiB: number;
  buildMs: number;
}

/** Packages every Debian base has: an init, udev (it loads the virtio drivers). */
export const DEBIAN_REQUIRED_PACKAGES = ['systemd-sysv', 'udev'] as const;
/** Packages the base adds unless the description lists them as absent. */
export const DEBIAN_DEFAULT_PACKAGES = ['qemu-guest-agent'] as const;
/** Units masked for a fast, login-less boot (firstboot would prompt on the console: machine-id is empty). */
export const DEBIAN_MASKED_UNITS = ['systemd-firstboot.service', 'serial-getty@ttyS0.service', 'getty@tty1.service'] as const;
export const DEBIAN_VARIANTS = ['essential', 'apt', 'required', 'minbase', 'buildd', 'important', 'debootstrap', 'standard'] as const;
export const DEBIAN_DEFAULT_VARIANT = 'apt';
export const DEBIAN_DEFAULT_MIRROR = 'http://deb.debian.org/debian';
/** Kernel command line of the Debian base (the per-VM vse.hostname= is added at deploy time). */
export const DEBIAN_CMDLINE = `${BASE_CMDLINE} root=/dev/vda rootfstype=ext4 rw`;
/** Documentation that a VM image does not need (the copyright files stay). */
const DPKG_OPTIONS = [
  'path-exclude=/usr/share/doc/*', 'path-include=/usr/share/doc/*/copyright', 'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*', 'path-exclude=/usr/share/locale/*', 'path-include=/usr/share/locale/locale.alias',
];
const SPECIAL_HOOKS = new Set(['copy-in', 'copy-out', 'tar-in', 'tar-out', 'upload', 'download', 'sync-in', 'sync-out']);
const TOOL_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
const ENV = { PATH: TOOL_PATH, LC_ALL: 'C' };
/** A subordinate id range must cover the ids a Debian system uses (up to nobody, 65534). */
const MIN_SUBIDS = 65536;

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const SERVICE_RE = /^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,254}$/;
const RELEASE_RE = /^[a-z][a-z0-9.-]{0,63}$/;
const MIRROR_RE = /^(https?|ftp|file):\/\/[^\s"'\\[\]]+$/;

/** The unit that runs the readiness agent. */
const READY_UNIT = `[Unit]
Description=Tell the vse host that this guest is ready
After=systemd-udev-trigger.service systemd-udevd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vse-ready
TimeoutStartSec=90

[Install]
WantedBy=multi-user.target
`;

/** Root is the whole virtio disk; a fresh overlay every boot, so no fsck pass. */
const FSTAB = '# <file system> <mount point> <type> <options> <dump> <pass>\n/dev/vda / ext4 rw,errors=remount-ro 0 0\n';

/**
 * The customize hook, run by mmdebstrap inside its namespace (root there, an unprivileged id
 * outside) as `"$VSE_HOOK" pre|post ROOT`. Fixed text: names come from files in $VSE_HOOK_DATA.
 */
const HOOK_SCRIPT = `#!/bin/sh
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
pre)
  step "installing the readiness agent (vse-ready.service), /etc/fstab, /etc/hostname"
  install -D -m 0755 "$data/vse-ready" "$root/usr/local/sbin/vse-ready"
  install -D -m 0644 "$data/vse-ready.service" "$root/etc/systemd/system/vse-ready.service"
  install -m 0644 "$data/fstab" "$root/etc/fstab"
  install -m 0644 "$data/hostname" "$root/etc/hostname"
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

function readyScript(): string {
  return readFileSync(join(packageRoot, 'lib', 'configure', 'debian-ready.sh'), 'utf8');
}

// ---------------------------------------------------------------------------------------------
// The spec

interface Normalized {
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

function normalize(spec: DebianSpec): Normalized {
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

// ---------------------------------------------------------------------------------------------
// apt sources

interface SourceEntry {
  types: string[];
  uris: string[];
  suites: string[];
  components: string[];
  signedBy?: string;
  enabled: boolean;
}

function parseOneLine(text: string): SourceEntry[] {
  const out: SourceEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const m = /^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const signedBy = /signed-by=(\S+)/.exec(m[2] ?? '')?.[1];
    out.push({ types: [m[1] as string], uris: [m[3] as string], suites: [m[4] as string], components: (m[5] ?? '').split(/\s+/).filter(Boolean), ...(signedBy ? { signedBy } : {}), enabled: true });
  }
  return out;
}

function parseDeb822(text: string): SourceEntry[] {
  const out: SourceEntry[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last = '';
    for (const raw of stanza.split('\n')) {
      if (raw.startsWith('#')) continue;
      if (/^\s/.test(raw) && last) {
        fields.set(last, `${fields.get(last) ?? ''}\n${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(raw);
      if (!m) continue;
      last = (m[1] as string).toLowerCase();
      fields.set(last, (m[2] as string).trim());
    }
    const words = (k: string): string[] => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    if (!fields.has('uris')) continue;
    const signedBy = fields.get('signed-by');
    out.push({ types: words('types'), uris: words('uris'), suites: words('suites'), components: words('components'), ...(signedBy ? { signedBy } : {}), enabled: (fields.get('enabled') ?? 'yes').toLowerCase() !== 'no' });
  }
  return out;
}

/**
 * The host's Debian apt sources for a release, as sources.list lines: the release, its -updates
 * and its -security suites. Entries signed by anything but the Debian archive keyring (third-party
 * repositories that happen to use the same suite name) are left out.
 */
export function hostDebianSources(release: string, aptDir = '/etc/apt'): string[] {
  const entries: SourceEntry[] = [];
  const read = (file: string, parse: (t: string) => SourceEntry[]): void => {
    try {
      entries.push(...parse(readFileSync(file, 'utf8')));
    } catch {
      // unreadable or gone: not a source
    }
  };
  read(join(aptDir, 'sources.list'), parseOneLine);
  const dir = join(aptDir, 'sources.list.d');
  let names: string[] = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    // none
  }
  for (const n of names) {
    if (n.endsWith('.list')) read(join(dir, n), parseOneLine);
    else if (n.endsWith('.sources')) read(join(dir, n), parseDeb822);
  }
  const suites = new Set([release, `${release}-updates`, `${release}-security`, `${release}/updates`]);
  const lines: string[] = [];
  for (const e of entries) {
    if (!e.enabled || !e.types.includes('deb')) continue;
    if (e.signedBy !== undefined && !e.signedBy.includes('debian-archive-keyring')) continue;
    for (const uri of e.uris) {
      if (!MIRROR_RE.test(uri)) continue;
      for (const suite of e.suites.filter((s) => suites.has(s))) {
        const comps = e.components.filter((c) => /^[a-z0-9-]+$/.test(c));
        lines.push(`deb ${uri} ${suite} ${comps.length > 0 ? comps.join(' ') : 'main'}`);
      }
    }
  }
  return [...new Set(lines)];
}

/** The sources a spec builds from: its mirror, else the host's Debian sources, else deb.debian.org. */
export function debianSources(spec: DebianSpec): string[] {
  const n = normalize(spec);
  if (n.mirror !== undefined) return [`deb ${n.mirror} ${n.release} main`];
  const host = hostDebianSources(n.release);
  if (host.some((l) => l.split(' ')[2] === n.release)) return host;
  return [`deb ${DEBIAN_DEFAULT_MIRROR} ${n.release} main`];
}

/** A cache key for a spec: everything that decides what buildDebian produces. */
export function debianCacheKey(spec: DebianSpec, customizeHooks: string[][] = []): string {
  const n = normalize(spec);
  const inputs = {
    v: DEBIAN_BUILDER_VERSION, spec: { ...n, present: [...n.present].sort(), absent: [...n.absent].sort(), enable: [...n.enable].sort(), disable: [...n.disable].sort() },
    sources: debianSources(spec), hooks: customizeHooks, hook: HOOK_SCRIPT, ready: readyScript(), unit: READY_UNIT, fstab: FSTAB,
    masked: DEBIAN_MASKED_UNITS, dpkg: DPKG_OPTIONS, cmdline: DEBIAN_CMDLINE,
  };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 24);
}

// ---------------------------------------------------------------------------------------------
// The user namespace

interface IdRange {
  start: number;
  count: number;
}

interface IdMapping {
  asRoot: boolean;
  user: string;
  uid: IdRange;
  gid: IdRange;
}

function readSubIds(file: string): { name: string; start: number; count: number }[] {
  try {
    return readFileSync(file, 'utf8').split('\n').map((l) => l.trim().split(':')).filter((f) => f.length === 3)
      .map(([name, start, count]) => ({ name: name as string, start: Number(start), count: Number(count) }))
      .filter((r) => Number.isInteger(r.start) && Number.isInteger(r.count));
  } catch {
    return [];
  }
}

/** The invoking user's subordinate id ranges; a clear error that says what to add when missing. */
export function subordinateIds(): IdMapping {
  const me = userInfo();
  const asRoot = me.uid === 0;
  const find = (file: string): IdRange | undefined => {
    // mmdebstrap looks the user up by name only; newuidmap (our root path) takes the name or the uid
    const rows = readSubIds(file).filter((r) => r.name === me.username || (asRoot && r.name === String(me.uid)));
    return rows.find((r) => r.count >= MIN_SUBIDS);
  };
  const uid = find('/etc/subuid');
  const gid = find('/etc/subgid');
  if (uid && gid) return { asRoot, user: me.username, uid, gid };
  const used = [...readSubIds('/etc/subuid'), ...readSubIds('/etc/subgid')].map((r) => r.start + r.count);
  const start = Math.max(100000, ...used);
  const end = start + MIN_SUBIDS - 1;
  throw new HostError(
    `building a Debian image needs a range of ${MIN_SUBIDS} subordinate ${uid ? 'gids' : 'uids'} for user ${me.username} ` +
      `(the build runs as root of a user namespace, mapped to those ids, never as real root); ` +
      `/etc/subuid and /etc/subgid have ${uid || gid ? 'only one of them' : 'none'}.\n` +
      `hint: add one, e.g. as root: usermod --add-subuids ${start}-${end} --add-subgids ${start}-${end} ${me.username}\n` +
      `      (or the lines "${me.username}:${start}:${MIN_SUBIDS}" in /etc/subuid and /etc/subgid; pick a range no other user has)`,
  );
}

/** argv prefix that runs a command as root of a user namespace mapped to the subordinate ids. */
function nsPrefix(ids: IdMapping): string[] {
  return ids.asRoot
    ? ['unshare', '--user', `--map-users=${ids.uid.start},0,${ids.uid.count}`, `--map-groups=${ids.gid.start},0,${ids.gid.count}`, '--setuid=0', '--setgid=0', '--']
    : ['mmdebstrap', '--unshare-helper'];
}

function findTool(name: string): string | undefined {
  return TOOL_PATH.split(':').map((d) => join(d, name)).find((p) => existsSync(p));
}

function checkTools(ids: IdMapping): void {
  const need: [string, string][] = [['mmdebstrap', 'mmdebstrap'], ['mkfs.ext4', 'e2fsprogs'], ['qemu-img', 'qemu-utils'], ['dpkg-query', 'dpkg'], ['du', 'coreutils'], ['xargs', 'findutils']];
  need.push(ids.asRoot ? ['unshare', 'util-linux'] : ['newuidmap', 'uidmap']);
  const missing = need.filter(([tool]) => findTool(tool) === undefined);
  if (missing.length > 0) {
    throw new HostError(`building a Debian image needs ${missing.map(([t]) => t).join(', ')}; hint: apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}`);
  }
}

/** The namespace's root is an "other" user on the host: it must be able to reach the work directory. */
function checkTraversable(dir: string, ids: IdMapping): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) {
      throw new HostError(
        `${d} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}) does not let other users pass: the Debian build runs as subordinate uid ` +
          `${ids.uid.start}, which must reach ${dir}; hint: use a work directory under /var/cache or /tmp, or chmod o+x ${d}`,
      );
    }
    if (d === dirname(d)) return;
  }
}

// ---------------------------------------------------------------------------------------------
// Running tools

interface Streamed {
  exitCode: number;
  failed: boolean;
  why: string;
}

/** Like run(), but passes every output line (stdout and stderr interleaved) to onLine as it comes. */
async function runStreaming(argv: string[], o: { env: Record<string, string>; log: Logger; onLine: (line: string) => void; timeoutMs: number }): Promise<Streamed> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('runStreaming: empty command');
  o.log.info(`run: ${quoteCommand(argv)}`);
  const child = execa(file, args, { env: o.env, extendEnv: false, stdin: 'ignore', all: true, buffer: false, reject: false, timeout: o.timeoutMs });
  const all = child.all;
  if (all) {
    const rl = createInterface({ input: all, crlfDelay: Infinity });
    rl.on('line', (l) => o.onLine(l));
  }
  const r = await child;
  const why = r.timedOut ? `timed out after ${o.timeoutMs / 1000} s` : r.signal ? `killed by ${r.signal}` : r.exitCode === undefined ? (r.originalMessage ?? 'could not start') : `exit code ${r.exitCode}`;
  return { exitCode: r.exitCode ?? -1, failed: r.failed, why };
}

function shQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A caller's hook argv as an mmdebstrap --customize-hook value. */
export function hookArgument(argv: string[]): string {
  if (argv.length === 0) throw new Error('customize hook: empty argv');
  if (SPECIAL_HOOKS.has(argv[0] as string)) return argv.map(shQuote).join(' '); // mmdebstrap splits these with shellwords
  return argv.map((w) => (w === '$1' ? '"$1"' : shQuote(w))).join(' ');
}

// ---------------------------------------------------------------------------------------------
// Failures

/** The error for a failed mmdebstrap run: the user's mistake when the log says so, the host's otherwise. */
function buildFailure(lines: string[], why: string, n: Normalized, sources: string[]): Error {
  const text = lines.join('\n');
  const step = [...lines].reverse().find((l) => /^(I|vse): /.test(l)) ?? '(before the first step)';
  const logTail = `\n--- last lines of the build log ---\n${tail(text, 25)}`;
  const cause = { log: text };
  const purging = lines.findIndex((l) => l.startsWith('vse: removing packages'));
  const missing = [...new Set([...text.matchAll(/^E: Unable to locate package (\S+)/gm)].map((m) => m[1] as string))];
  if (missing.length > 0) {
    const removing = purging >= 0 && lines.slice(purging).some((l) => l.startsWith('E: Unable to locate package'));
    const where = `Debian ${n.release} (${sources.map((s) => s.split(' ').slice(1, 3).join(' ')).join(', ')})`;
    const names = missing.map((m) => `"${m}"`).join(', ');
    return new UserError(`${removing ? 'cannot remove ' : ''}package ${names} does not exist in ${where}; check the spelling, or the release${logTail}`, { cause });
  }
  const noCandidate = [...new Set([...text.matchAll(/^E: Package '([^']+)' has no installation candidate/gm)].map((m) => m[1] as string))];
  if (noCandidate.length > 0) {
    return new UserError(`package ${noCandidate.map((m) => `"${m}"`).join(', ')} has no installation candidate in Debian ${n.release} (a virtual or removed package; name a real one)${logTail}`, { cause });
  }
  const vse = /^vse-error: (.*)$/m.exec(text);
  if (vse) return new UserError(`${vse[1]}${logTail}`, { cause });
  const units = [...new Set([...text.matchAll(/Unit file (\S+?) does not exist/g)].map((m) => m[1] as string))];
  if (units.length > 0) {
    return new UserError(`service ${units.map((u) => `"${u}"`).join(', ')} does not exist in the image (no package installs it)${logTail}`, { cause });
  }
  if (/^E: Unable to correct problems, you have held broken packages/m.test(text) || / but it is not (going to be )?installable/.test(text)) {
    const deps = lines.filter((l) => /Depends:|Conflicts:|Breaks:/.test(l)).slice(0, 8).map((l) => l.trim()).join('\n  ');
    return new UserError(`the packages cannot be installed together in Debian ${n.release}:\n  ${deps}${logTail}`, { cause });
  }
  const first = lines.find((l) => l.startsWith('E: ')) ?? why;
  return new HostError(`building the Debian base failed (mmdebstrap ${why}) at step "${step}": ${first}${logTail}`, { cause });
}

/** The full build log of a failed buildDebian, if the error carries one. */
export function buildLogOf(err: unknown): string | undefined {
  const cause = err instanceof Error ? (err.cause as { log?: unknown } | undefined) : undefined;
  return typeof cause?.log === 'string' ? cause.log : undefined;
}

// ---------------------------------------------------------------------------------------------
// The build

function writeData(dir: string, n: Normalized, includes: string[]): void {
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  const file = (name: string, text: string, mode = 0o644): void => {
    writeFileSync(join(dir, name), text, { mode });
    chmodSync(join(dir, name), mode);
  };
  const list = (items: readonly string[]): string => items.map((i) => `${i}\n`).join('');
  file('hook', HOOK_SCRIPT, 0o755);
  file('vse-ready', readyScript(), 0o755);
  file('vse-ready.service', READY_UNIT);
  file('fstab', FSTAB);
  file('hostname', 'vse\n');
  file('keep', list(includes));
  file('purge', list(n.absent));
  file('enable', list(n.enable));
  file('disable', list(n.disable));
  file('mask', list(DEBIAN_MASKED_UNITS));
}

/** Installed packages of a tree, from its dpkg database. */
async function installedPackages(tree: string, log: Logger): Promise<{ name: string; version: string }[]> {
  const r = await run(['dpkg-query', `--admindir=${join(tree, 'var', 'lib', 'dpkg')}`, '-W', '-f=${db:Status-Abbrev}\t${Package}\t${Version}\n'], { env: ENV, log });
  return r.stdout.split('\n').map((l) => l.split('\t')).filter((f) => f.length === 3 && (f[0] as string).startsWith('ii'))
    .map(([, name, version]) => ({ name: name as string, version: version as string })).sort((a, b) => a.name.localeCompare(b.name));
}

/** The kernel the image boots: the newest /boot/vmlinuz-V whose linux-image-V package is installed. */
function pickKernel(tree: string, packages: { name: string }[], n: Normalized): { version: string; pkg: string } {
  const installed = new Set(packages.map((p) => p.name));
  const boot = join(tree, 'boot');
  const versions = readdirSync(boot).filter((f) => f.startsWith('vmlinuz-')).map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => installed.has(`linux-image-${v}`) || installed.has(`linux-image-${v}-unsigned`))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const version = versions.at(-1);
  if (version === undefined) {
    throw new UserError(`the image has no kernel in /boot: "${n.kernelPackage}" installed no linux-image package (is it a Debian kernel package?)`);
  }
  if (!existsSync(join(boot, `initrd.img-${version}`))) {
    throw new HostError(`the image has /boot/vmlinuz-${version} but no initrd.img-${version}: initramfs-tools did not run (see the build log)`);
  }
  return { version, pkg: installed.has(`linux-image-${version}`) ? `linux-image-${version}` : `linux-image-${version}-unsigned` };
}

/** Size of the image: what was asked, or the tree plus a quarter and room for ext4's own metadata. */
function imageSize(usedMiB: number, inodes: number, askedMiB: number): { sizeMiB: number; inodes?: number } {
  const needMiB = Math.ceil(usedMiB * 1.25) + 128;
  const sizeMiB = Math.max(askedMiB, needMiB);
  const defaultInodes = sizeMiB * 64; // mke2fs: one inode per 16 KiB
  return inodes * 1.5 > defaultInodes ? { sizeMiB, inodes: Math.ceil(inodes * 2) } : { sizeMiB };
}

/** Load a finished result that buildDebian published earlier. */
export function loadDebian(outDir: string): DebianBase {
  const r = JSON.parse(readFileSync(join(outDir, 'result.json'), 'utf8')) as Omit<DebianBase, 'kernel' | 'initrd' | 'disk' | 'log'>;
  let log = '';
  try {
    log = readFileSync(join(outDir, 'build.log'), 'utf8');
  } catch {
    // the log is informational
  }
  return { ...r, kernel: join(outDir, 'vmlinuz'), initrd: join(outDir, 'initrd.img'), disk: join(outDir, 'disk.qcow2'), log };
}

/**
 * Build a Debian base into outDir: vmlinuz, initrd.img, disk.qcow2 (ext4 root, no partition table),
 * packages.txt, build.log, result.json. outDir appears complete or not at all.
 */
export async function buildDebian(spec: DebianSpec, o: DebianBuildOptions): Promise<DebianBase> {
  const started = Date.now();
  const { log } = o;
  const n = normalize(spec);
  const includes = debianIncludes(spec);
  const hooks = (o.customizeHooks ?? []).map(hookArgument);
  const ids = subordinateIds();
  checkTools(ids);
  if (existsSync(o.outDir) && readdirSync(o.outDir).length > 0) throw new HostError(`${o.outDir} already exists; buildDebian publishes a new directory`);
  mkdirSync(o.workDir, { recursive: true, mode: 0o755 });
  checkTraversable(o.workDir, ids);
  const sources = debianSources(spec);
  const ns = nsPrefix(ids);
  const nsRun = (argv: string[]): ReturnType<typeof run> => run([...ns, ...argv], { env: ENV, log });

  const lines: string[] = [];
  const progress = (line: string): void => o.onProgress?.(line);
  const note = (line: string): void => {
    lines.push(line);
    progress(line);
  };
  mkdirSync(dirname(o.outDir), { recursive: true, mode: 0o755 });
  const part = mkdtempSync(join(dirname(o.outDir), `.${basename(o.outDir)}.part-`));
  chmodSync(part, 0o755);
  const work = mkdtempSync(join(o.workDir, 'debian-'));
  let published = false;
  let tree: string | undefined;
  let image: string | undefined;
  try {
    chmodSync(work, 0o711);
    const data = join(work, 'data');
    writeData(data, n, includes);

    // A directory that belongs to the namespace's root: the tree and the image are made in it.
    let nsDir: string;
    if (ids.asRoot) {
      nsDir = join(work, 'ns');
      mkdirSync(nsDir, { mode: 0o755 });
      chownSync(nsDir, ids.uid.start, ids.gid.start);
    } else {
      // the namespace's root cannot write to our directories: open a gate for it to make its own
      const gate = join(work, 'gate');
      nsDir = join(gate, 'ns');
      mkdirSync(gate, { mode: 0o777 });
      chmodSync(gate, 0o777);
      try {
        await nsRun(['mkdir', '-m', '0755', nsDir]);
      } finally {
        chmodSync(gate, 0o711);
      }
    }
    tree = join(nsDir, 'root');
    image = join(nsDir, 'root.ext4');
    await nsRun(['mkdir', '-m', '0755', tree]);

    log.info(`building a Debian ${n.release} base (variant ${n.variant}) with ${includes.join(' ')}`);
    note(`vse: mmdebstrap ${n.release} (variant ${n.variant}) from ${sources.join('; ')}`);
    const argv = [
      ...(ids.asRoot ? ns : []),
      'mmdebstrap', '--mode=unshare', '--verbose', `--variant=${n.variant}`, '--format=directory',
      `--include=${includes.join(',')}`, ...DPKG_OPTIONS.map((d) => `--dpkgopt=${d}`),
      '--customize-hook="$VSE_HOOK" pre "$1"',
      ...hooks.map((h) => `--customize-hook=${h}`),
      '--customize-hook="$VSE_HOOK" post "$1"',
      n.release, tree, ...sources,
    ];
    const r = await runStreaming(argv, {
      env: { ...ENV, VSE_HOOK: join(data, 'hook'), VSE_HOOK_DATA: data }, log, timeoutMs: o.timeoutMs ?? 30 * 60_000,
      onLine: (line) => {
        lines.push(line);
        if (/^(I|W|E|vse|vse-error): /.test(line)) progress(line);
      },
    });
    if (r.failed) throw buildFailure(lines, r.why, n, sources);

    // What got installed, checked against what was asked.
    const packages = await installedPackages(tree, log);
    const installed = new Set(packages.map((p) => p.name));
    const notInstalled = includes.filter((p) => !installed.has(p));
    if (notInstalled.length > 0) throw new HostError(`the image lacks ${notInstalled.join(', ')} although they were installed (removed by a customize hook?)`);
    const notRemoved = n.absent.filter((p) => installed.has(p));
    if (notRemoved.length > 0) throw new HostError(`the image still has ${notRemoved.join(', ')} although they were removed (installed again by a customize hook?)`);
    const kernel = pickKernel(tree, packages, n);

    // The ext4 image, made without mounting, as root of the namespace (root-owned files inside).
    const du = await nsRun(['du', '-sxm', tree]);
    const usedMiB = Number(du.stdout.split(/\s/)[0]);
    const duI = await nsRun(['du', '-sx', '--inodes', tree]);
    const inodes = Number(duI.stdout.split(/\s/)[0]);
    if (!Number.isFinite(usedMiB) || !Number.isFinite(inodes)) throw new HostError(`cannot size the tree: du said ${du.stdout.trim()} / ${duI.stdout.trim()}`);
    const size = imageSize(usedMiB, inodes, n.diskMiB);
    if (size.sizeMiB > n.diskMiB) log.warn(`the Debian tree takes ${usedMiB} MiB: the disk grows from ${n.diskMiB} to ${size.sizeMiB} MiB`);
    note(`vse: making the ext4 image (${size.sizeMiB} MiB for ${usedMiB} MiB in ${inodes} files)`);
    await nsRun(['mkfs.ext4', '-q', '-F', '-L', 'vse-root', '-m', '1', '-E', 'lazy_itable_init=0,lazy_journal_init=0',
      ...(size.inodes !== undefined ? ['-N', String(size.inodes)] : []), '-d', tree, image, `${size.sizeMiB}M`]);
    note('vse: converting the image to qcow2; copying the kernel and initramfs out');
    await run(['qemu-img', 'convert', '-q', '-O', 'qcow2', image, join(part, 'disk.qcow2')], { env: ENV, log, timeoutMs: 600_000 });
    copyFileSync(join(tree, 'boot', `vmlinuz-${kernel.version}`), join(part, 'vmlinuz'));
    copyFileSync(join(tree, 'boot', `initrd.img-${kernel.version}`), join(part, 'initrd.img'));

    const buildMs = Date.now() - started;
    const text = `${lines.join('\n')}\n`;
    writeFileSync(join(part, 'build.log'), text);
    writeFileSync(join(part, 'packages.txt'), packages.map((p) => `${p.name}\t${p.version}\n`).join(''));
    const result = { cmdline: DEBIAN_CMDLINE, packages, kernelPackage: kernel.pkg, kernelVersion: kernel.version, sources, diskMiB: size.sizeMiB, buildMs };
    writeFileSync(join(part, 'result.json'), `${JSON.stringify(result, null, 2)}\n`);
    for (const f of readdirSync(part)) chmodSync(join(part, f), 0o644);
    try {
      renameSync(part, o.outDir); // atomic publish: readers see all of it or nothing
      published = true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'EEXIST' && code !== 'ENOTEMPTY') || !existsSync(join(o.outDir, 'result.json'))) throw err;
      log.info(`another builder published ${o.outDir} first; using it`);
      return loadDebian(o.outDir);
    }
    log.info(`Debian base ${o.outDir} built in ${(buildMs / 1000).toFixed(1)} s (${packages.length} packages, kernel ${kernel.version})`);
    return loadDebian(o.outDir);
  } finally {
    if (tree !== undefined && image !== undefined) {
      // the tree belongs to the namespace's ids: only its root can remove it
      await nsRun(['rm', '-rf', '--', tree, image]).catch((err: unknown) => log.warn(`cannot remove the build tree ${tree}: ${(err as Error).message}`));
    }
    rmSync(work, { recursive: true, force: true });
    if (!published) rmSync(part, { recursive: true, force: true });
  }
}
