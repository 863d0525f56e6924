// vse end to end on a real Slurm cluster (test/slurm/cluster.sh: slurmctld + slurmd n1, n2 on this
// host, vse installed under VSE_PREFIX with its SPANK plugin, Prolog and Epilog). Everything is
// seen the way a user (vsetest) and an admin would see it: sbatch's answer, the job's own output,
// `vse status` inside the job, squeue/sinfo, and what is left on the host afterwards.
//
// Jobs that boot VMs hold at the end of their script until the test has looked at the host from
// outside (a "release" file), so "the VMs run while the job runs" is checked on a live job, and
// "nothing is left" after a job that really had something to clean.
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  NODES,
  VSE_PREFIX,
  VSE,
  asRoot,
  asUser,
  cancelAll,
  helloXml,
  jobInfo,
  processAlive,
  qemuOfJob,
  resumeNodes,
  sbatch,
  slurmdLog,
  tail,
  trySbatch,
  unwellNodes,
  userDir,
  userQueue,
  vseJobDirs,
  vseLog,
  vseRecord,
  vseStateDir,
  waitFor,
  waitJob,
  waitNodesIdle,
  writeUserFile,
} from "./cluster.js";

/** A status entry of `vse status --json`. */
interface VmStatus {
  job: string;
  node: string;
  vm: string;
  index: number;
  state: string;
  pid: number | null;
}

/** The job's closing lines: mark that its steps are done, then hold (at most ~3 min) until released. */
function holdThenExit(): string {
  const dir = userDir();
  return [
    `touch ${dir}/steps-done-$SLURM_JOB_ID`,
    "n=0",
    `while [ ! -e ${dir}/release-$SLURM_JOB_ID ] && [ $n -lt 900 ]; do sleep 0.2; n=$((n+1)); done`,
    "",
  ].join("\n");
}

/** Wait until the job's script has run its steps and is holding (bounded by the boot of its VMs). */
async function waitStepsDone(id: string, timeoutMs = 240_000): Promise<void> {
  await waitFor(
    `job ${id} to run its steps`,
    async () => {
      if (existsSync(join(userDir(), `steps-done-${id}`))) return true;
      const info = await jobInfo(id);
      const state = info?.JobState ?? "GONE";
      if (!["PENDING", "CONFIGURING", "RUNNING"].includes(state)) {
        throw new Error(`job ${id} is ${state} (Reason=${info?.Reason ?? ""}) before its steps ran\n${diagnostics(id)}`);
      }
      return undefined;
    },
    timeoutMs,
    () => diagnostics(id),
  );
}

function release(id: string): void {
  writeUserFile(`release-${id}`, "");
}

/** Everything that helps understand a failure of job `id`. */
function diagnostics(id: string): string {
  return [
    `---- prolog.log (job ${id}) ----`,
    vseLog("prolog", id),
    `---- epilog.log (job ${id}) ----`,
    vseLog("epilog", id),
    "---- slurmd n1 ----",
    tail(slurmdLog("n1"), 15),
    "---- slurmd n2 ----",
    tail(slurmdLog("n2"), 15),
  ].join("\n");
}

/** After a job: finished as `expected`, no job directory and no QEMU of it left, both nodes idle. */
async function expectCleanAfter(id: string, expected = "COMPLETED"): Promise<void> {
  // COMPLETING is not terminal for waitJob: the epilog has run on both nodes once it returns.
  const state = await waitJob(id, 240_000);
  expect(state, `job ${id}\n${diagnostics(id)}`).toBe(expected);
  expect(vseJobDirs(id), `job directories of ${id} under ${vseStateDir()}/jobs\n${diagnostics(id)}`).toEqual([]);
  expect(qemuOfJob(id).map((p) => `${p.pid} ${p.argv.join(" ")}`), `QEMU of job ${id}\n${diagnostics(id)}`).toEqual([]);
  await waitNodesIdle(30_000);
  expect(await unwellNodes(), diagnostics(id)).toEqual([]);
}

// A job left holding by a failed test must not keep the nodes busy for the next one.
afterEach(async () => {
  for (const f of readdirSync(userDir())) {
    const m = /^steps-done-(\d+)$/.exec(f);
    if (m?.[1] !== undefined && !existsSync(join(userDir(), `release-${m[1]}`))) release(m[1]);
  }
  await cancelAll();
  await waitNodesIdle(120_000).catch(() => undefined);
  await resumeNodes();
});

beforeAll(async () => {
  // The admin's one-time step (docs: `vse create`): build the minimal guest into the cache, so the
  // first prolog does not spend minutes fetching a kernel with apt. A no-op when it is cached.
  const xml = writeUserFile("prebuild.xml", helloXml(1));
  const r = await asRoot([VSE, "create", xml], { timeoutMs: 900_000 });
  expect(r.exitCode, `vse create failed:\n${r.stderr}${r.stdout}`).toBe(0);
  await waitNodesIdle(60_000);
}, 960_000);

describe("a job submitted with --vse", () => {
  it("gets its VMs booted on every node before the script runs, and removed after the job", async () => {
    const perNode = 2;
    writeUserFile("hello.xml", helloXml(perNode));
    const dir = userDir();
    // One step per node asks vse, as the user, what runs for this job on *that* node; the node
    // name is expanded by each task's shell, not by the batch script. The step runs on the hosts:
    // without the --vse option that Slurm hands every srun of the job (its tasks would run in the VMs).
    const id = await sbatch(
      ["-N2", "--vse=hello.xml", "-J", "vse-two-nodes", "-o", `${dir}/two-nodes-%j.out`],
      [
        "#!/bin/sh",
        `date +%s%3N > ${dir}/script-start-$SLURM_JOB_ID`,
        `env -u SLURM_SPANK__SLURM_SPANK_OPTION_vse_vse srun -N2 --ntasks-per-node=1 sh -c '${VSE} status --job "$SLURM_JOB_ID" --node "$SLURMD_NODENAME" --json > ${dir}/status-$SLURM_JOB_ID-$SLURMD_NODENAME.json; echo "rc=$?" >> ${dir}/status-$SLURM_JOB_ID-$SLURMD_NODENAME.rc'`,
        holdThenExit(),
      ].join("\n"),
    );
    try {
      await waitStepsDone(id);
      const scriptStart = Number(readFileSync(join(dir, `script-start-${id}`), "utf8").trim());

      // The admin's view while the job runs: on each node a record of `perNode` VMs that were all
      // ready before the script started (the prolog finished first), each a live QEMU of this job.
      const qemus = qemuOfJob(id);
      for (const node of NODES) {
        const rec = vseRecord(id, node);
        expect(rec, `no state record of job ${id} on ${node}\n${diagnostics(id)}`).toBeDefined();
        if (rec === undefined) continue;
        expect(rec.state).toBe("ready");
        expect(rec.vms.map((v) => v.state)).toEqual(Array(perNode).fill("ready"));
        for (const vm of rec.vms) {
          expect(vm.pid, `${vm.name} has no pid`).toBeTypeOf("number");
          expect(processAlive(vm.pid ?? -1), `${vm.name} pid ${vm.pid} not alive`).toBe(true);
          expect(qemus.map((q) => q.pid), `${vm.name} pid ${vm.pid} is not a QEMU of job ${id}`).toContain(vm.pid);
          const readyAt = Date.parse(vm.startedAt ?? "") + (vm.bootMs ?? NaN);
          expect(readyAt, `${vm.name} ready at ${readyAt}, script started at ${scriptStart}`).toBeLessThanOrEqual(scriptStart);
        }
      }
      expect(qemus).toHaveLength(NODES.length * perNode);

      // The user's view from inside the job: `vse status` on each node lists that node's VMs, running.
      for (const node of NODES) {
        const rc = readFileSync(join(dir, `status-${id}-${node}.rc`), "utf8").trim();
        const text = readFileSync(join(dir, `status-${id}-${node}.json`), "utf8");
        expect.soft(rc, `vse status on ${node} failed: ${text}`).toBe("rc=0");
        const vms = JSON.parse(text || "null") as VmStatus[];
        const rec = vseRecord(id, node);
        expect
          .soft(
            vms.map((v) => ({ job: v.job, node: v.node, vm: v.vm, index: v.index, state: v.state, pid: v.pid })),
            `vse status --job ${id} --node ${node} --json, run by the job user inside the job, printed:\n${text}` +
              `\nthe admin sees (state.json): ${JSON.stringify(rec?.vms.map((v) => [v.name, v.pid]))}` +
              `\n${vseStateDir()} as the job user sees it:\n${(await lsAsUser(vseStateDir())).trim()}`,
          )
          .toEqual(
            (rec?.vms ?? []).map((v) => ({ job: id, node, vm: v.name, index: v.index, state: "running", pid: v.pid })),
          );
      }
    } finally {
      release(id);
    }

    // After the job: COMPLETED, no directory and no QEMU of it left, both nodes idle again.
    await expectCleanAfter(id);
  });

  it("takes --vse from an #SBATCH line of the script the same way", async () => {
    writeUserFile("hello1.xml", helloXml(1));
    const dir = userDir();
    const id = await sbatch(
      ["-o", `${dir}/directive-%j.out`],
      [
        "#!/bin/sh",
        "#SBATCH -N2",
        "#SBATCH --vse=hello1.xml",
        "#SBATCH -J vse-directive",
        holdThenExit(),
      ].join("\n"),
    );
    try {
      await waitStepsDone(id);
      for (const node of NODES) {
        const rec = vseRecord(id, node);
        expect(rec?.state, `job ${id} on ${node}\n${diagnostics(id)}`).toBe("ready");
        expect(rec?.vms).toHaveLength(1);
      }
      expect(qemuOfJob(id)).toHaveLength(NODES.length);
    } finally {
      release(id);
    }
    await expectCleanAfter(id);
  });
});

describe("a bad --vse is refused at submission", () => {
  const good = helloXml(1);
  // The faulty line is the one that differs from the good description; `exact`: sbatch must report
  // that very line (an unclosed tag is only noticed further down, at the closing tag that clashes).
  const cases: { name: string; file: string; content?: string; mode?: number; says: RegExp; exact?: boolean }[] = [
    { name: "a missing file", file: "missing.xml", says: /missing\.xml:1:1: \/: cannot read the description: no such file/ },
    {
      name: "malformed XML (a tag never closed)",
      file: "malformed.xml",
      content: good.replace('perNode="1"/>', 'perNode="1">'),
      says: /malformed\.xml:\d+:\d+: .*malformed XML/i,
      exact: false,
    },
    {
      name: "an unknown attribute",
      file: "unknown-attr.xml",
      content: good.replace('perNode="1"', 'perNode="1" colour="red"'),
      says: /unknown-attr\.xml:\d+:\d+: .*unknown attribute "colour"/,
      exact: true,
    },
    {
      name: "a file the user cannot read",
      file: "unreadable.xml",
      content: good,
      mode: 0o000,
      says: /unreadable\.xml:1:1: \/: cannot read the description: permission denied/,
    },
    {
      name: "more VMs per node than the site allows",
      file: "too-many.xml",
      content: good.replace('perNode="1"', 'perNode="99"'),
      says: /too-many\.xml:\d+:\d+: \/vse\/vm\/@perNode: VMs per node 99 exceeds the site limit; expected at most 16/,
      exact: true,
    },
    {
      name: "importing a host file the user cannot read",
      file: "shadow.xml",
      content: good.replace("</vse>", '  <files><import from="/etc/shadow" path="/etc/shadow"/></files>\n</vse>'),
      says: /shadow\.xml:\d+:\d+: \/vse\/files\/import\[\/etc\/shadow\]\/@from: \/etc\/shadow is not readable by you/,
      exact: true,
    },
    {
      name: "a host path the site does not allow",
      file: "mount-etc.xml",
      content: good.replace("</vse>", '  <resources><mount guest="/host-etc" host="/etc"/></resources>\n</vse>'),
      says: /mount-etc\.xml:\d+:\d+: \/vse\/resources\/mount\[\/host-etc\]\/@host: host path \/etc is outside the host paths the site allows/,
      exact: true,
    },
    {
      name: "overriding what the site administrator locked",
      file: "unlock.xml",
      content: good.replace(/extends="[^"]*"/, 'extends="locked-site"').replace(/memory="[^"]*"/, 'memory="256M"'),
      says: /unlock\.xml:\d+:\d+: \/vse\/vm\/@memory: attribute memory locked by the site administrator/,
      exact: false, // the first changed line is extends=, the locked value is on the next
    },
  ];

  beforeAll(() => {
    // an admin base on this site: root-owned, in the installed admin directory
    const adminDir = join(VSE_PREFIX, "etc", "vse", "descriptions");
    mkdirSync(adminDir, { recursive: true, mode: 0o755 });
    writeFileSync(join(adminDir, "locked-site.xml"), '<vse name="locked-site" extends="minimal">\n  <vm memory="128M" locked="memory"/>\n</vse>\n', { mode: 0o644 });
  });

  it.each(cases)("$name: sbatch fails naming file, line and fault; nothing is queued", async (c) => {
    if (c.content !== undefined) writeUserFile(c.file, c.content, c.mode ?? 0o644);
    // the line sbatch should point at: the first line that differs from the good description
    const goodLines = good.split("\n");
    const badLine = c.content?.split("\n").findIndex((l, i) => l !== goodLines[i]);
    const before = readdirSafe(join(vseStateDir(), "jobs"));

    const r = await trySbatch(["-N2", `--vse=${c.file}`], "#!/bin/sh\necho should never run\n");

    expect(r.exitCode, `sbatch accepted the job:\n${r.stdout}${r.stderr}`).not.toBe(0);
    expect(r.jobId).toBeUndefined();
    const vseLines = r.stderr.split("\n").filter((l) => l.includes("vse: "));
    expect(vseLines.join("\n"), r.stderr).toMatch(c.says);
    if (c.content !== undefined && c.content !== good) {
      expect(badLine, "the bad description differs from the good one").toBeGreaterThanOrEqual(0);
      const m = new RegExp(`${c.file.replace(".", "\\.")}:(\\d+):`).exec(r.stderr);
      expect(m, `no ${c.file}:LINE: in\n${r.stderr}`).not.toBeNull();
      const reported = Number(m?.[1]);
      if (c.exact) expect(reported, r.stderr).toBe((badLine ?? 0) + 1);
      else expect(reported, r.stderr).toBeGreaterThanOrEqual((badLine ?? 0) + 1);
    }
    expect(await userQueue()).toEqual([]);
    expect(readdirSafe(join(vseStateDir(), "jobs"))).toEqual(before);
    expect(await unwellNodes()).toEqual([]);
    await waitNodesIdle(10_000);
  });
});

describe("a job without --vse", () => {
  it("runs as usual and gets no VMs", async () => {
    const dir = userDir();
    const out = `${dir}/plain-%j.out`;
    const id = await sbatch(
      ["-N2", "-J", "plain", "-o", out],
      ["#!/bin/sh", "echo plain job", "srun -l printenv SLURMD_NODENAME | sort", holdThenExit()].join("\n"),
    );
    try {
      await waitStepsDone(id, 60_000);
      // while it runs: no job directory and no QEMU on the host for it
      expect(vseJobDirs(id)).toEqual([]);
      expect(qemuOfJob(id)).toEqual([]);
    } finally {
      release(id);
    }
    await expectCleanAfter(id);
    expect(readFileSync(out.replace("%j", id), "utf8")).toBe("plain job\n0: n1\n1: n2\n");
    expect(vseLog("prolog", id), "the prolog should do nothing (and log nothing) for it").toBe("");
  });
});

function readdirSafe(d: string): string[] {
  try {
    return readdirSync(d).sort();
  } catch {
    return [];
  }
}

/** `ls -ld` of the state directory and its jobs/ as the job user (why `vse status` sees what it sees). */
async function lsAsUser(d: string): Promise<string> {
  const r = await asUser(["sh", "-c", `ls -ld ${d} ${d}/jobs 2>&1; ls -la ${d}/jobs 2>&1 | head -5`]);
  return r.stdout + r.stderr;
}
