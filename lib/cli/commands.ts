/** The CLI's commands: each parses its arguments, calls lib/, and prints the outcome. */
import { userInfo } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { explain, formatExplain } from '../descriptor/explain.js';
import { MAX_BUNDLE_BYTES, type Resolution, makeBundle, resolveFile } from '../descriptor/resolve.js';
import { formatSize } from '../util/size.js';
import { loadSiteConfig } from '../site/config.js';
import { UserError } from '../util/errors.js';
// create, run, status and cleanup need execa, tmp and the deploy code: loaded when used, so that
// validate and resolve start fast

const out = (s: string): boolean => process.stdout.write(`${s}\n`);

function warn(r: Resolution): void {
  for (const w of r.warnings) process.stderr.write(`vse: warning: ${w}\n`);
}

/** `vse validate`: exit 0, or every problem. `--emit` prints the job's copy (the bundle) for the SPANK plugin. */
export function cmdValidate(file: string, emit: boolean): void {
  const r = resolveFile(file, loadSiteConfig());
  warn(r);
  const d = r.description;
  if (emit) {
    const bundle = JSON.stringify(makeBundle(r));
    if (Buffer.byteLength(bundle) > MAX_BUNDLE_BYTES) {
      throw new UserError(`${file}: the description and its own bases total ${Buffer.byteLength(bundle)} bytes; expected at most ${MAX_BUNDLE_BYTES}; hint: move large file contents into files imported with <import>`);
    }
    out(bundle);
  } else {
    process.stderr.write(`${file}: valid (${d.name}: ${r.layers.length} layer(s), ${d.vm.perNode} VM(s) per node, ${formatSize(d.vm.memoryMiB)}, ${d.vm.vcpus} vCPU)\n`);
  }
}

/** `vse resolve`: the merged description; `--explain` says where every value came from. */
export function cmdResolve(file: string, json: boolean, why: boolean): void {
  const r = resolveFile(file, loadSiteConfig());
  warn(r);
  if (why) {
    const entries = explain(r.tree as NonNullable<typeof r.tree>);
    out(json ? JSON.stringify({ layers: r.layers, values: entries }) : `layers (base first): ${r.layers.map((l) => `${l.file}${l.admin ? ' (admin)' : ''}`).join(' -> ')}\n${formatExplain(entries)}`);
    return;
  }
  out(json ? JSON.stringify(r.description) : JSON.stringify(r.description, null, 2));
}

/** `vse create`: build or reuse the description's configuration; print its key and directory. */
export async function cmdCreate(file: string, json: boolean, verbose: boolean): Promise<void> {
  const site = loadSiteConfig();
  const r = resolveFile(file, site);
  warn(r);
  const { createLogger } = await import('../util/log.js');
  const { ensureConfiguration } = await import('../configure/create.js');
  const { builderFor } = await import('../configure/stage.js');
  const u = userInfo();
  const log = createLogger({ tag: 'vse create', verbose: false });
  const tty = process.stderr.isTTY && !json;
  const started = Date.now();
  const progress = (line: string): void => {
    if (verbose || tty) process.stderr.write(`vse create: [${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`);
  };
  const c = await ensureConfiguration(r.description, { site, log, builder: builderFor(u.uid, u.gid, u.username), progress });
  out(json ? JSON.stringify(c) : `${c.key} ${c.dir}`);
}

/** `vse images`: the configurations in the cache. */
export async function cmdImages(json: boolean): Promise<void> {
  const { listConfigurations } = await import('../configure/store.js');
  const list = listConfigurations(loadSiteConfig().cacheDir);
  if (json) {
    out(JSON.stringify(list));
    return;
  }
  if (list.length === 0) {
    out('no configurations');
    return;
  }
  const rows = [['KEY', 'BASE', 'PARENT', 'DESCRIPTION', 'SIZE', 'BUILT', 'LAST USED'], ...list.map((c) => [
    c.key, c.base, c.parent ?? '-', c.description ?? '-', formatSize(Math.max(1, Math.round(c.bytes / 1048576))), c.builtAt.slice(0, 19), c.lastUsed.slice(0, 19),
  ])];
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  out(rows.map((r) => r.map((x, i) => x.padEnd(w[i] ?? 0)).join('  ').trimEnd()).join('\n'));
}

/** Keys of configurations that jobs on this host use right now (and their bases). */
async function keysInUse(stateDir: string, cacheDir: string): Promise<Set<string>> {
  const { listJobDirs, readRecord } = await import('../deploy/state.js');
  const { listConfigurations } = await import('../configure/store.js');
  const used = new Set<string>();
  for (const d of listJobDirs(stateDir)) {
    const k = readRecord(d)?.configuration?.key;
    if (k) used.add(k);
  }
  const parents = new Map(listConfigurations(cacheDir).map((c) => [c.key, c.parent]));
  for (const k of [...used]) for (let p = parents.get(k); p; p = parents.get(p)) used.add(p);
  return used;
}

/** `vse destroy KEY|FILE`: remove a configuration (by key, or the one a description yields). */
export async function cmdDestroy(what: string): Promise<void> {
  const site = loadSiteConfig();
  const { destroyConfiguration, listConfigurations } = await import('../configure/store.js');
  let key = what;
  if (!/^[0-9a-f]{24}$/.test(what)) {
    const r = resolveFile(what, site);
    const { ensureConfiguration } = await import('../configure/create.js');
    const { builderFor } = await import('../configure/stage.js');
    const { createLogger } = await import('../util/log.js');
    const u = userInfo();
    const known = new Set(listConfigurations(site.cacheDir).map((c) => c.key));
    // the key needs the inputs hashed, not a build: only look, never build here
    const c = await ensureConfiguration(r.description, { site, log: createLogger({ tag: 'vse destroy', verbose: false }), builder: builderFor(u.uid, u.gid, u.username), lookOnly: true });
    if (!known.has(c.key)) throw new UserError(`${what}: its configuration ${c.key} is not in the cache`);
    key = c.key;
  }
  destroyConfiguration(site.cacheDir, key, await keysInUse(site.stateDir, site.cacheDir));
  process.stderr.write(`vse destroy: removed ${key}\n`);
}

/**
 * `vse gc`: first what ended jobs left on this host (their epilog never ran), then configurations no
 * running job uses, last used longer ago than --older-than days (site: cacheMaxAgeDays, 30), then the
 * least recently used until the cache fits cacheMaxSize (site config), and leftovers of crashed builds.
 */
export async function cmdGc(olderThanDays: number | undefined, dryRun: boolean, json: boolean): Promise<void> {
  const site = loadSiteConfig();
  const { gcConfigurations } = await import('../configure/store.js');
  const { gcJobs } = await import('../deploy/gc.js');
  const { createLogger } = await import('../util/log.js');
  const jobs = await gcJobs(site.stateDir, createLogger({ tag: 'vse gc', verbose: false }), dryRun);
  const days = olderThanDays ?? site.cacheMaxAgeDays ?? 30;
  const r = gcConfigurations(site.cacheDir, await keysInUse(site.stateDir, site.cacheDir), days * 86_400_000, dryRun, site.cacheMaxSizeMiB === undefined ? undefined : site.cacheMaxSizeMiB * 1048576);
  if (json) {
    out(JSON.stringify({ ...r, jobs }));
    return;
  }
  const verb = dryRun ? 'would remove' : 'removed';
  for (const j of jobs.removed) process.stderr.write(`vse gc: ${verb} job ${j.job} on ${j.node}: ${j.why}\n`);
  process.stderr.write(`vse gc: ${verb} ${jobs.removed.length} ended job(s), kept ${jobs.kept.length}; ${verb} ${r.removed.length} configuration(s)${r.removed.length ? `: ${r.removed.join(' ')}` : ''}; kept ${r.kept.length}; ${r.leftovers} leftover(s) of crashed builds\n`);
}

export async function cmdStatus(job: string | undefined, node: string | undefined, json: boolean): Promise<void> {
  const { formatTable, listVms } = await import('../deploy/status.js');
  const vms = listVms(loadSiteConfig().stateDir, { job, node });
  if (json) out(JSON.stringify(vms));
  else out(vms.length === 0 ? 'no VMs' : formatTable(vms));
}

export async function cmdCleanup(job: string, node: string | undefined, json: boolean): Promise<void> {
  const site = loadSiteConfig();
  const { createLogger } = await import('../util/log.js');
  const { listVms } = await import('../deploy/status.js');
  const { cleanupJob } = await import('../deploy/cleanup.js');
  const { checkIdent } = await import('../rm/context.js');
  const log = createLogger({ tag: 'vse cleanup', verbose: !json });
  const nodes = node !== undefined ? [node] : [...new Set(listVms(site.stateDir, { job }).map((v) => v.node))];
  if (node === undefined) {
    // also job directories without a readable record
    const { listJobDirs } = await import('../deploy/state.js');
    for (const d of listJobDirs(site.stateDir)) {
      const base = d.slice(d.lastIndexOf('/') + 1);
      if (base.startsWith(`${job}.`)) nodes.push(base.slice(job.length + 1));
    }
  }
  const results = [];
  for (const n of [...new Set(nodes)]) results.push(await cleanupJob({ stateDir: site.stateDir, job: checkIdent('job id', job), node: n, log }));
  if (json) out(JSON.stringify(results));
}

/** `vse run FILE [-- CMD]`: the whole lifecycle on this machine, no scheduler; the exit code is the command's. */
export async function cmdRun(file: string, verbose: boolean, command: string[] = [], all = false): Promise<number> {
  const site = loadSiteConfig();
  const r = resolveFile(file, site);
  warn(r);
  const d = r.description;
  const { createLogger } = await import('../util/log.js');
  const { localContext } = await import('../rm/local.js');
  const { cleanupJob } = await import('../deploy/cleanup.js');
  const { deploy } = await import('../deploy/deploy.js');
  const { formatTable, listVms } = await import('../deploy/status.js');
  const ctx = localContext(JSON.stringify(makeBundle(r)), resolvePath(file));
  const log = createLogger({ tag: 'vse', verbose, file: `${site.logDir}/vse.log` });
  const say = (s: string): boolean => process.stderr.write(`${s}\n`);
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    say(`\n${sig}: stopping the VMs of ${ctx.jobId}`);
    void cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log }).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  say(`vse: ${d.name}: booting ${d.vm.perNode} VM(s) (${d.vm.memoryMiB}M, ${d.vm.vcpus} vCPU each) as job ${ctx.jobId}`);
  const t0 = Date.now();
  await deploy({
    ctx, description: d, site, log,
    events: {
      vmStarting: (vm) => say(`vse: ${vm.name}: starting`),
      vmReady: (vm) => say(`vse: ${vm.name}: ready after ${((vm.bootMs ?? 0) / 1000).toFixed(2)} s`),
    },
  });
  say(`vse: all ${d.vm.perNode} VM(s) ready in ${((Date.now() - t0) / 1000).toFixed(2)} s`);
  let code = 0;
  if (command.length === 0) {
    out(formatTable(listVms(site.stateDir, { job: ctx.jobId })));
  } else {
    // the command owns Ctrl-C now (vse exec passes it in); the VMs go when it ends
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const { execInJob } = await import('../guest/exec.js');
    try {
      const r = await execInJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, all, argv: command, env: ['TERM', 'LANG', 'LC_*'] },
        { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      process.stdin.destroy();
      code = await exitCodeOf(r.outcomes);
    } finally {
      const c = await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log });
      if (verbose) say(`vse: stopped ${c.stopped.length} VM(s), removed ${c.dir}`);
    }
    return code;
  }
  const c = await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log });
  say(`vse: stopped ${c.stopped.length} VM(s), removed ${c.dir}`);
  if (stopping) throw new UserError('interrupted');
  return code;
}

/** Options of `vse exec` before the command: parsed by hand, so that the command's own options stay its own. */
export interface ExecArgs {
  job?: string;
  node?: string;
  vm?: number;
  all: boolean;
  root: boolean;
  cwd?: string;
  env: string[];
  timeoutSec?: number;
  /** Started by the SPANK plugin as a Slurm task (`--task`) or as the batch script (`--batch`). */
  mode?: 'task' | 'batch';
  argv: string[];
}

export const EXEC_USAGE = `usage: vse exec [--job ID] [--node NAME] [--vm N | --all] [--root] [--cwd DIR] [--env NAME[=VALUE]]... [--timeout SEC] -- COMMAND [ARG]...

Run COMMAND in a VM of a job on this host (VM 0 unless --vm or --all), with stdin, stdout and
stderr streamed and the exit code (or signal) passed back. Signals (Ctrl-C, SIGTERM, ...) go to the
command in the guest; a second Ctrl-C within a second drops the connection. The job is --job, or
the Slurm job this runs in, or your only job on this host. The command runs as your user in the
guest (--root: as root), in DIR (default: your home in the guest), with PATH, HOME, USER, LOGNAME,
SHELL and the variables --env names (NAME, a PREFIX*, or NAME=VALUE to set one). --timeout: SIGTERM
after SEC seconds, SIGKILL 5 s later.

vse exec --task|--batch -- ARGV...: what the SPANK plugin makes of each task of a --vse step (and
of the batch script with --vse-batch=inside); it runs in the job's VMs with the task's environment.`;

export function parseExecArgs(args: string[]): ExecArgs {
  const a: ExecArgs = { all: false, root: false, env: [], argv: [] };
  const value = (i: number, name: string): string => {
    const v = args[i + 1];
    if (v === undefined) throw new UserError(`vse exec: ${name} needs a value\n${EXEC_USAGE}`);
    return v;
  };
  const int = (s: string, name: string): number => {
    if (!/^\d+$/.test(s)) throw new UserError(`vse exec: ${name} expects a whole number, got "${s}"`);
    return Number(s);
  };
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-')) break;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const take = (): string => inline ?? value(i++, flag);
    switch (flag) {
      case '--job': a.job = take(); break;
      case '--node': a.node = take(); break;
      case '--vm': a.vm = int(take(), '--vm'); break;
      case '--all': a.all = true; break;
      case '--root': a.root = true; break;
      case '--cwd': a.cwd = take(); break;
      case '--env': a.env.push(take()); break;
      case '--timeout': a.timeoutSec = int(take(), '--timeout'); break;
      case '--task': a.mode = 'task'; break;
      case '--batch': a.mode = 'batch'; break;
      case '--help': case '-h': throw Object.assign(new Error(EXEC_USAGE), { help: true });
      default: throw new UserError(`vse exec: unknown option ${arg}\n${EXEC_USAGE}`);
    }
  }
  a.argv = args.slice(i);
  if (a.argv.length === 0) throw new UserError(`vse exec: give the command to run\n${EXEC_USAGE}`);
  if (a.all && a.vm !== undefined) throw new UserError('vse exec: give --vm or --all, not both');
  if (a.mode !== undefined && (a.job !== undefined || a.node !== undefined || a.vm !== undefined || a.all || a.root || a.cwd !== undefined || a.env.length > 0 || a.timeoutSec !== undefined)) {
    throw new UserError(`vse exec: --${a.mode} takes no other option: the task's environment says where it runs`);
  }
  return a;
}

type Outcomes = { outcome: { code: number | null; signal: string | null } }[];

/** The exit code for what the command(s) did: the highest code; a signal N counts as 128+N. */
async function exitCodeOf(outcomes: Outcomes): Promise<number> {
  const { constants } = await import('node:os');
  let code = 0;
  for (const { outcome } of outcomes) {
    const c = outcome.code ?? 128 + ((constants.signals as Record<string, number>)[`SIG${outcome.signal ?? 'KILL'}`] ?? 9);
    code = Math.max(code, c);
  }
  return code;
}

/** End this process the way the command ended: its exit code, or the same signal. */
async function endLike(outcomes: Outcomes): Promise<number> {
  const { constants } = await import('node:os');
  const sig = outcomes.find((o) => o.outcome.signal !== null)?.outcome.signal;
  if (outcomes.length === 1 && sig) {
    const name = `SIG${sig}` as NodeJS.Signals;
    if (name in constants.signals) {
      process.removeAllListeners(name);
      process.kill(process.pid, name);
      await new Promise((r) => setTimeout(r, 1000)); // the signal ends us (SIGTSTP-like ones excepted)
    }
  }
  return exitCodeOf(outcomes);
}

/** `vse exec`: returns the exit code (or ends by the command's signal). */
export async function cmdExec(args: string[]): Promise<number> {
  const { mode, ...a } = parseExecArgs(args);
  const io = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
  if (mode !== undefined) {
    const { relayTask } = await import('../guest/relay.js');
    const outcome = await relayTask({ stateDir: loadSiteConfig().stateDir, mode, argv: a.argv, env: process.env, cwd: process.cwd() }, io);
    process.stdin.destroy();
    return endLike([{ outcome }]);
  }
  const { execInJob } = await import('../guest/exec.js');
  const r = await execInJob({ stateDir: loadSiteConfig().stateDir, ...a }, io);
  process.stdin.destroy();
  return endLike(r.outcomes);
}

/** `vse doctor`: what this host can do; exit 1 when something required is missing. */
export async function cmdDoctor(json: boolean): Promise<number> {
  const site = loadSiteConfig();
  const { runDoctor, formatChecks } = await import('../deploy/doctor.js');
  const { createLogger } = await import('../util/log.js');
  const checks = await runDoctor(site, createLogger({ tag: 'vse doctor', verbose: false }));
  out(json ? JSON.stringify(checks) : formatChecks(checks));
  return checks.some((c) => c.status === 'fail') ? 1 : 0;
}
