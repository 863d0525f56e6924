/**
 * The program that a Debian child's build VM runs (offline-vm.ts starts the VM): inside the guest,
 * as its root, with the host's own node from the read-only hand-in disk. It applies the file
 * operations with apply.ts, the same code the host runs on a minimal guest's tree, to the guest's
 * root filesystem; runs the offline build steps chrooted into it without network; then remounts
 * it read-only and writes what happened to the result disk.
 *
 * The root filesystem is seen through a plain bind mount of `/`: the image's own files, without
 * the /proc, /sys, /dev and /run the booted kernel mounts on top. A path such as /run/x or /dev/x
 * therefore lands in the image, as it did when these operations ran on the image's tree on the
 * host, and a step sees the tree as a chroot without /proc, as before.
 *
 * Only relative modules and node's own may be imported here (the hand-in disk carries nothing else).
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UserError } from '../util/errors.js';
import { type PlannedOp, applyFileOps } from './apply.js';

/** Serial numbers of the hand-in disks: the runtime (this program), the staged imports, the result. */
export const SERIAL = { run: 'vse-run', in: 'vse-in', out: 'vse-out' } as const;
/** Where the guest mounts the runtime disk and the imports disk. */
export const RUN_MOUNT = '/run/vse';
export const IN_MOUNT = '/run/vse-in';
/** The root filesystem alone (a bind mount of `/` without what is mounted on it). */
export const ROOT_VIEW = '/run/vse-root';
/** The PATH of offline steps (the host's build used the same). */
export const STEP_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

export interface GuestPlan {
  ops: PlannedOp[];
  steps: { name: string; run: string; workdir?: string }[];
  /** The runtime's dynamic loader and library directory, put before each of its programs (empty: they need none). */
  loader: string[];
  stepTimeoutMs: number;
  /** How much of each step's output is kept (its end). */
  outputTailBytes: number;
}

export interface GuestStepResult {
  name: string;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  ms: number;
  output: string;
}

export interface GuestResult {
  v: 1;
  fileLog: string[];
  steps: GuestStepResult[];
  /** What stopped the build: a file operation (user) or the build VM itself (host). A failed step is in `steps`. */
  failure?: { kind: 'user' | 'host'; message: string };
  /** The root filesystem was synced and remounted read-only: what is on the disk is complete. */
  clean: boolean;
  cleanError?: string;
}

/** The /dev node of the virtio disk with this serial number, if any. */
export function diskBySerial(serial: string, sys = '/sys/block'): string | undefined {
  for (const b of readdirSync(sys).filter((n) => n.startsWith('vd'))) {
    try {
      if (readFileSync(`${sys}/${b}/serial`, 'utf8').trim() === serial) return `/dev/${b}`;
    } catch {
      // no serial
    }
  }
  return undefined;
}

/** The result as written to the result disk: one line of JSON, cut to fit (step outputs lose their beginning first). */
export function encodeResult(r: GuestResult, capacity: number): Buffer {
  let keep = Math.max(0, ...r.steps.map((s) => s.output.length));
  for (;;) {
    const steps = r.steps.map((s) => (s.output.length > keep ? { ...s, output: `[... cut]\n${s.output.slice(-keep)}` } : s));
    const buf = Buffer.from(`${JSON.stringify({ ...r, steps })}\n`);
    if (buf.length <= capacity || keep === 0) return buf.subarray(0, capacity);
    keep = Math.floor(keep / 2);
  }
}

function tool(plan: GuestPlan, name: string): string[] {
  return [...plan.loader, `${RUN_MOUNT}/bin/${name}`];
}

function must(plan: GuestPlan, argv: string[]): void {
  const [file, ...args] = [...tool(plan, argv[0] as string), ...argv.slice(1)];
  const r = spawnSync(file as string, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${`${r.stderr ?? ''}${r.stdout ?? ''}`.trim() || (r.error?.message ?? `exit ${r.status}`)}`);
}

/**
 * One offline step: as root, chrooted into the root view, stdin closed, in network and mount
 * namespaces of its own (no network; what it mounts, /proc say, goes away with it).
 */
function runStep(plan: GuestPlan, s: GuestPlan['steps'][number]): Promise<GuestStepResult> {
  const argv = [
    ...tool(plan, 'unshare'), '--net', '--mount', ...tool(plan, 'chroot'), ROOT_VIEW,
    '/bin/sh', '-c', 'exec 2>&1; cd "$1" && exec /bin/sh -c "$2"', 'vse-step', s.workdir ?? '/', s.run,
  ];
  const started = Date.now();
  return new Promise((resolve) => {
    let out = Buffer.alloc(0);
    const keep = (d: Buffer): void => {
      out = Buffer.concat([out, d]);
      if (out.length > 2 * plan.outputTailBytes) out = out.subarray(-plan.outputTailBytes);
    };
    const child = spawn(argv[0] as string, argv.slice(1), { env: { PATH: STEP_PATH, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // gone
      }
    }, plan.stepTimeoutMs);
    const done = (exitCode: number | null, signal: string | null, extra = ''): void => {
      clearTimeout(timer);
      resolve({ name: s.name, exitCode, signal, timedOut, ms: Date.now() - started, output: `${out.subarray(-plan.outputTailBytes).toString('utf8')}${extra}` });
    };
    child.on('error', (e) => done(null, null, `could not start the step: ${e.message}\n`));
    child.on('close', (code, signal) => done(code, signal));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What this program mounted, to unmount before the root filesystem goes read-only. */
const mounted: string[] = [];

function mount(plan: GuestPlan, args: string[], at: string): void {
  mkdirSync(at, { recursive: true });
  must(plan, ['mount', ...args, at]);
  mounted.unshift(at);
}

async function build(plan: GuestPlan, result: GuestResult): Promise<void> {
  try {
    mount(plan, ['--bind', '/'], ROOT_VIEW);
    const input = diskBySerial(SERIAL.in);
    if (input !== undefined) mount(plan, ['-r', '-t', 'ext4', input], IN_MOUNT);
  } catch (err) {
    result.failure = { kind: 'host', message: `cannot prepare the build VM: ${(err as Error).message}` };
    return;
  }
  try {
    result.fileLog = applyFileOps(ROOT_VIEW, plan.ops);
  } catch (err) {
    result.failure = { kind: err instanceof UserError ? 'user' : 'host', message: (err as Error).message };
    return;
  }
  for (const s of plan.steps) {
    const r = await runStep(plan, s);
    result.steps.push(r);
    if (r.exitCode !== 0) return;
  }
}

/** End what the steps left running, then make the root filesystem clean: unmounted views, remounted read-only. */
async function finish(plan: GuestPlan, result: GuestResult): Promise<void> {
  try {
    process.kill(-1, 'SIGKILL'); // everyone but init and us
  } catch {
    // nobody left
  }
  let why = '';
  for (let i = 0; i < 50; i++) {
    try {
      while (mounted.length > 0) {
        must(plan, ['umount', mounted[0] as string]);
        mounted.shift();
      }
      must(plan, ['mount', '-o', 'remount,ro', '/']);
      result.clean = true;
      return;
    } catch (err) {
      why = (err as Error).message; // killed processes may still hold files for a moment
      await sleep(100);
    }
  }
  result.cleanError = why;
}

async function main(): Promise<void> {
  const plan = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as GuestPlan;
  const result: GuestResult = { v: 1, fileLog: [], steps: [], clean: false };
  try {
    await build(plan, result);
  } catch (err) {
    result.failure = { kind: 'host', message: `the build VM failed: ${(err as Error).stack ?? String(err)}` };
  }
  await finish(plan, result);
  const out = diskBySerial(SERIAL.out);
  if (out === undefined) throw new Error('no result disk');
  const capacity = Number(readFileSync(`/sys/block/${out.slice('/dev/'.length)}/size`, 'utf8')) * 512;
  const fd = openSync(out, 'r+');
  try {
    writeSync(fd, encodeResult(result, capacity));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`vse-build: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  });
}
