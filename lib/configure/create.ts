/**
 * `vse create`: a resolved description to a bootable configuration. The OS base is built (or
 * reused) first; the description's own files, build steps and boot options make a derived
 * configuration on top of it, keyed by the hash of everything that goes in.
 */
import { copyFileSync, lchownSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
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
import { buildOnce, configDir, configsDir, publish, touchUsed } from './store.js';

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
  return { key, dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), disk: join(dir, 'disk.qcow2'), cmdline: m.cmdline, kernelPackage: m.kernelPackage };
}

/** The base configuration of the description's OS. */
async function ensureBase(d: Description, o: CreateOptions): Promise<Configuration> {
  if (d.os.base === 'minimal') {
    return ensureMinimalGuest({ cacheDir: o.site.cacheDir, kernelPackage: d.os.kernel.package ?? o.site.kernelPackage, log: o.log, lookOnly: o.lookOnly });
  }
  const { ensureDebianBase } = await import('./debian.js');
  return ensureDebianBase(d, { cacheDir: o.site.cacheDir, kernelPackage: o.site.kernelPackage, log: o.log, lookOnly: o.lookOnly, progress: o.progress });
}

/** A configuration that differs from its base only in kernel options: links, a backing disk, a command line. */
async function bootOnly(d: Description, base: Configuration, o: CreateOptions): Promise<Configuration> {
  const key = createHash('sha256').update(JSON.stringify({ v: DERIVED_VERSION, parent: base.key, boot: d.boot })).digest('hex').slice(0, 24);
  const dir = configDir(o.site.cacheDir, key);
  if (o.lookOnly) return { ...base, key, dir };
  return buildOnce(o.site.cacheDir, key, o.log, async () => {
    const { default: tmp } = await import('tmp');
    const work = tmp.dirSync({ tmpdir: configsDir(o.site.cacheDir), prefix: `.build-${key}-`, unsafeCleanup: true });
    try {
      const out = join(work.name, 'out');
      mkdirSync(out, { mode: 0o755 });
      for (const [from, to] of [[base.kernel, 'vmlinuz'], [base.initrd, 'initrd.img']] as const) {
        try {
          linkSync(from, join(out, to));
        } catch {
          copyFileSync(from, join(out, to));
        }
      }
      await run(['/usr/bin/qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base.disk, join(out, 'disk.qcow2')], { log: o.log });
      writeFileSync(join(out, 'manifest.json'), `${JSON.stringify({
        key, base: d.os.base, parent: base.key, description: d.name, kernelPackage: base.kernelPackage, cmdline: [base.cmdline, ...bootArgs(d)].join(' '),
        boot: d.boot, builtAt: new Date().toISOString(), buildMs: 0,
      }, null, 2)}\n`);
      publish(out, dir);
    } finally {
      work.removeCallback();
    }
    return load(dir, key);
  }, () => load(dir, key));
}

/** Online build steps on a disk-based base: boot an overlay of its disk, run them inside, keep the disk. */
async function online(d: Description, base: Configuration, o: CreateOptions): Promise<Configuration> {
  const key = createHash('sha256').update(JSON.stringify({ v: DERIVED_VERSION, parent: base.key, build: d.build, boot: d.boot })).digest('hex').slice(0, 24);
  const dir = configDir(o.site.cacheDir, key);
  if (o.lookOnly) return { ...base, key, dir };
  return buildOnce(o.site.cacheDir, key, o.log, async () => {
    const started = Date.now();
    o.progress?.(`building ${key} on ${base.key}: ${d.build.length} online step(s) in a VM`);
    const { default: tmp } = await import('tmp');
    const { runOnlineSteps } = await import('./online.js');
    const work = tmp.dirSync({ tmpdir: configsDir(o.site.cacheDir), prefix: `.build-${key}-`, unsafeCleanup: true });
    try {
      const out = join(work.name, 'out');
      const vm = join(work.name, 'vm');
      mkdirSync(out, { mode: 0o755 });
      mkdirSync(vm, { mode: 0o700 });
      for (const [from, to] of [[base.kernel, 'vmlinuz'], [base.initrd, 'initrd.img']] as const) {
        try {
          linkSync(from, join(out, to));
        } catch {
          copyFileSync(from, join(out, to));
        }
      }
      const disk = join(out, 'disk.qcow2');
      await run(['/usr/bin/qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base.disk, disk], { log: o.log });
      const buildLog = await runOnlineSteps({ disk, kernel: base.kernel, initrd: base.initrd, cmdline: base.cmdline, work: vm, steps: d.build, memoryMiB: Math.max(256, d.vm.memoryMiB), site: o.site, log: o.log, progress: o.progress });
      writeFileSync(join(out, 'build.log'), buildLog);
      writeFileSync(join(out, 'manifest.json'), `${JSON.stringify({
        key, base: d.os.base, parent: base.key, description: d.name, kernelPackage: base.kernelPackage, cmdline: [base.cmdline, ...bootArgs(d)].join(' '),
        build: d.build.map((s) => ({ name: s.name, mode: s.mode })), boot: d.boot, builtAt: new Date().toISOString(), buildMs: Date.now() - started,
      }, null, 2)}\n`);
      publish(out, dir);
      o.progress?.(`configuration ${key} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      work.removeCallback();
    }
    return load(dir, key);
  }, () => load(dir, key));
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
  if (d.files.length === 0 && d.build.length === 0) return bootOnly(d, base, o);
  if (d.os.base === 'debian' && d.files.length === 0 && d.build.every((s) => s.mode === 'online')) return online(d, base, o);
  if (d.os.base !== 'minimal') throw new HostError(`files and offline build steps on the ${d.os.base} base are not built by this version yet`);
  const staged = await stageImports(d.files, o.builder, o.log);
  try {
    const key = createHash('sha256').update(JSON.stringify({
      v: DERIVED_VERSION, parent: base.key, files: d.files, imports: staged.digests, build: d.build, boot: d.boot,
    })).digest('hex').slice(0, 24);
    const dir = configDir(o.site.cacheDir, key);
    if (o.lookOnly) return { ...base, key, dir };
    return await buildOnce(o.site.cacheDir, key, o.log, async () => {
      const started = Date.now();
      say(`building ${key} on ${base.key}: ${d.files.length} file operation(s), ${d.build.length} build step(s)`);
      const { default: tmp } = await import('tmp');
      const work = tmp.dirSync({ tmpdir: configsDir(o.site.cacheDir), prefix: `.build-${key}-`, unsafeCleanup: true });
      try {
        // the image tree lives where the builder can work on it (the build steps run as that user)
        const tree = join(staged.dir, 'tree');
        mkdirSync(tree, { mode: 0o755 });
        writeTree(tree, readCpio(readFileSync(base.initrd)).filter((e) => e.type !== 'char'));
        const fileLog = applyFileOps(tree, staged.ops);
        let buildLog = '';
        const offline = d.build.filter((s) => s.mode === 'offline');
        if (d.build.some((s) => s.mode === 'online')) throw new HostError('online build steps need a base with a disk (debian); the minimal guest runs from memory');
        if (offline.length > 0) {
          if (process.getuid?.() === 0) chownTree(tree, o.builder.uid, o.builder.gid);
          // busybox's applets as commands, as the booted guest has them
          buildLog = await runOfflineSteps(tree, [{ name: 'busybox-applets', mode: 'offline', run: '/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin && /bin/busybox --install -s' }, ...offline], o.builder, o.log);
        }
        const out = join(work.name, 'out');
        mkdirSync(out, { mode: 0o755 });
        // all files of the image belong to root, whoever built them
        const entries = [
          ...entriesOfTree(tree),
          { path: 'dev/console', type: 'char' as const, major: 5, minor: 1 },
          { path: 'dev/null', type: 'char' as const, major: 1, minor: 3, mode: 0o666 },
        ];
        writeFileSync(join(out, 'initrd.img'), buildCpio(entries));
        try {
          linkSync(base.kernel, join(out, 'vmlinuz'));
        } catch {
          copyFileSync(base.kernel, join(out, 'vmlinuz'));
        }
        await run(['/usr/bin/qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base.disk, join(out, 'disk.qcow2')], { log: o.log });
        const cmdline = [base.cmdline, ...bootArgs(d)].join(' ');
        writeFileSync(join(out, 'build.log'), `${fileLog.join('\n')}\n${buildLog}`);
        writeFileSync(join(out, 'manifest.json'), `${JSON.stringify({
          key, base: d.os.base, parent: base.key, description: d.name, kernelPackage: base.kernelPackage, cmdline,
          files: d.files, build: d.build.map((s) => ({ name: s.name, mode: s.mode })), boot: d.boot, builder: o.builder.user,
          builtAt: new Date().toISOString(), buildMs: Date.now() - started,
        }, null, 2)}\n`);
        publish(out, dir);
        say(`configuration ${key} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      } finally {
        work.removeCallback();
      }
      return load(dir, key);
    }, () => load(dir, key));
  } finally {
    staged.cleanup();
  }
}
