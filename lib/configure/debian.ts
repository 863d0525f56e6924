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
 * command (`"$VSE_HOOK" essential|pre|post "$1"`) running a fixed script that reads package and
 * service names from files, one per line, and hands them to apt-get and systemctl as separate
 * arguments (`xargs -d '\n'`). Callers' extra hooks are argv arrays that we quote word by word.
 *
 * The parts: debian-spec.ts (the spec), debian-sources.ts (apt sources), userns.ts (the subordinate
 * ids), debian-guest.ts (the files the guest gets), mmdebstrap.ts (hooks, running it, its failures).
 */
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir, userInfo } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Description } from '../descriptor/model.js';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import { DEBIAN_DEFAULT_VARIANT, type DebianSpec, type Normalized, debianIncludes, normalize } from './debian-spec.js';
import { guestFilesDigest } from './guest-files.js';
import { DEBIAN_MASKED_UNITS, FSTAB, HOOK_SCRIPT, INITRAMFS_CONF, INITRAMFS_HOOK, MODULES_LOAD, READY_UNIT, writeData } from './debian-guest.js';
import { debianSources, defaultDebianRelease } from './debian-sources.js';
import { buildFailure, hookArgument, runStreaming } from './mmdebstrap.js';
import { BASE_CMDLINE, type Configuration } from './minimal.js';
import { buildOnce, configDir, configsDir, isPublished, publish, touchUsed } from './store.js';
import { TOOL_PATH, checkTools, checkTraversable, nsPrefix, subordinateIds } from './userns.js';

// The Debian base's names from before the split into parts, still importable from here.
export { DEBIAN_DEFAULT_PACKAGES, DEBIAN_DEFAULT_VARIANT, DEBIAN_REQUIRED_PACKAGES, DEBIAN_VARIANTS, type DebianSpec, debianIncludes } from './debian-spec.js';
export { DEBIAN_DEFAULT_MIRROR, debianSources, defaultDebianRelease, hostDebianSources } from './debian-sources.js';
export { DEBIAN_MASKED_UNITS } from './debian-guest.js';
export { buildLogOf, copyInAsRoot, hookArgument } from './mmdebstrap.js';
export { subordinateIds } from './userns.js';

/** Bumped whenever buildDebian changes what it produces (part of cache keys). */
export const DEBIAN_BUILDER_VERSION = 2;

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

/** Kernel command line of the Debian base (the per-VM vse.hostname= is added at deploy time). */
export const DEBIAN_CMDLINE = `${BASE_CMDLINE} root=/dev/vda rootfstype=ext4 rw`;
/** Documentation that a VM image does not need (the copyright files stay). */
const DPKG_OPTIONS = [
  'path-exclude=/usr/share/doc/*', 'path-include=/usr/share/doc/*/copyright', 'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*', 'path-exclude=/usr/share/locale/*', 'path-include=/usr/share/locale/locale.alias',
];
const ENV = { PATH: TOOL_PATH, LC_ALL: 'C' };

/** A cache key for a spec: everything that decides what buildDebian produces. */
/**
 * The state of the Debian archive as this host's apt last saw it (the signed Release files): package
 * versions resolve against it, so a newer archive (after apt-get update) gives a new key.
 */
export function archiveState(lists = '/var/lib/apt/lists'): string {
  const h = createHash('sha256');
  try {
    for (const f of readdirSync(lists).filter((x) => x.endsWith('_InRelease') || x.endsWith('_Release')).sort()) h.update(f).update(readFileSync(join(lists, f)));
  } catch {
    h.update('no apt lists');
  }
  return h.digest('hex').slice(0, 16);
}

export function debianCacheKey(spec: DebianSpec, customizeHooks: string[][] = []): string {
  const n = normalize(spec);
  const inputs = {
    archive: archiveState(),
    v: DEBIAN_BUILDER_VERSION, spec: { ...n, present: [...n.present].sort(), absent: [...n.absent].sort(), enable: [...n.enable].sort(), disable: [...n.disable].sort() },
    sources: debianSources(spec), hooks: customizeHooks, hook: HOOK_SCRIPT, guest: guestFilesDigest(false), unit: READY_UNIT, fstab: FSTAB,
    masked: DEBIAN_MASKED_UNITS, dpkg: DPKG_OPTIONS, cmdline: DEBIAN_CMDLINE, initramfs: [INITRAMFS_CONF, INITRAMFS_HOOK], modules: MODULES_LOAD,
  };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 24);
}

// ---------------------------------------------------------------------------------------------
// The build

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
  if (isPublished(o.outDir)) throw new HostError(`${o.outDir} is already a published configuration; buildDebian publishes a new one`);
  mkdirSync(o.workDir, { recursive: true, mode: 0o755 });
  const wst = lstatSync(o.workDir);
  if (!wst.isDirectory() || wst.uid !== userInfo().uid) throw new HostError(`${o.workDir} is not a directory of user ${userInfo().username}; refusing to build in it`);
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
  const work = mkdtempSync(join(o.workDir, '.build-debian-'));
  let part: string | undefined;
  let published = false;
  let tree: string | undefined;
  let image: string | undefined;
  // `vse gc` removes .build-* directories that look abandoned (untouched for a minute): keep ours fresh
  const beat = setInterval(() => {
    for (const d of [work, part]) {
      try {
        if (d !== undefined) utimesSync(d, new Date(), new Date());
      } catch {
        // gone: the build notices
      }
    }
  }, 5000);
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
      '--essential-hook="$VSE_HOOK" essential "$1"',
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
    part = mkdtempSync(join(dirname(o.outDir), `.build-${basename(o.outDir)}.part-`));
    chmodSync(part, 0o755);
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
    // manifest.json marks a published configuration (lib/configure/store.ts); written last
    writeFileSync(join(part, 'manifest.json'), `${JSON.stringify({
      key: basename(o.outDir), base: 'debian', builder: DEBIAN_BUILDER_VERSION, release: n.release, variant: n.variant, kernelPackage: kernel.pkg,
      cmdline: DEBIAN_CMDLINE, sources, diskMiB: size.sizeMiB, packages: packages.length, builtAt: new Date().toISOString(), buildMs,
    }, null, 2)}\n`);
    for (const f of readdirSync(part)) chmodSync(join(part, f), 0o644);
    publish(part, o.outDir); // atomic: readers see all of it or nothing; a copy published first wins
    published = true;
    log.info(`Debian base ${o.outDir} built in ${(buildMs / 1000).toFixed(1)} s (${packages.length} packages, kernel ${kernel.version})`);
    return loadDebian(o.outDir);
  } finally {
    clearInterval(beat);
    if (tree !== undefined && image !== undefined) {
      // the tree belongs to the namespace's ids: only its root can remove it
      await nsRun(['rm', '-rf', '--', tree, image]).catch((err: unknown) => log.warn(`cannot remove the build tree ${tree}: ${(err as Error).message}`));
    }
    rmSync(work, { recursive: true, force: true });
    if (!published && part !== undefined) rmSync(part, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// A description's Debian base, in the configuration cache

/** The Debian spec of a resolved description: its OS packages and those of its runtime environments. */
export function debianSpecOf(d: Description, siteKernelPackage: string): DebianSpec {
  return {
    release: d.os.release ?? defaultDebianRelease(),
    variant: d.os.variant ?? DEBIAN_DEFAULT_VARIANT,
    kernelPackage: d.os.kernel.package ?? siteKernelPackage,
    packages: [...d.os.packages, ...d.rtes.flatMap((r) => r.packages)],
    services: d.os.services,
    diskMiB: d.vm.diskMiB,
  };
}

/** Scratch space the build's namespace can reach: beside the cache when every parent lets it pass, else the temp directory. */
function workDirFor(cacheDir: string): string {
  const beside = configsDir(cacheDir);
  try {
    for (let d = resolve(beside); ; d = dirname(d)) {
      if ((statSync(d).mode & 0o001) === 0) break;
      if (d === dirname(d)) return beside;
    }
  } catch {
    // not there yet: the temp directory
  }
  return join(tmpdir(), `vse-build-${userInfo().uid}`);
}

export interface EnsureDebianOptions {
  cacheDir: string;
  /** The site's kernel package, for descriptions that name none. */
  kernelPackage: string;
  log: Logger;
  /** Compute the key only (vse destroy FILE): build nothing. */
  lookOnly?: boolean;
  progress?: (line: string) => void;
  customizeHooks?: string[][];
}

function debianConfigurationAt(dir: string, key: string): Configuration {
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { cmdline: string; kernelPackage: string };
  touchUsed(dir);
  return { key, dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), disk: join(dir, 'disk.qcow2'), cmdline: m.cmdline, kernelPackage: m.kernelPackage };
}

/** Build (or reuse) the Debian base of a description in the configuration cache; one build per key at a time. */
export async function ensureDebianBase(d: Description, o: EnsureDebianOptions): Promise<Configuration> {
  const spec = debianSpecOf(d, o.kernelPackage);
  const hooks = o.customizeHooks ?? [];
  const key = debianCacheKey(spec, hooks);
  const dir = configDir(o.cacheDir, key);
  if (o.lookOnly) {
    return { key, dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), disk: join(dir, 'disk.qcow2'), cmdline: DEBIAN_CMDLINE, kernelPackage: spec.kernelPackage };
  }
  mkdirSync(configsDir(o.cacheDir), { recursive: true, mode: 0o755 });
  return buildOnce(o.cacheDir, key, o.log, async () => {
    o.progress?.(`building the Debian ${spec.release} base ${key} (mmdebstrap, about a minute)`);
    await buildDebian(spec, { outDir: dir, workDir: workDirFor(o.cacheDir), log: o.log, customizeHooks: hooks, ...(o.progress ? { onProgress: o.progress } : {}) });
    return debianConfigurationAt(dir, key);
  }, () => debianConfigurationAt(dir, key));
}
