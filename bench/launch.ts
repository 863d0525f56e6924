/**
 * bench/launch: what running a step's tasks in the job's VMs adds to srun. On the one-host test
 * cluster (test/slurm/cluster.sh, with vse installed under VSE_PREFIX), inside one allocation whose
 * VMs are up (`salloc -N2 -n2 --vse`, one VM per node), the wall time of `srun -n2 --vse=FILE true`
 * (each task relayed into its VM) against `srun -n2 true` on the host (the same step without the
 * --vse option Slurm hands every srun of the allocation), alternately, same run.
 * Goal: median overhead under 500 ms per step.
 * Usage (root; starts and stops the cluster): VSE_PREFIX=/tmp/vse-prefix node dist/bench/launch.js [--runs N] [--json]
 * (VSE_SLURM_DIR, VSE_SLURM_CTLD_PORT, VSE_SLURM_NODE_PORT as for cluster.sh: a second cluster beside another)
 */
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { median } from './stats.js';

const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1] ?? 0) || 10;
const json = args.includes('--json');
const prefix = process.env.VSE_PREFIX ?? '/tmp/vse-prefix';
const slurmDir = process.env.VSE_SLURM_DIR ?? '/tmp/vse-slurm';
const user = process.env.VSE_SLURM_USER ?? 'vsetest';
const root = resolve(import.meta.dirname, '..', '..');
const cluster = join(root, 'test', 'slurm', 'cluster.sh');
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** What cluster.sh and the Slurm commands see: the install, the cluster's directory and ports. */
const clusterEnv: Record<string, string> = {
  PATH, VSE_PREFIX: prefix, VSE_SLURM_DIR: slurmDir, SLURM_CONF: join(slurmDir, 'slurm.conf'), LC_ALL: 'C',
  ...Object.fromEntries(['VSE_SLURM_CTLD_PORT', 'VSE_SLURM_NODE_PORT', 'VSE_SLURM_USER'].flatMap((k) => (process.env[k] ? [[k, process.env[k] as string]] : []))),
};

function run(argv: string[], what: string, timeoutMs = 600_000): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'], env: clusterEnv });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status ?? r.signal}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The allocation's shell: where the steps run, then each measurement as `vse MS` / `plain MS`. */
function inner(file: string): string {
  return `#!/bin/bash
set -e
# the allocation passes --vse to every srun (SLURM_SPANK__SLURM_SPANK_OPTION_vse_vse, and salloc's own
# _SLURM_SPANK_OPTION_vse_vse): without them a step runs on the host, as in a job without --vse
plain() { env -u SLURM_SPANK__SLURM_SPANK_OPTION_vse_vse -u _SLURM_SPANK_OPTION_vse_vse "$@"; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
echo "where vse $(srun -n2 --vse=${file} hostname | sort | tr '\\n' ' ')"
echo "where plain $(plain srun -n2 hostname | sort | tr '\\n' ' ')"
for i in $(seq ${runs}); do
  # alternate which goes first, so that drift in the machine's load hits both alike
  if [ $((i % 2)) = 0 ]; then
    t=$(date +%s%N); srun -n2 --vse=${file} true; echo "vse $(ms $t)"
    t=$(date +%s%N); plain srun -n2 true; echo "plain $(ms $t)"
  else
    t=$(date +%s%N); plain srun -n2 true; echo "plain $(ms $t)"
    t=$(date +%s%N); srun -n2 --vse=${file} true; echo "vse $(ms $t)"
  fi
done
`;
}

function main(): void {
  const tmp = mkdtempSync('/tmp/vse-bench-launch-');
  const ids = run(['id', '-u', user], `id ${user}`).trim();
  const gid = run(['id', '-g', user], `id -g ${user}`).trim();
  try {
    run(['bash', cluster, 'start'], 'cluster.sh start', 300_000);
    chownSync(tmp, Number(ids), Number(gid));
    const xml = join(tmp, 'bench.xml');
    writeFileSync(xml, readFileSync(join(root, 'examples', 'hello.xml'), 'utf8').replace(/perNode="\d+"/, 'perNode="1"'));
    const script = join(tmp, 'steps.sh');
    writeFileSync(script, inner(xml), { mode: 0o755 });
    for (const f of [xml, script]) chownSync(f, Number(ids), Number(gid));
    // the admin's one-time step: the guest is in the cache before the prolog needs it
    run([join(prefix, 'bin', 'vse'), 'create', xml], 'vse create', 900_000);
    const out = run(['runuser', '-u', user, '--', 'env', '-i', `PATH=${PATH}`, `SLURM_CONF=${join(slurmDir, 'slurm.conf')}`, 'LC_ALL=C',
      'bash', '-c', `cd ${tmp} && salloc -N2 -n2 --vse=${xml} bash ${script}`], 'salloc', 900_000);
    const where = (k: string): string => /^where (\S+) (.*)$/m.exec(out.split('\n').find((l) => l.startsWith(`where ${k} `)) ?? '')?.[2]?.trim() ?? '';
    const times = (k: string): number[] => out.split('\n').filter((l) => l.startsWith(`${k} `) && /^\S+ \d+$/.test(l)).map((l) => Number(l.split(' ')[1]));
    const vse = times('vse');
    const plain = times('plain');
    if (vse.length !== runs || plain.length !== runs) throw new Error(`expected ${runs} runs of each, got:\n${out}`);
    const r = {
      runs, vseMs: median(vse), plainMs: median(plain), overheadMs: median(vse) - median(plain), goalMs: 500,
      vseTasksRanOn: where('vse'), plainTasksRanOn: where('plain'), vse, plain,
    };
    if (json) {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      return;
    }
    process.stdout.write([
      `srun -n2 true inside an allocation of 2 nodes with 1 VM each, ${runs} runs each, alternately:`,
      `  tasks in the VMs (--vse):  median ${r.vseMs} ms  (ran on: ${r.vseTasksRanOn})`,
      `  tasks on the host:         median ${r.plainMs} ms  (ran on: ${r.plainTasksRanOn})`,
      `  overhead per step:         ${r.overheadMs} ms (goal: under ${r.goalMs} ms) ${r.overheadMs < r.goalMs ? 'ok' : 'MISSED'}`,
      '',
    ].join('\n'));
  } finally {
    spawnSync('bash', [cluster, 'stop'], { stdio: 'ignore', env: clusterEnv });
    rmSync(tmp, { recursive: true, force: true });
  }
}

main();
