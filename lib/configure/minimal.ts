/** The minimal guest: a Debian cloud kernel and a busybox initramfs that reports readiness. */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { packageRoot } from '../site/paths.js';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import { type CpioEntry, buildCpio } from './cpio.js';
import { fetchKernel } from './kernel.js';
import { buildOnce, publish } from './store.js';
import { guestFilesDigest, minimalGuestEntries } from './guest-files.js';

/**
 * Kernel modules the guest loads (and their dependencies): the virtio bus, the random number
 * generator (first: the kernel's random pool is ready as soon as it can be), console, network,
 * file sharing, firmware config (the SSH host key).
 */
export const GUEST_MODULES = ['virtio_pci', 'virtio_rng', 'virtio_console', 'virtio_net', 'virtiofs', 'qemu_fw_cfg'];
/** Modules in the image that boot does not load: the guest's setup loads them once the guest is ready (the memory balloon's free page reporting). */
export const LATE_MODULES = ['virtio_balloon'];

/** Bumped whenever the build below changes what it produces. */
const BUILDER_VERSION = 3;

export const BUSYBOX = '/bin/busybox';

/** A built guest configuration: everything a VM boots from. */
export interface Configuration {
  key: string;
  dir: string;
  kernel: string;
  initrd: string;
  /** Base disk image, for bases that boot from one (debian); every VM gets a copy-on-write overlay of it. The minimal guest runs from memory and has none. */
  disk?: string;
  /** Kernel command line (the per-VM hostname is added at deploy time). */
  cmdline: string;
  kernelPackage: string;
}

export const BASE_CMDLINE = 'console=ttyS0 quiet panic=-1 reboot=t nokaslr tsc=reliable no_timer_check cryptomgr.notests mitigations=off';

/**
 * The minimal guest's: the base line, and its kernel does not set up tracefs (ftrace's files, and
 * kprobe events). Linux 6.1 makes a dentry and an inode for each file of each of its ~2000 trace
 * events at boot: 9 MiB of every VM's memory, which the translation cache uses better. Its
 * busybox has no tracing tool; a Debian base keeps tracefs.
 */
export const MINIMAL_CMDLINE = `${BASE_CMDLINE} initcall_blacklist=tracer_init_tracefs,init_kprobe_trace`;

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function initScript(): string {
  return readFileSync(join(packageRoot, 'lib', 'configure', 'init.sh'), 'utf8');
}

function configurationAt(dir: string, key: string, lookOnly = false): Configuration {
  if (lookOnly && !existsSync(join(dir, 'manifest.json'))) return { key, dir, kernel: '', initrd: '', cmdline: MINIMAL_CMDLINE, kernelPackage: '' };
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { kernelPackage: string; cmdline: string };
  return { key, dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), cmdline: manifest.cmdline, kernelPackage: manifest.kernelPackage };
}

const SIGNATURE_MAGIC = Buffer.from('~Module signature appended~\n');

/**
 * A kernel module without its appended signature. The guest kernel does not enforce signatures
 * (no secure boot in a vse VM), and checking each one is an RSA verification: under TCG the
 * modules of the minimal guest took 0.6 s to load with them.
 */
export function stripModuleSignature(ko: Buffer): Buffer {
  const m = SIGNATURE_MAGIC.length;
  if (ko.length < m + 12 || !ko.subarray(ko.length - m).equals(SIGNATURE_MAGIC)) return ko;
  // struct module_signature (12 bytes, sig_len big-endian at its end) sits before the magic
  const sigLen = ko.readUInt32BE(ko.length - m - 4);
  const end = ko.length - m - 12 - sigLen;
  return end > 0 ? ko.subarray(0, end) : ko;
}

/** busybox's applets as paths (`usr/bin/awk`, ...), made symbolic links in the image rather than by `busybox --install` at every boot. */
async function busyboxApplets(log: Logger): Promise<string[]> {
  const r = await run([BUSYBOX, '--list-full'], { log, env: { PATH: '/usr/bin:/bin' } });
  return r.stdout.split('\n').map((l) => l.trim()).filter((l) => /^[a-z/]+\/[\w.[\]-]+$/.test(l) && l !== 'bin/sh' && !l.startsWith('bin/busybox'));
}

/** Modules in load order (dependencies first), from the depmod output of the unpacked package. */
function moduleOrder(modDir: string, wanted: string[]): string[] {
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(modDir, 'modules.dep'), 'utf8').split('\n')) {
    const [mod, rest] = line.split(':');
    if (!mod) continue;
    deps.set(mod, (rest ?? '').trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map([...deps.keys()].map((p) => [basename(p).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_'), p]));
  const order: string[] = [];
  const visit = (path: string): void => {
    if (order.includes(path)) return;
    for (const d of deps.get(path) ?? []) visit(d);
    order.push(path);
  };
  for (const w of wanted) {
    const p = byName.get(w);
    if (!p) throw new HostError(`the guest kernel has no module ${w}`);
    visit(p);
  }
  return order;
}

/** Build (or reuse) the minimal guest configuration in the cache; safe to race with other builders. */
export async function ensureMinimalGuest(opts: { cacheDir: string; kernelPackage: string; log: Logger; lookOnly?: boolean }): Promise<Configuration> {
  const { cacheDir, log } = opts;
  if (!existsSync(BUSYBOX)) throw new HostError(`${BUSYBOX} is missing; hint: apt-get install busybox-static`);
  const kernel = await fetchKernel(opts.kernelPackage, cacheDir, log);
  const init = initScript();
  const busybox = readFileSync(BUSYBOX);
  const key = sha256(JSON.stringify({ v: BUILDER_VERSION, base: 'minimal', kernel: kernel.sha256, busybox: sha256(busybox), init: sha256(init), guest: guestFilesDigest(true), modules: GUEST_MODULES, late: LATE_MODULES, cmdline: MINIMAL_CMDLINE })).slice(0, 24);
  const configsDir = join(cacheDir, 'configs');
  const dir = join(configsDir, key);
  if (existsSync(join(dir, 'manifest.json')) || opts.lookOnly) return configurationAt(dir, key, opts.lookOnly);

  mkdirSync(configsDir, { recursive: true, mode: 0o755 });
  // one build per key, like every configuration (store.ts): racing prologs wait and reuse it
  return buildOnce(cacheDir, key, log, async () => {
    const started = Date.now();
    log.info(`building the minimal guest ${key} from ${kernel.name}`);
    const { default: tmp } = await import('tmp');
    const work = tmp.dirSync({ tmpdir: configsDir, prefix: `.build-${key}-`, unsafeCleanup: true });
    try {
      const unpacked = join(work.name, 'pkg');
      await run(['dpkg-deb', '-x', kernel.deb, unpacked], { log, env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
      const kver = readdirSync(join(unpacked, 'lib', 'modules'))[0];
      if (!kver) throw new HostError(`${kernel.deb} holds no kernel modules`);
      await run(['/usr/sbin/depmod', '-b', unpacked, kver], { log });
      const modDir = join(unpacked, 'lib', 'modules', kver);
      const mods = moduleOrder(modDir, GUEST_MODULES);
      const late = moduleOrder(modDir, LATE_MODULES).filter((m) => !mods.includes(m));
      const out = join(work.name, 'out');
      mkdirSync(out, { mode: 0o755 });
      copyFileSync(join(unpacked, 'boot', `vmlinuz-${kver}`), join(out, 'vmlinuz'));

      const baseDirs = ['bin', 'sbin', 'dev', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'tmp', 'run'];
      const guest = minimalGuestEntries().filter((e) => e.type !== 'dir' || !baseDirs.includes(e.path));
      const entries: CpioEntry[] = [
        ...baseDirs.map((p) => ({ path: p, type: 'dir' as const })),
        { path: 'dev/console', type: 'char', major: 5, minor: 1 },
        { path: 'dev/null', type: 'char', major: 1, minor: 3, mode: 0o666 },
        { path: 'bin/busybox', type: 'file', data: busybox, mode: 0o755 },
        { path: 'bin/sh', type: 'symlink', target: 'busybox' },
        { path: 'init', type: 'file', data: Buffer.from(init), mode: 0o755 },
        { path: 'etc/vse-release', type: 'file', data: Buffer.from(`key=${key}\nkernel=${kernel.name}\n`) },
        ...[...mods, ...late].map((m) => ({ path: `lib/modules/${basename(m).replace(/\.ko(\.\w+)?$/, '')}.ko`, type: 'file' as const, data: stripModuleSignature(readFileSync(join(modDir, m))) })),
        { path: 'lib/modules/load-order', type: 'file', data: Buffer.from(mods.map((m) => basename(m).replace(/\.ko(\.\w+)?$/, '')).join('\n') + '\n') },
        ...guest,
        // after the directories above (usr/bin, usr/sbin, sbin): parents come first in an initramfs
        ...(await busyboxApplets(log)).map((path) => ({ path, type: 'symlink' as const, target: '/bin/busybox' })),
      ];
      writeFileSync(join(out, 'initrd.img'), buildCpio(entries));
      const manifest = {
        key, base: 'minimal', builder: BUILDER_VERSION, kernelPackage: kernel.name, kernelDebSha256: kernel.sha256,
        modules: mods.map((m) => basename(m)), lateModules: late.map((m) => basename(m)), cmdline: MINIMAL_CMDLINE, builtAt: new Date().toISOString(), buildMs: Date.now() - started,
      };
      writeFileSync(join(out, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      publish(out, dir);
      log.info(`guest ${key} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      rmSync(work.name, { recursive: true, force: true });
    }
    return configurationAt(dir, key);
  }, () => configurationAt(dir, key));
}
