/**
 * bench/deploy: `vse deploy` against bare QEMU, same run, same kernel and initramfs.
 * - one VM: time to ready through deploy (overlay, job key, private network, detached QEMU as the
 *   job's user, the guest's SSH server up and its ready line) vs a bare `qemu-system-x86_64` boot
 *   to the guest's ready line (goal: ratio at most 1.10);
 * - 8 VMs on one node: time until all are ready (median of --rounds deploys) vs 8 x one VM's time
 *   / cores (goal: at most 1.25);
 * - host memory per VM: each QEMU's proportional set size (PSS: its own pages, and its share of
 *   those it shares with the other QEMUs, such as the binary and libraries) once the guests have
 *   settled (their free memory reported back), vs the guest's memory (goal: at most guest + 40 MiB);
 *   the resident set (RSS, shared pages counted whole in each) is printed too;
 * - cleanup of those 8 VMs (goal: under 2 s, median of the rounds);
 * - and, for what a job sees next, the first command in a VM once it is ready (`true` over the
 *   guest channel, as vse exec runs it).
 * Usage: node dist/bench/deploy.js [--runs N] [--vms N] [--rounds N] [--settle SEC] [--json]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ensureMinimalGuest } from '../lib/configure/minimal.js';
import { chooseAccel } from '../lib/deploy/accel.js';
import { cleanupJob } from '../lib/deploy/cleanup.js';
import { deploy } from '../lib/deploy/deploy.js';
import { targetOf } from '../lib/guest/exec.js';
import { guestExec } from '../lib/guest/ssh.js';
import { MACHINE, QEMU } from '../lib/deploy/qemu.js';
import type { Description } from '../lib/descriptor/model.js';
import { loadSiteConfig } from '../lib/site/config.js';
import { silentLogger } from '../lib/util/log.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1] ?? 0) || 25;
const many = Number(args[args.indexOf('--vms') + 1] ?? 0) || 8;
/** Deploys of the many VMs: one is a single figure of a noisy machine. */
const rounds = Number(args[args.indexOf('--rounds') + 1] ?? 0) || 3;
const json = args.includes('--json');
/** How long the guests run before their memory is measured: the guest reports free memory 2 s after it is freed. */
const settleMs = (Number(args[args.indexOf('--settle') + 1] ?? 0) || 6) * 1000;

/** Resident (RSS) and proportional (PSS) set size of a process, MiB. */
function memoryOf(pid: number): { rss: number; pss: number } {
  const s = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kib('Rss') / 1024, pss: kib('Pss') / 1024 };
}


/** A plain QEMU command line for the same guest, timed until the guest prints its ready line. */
function bareBoot(kernel: string, initrd: string, cmdline: string, accel: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(QEMU, [
      '-machine', `${MACHINE},accel=${accel}`, '-nodefaults', '-no-user-config', '-display', 'none', '-m', '128M', '-smp', '1',
      '-kernel', kernel, '-initrd', initrd, '-append', `${cmdline} vse.hostname=bare`, '-serial', 'stdio',
      '-device', 'virtio-serial-pci,id=vser0', '-chardev', 'null,id=c0', '-device', 'virtserialport,bus=vser0.0,chardev=c0,name=org.vse.0',
      '-no-reboot',
    ], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`bare boot: no ready line in 120 s:\n${out.slice(-2000)}`)); }, 120_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('vse-guest: ready bare')) {
        const ms = performance.now() - t0;
        clearTimeout(timer);
        child.once('exit', () => resolve(ms));
        child.kill('SIGKILL');
      }
    });
  });
}

async function main(): Promise<void> {
  const tmp = mkdtempSync('/tmp/vse-bench-');
  const siteFile = join(tmp, 'site.json');
  writeFileSync(siteFile, JSON.stringify({ stateDir: join(tmp, 'state'), logDir: join(tmp, 'log') }));
  process.env.VSE_SITE_CONFIG = siteFile;
  const site = loadSiteConfig();
  const config = await ensureMinimalGuest({ cacheDir: site.cacheDir, kernelPackage: site.kernelPackage, log: silentLogger });
  const { accel } = await chooseAccel(site.accel, config.kernel, site.stateDir, silentLogger);
  const description: Description = {
    name: 'bench', os: { base: 'minimal', kernel: {}, packages: [], services: [] }, rtes: [], files: [], build: [], boot: [],
    vm: { memoryMiB: 128, vcpus: 1, diskMiB: 1024, perNode: 1, hypervisor: 'qemu' }, resources: { mounts: [], network: { mode: 'private' } },
  };
  const vse: number[] = [];
  const bare: number[] = [];
  const firstCommand: number[] = [];
  const discard = (): Writable => new Writable({ write: (_c, _e, cb) => cb() });
  let multi: { vms: number; rounds: number; allReadyRoundsMs: number[]; allReadyMs: number; expectedMs: number; ratio: number; rssMiB: number[]; pssMiB: number[]; guestMiB: number; overheadMiB: number; cleanupMs: number } | undefined;
  try {
    // alternate, so that drift in the machine's load hits both sides alike
    for (let i = 0; i < runs; i++) {
      const ctx = { jobId: `bench-${i}`, node: 'b', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, user: 'bench', scheduler: 'local' as const };
      const viaVse = async (): Promise<void> => {
        const t0 = performance.now();
        const rec = await deploy({ ctx, description, site, log: silentLogger });
        vse.push(performance.now() - t0);
        const c0 = performance.now();
        const cmd = await guestExec(targetOf(rec, rec.vms[0]!), { uid: 0, gid: 0, cwd: '/', env: [], argv: ['true'] }, { stdout: discard(), stderr: discard() });
        const outcome = await cmd.done;
        if (outcome.code !== 0) throw new Error(`true in the guest ended with ${outcome.code ?? outcome.signal}`);
        firstCommand.push(performance.now() - c0);
        await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log: silentLogger });
      };
      // a pair per run, each side first in every other pair (whatever the first of two pays, both pay alike)
      if (i % 2 === 0) {
        bare.push(await bareBoot(config.kernel, config.initrd, config.cmdline, accel));
        await viaVse();
      } else {
        await viaVse();
        bare.push(await bareBoot(config.kernel, config.initrd, config.cmdline, accel));
      }
      if (!json) process.stderr.write(`run ${i + 1}/${runs}: bare ${(bare[i]! / 1000).toFixed(2)} s, vse ${(vse[i]! / 1000).toFixed(2)} s\n`);
    }
    // many VMs of one job on one node: all ready, memory (in the first round), cleanup
    const cores = availableParallelism();
    const allReady: number[] = [];
    const cleanups: number[] = [];
    let mem: { rss: number; pss: number }[] = [];
    for (let r = 0; r < rounds; r++) {
      const ctx = { jobId: `bench-many-${r}`, node: 'b', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, user: 'bench', scheduler: 'local' as const };
      const t0 = performance.now();
      const rec = await deploy({ ctx, description: { ...description, vm: { ...description.vm, perNode: many } }, site, log: silentLogger });
      allReady.push(performance.now() - t0);
      if (r === 0) {
        await new Promise((res) => setTimeout(res, settleMs));
        mem = rec.vms.map((v) => memoryOf(v.pid as number));
      }
      const c0 = performance.now();
      await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log: silentLogger });
      cleanups.push(performance.now() - c0);
      if (!json) process.stderr.write(`${many} VMs, round ${r + 1}/${rounds}: all ready ${(allReady[r]! / 1000).toFixed(2)} s\n`);
    }
    const allReadyMs = median(allReady);
    const cleanupMs = median(cleanups);
    const expectedMs = (many * median(vse)) / Math.min(cores, many);
    multi = {
      vms: many, rounds, allReadyRoundsMs: allReady.map(Math.round), allReadyMs: Math.round(allReadyMs), expectedMs: Math.round(expectedMs), ratio: Number((allReadyMs / expectedMs).toFixed(3)),
      rssMiB: mem.map((m) => Math.round(m.rss)), pssMiB: mem.map((m) => Math.round(m.pss)), guestMiB: description.vm.memoryMiB,
      overheadMiB: Math.round(Math.max(...mem.map((m) => m.pss)) - description.vm.memoryMiB), cleanupMs: Math.round(cleanupMs),
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  // each vse run against the bare run just before it: drift of the machine's speed cancels out
  const pairRatio = median(vse.map((v, i) => v / (bare[i] as number)));
  const result = { accel, runs, bareMedianMs: Math.round(median(bare)), vseMedianMs: Math.round(median(vse)), ratio: Number((median(vse) / median(bare)).toFixed(3)), pairRatio: Number(pairRatio.toFixed(3)), firstCommandMs: Math.round(median(firstCommand)), bareMs: bare.map(Math.round), vseMs: vse.map(Math.round), multi };
  if (json) console.log(JSON.stringify(result));
  else {
    console.log(`boot to ready, one VM, ${accel}, median of ${runs}:`);
    console.log(`  bare qemu-system-x86_64   ${(result.bareMedianMs / 1000).toFixed(3)} s`);
    console.log(`  vse deploy                ${(result.vseMedianMs / 1000).toFixed(3)} s`);
    console.log(`  ratio of the medians      ${result.ratio}`);
    console.log(`  median ratio of the pairs ${result.pairRatio}   (goal <= 1.10; drift of the machine's speed cancels out in a pair)`);
    console.log(`  then a first command      ${(result.firstCommandMs / 1000).toFixed(3)} s   (\`true\` in the VM over its channel, median)`);
    if (multi) {
      console.log(`${multi.vms} VMs of one job on one node (${availableParallelism()} cores):`);
      console.log(`  all ready after           ${(multi.allReadyMs / 1000).toFixed(3)} s   (median of ${multi.rounds} deploys)`);
      console.log(`  ${multi.vms} x one VM / cores      ${(multi.expectedMs / 1000).toFixed(3)} s`);
      console.log(`  ratio                     ${multi.ratio}   (goal <= 1.25)`);
      console.log(`  host memory per VM (PSS)  ${Math.min(...multi.pssMiB)}-${Math.max(...multi.pssMiB)} MiB for ${multi.guestMiB} MiB guests: +${multi.overheadMiB} MiB   (goal <= +40), ${settleMs / 1000} s after ready`);
      console.log(`  QEMU resident set (RSS)   ${Math.min(...multi.rssMiB)}-${Math.max(...multi.rssMiB)} MiB`);
      console.log(`  cleanup of all            ${(multi.cleanupMs / 1000).toFixed(3)} s   (goal < 2 s, median)`);
    }
  }
}

await main();
