/**
 * `vse create`: a resolved description to a bootable configuration. The OS base is built (or
 * reused) first; the description's own files, build steps and boot options make a derived
 * configuration on top of it, keyed by the hash of everything that goes in.
 */
import { copyFileSync, existsSync, lchownSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Description } from '../descriptor/model.js';
import type { SiteConfig } from '../site/config.js';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import { applyFileOps } from './apply.js';
import { buildCpio, entriesOfTree, readCpio, writeTree } from './cpio.js';
import { type Configuration, ensureMinimalGuest } from './minimal.js';
import { type Builder, stageImports } from './stage.js';
import { runOfflineSteps } from './steps.js';
import { HEARTBEAT_MS, buildOnce, configDir, configsDir, publish, touchUsed } from './store.js';

export interface CreateOptions {
  site: SiteConfig;
  log: Logger;
  builder: Builder;
  progress?: (line: string) => void;
  /** Compute the key only (vse destroy FILE): build nothing. */
  lookOnly?: boolean;
}

const DERIVED_VERSION = 1;

/** Hand a tree to the builder; links are changed themselves, never what they point at. */
function chownTree(path: string, uid: number, gid: number): void {
  lchownSync(path, uid, gid);
  if (lstatSync(path).isDirectory()) for (const f of readdirSync(path)) chownTree(join(path, f), uid, gid);
}

function bootArgs(d: Description): string[] {
  return d.boot.map((b) => (b.value === undefined ? b.name : `${b.name}=${b.value}`));
}

function load(dir: string, key: string): Configuration {
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { cmdline: string; kernelPackage: string };
  touchUsed(dir);
  const disk = join(dir, 'disk.qcow2');
  return { key, dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), ...(existsSync(disk) ? { disk } : {}), cmdline: m.cmdline, kernelPackage: m.kernelPackage };
}

/** The base configuration of the description's OS. */
async function ensureBase(d: Description, o: CreateOptions): Promise<Configuration> {
  if (d.os.base === 'minimal') {
    return ensureMinimalGuest({ cacheDir: o.site.cacheDir, kernelPackage: d.os.kernel.package ?? o.site.kernelPackage, log: o.log, lookOnly: o.lookOnly });
  }
  const { ensureDebianBase } = await import('./debian.js');
  return ensureDebianBase(d, { cacheDir: o.site.cacheDir, kernelPackage: o.site.kernelPackage, log: o.log, lookOnly: o.lookOnly, progress: o.progress });
}

/** What a derived build contributes: files it wrote into `out`, its log, extra manifest fields. */
interface DerivedParts {
  /** It wrote its own initrd.img (else the base's is linked). */
  ownInitrd?: boolean;
  /** The build's output, kept as build.log. */
  log?: string;
  manifest?: Record<string, unknown>;
}

function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}

/**
 * The frame every derived configuration is built in: a key from the parent and the inputs, one
 * build per key, a temporary directory, the parent's kernel (and initrd) linked, a qcow2 overlay of
 * the parent's disk (when it has one), the manifest, an atomic publish. `make` does the part that differs.
 */
async function derive(d: Description, base: Configuration, o: CreateOptions, inputs: object, what: string,
  make: (out: string, work: string) => Promise<DerivedParts>): Promise<Configuration> {
  const key = createHash('sha256').update(JSON.stringify({ v: DERIVED_VERSION, parent: base.key, ...inputs })).digest('hex').slice(0, 24);
  const dir = configDir(o.site.cacheDir, key);
  if (o.lookOnly) return { ...base, key, dir };
  return buildOnce(o.site.cacheDir, key, o.log, async () => {
    const started = Date.now();
    o.progress?.(`building ${key} on ${base.key}: ${what}`);
    const { default: tmp } = await import('tmp');
    const work = tmp.dirSync({ tmpdir: configsDir(o.site.cacheDir), prefix: `.build-${key}-`, unsafeCleanup: true });
    // `vse gc` takes a .build-* directory left alone for a minute for a crashed build's: a build VM may run longer
    const beat = setInterval(() => {
      try {
        utimesSync(work.name, new Date(), new Date());
      } catch {
        // gone: the build notices
      }
    }, HEARTBEAT_MS);
    try {
      const out = join(work.name, 'out');
      mkdirSync(out, { mode: 0o755 });
      if (base.disk !== undefined) await run(['/usr/bin/qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base.disk, join(out, 'disk.qcow2')], { log: o.log });
      const parts = await make(out, work.name);
      linkOrCopy(base.kernel, join(out, 'vmlinuz'));
      if (!parts.ownInitrd) linkOrCopy(base.initrd, join(out, 'initrd.img'));
      if (parts.log !== undefined) writeFileSync(join(out, 'build.log'), parts.log);
      writeFileSync(join(out, 'manifest.json'), `${JSON.stringify({
        key, base: d.os.base, parent: base.key, description: d.name, kernelPackage: base.kernelPackage, cmdline: [base.cmdline, ...bootArgs(d)].join(' '),
        boot: d.boot, ...parts.manifest, builtAt: new Date().toISOString(), buildMs: Date.now() - started,
      }, null, 2)}\n`);
      publish(out, dir);
      o.progress?.(`configuration ${key} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      clearInterval(beat);
      work.removeCallback();
    }
    return load(dir, key);
  }, () => load(dir, key));
}

/** Online build steps on a disk-based base: the build's overlay is booted, the steps run inside, the disk is kept. */
function online(d: Description, base: Configuration, o: CreateOptions): Promise<Configuration> {
  return derive(d, base, o, { build: d.build, boot: d.boot }, `${d.build.length} online step(s) in a VM`, async (out, work) => {
    const { runOnlineSteps } = await import('./online.js');
    const vm = join(work, 'vm');
    mkdirSync(vm, { mode: 0o700 });
    const log = await runOnlineSteps({ disk: join(out, 'disk.qcow2'), kernel: base.kernel, initrd: base.initrd, cmdline: base.cmdline, work: vm, steps: d.build, memoryMiB: Math.max(256, d.vm.memoryMiB), site: o.site, log: o.log, progress: o.progress });
    return { log, manifest: { build: d.build.map((s) => ({ name: s.name, mode: s.mode })) } };
  });
}

/** The minimal guest's files and offline steps: its initramfs is unpacked, changed and packed again. */
async function minimalDerived(d: Description, base: Configuration, o: CreateOptions): Promise<Configuration> {
  if (d.build.some((s) => s.mode === 'online')) throw new HostError('online build steps need a base with a disk (debian); the minimal guest runs from memory');
  const staged = await stageImports(d.files, o.builder, o.log);
  try {
    const inputs = { files: d.files, imports: staged.digests, build: d.build, boot: d.boot };
    return await derive(d, base, o, inputs, `${d.files.length} file operation(s), ${d.build.length} build step(s)`, async (out) => {
      // the image tree lives where the builder can work on it (the build steps run as that user)
      const tree = join(staged.dir, 'tree');
      mkdirSync(tree, { mode: 0o755 });
      writeTree(tree, readCpio(readFileSync(base.initrd)).filter((e) => e.type !== 'char'));
      const fileLog = applyFileOps(tree, staged.ops);
      let buildLog = '';
      if (d.build.length > 0) {
        if (process.getuid?.() === 0) chownTree(tree, o.builder.uid, o.builder.gid);
        // busybox's applets as commands, as the booted guest has them
        const applets = { name: 'busybox-applets', mode: 'offline' as const, run: '/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin && /bin/busybox --install -s' };
        buildLog = await runOfflineSteps(tree, [applets, ...d.build], o.builder, o.log);
      }
      // all files of the image belong to root, whoever built them
      writeFileSync(join(out, 'initrd.img'), buildCpio([
        ...entriesOfTree(tree),
        { path: 'dev/console', type: 'char', major: 5, minor: 1 },
        { path: 'dev/null', type: 'char', major: 1, minor: 3, mode: 0o666 },
      ]));
      return {
        ownInitrd: true, log: `${fileLog.join('\n')}\n${buildLog}`,
        manifest: { files: d.files, build: d.build.map((s) => ({ name: s.name, mode: s.mode })), builder: o.builder.user },
      };
    });
  } finally {
    staged.cleanup();
  }
}

/**
 * A Debian child's files and offline steps: its disk is an overlay of the parent's, changed inside a
 * build VM (offline-vm.ts), and the parent's kernel and initramfs are kept; no mmdebstrap.
 */
async function debianDerived(d: Description, base: Configuration, o: CreateOptions): Promise<Configuration> {
  const staged = await stageImports(d.files, o.builder, o.log);
  try {
    const { BUILD_VM_VERSION, applyInBuildVm } = await import('./offline-vm.js');
    const inputs = { vm: BUILD_VM_VERSION, files: d.files, imports: staged.digests, build: d.build, boot: d.boot };
    return await derive(d, base, o, inputs, `${d.files.length} file operation(s), ${d.build.length} offline step(s) in a build VM`, async (out, work) => {
      const vm = join(work, 'vm');
      mkdirSync(vm, { mode: 0o700 });
      const log = await applyInBuildVm({
        disk: join(out, 'disk.qcow2'), kernel: base.kernel, initrd: base.initrd, cmdline: base.cmdline, work: vm, staged, builder: o.builder,
        steps: d.build, memoryMiB: Math.max(256, d.vm.memoryMiB), site: o.site, log: o.log, progress: o.progress,
      });
      return {
        log: `vse: derived from ${base.key}: its disk is the backing file, its kernel and initramfs are kept; files and offline steps applied in a build VM (no mmdebstrap)\n${log}\n`,
        manifest: { derivation: 'build-vm', files: d.files, build: d.build.map((s) => ({ name: s.name, mode: s.mode })), builder: o.builder.user },
      };
    });
  } finally {
    staged.cleanup();
  }
}

/** Build or reuse the configuration of a description. */
export async function ensureConfiguration(d: Description, o: CreateOptions): Promise<Configuration> {
  const say = o.progress ?? ((): void => undefined);
  say(`base: ${d.os.base}`);
  const base = await ensureBase(d, o);
  if (d.files.length === 0 && d.build.length === 0 && d.boot.length === 0) {
    if (!o.lookOnly) touchUsed(base.dir);
    return base;
  }
  // kernel options only: the base's files as they are, a command line of its own
  if (d.files.length === 0 && d.build.length === 0) return derive(d, base, o, { boot: d.boot }, 'kernel options', () => Promise.resolve({}));
  if (d.os.base === 'minimal') return minimalDerived(d, base, o);
  const offline = d.build.filter((s) => s.mode === 'offline');
  const onlineSteps = d.build.filter((s) => s.mode === 'online');
  if (d.files.length === 0 && offline.length === 0) return online(d, base, o);
  // files and offline steps on an overlay of the base's disk; online steps then run on that
  const built = await debianDerived({ ...d, build: offline, boot: onlineSteps.length > 0 ? [] : d.boot }, base, o);
  return onlineSteps.length > 0 ? online({ ...d, files: [], build: onlineSteps }, built, o) : built;
}
