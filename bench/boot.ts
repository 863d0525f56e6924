/**
 * bench/boot: time-to-ready of one VM through vse (deploy: overlay, detached QEMU, the guest's ready
 * signal) against a bare `qemu-system-x86_64` boot of the same kernel and initramfs, same run.
 * Usage: node dist/bench/boot.js [--runs N] [--json]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureMinimalGuest } from '../lib/configure/minimal.js';
import { chooseAccel } from '../lib/deploy/accel.js';
import { cleanupJob } from '../lib/deploy/cleanup.js';
import { deploy } from '../lib/deploy/deploy.js';
import { QEMU } from '../lib/deploy/qemu.js';
import type { Description } from '../lib/descriptor/model.js';
import { loadSiteConfig } from '../lib/site/config.js';
import { silentLogger } from '../lib/util/log.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1] ?? 0) || 5;
const json = args.includes('--json');


/** A plain QEMU command line for the same guest, timed until the guest prints its ready line. */
function bareBoot(kernel: string, initrd: string, cmdline: string, accel: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(QEMU, [
      '-machine', `pc,accel=${accel}`, '-nodefaults', '-no-user-config', '-display', 'none', '-m', '128M', '-smp', '1',
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
  try {
    // alternate, so that drift in the machine's load hits both sides alike
    for (let i = 0; i < runs; i++) {
      bare.push(await bareBoot(config.kernel, config.initrd, config.cmdline, accel));
      const ctx = { jobId: `bench-${i}`, node: 'b', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, user: 'bench', scheduler: 'local' as const };
      const t0 = performance.now();
      await deploy({ ctx, description, site, log: silentLogger });
      vse.push(performance.now() - t0);
      await cleanupJob({ stateDir: site.stateDir, job: ctx.jobId, node: ctx.node, log: silentLogger });
      if (!json) process.stderr.write(`run ${i + 1}/${runs}: bare ${(bare[i]! / 1000).toFixed(2)} s, vse ${(vse[i]! / 1000).toFixed(2)} s\n`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const result = { accel, runs, bareMedianMs: Math.round(median(bare)), vseMedianMs: Math.round(median(vse)), ratio: Number((median(vse) / median(bare)).toFixed(3)), bareMs: bare.map(Math.round), vseMs: vse.map(Math.round) };
  if (json) console.log(JSON.stringify(result));
  else {
    console.log(`boot to ready, one VM, ${accel}, median of ${runs}:`);
    console.log(`  bare qemu-system-x86_64   ${(result.bareMedianMs / 1000).toFixed(3)} s`);
    console.log(`  vse deploy                ${(result.vseMedianMs / 1000).toFixed(3)} s`);
    console.log(`  ratio vse/bare            ${result.ratio}`);
  }
}

await main();
