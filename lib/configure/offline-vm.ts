/**
 * A Debian child's files and offline build steps, applied to a qcow2 overlay of its parent's disk
 * inside a build VM, instead of building the whole tree again with mmdebstrap.
 *
 * Why a VM, and this one: the image is never mounted on the host, and nothing of the user's runs
 * as root on the host, so the work has to happen inside the guest. Booting the guest's own init and
 * working through its agent (as online steps do) costs a full systemd boot and shutdown, some
 * twenty seconds under TCG; here the parent's kernel and initramfs mount the overlay as root and
 * run, as init, a bootstrap (kernel command line) that mounts a read-only runtime disk and runs
 * guest-build.ts on it. The runtime is the host's own node with the shared libraries it loads, plus
 * the host's mount, umount, chroot and unshare, started through the host's dynamic loader: it does
 * not depend on what the guest has, and the file operations are apply.ts itself, the code the
 * minimal base runs on the host, so they mean the same and fail with the same messages. Boot to
 * power-off takes a few seconds.
 *
 * The disks: the overlay (vda, the child's disk), the runtime (made by us from host files), the
 * imports (an ext4 that the job's user makes with `mkfs.ext4 -d` from the files staged with that
 * user's rights, so that root never reads them), and a raw result disk the guest writes one line of
 * JSON to. The guest is given no network. A failure names the file operation or the step and
 * quotes its output; the caller publishes nothing then.
 */
import { chmodSync, chownSync, copyFileSync, existsSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Description } from '../descriptor/model.js';
import { packageRoot } from '../site/paths.js';
import type { SiteConfig } from '../site/config.js';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run, tail } from '../util/run.js';
import type { PlannedOp } from './apply.js';
import { type GuestPlan, type GuestResult, IN_MOUNT, RUN_MOUNT, SERIAL } from './guest-build.js';
import { startBuildVm } from './online.js';
import { type Builder, type Staged, asBuilder } from './stage.js';
import { TOOL_PATH } from './userns.js';

/** Part of a derived configuration's key: bumped whenever what the build VM does changes. */
export const BUILD_VM_VERSION = 1;
/** As long as an offline step may run (the same limit as on the host). */
const STEP_TIMEOUT_MS = 3_600_000;
/** How much of each step's output comes back for the build log and error messages. */
const OUTPUT_TAIL_BYTES = 1 << 20;
const MiB = 1 << 20;

/**
 * The kernel command line's init: mount the runtime disk (found by its serial number), run its
 * init. No double quotes (the kernel's quoting) and no word that the initramfs takes for one of its
 * own options (ro, rw, debug, break, init=...).
 */
export const BOOTSTRAP = `mkdir -p ${RUN_MOUNT}; for b in /sys/block/vd*; do read -r s < $b/serial; case $s in ${SERIAL.run}) mount -r -t ext4 /dev/\${b##*/} ${RUN_MOUNT};; esac; done; exec ${RUN_MOUNT}/init`;

/** The runtime disk's init (PID 1): the build, then power off (should that fail, init ends, the kernel panics, and panic=-1 with QEMU's -no-reboot ends the VM too). */
function initScript(loader: string[]): string {
  return `#!/bin/sh
# vse build VM: PID 1. Runs the build (guest-build.js), then powers off; its result is on the result disk.
${[...loader, `${RUN_MOUNT}/bin/node`, `${RUN_MOUNT}/js/lib/configure/guest-build.js`, `${RUN_MOUNT}/plan.json`].join(' ')}
echo o >/proc/sysrq-trigger
sleep 60
`;
}

/** Host programs the guest runs, with the shared libraries they load (from `ldd`). */
async function hostRuntime(log: Logger): Promise<{ programs: Map<string, string>; libs: string[]; loader?: string }> {
  const find = (name: string): string => {
    const p = TOOL_PATH.split(':').map((d) => join(d, name)).find((f) => existsSync(f));
    if (p === undefined) throw new HostError(`the build VM needs ${name} from the host; hint: apt-get install util-linux coreutils mount`);
    return p;
  };
  const programs = new Map<string, string>([['node', process.execPath], ...['mount', 'umount', 'chroot', 'unshare'].map((n): [string, string] => [n, find(n)])]);
  const libs = new Set<string>();
  let loader: string | undefined;
  for (const p of programs.values()) {
    const r = await run(['ldd', p], { env: { PATH: TOOL_PATH, LC_ALL: 'C' }, log, allowFailure: true });
    const found = parseLdd(r.stdout);
    for (const l of found.libs) libs.add(l);
    loader ??= found.loader;
  }
  return { programs, libs: [...libs], ...(loader !== undefined ? { loader } : {}) };
}

/** The libraries and the loader in `ldd` output (a static program has neither). */
export function parseLdd(text: string): { libs: string[]; loader?: string } {
  const libs: string[] = [];
  let loader: string | undefined;
  for (const line of text.split('\n')) {
    const lib = /=>\s+(\/\S+)\s+\(/.exec(line)?.[1];
    if (lib !== undefined) libs.push(lib);
    const ld = /^\s*(\/\S+)\s+\(0x/.exec(line)?.[1];
    if (ld !== undefined) loader = ld;
  }
  return { libs, ...(loader !== undefined ? { loader } : {}) };
}

/** Where the compiled modules are (dist/lib/configure; from the sources, the built tree beside them). */
function compiledDir(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.js') ? dirname(here) : join(packageRoot, 'dist', 'lib', 'configure');
}

/** The guest program and every module it imports (relative ones only: the guest has nothing else). */
export function guestModules(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    if (!existsSync(file)) throw new HostError(`the build VM program needs ${file}, which is missing (make build)`);
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(/\b(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) {
      const spec = m[1] as string;
      if (spec.startsWith('node:')) continue;
      if (!spec.startsWith('.')) throw new HostError(`${file} imports ${spec}: the build VM program may import only its own modules and node's`);
      visit(resolve(dirname(file), spec));
    }
  };
  visit(entry);
  return [...seen];
}

/** Bytes and inodes a tree needs in an ext4 image (metadata only is read: links are not followed). */
function treeSize(path: string): { bytes: number; inodes: number } {
  const st = lstatSync(path);
  const own = { bytes: Math.ceil(Math.max(st.size, 1) / 4096) * 4096, inodes: 1 };
  if (!st.isDirectory()) return own;
  return readdirSync(path).map((f) => treeSize(join(path, f))).reduce((a, b) => ({ bytes: a.bytes + b.bytes, inodes: a.inodes + b.inodes }), own);
}

/** mkfs.ext4 arguments for a read-only image of a tree (no journal: nothing writes to it). */
function mkfsArgs(tree: string, image: string): string[] {
  const need = treeSize(tree);
  const mib = Math.ceil((need.bytes * 1.2) / MiB) + 16;
  return ['/sbin/mkfs.ext4', '-q', '-F', '-O', '^has_journal', '-m', '0', '-N', String(need.inodes + 64), '-d', tree, image, `${mib}M`];
}

/** A QEMU option value (a comma in a path is written twice). */
const opt = (path: string): string => path.replace(/,/g, ',,');

/**
 * A hand-in disk. Its PCI slot (0x1a and up: 0x1f is q35's LPC bridge) comes after the overlay's, which QEMU places itself:
 * the guest finds disks in slot order, and the overlay must stay /dev/vda, the root the initramfs mounts.
 */
function drive(slot: number, serial: string, file: string, readonly: boolean): string[] {
  return ['-drive', `file=${opt(file)},if=none,id=${serial},format=raw${readonly ? ',readonly=on' : ''}`, '-device', `virtio-blk-pci,drive=${serial},serial=${serial},addr=0x${(0x1a + slot).toString(16)}`];
}

/** The runtime disk: the host programs and libraries, the guest program, its init and the plan. */
async function makeRuntime(dir: string, image: string, plan: Omit<GuestPlan, 'loader'>, log: Logger): Promise<void> {
  const rt = await hostRuntime(log);
  const loader = rt.loader !== undefined ? [`${RUN_MOUNT}/ld.so`, '--library-path', `${RUN_MOUNT}/lib`] : [];
  mkdirSync(join(dir, 'bin'), { recursive: true, mode: 0o755 });
  mkdirSync(join(dir, 'lib'), { mode: 0o755 });
  const put = (from: string, to: string, mode: number): void => {
    copyFileSync(from, join(dir, to));
    chmodSync(join(dir, to), mode);
  };
  for (const [name, path] of rt.programs) put(path, join('bin', name), 0o755);
  for (const l of rt.libs) put(l, join('lib', basename(l)), 0o644);
  if (rt.loader !== undefined) put(rt.loader, 'ld.so', 0o755);
  const compiled = compiledDir();
  const dist = resolve(compiled, '..', '..');
  for (const m of guestModules(join(compiled, 'guest-build.js'))) {
    const to = join('js', relative(dist, m));
    mkdirSync(dirname(join(dir, to)), { recursive: true, mode: 0o755 });
    put(m, to, 0o644);
  }
  writeFileSync(join(dir, 'js', 'package.json'), '{"type": "module"}\n');
  writeFileSync(join(dir, 'init'), initScript(loader), { mode: 0o755 });
  writeFileSync(join(dir, 'plan.json'), JSON.stringify({ ...plan, loader } satisfies GuestPlan));
  await run(mkfsArgs(dir, image), { env: { PATH: TOOL_PATH, LC_ALL: 'C' }, log });
}

/**
 * The imports disk, made by the builder from its staged files (root never reads them). It is made
 * in a directory of the builder's inside one of root's; once mkfs is done that directory is given
 * back to root, so the image QEMU opens is the one the builder made, not a link it put there.
 */
async function makeImports(staged: Staged, b: Builder, log: Logger): Promise<{ image: string; cleanup(): void }> {
  const root = process.getuid?.() === 0;
  const hand = mkdtempSync(join(tmpdir(), 'vse-imports-'));
  const cleanup = (): void => rmSync(hand, { recursive: true, force: true });
  try {
    chmodSync(hand, 0o711);
    const dir = join(hand, 'in');
    mkdirSync(dir, { mode: 0o700 });
    if (root) chownSync(dir, b.uid, b.gid);
    const image = join(dir, 'imports.ext4');
    try {
      await asBuilder(b, mkfsArgs(staged.dir, image), log);
    } catch (err) {
      throw new HostError(`cannot make the imports disk as ${b.user}: ${(err as Error).message}`, { cause: err });
    }
    if (root) lchownSync(dir, 0, 0);
    const st = lstatSync(image);
    if (!st.isFile() || st.nlink !== 1 || (root && st.uid !== b.uid)) throw new HostError(`${image} is not the image ${b.user} made; refusing to use it`);
    return { image, cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}

/** The result line the guest wrote at the start of the result disk, if it is one. */
export function readResult(file: string): GuestResult | undefined {
  const buf = readFileSync(file);
  const end = buf.indexOf(0x0a);
  if (end <= 0) return undefined;
  try {
    const r = JSON.parse(buf.subarray(0, end).toString('utf8')) as GuestResult;
    return r.v === 1 && Array.isArray(r.fileLog) && Array.isArray(r.steps) ? r : undefined;
  } catch {
    return undefined;
  }
}

/** The build log of a result, and the error it stands for (steps are named by the plan, not by the guest). */
export function judge(r: GuestResult, steps: { name: string }[]): { log: string; error?: Error } {
  const lines = [...r.fileLog];
  for (const [i, s] of r.steps.entries()) {
    const name = steps[i]?.name ?? s.name;
    lines.push(`--- step ${name} (offline, exit ${s.exitCode ?? s.signal}, ${s.ms} ms)`, s.output.trimEnd());
    if (s.exitCode !== 0) {
      const why = s.timedOut ? 'timed out' : s.signal ? `killed by ${s.signal}` : `exit ${s.exitCode}`;
      return { log: lines.join('\n'), error: new UserError(`build step "${name}" failed (${why}):\n${tail(s.output, 20) || '(no output)'}`) };
    }
  }
  const log = lines.join('\n');
  if (r.failure) return { log, error: r.failure.kind === 'user' ? new UserError(r.failure.message) : new HostError(r.failure.message) };
  if (r.steps.length !== steps.length) return { log, error: new HostError(`the build VM ran ${r.steps.length} of ${steps.length} step(s)`) };
  if (!r.clean) return { log, error: new HostError(`the build VM could not make its disk clean (${r.cleanError ?? 'unknown'}); the disk is not kept`) };
  return { log };
}

export interface BuildVmWork {
  /** The overlay to change (the child's disk, backed by the parent's). */
  disk: string;
  /** The parent's kernel, initramfs and command line. */
  kernel: string;
  initrd: string;
  cmdline: string;
  /** A directory of root's for the disks, sockets and console log. */
  work: string;
  staged: Staged;
  builder: Builder;
  steps: Description['build'];
  memoryMiB: number;
  site: SiteConfig;
  log: Logger;
  progress?: (line: string) => void;
}

/** Apply the staged file operations and run the offline steps on `disk` in a build VM. Returns the build log. */
export async function applyInBuildVm(o: BuildVmWork): Promise<string> {
  // the imports, as the guest sees them
  const ops = o.staged.ops.map((op): PlannedOp => (op.op === 'import' ? { ...op, staged: posix.join(IN_MOUNT, relative(o.staged.dir, op.staged)) } : op));
  const plan = { ops, steps: o.steps.map((s) => ({ name: s.name, run: s.run, ...(s.workdir ? { workdir: s.workdir } : {}) })), stepTimeoutMs: STEP_TIMEOUT_MS, outputTailBytes: OUTPUT_TAIL_BYTES };
  const runtime = join(o.work, 'runtime.ext4');
  await makeRuntime(join(o.work, 'runtime'), runtime, plan, o.log);
  const result = join(o.work, 'result.raw');
  writeFileSync(result, '');
  truncateSync(result, 16 * MiB + o.steps.length * 4 * OUTPUT_TAIL_BYTES);
  const imports = ops.some((op) => op.op === 'import') ? await makeImports(o.staged, o.builder, o.log) : undefined;
  try {
    o.progress?.(`build VM: ${ops.length} file operation(s), ${o.steps.length} offline step(s)`);
    const vm = await startBuildVm({
      disk: o.disk, kernel: o.kernel, initrd: o.initrd, work: o.work, memoryMiB: o.memoryMiB, site: o.site, log: o.log,
      cmdline: `${o.cmdline} fsck.mode=skip init=/bin/sh -- -c "${BOOTSTRAP}"`,
      extraArgs: [...drive(0, SERIAL.run, runtime, true), ...drive(1, SERIAL.out, result, false), ...(imports ? drive(2, SERIAL.in, imports.image, true) : [])],
    });
    const limitMs = o.site.bootTimeoutSec * 1000 + o.steps.length * STEP_TIMEOUT_MS + 600_000;
    try {
      if (!(await vm.waitExit(limitMs))) throw new HostError(`the build VM did not finish within ${limitMs / 1000} s; its disk is not kept`);
    } finally {
      await vm.stop();
    }
    const r = readResult(result);
    if (r === undefined) {
      const con = existsSync(vm.consoleLog) ? tail(readFileSync(vm.consoleLog, 'utf8'), 15) : '(no console output)';
      throw new HostError(`the build VM ended without a result${vm.stderr() ? ` (QEMU: ${tail(vm.stderr(), 5)})` : ''}\n--- console (last lines) ---\n${con}`);
    }
    const { log, error } = judge(r, o.steps);
    if (error) throw error;
    return log;
  } finally {
    imports?.cleanup();
  }
}
