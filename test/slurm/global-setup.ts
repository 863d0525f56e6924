// vitest globalSetup for the Slurm tests: start the one-host test cluster before the tests,
// stop it afterwards. VSE_PREFIX (default /tmp/vse-prefix) must hold a `make install`
// (PREFIX=$VSE_PREFIX SYSCONFDIR=$VSE_PREFIX/etc). VSE_KEEP_CLUSTER=1 leaves it running
// after the tests (for post-mortems: test/slurm/cluster.sh status / stop).
import { fileURLToPath } from "node:url";
import { execa } from "execa";

const CLUSTER_SH = fileURLToPath(new URL("./cluster.sh", import.meta.url));
const SLURM_DIR = process.env.VSE_SLURM_DIR ?? "/tmp/vse-slurm";

function env(): Record<string, string> {
  return {
    VSE_PREFIX: process.env.VSE_PREFIX ?? "/tmp/vse-prefix",
    VSE_SLURM_DIR: SLURM_DIR,
  };
}

async function cluster(cmd: "start" | "stop"): Promise<string> {
  const r = await execa("bash", [CLUSTER_SH, cmd], {
    env: env(),
    reject: false,
    stdin: "ignore",
    timeout: 300_000,
  });
  if (r.stderr) process.stderr.write(`${r.stderr}\n`);
  if (r.exitCode !== 0) {
    throw new Error(`${CLUSTER_SH} ${cmd} failed (exit ${r.exitCode ?? "?"}):\n${r.stderr}`);
  }
  return r.stdout;
}

export async function setup(): Promise<void> {
  await cluster("start");
  // workers started after this inherit it; cluster.ts falls back to the same path anyway
  process.env.VSE_SLURM_DIR = SLURM_DIR;
  process.env.SLURM_CONF = `${SLURM_DIR}/slurm.conf`;
}

export async function teardown(): Promise<void> {
  if (process.env.VSE_KEEP_CLUSTER === "1") {
    process.stderr.write(`VSE_KEEP_CLUSTER=1: Slurm test cluster in ${SLURM_DIR} left running\n`);
    return;
  }
  await cluster("stop");
}
