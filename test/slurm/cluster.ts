// Helpers for tests against the one-host Slurm test cluster of test/slurm/cluster.sh.
// This module never starts or stops the cluster: global-setup.ts does (cluster.sh start/stop).
import { chmodSync, chownSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { isAlive } from "../../lib/deploy/proc.js";

/** The non-root user jobs are submitted as. */
export const JOB_USER = process.env.VSE_SLURM_USER ?? "vsetest";
/** The cluster's directory (conf, logs, spool, pids). */
export const SLURM_DIR = process.env.VSE_SLURM_DIR ?? "/tmp/vse-slurm";
/** Nodes of the test cluster. */
export const NODES = ["n1", "n2"] as const;

/** Job states after which a job does not change any more. */
export const TERMINAL_STATES: ReadonlySet<string> = new Set([
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMEOUT",
  "NODE_FAIL",
  "PREEMPTED",
  "BOOT_FAIL",
  "DEADLINE",
  "OUT_OF_MEMORY",
]);

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Working directory; default: userDir() (owned by the job user). */
  cwd?: string;
  /** Extra environment variables (the environment is otherwise minimal). */
  env?: Record<string, string>;
  /** Kill the command after this many ms; default 60000. */
  timeoutMs?: number;
  /** Text fed on stdin; default: none (/dev/null). */
  input?: string;
}

/** Path of the cluster's slurm.conf (SLURM_CONF when set, else $VSE_SLURM_DIR/slurm.conf). */
export function slurmConf(): string {
  return process.env.SLURM_CONF ?? join(SLURM_DIR, "slurm.conf");
}

/** Log file of slurmd for a node ("n1", "n2"); prolog/epilog output lands there. */
export function slurmdLog(node: string): string {
  return join(SLURM_DIR, "log", `slurmd.${node}.log`);
}

/** Log file of slurmctld. */
export function slurmctldLog(): string {
  return join(SLURM_DIR, "log", "slurmctld.log");
}

/** Last `lines` lines of a file ("" if unreadable); handy in assertion messages. */
export function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines - 1).join("\n");
  } catch {
    return "";
  }
}

function userIds(): { uid: number; gid: number; home: string } {
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const f = line.split(":");
    if (f[0] === JOB_USER && f.length >= 7) {
      return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? `/home/${JOB_USER}` };
    }
  }
  throw new Error(`user ${JOB_USER} does not exist: did test/slurm/cluster.sh start run?`);
}

let userDirPath: string | undefined;
let fileCounter = 0;

/** A per-process temp dir under /tmp owned by the job user (mode 0755); created on first use. */
export function userDir(): string {
  if (userDirPath === undefined) {
    const { uid, gid } = userIds();
    const dir = mkdtempSync("/tmp/vse-test-");
    chownSync(dir, uid, gid);
    chmodSync(dir, 0o755);
    userDirPath = dir;
    if (process.env.VSE_KEEP_CLUSTER !== "1") process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return userDirPath;
}

/** Write a file owned by the job user into userDir(); returns its absolute path. */
export function writeUserFile(name: string, content: string, mode = 0o644): string {
  if (name.includes("/")) throw new Error(`writeUserFile: plain file name expected, got ${name}`);
  const { uid, gid } = userIds();
  const path = join(userDir(), name);
  writeFileSync(path, content, { mode });
  chmodSync(path, mode);
  chownSync(path, uid, gid);
  return path;
}

function baseEnv(extra: Record<string, string> | undefined, home: string, user: string): string[] {
  const env: Record<string, string> = {
    PATH,
    HOME: home,
    USER: user,
    LOGNAME: user,
    LANG: "C.UTF-8",
    LC_ALL: "C",
    SLURM_CONF: slurmConf(),
    ...extra,
  };
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/** How the helpers start commands: a minimal environment, never a rejected promise, text output. */
function execaOptions(opts: RunOptions, timeoutMs: number) {
  return {
    cwd: opts.cwd ?? userDir(),
    env: { PATH },
    extendEnv: false,
    reject: false,
    timeout: opts.timeoutMs ?? timeoutMs,
    stripFinalNewline: false,
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: "ignore" as const }),
  };
}

/** `cmd` as the job user, with SLURM_CONF set and a minimal environment. */
function userArgv(cmd: string[], opts: RunOptions): [string, ...string[]] {
  const { home } = userIds();
  return ["runuser", "-u", JOB_USER, "--", "env", "-i", ...baseEnv(opts.env, home, JOB_USER), ...cmd];
}

async function run(argv: string[], opts: RunOptions): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("empty command");
  const r = await execa(file, args, execaOptions(opts, 60_000));
  if (r.timedOut) {
    throw new Error(`timed out after ${opts.timeoutMs ?? 60_000} ms: ${argv.join(" ")}\n${r.stderr}`);
  }
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Run a command as the job user with SLURM_CONF set and a minimal environment. */
export async function asUser(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(userArgv(cmd, opts), opts);
}

/** Start a command as the job user in the background (e.g. salloc holding an allocation); the
 *  caller awaits or kills the returned process. Its stdout and stderr are collected as text. */
export function startAsUser(cmd: string[], opts: RunOptions = {}): ReturnType<typeof execa> {
  const [file, ...args] = userArgv(cmd, opts);
  return execa(file, args, execaOptions(opts, 600_000));
}

/** Run a command as root (this process) with SLURM_CONF set, e.g. scontrol. */
export async function asRoot(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(["env", "-i", ...baseEnv(opts.env, "/root", "root"), ...cmd], { cwd: "/", ...opts });
}

export interface SbatchResult extends RunResult {
  /** The job id when sbatch succeeded. */
  jobId?: string;
  /** Path of the job script written into userDir(). */
  script: string;
}

/** Submit `script` (a full batch script text, "#!/bin/sh ...") with sbatch as the job user.
 *  Never throws on sbatch failure: check exitCode / jobId (for refused submissions). */
export async function trySbatch(
  args: string[],
  script: string,
  opts: RunOptions = {},
): Promise<SbatchResult> {
  fileCounter += 1;
  const path = writeUserFile(`job-${process.pid}-${fileCounter}.sh`, script, 0o755);
  const r = await asUser(["sbatch", "--parsable", ...args, path], opts);
  const id = /^(\d+)(;\S+)?\s*$/m.exec(r.stdout)?.[1];
  return { ...r, script: path, ...(r.exitCode === 0 && id !== undefined ? { jobId: id } : {}) };
}

/** Submit like trySbatch, but throw unless sbatch accepted the job; returns the job id. */
export async function sbatch(args: string[], script: string, opts: RunOptions = {}): Promise<string> {
  const r = await trySbatch(args, script, opts);
  if (r.jobId === undefined) {
    throw new Error(`sbatch ${args.join(" ")} failed (exit ${r.exitCode}):\n${r.stderr}${r.stdout}`);
  }
  return r.jobId;
}

/** `scontrol show job -o ID` as key → value (undefined when the job is unknown/gone). */
export async function jobInfo(id: string): Promise<Record<string, string> | undefined> {
  const r = await asRoot(["scontrol", "show", "job", "-o", id]);
  if (r.exitCode !== 0) {
    if (/Invalid job id/i.test(r.stderr)) return undefined;
    throw new Error(`scontrol show job ${id} failed (exit ${r.exitCode}): ${r.stderr}`);
  }
  return parseKeyValues(r.stdout);
}

/** Parse one-line `scontrol -o` output (Key=Value Key=Value ...). Values may contain
 *  spaces (e.g. Command=, Reason=); a token without '=' is appended to the previous value. */
export function parseKeyValues(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  let last: string | undefined;
  for (const tok of line.trim().split(/\s+/)) {
    const m = /^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$/.exec(tok);
    if (m?.[1] !== undefined && m[2] !== undefined) {
      last = m[1];
      out[last] = m[2];
    } else if (last !== undefined && tok !== "") {
      out[last] = `${out[last] ?? ""} ${tok}`;
    }
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

/** Poll `scontrol show job` until the job is in a terminal state (COMPLETED, FAILED, CANCELLED,
 *  TIMEOUT, ...) or gone; returns that state, or the last state seen when the job vanished
 *  ("UNKNOWN" if it was never seen). COMPLETING is not terminal: the epilog has finished on
 *  every node when this returns COMPLETED. Throws after timeoutMs with the last state. */
export async function waitJob(id: string, timeoutMs = 120_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "UNKNOWN";
  let reason = "";
  for (;;) {
    const info = await jobInfo(id);
    if (info === undefined) return last;
    last = info.JobState ?? last;
    reason = info.Reason ?? "";
    if (TERMINAL_STATES.has(last)) return last;
    if (Date.now() >= deadline) {
      throw new Error(`job ${id} still ${last} (Reason=${reason}) after ${timeoutMs} ms`);
    }
    await sleep(250);
  }
}

/** Node → state (lower case as sinfo prints it: idle, allocated, mixed, drained, down*, ...). */
export async function nodeStates(): Promise<Record<string, string>> {
  const r = await asRoot(["sinfo", "-h", "-N", "-o", "%N %T"]);
  if (r.exitCode !== 0) throw new Error(`sinfo failed (exit ${r.exitCode}): ${r.stderr}`);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split("\n")) {
    const [node, state] = line.trim().split(/\s+/);
    if (node && state) out[node] = state;
  }
  return out;
}

/** `scontrol show node -o NODE` as key → value (State, Reason, ...). */
export async function nodeInfo(node: string): Promise<Record<string, string>> {
  const r = await asRoot(["scontrol", "show", "node", "-o", node]);
  if (r.exitCode !== 0) throw new Error(`scontrol show node ${node} failed: ${r.stderr}`);
  return parseKeyValues(r.stdout);
}

/** Resume drained/down nodes (after a test that made a prolog/epilog fail). Never throws. */
export async function resumeNodes(nodes: readonly string[] = NODES): Promise<void> {
  const states = await nodeStates().catch(() => ({}) as Record<string, string>);
  for (const n of nodes) {
    const s = states[n] ?? "";
    if (/drain|down|fail/i.test(s)) {
      await asRoot(["scontrol", "update", `nodename=${n}`, "state=resume"]).catch(() => undefined);
    }
  }
}

/** Wait until every node is idle; throws with the states after timeoutMs. */
export async function waitNodesIdle(timeoutMs = 60_000, nodes: readonly string[] = NODES): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let states: Record<string, string> = {};
  for (;;) {
    states = await nodeStates();
    if (nodes.every((n) => states[n] === "idle")) return;
    if (Date.now() >= deadline) {
      throw new Error(`nodes not idle after ${timeoutMs} ms: ${JSON.stringify(states)}`);
    }
    await sleep(250);
  }
}

/** Cancel every job still known to the cluster (cleanup between tests). */
export async function cancelAll(): Promise<void> {
  const r = await asRoot(["squeue", "-h", "-o", "%i"]);
  const ids = r.stdout.split(/\s+/).filter((s) => s !== "");
  if (ids.length > 0) await asRoot(["scancel", ...ids]);
}

/** Poll `probe` until it returns something other than undefined; throws after timeoutMs with
 *  `what` and the last value of `describe()` (for the assertion message). */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 30_000,
  describe: () => string | Promise<string> = () => "",
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${await describe()}`);
    }
    await sleep(intervalMs);
  }
}

/** Ids of the job user's jobs squeue still lists (pending, running, completing). */
export async function userQueue(): Promise<string[]> {
  const r = await asRoot(["squeue", "-h", "-u", JOB_USER, "-o", "%i"]);
  if (r.exitCode !== 0) throw new Error(`squeue failed (exit ${r.exitCode}): ${r.stderr}`);
  return r.stdout.split(/\s+/).filter((s) => s !== "");
}

/** Nodes that are drained, draining, down or failed, with their Reason (empty when all are fine). */
export async function unwellNodes(nodes: readonly string[] = NODES): Promise<string[]> {
  const out: string[] = [];
  for (const n of nodes) {
    const info = await nodeInfo(n);
    const state = info.State ?? "";
    if (/DRAIN|DOWN|FAIL/i.test(state)) out.push(`${n}: ${state} Reason=${info.Reason ?? ""}`);
  }
  return out;
}

// ---- what vse leaves on the (shared) host -------------------------------------------------

/** Where vse was installed (make install PREFIX=$VSE_PREFIX SYSCONFDIR=$VSE_PREFIX/etc). */
export const VSE_PREFIX = process.env.VSE_PREFIX ?? "/tmp/vse-prefix";
/** The installed CLI. */
export const VSE = join(VSE_PREFIX, "bin", "vse");

/** vse's state directory as root sees it: stateDir of the installed site config, else /run/vse. */
export function vseStateDir(): string {
  try {
    const site = JSON.parse(readFileSync(join(VSE_PREFIX, "etc", "vse", "site.json"), "utf8")) as {
      stateDir?: unknown;
    };
    if (typeof site.stateDir === "string") return site.stateDir;
  } catch {
    // no admin site config: the shipped default
  }
  return "/run/vse";
}

/** Job directories (`<job>.<node>`) vse keeps for a job on this host, e.g. ["12.n1", "12.n2"]. */
export function vseJobDirs(jobId: string): string[] {
  try {
    return readdirSync(join(vseStateDir(), "jobs"))
      .filter((n) => n.startsWith(`${jobId}.`))
      .sort();
  } catch {
    return [];
  }
}

/** The per-job, per-node record vse writes (state.json), as far as the tests look at it. */
export interface VseRecord {
  job: string;
  node: string;
  state: string;
  accel?: string;
  vms: { index: number; name: string; pid?: number; state: string; startedAt?: string; bootMs?: number; consoleLog: string }[];
}

/** state.json of a job on a node (read as root), or undefined when there is none. */
export function vseRecord(jobId: string, node: string): VseRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(vseStateDir(), "jobs", `${jobId}.${node}`, "state.json"), "utf8")) as VseRecord;
  } catch {
    return undefined;
  }
}

/** Live QEMU processes started for a job: argv[0] is a qemu-system binary and an argument names the
 *  job's directory (`.../jobs/<job>.<node>/`) or its VM names (`process=vse-<job>-<node>-<i>`). */
export function qemuOfJob(jobId: string): { pid: number; argv: string[] }[] {
  const out: { pid: number; argv: string[] }[] = [];
  const dirMark = `/jobs/${jobId}.`;
  const nameMark = `process=vse-${jobId}-`;
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").filter((s) => s !== "");
    } catch {
      continue;
    }
    if (!/qemu-system/.test(argv[0] ?? "")) continue;
    if (!argv.some((a) => a.includes(dirMark) || a.includes(nameMark))) continue;
    if (processAlive(Number(name))) out.push({ pid: Number(name), argv });
  }
  return out;
}

/** True when the process exists and is not a zombie (the project's own test of it). */
export const processAlive = isAlive;

/** Lines of /var/log/vse/<hook>.log (or the site's logDir) about one job, for assertion messages. */
export function vseLog(hook: "prolog" | "epilog", jobId: string): string {
  let logDir = "/var/log/vse";
  try {
    const site = JSON.parse(readFileSync(join(VSE_PREFIX, "etc", "vse", "site.json"), "utf8")) as { logDir?: unknown };
    if (typeof site.logDir === "string") logDir = site.logDir;
  } catch {
    // default
  }
  try {
    return readFileSync(join(logDir, `${hook}.log`), "utf8")
      .split("\n")
      .filter((l) => l.includes(` job=${jobId} `))
      .join("\n");
  } catch {
    return "";
  }
}

/** examples/hello.xml, the file the README shows. */
export const EXAMPLE = fileURLToPath(new URL("../../examples/hello.xml", import.meta.url));

/** examples/hello.xml as a user would copy it, with `perNode` VMs per node and `extra` elements before `</vse>`. */
export function helloXml(perNode: number, extra = ""): string {
  const text = readFileSync(EXAMPLE, "utf8");
  const out = text.replace(/perNode="\d+"/, `perNode="${perNode}"`);
  if (out === text && !text.includes(`perNode="${perNode}"`)) {
    throw new Error(`${EXAMPLE} has no perNode attribute to set`);
  }
  return extra ? out.replace("</vse>", `  ${extra}\n</vse>`) : out;
}
