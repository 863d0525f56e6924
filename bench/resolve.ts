/**
 * bench/resolve: wall time of whole `vse validate` and `vse resolve` runs on a four-layer
 * description (vendor base and site base in admin directories, a project file, the user's file),
 * against bare node start-up (`node -e 0`), interleaved. Goal: under 150 ms and under 2x node.
 * Usage: node dist/bench/resolve.js [--runs N] [--json] [--vse PATH] [--keep]
 * (--keep leaves the hierarchy and its site.json in place, for profiling, and prints where.)
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './stats.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const runs = Math.max(1, Number(opt('--runs') ?? 15) || 15);
const json = args.includes('--json');
const keep = args.includes('--keep');
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const vse = resolve(opt('--vse') ?? join(repo, 'build', 'bin', 'vse'));
const GOAL_MS = 150;
const GOAL_RATIO = 2;


/** The node the launcher runs (its shebang), so that the baseline is the same binary. */
function launcherNode(): string {
  const first = readFileSync(vse, 'utf8').split('\n')[0] ?? '';
  return first.startsWith('#!/') ? first.slice(2).trim().split(/\s+/)[0] as string : process.execPath;
}

/** Root-owned, not writable by group or others: what makes a directory's layers admin layers. */
function adminDir(path: string): void {
  mkdirSync(path, { recursive: true });
  chmodSync(path, 0o755);
  if (process.getuid?.() === 0) chownSync(path, 0, 0);
}
function put(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o644);
  if (process.getuid?.() === 0) chownSync(path, 0, 0);
}

/** vendor (admin) -> site (admin) -> project -> user, each adding, overriding and removing. */
function hierarchy(tmp: string): { user: string; siteFile: string } {
  const vendor = join(tmp, 'vendor');
  const siteDir = join(tmp, 'site');
  const project = join(tmp, 'project');
  const user = join(tmp, 'user');
  const scratch = join(tmp, 'scratch');
  adminDir(tmp);
  adminDir(vendor);
  adminDir(siteDir);
  for (const d of [project, user, scratch]) mkdirSync(d, { recursive: true });
  put(join(vendor, 'vendor-base.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<!-- vendor: the minimal guest -->
<vse name="vendor-base">
  <os base="debian" release="bookworm">
    <kernel package="linux-image-cloud-amd64"/>
    <packages><package name="openssh-server" locked="true"/><package name="vim"/><package name="nano"/></packages>
    <services><service name="ssh" state="enabled"/><service name="cron" state="disabled"/></services>
  </os>
  <vm memory="128M" vcpus="1" disk="1G" perNode="1" hypervisor="qemu" locked="hypervisor"/>
  <boot><option name="console" value="ttyS0" locked="true"/><option name="quiet"/></boot>
  <files><write path="/etc/motd">vendor</write><write path="/etc/issue">vendor</write></files>
  <resources><network mode="private"/></resources>
</vse>
`);
  put(join(siteDir, 'site-base.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<!-- site: MPI, the scratch file system, a locked file -->
<vse name="site-base" extends="vendor-base">
  <os><packages><package name="nano" action="remove"/><package name="openmpi-bin"/></packages></os>
  <rte name="mpi">
    <package name="openmpi-bin"/>
    <env name="OMPI_MCA_btl" value="self,tcp"/>
    <path dir="/usr/lib/openmpi/bin"/>
  </rte>
  <files>
    <write path="/etc/vse-site" locked="true">site</write>
    <edit path="/etc/ssh/sshd_config"><set key="PermitRootLogin" value="no" separator=" "/></edit>
  </files>
  <vm memory="256M"/>
  <resources><mount guest="/scratch" host="${scratch}" mode="ro" locked="true"/></resources>
</vse>
`);
  put(join(project, 'project.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<!-- project: build steps, one more runtime variable, a boot option -->
<vse name="project" extends="site-base">
  <rte name="mpi"><env name="OMPI_MCA_pml" value="ob1"/></rte>
  <rte name="python"><package name="python3"/><env name="PYTHONUNBUFFERED" value="1"/></rte>
  <build>
    <step name="fetch" mode="online" workdir="/opt/app">curl -fsS https://example.invalid/app.tgz -o app.tgz</step>
    <step name="compile" workdir="/opt/app">make</step>
  </build>
  <boot><option name="loglevel" value="4" after="console"/></boot>
  <files><write path="/etc/motd" replace="true">project</write></files>
</vse>
`);
  put(join(user, 'user.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<!-- user: bigger VMs, a package less, a step more -->
<vse name="user" extends="../project/project.xml">
  <os><packages><package name="vim" action="remove"/><package name="htop"/></packages></os>
  <rte name="python" action="remove"/>
  <build><step name="install" after="compile">make install</step></build>
  <boot><option name="quiet" action="remove"/><option name="debug"/></boot>
  <files><edit path="/etc/motd"><append line="user"/></edit><delete path="/etc/issue"/></files>
  <vm memory="1G" vcpus="2" perNode="4"/>
</vse>
`);
  const siteFile = join(tmp, 'site.json');
  writeFileSync(siteFile, JSON.stringify({
    stateDir: join(tmp, 'state'), cacheDir: join(tmp, 'cache'), logDir: join(tmp, 'log'),
    descriptionDirs: [siteDir, vendor],
    allowedHostPaths: [{ path: scratch, modes: ['ro'] }],
  }, null, 2));
  return { user: join(user, 'user.xml'), siteFile };
}

interface Cmd {
  name: string;
  argv: string[];
}

function timeOnce(c: Cmd, env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(c.argv[0] as string, c.argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  const ms = performance.now() - t0;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${c.name}: exit ${r.status ?? r.signal}\n${r.stderr.toString()}${r.stdout.toString()}`);
  return ms;
}

function main(): void {
  if (process.getuid?.() !== 0) process.stderr.write('bench/resolve: not root: the base directories are not root-owned, so they will not count as admin layers\n');
  const tmp = mkdtempSync('/tmp/vse-bench-resolve-');
  try {
    const { user, siteFile } = hierarchy(tmp);
    const env = { ...process.env, VSE_SITE_CONFIG: siteFile };
    const node = launcherNode();
    const cmds: Cmd[] = [
      { name: 'node -e 0', argv: [node, '-e', '0'] },
      { name: 'vse validate', argv: [vse, 'validate', user] },
      { name: 'vse resolve', argv: [vse, 'resolve', user] },
    ];

    // the hierarchy must resolve, with both bases as admin layers
    const check = spawnSync(vse, ['resolve', user, '--explain', '--json'], { env, encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`vse resolve failed (exit ${check.status}):\n${check.stderr}`);
    const layers = (JSON.parse(check.stdout) as { layers: { file: string; admin: boolean }[] }).layers;
    const adminFlags = layers.map((l) => l.admin);
    if (layers.length !== 4) throw new Error(`expected 4 layers, got ${layers.length}: ${check.stdout.slice(0, 500)}`);
    if (process.getuid?.() === 0 && adminFlags.join() !== 'true,true,false,false') throw new Error(`expected admin,admin,user,user layers, got ${adminFlags.join()}`);

    for (const c of cmds) timeOnce(c, env); // warm the page cache
    const times = new Map<string, number[]>(cmds.map((c) => [c.name, []]));
    for (let i = 0; i < runs; i++) {
      // interleaved, in a rotating order, so that drift in the machine's load hits all alike
      for (let k = 0; k < cmds.length; k++) {
        const c = cmds[(i + k) % cmds.length] as Cmd;
        times.get(c.name)?.push(timeOnce(c, env));
      }
    }
    const base = median(times.get('node -e 0') ?? []);
    const rows = cmds.map((c) => {
      const xs = times.get(c.name) ?? [];
      const med = median(xs);
      return {
        command: c.name, medianMs: Number(med.toFixed(1)), minMs: Number(Math.min(...xs).toFixed(1)), maxMs: Number(Math.max(...xs).toFixed(1)),
        ratio: Number((med / base).toFixed(2)),
        goal: c.name === 'node -e 0' ? undefined : med < GOAL_MS && med / base < GOAL_RATIO,
      };
    });
    const result = { runs, node, nodeVersion: process.version, vse, layers: adminFlags.map((a) => (a ? 'admin' : 'user')), goal: { wallMs: GOAL_MS, ratio: GOAL_RATIO }, results: rows, samplesMs: Object.fromEntries([...times].map(([k, v]) => [k, v.map((x) => Number(x.toFixed(1)))])) };
    if (json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      return;
    }
    const line = (cells: string[]): string => `${(cells[0] ?? '').padEnd(14)}${cells.slice(1).map((c) => c.padStart(10)).join('')}`;
    const out = [
      `vse validate / resolve of a 4-layer description (${result.layers.join(' -> ')}), ${runs} runs each, interleaved; ${node} ${process.version}`,
      line(['command', 'median ms', 'min ms', 'max ms', 'x node', 'goal']),
      ...rows.map((r) => line([r.command, r.medianMs.toFixed(1), r.minMs.toFixed(1), r.maxMs.toFixed(1), r.ratio.toFixed(2), r.goal === undefined ? '' : r.goal ? 'met' : 'MISSED'])),
      `goal: under ${GOAL_MS} ms wall and under ${GOAL_RATIO}x bare node start-up`,
    ];
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    if (keep) process.stderr.write(`bench/resolve: kept ${tmp} (VSE_SITE_CONFIG=${join(tmp, 'site.json')} ${vse} validate ${join(tmp, 'user', 'user.xml')})\n`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

main();
