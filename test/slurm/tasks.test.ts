// srun tasks of a --vse job run inside its VMs, on a real Slurm cluster with real QEMU
// (test/slurm/cluster.sh; vse installed under VSE_PREFIX). The story a user sees:
//   - in `salloc --vse`, every srun's tasks run in the VMs (task i on VM i mod VMs per node), with
//     stdio, -l labels, stdin, exit codes and signals as srun shows them for native tasks, Slurm's
//     task environment, the same working directory where a share covers it; Ctrl-C and scancel
//     stop the processes in the guests; `vse exec` still works beside;
//   - `srun --vse` makes its own allocation the same way;
//   - sbatch's script runs on the host (its srun steps in the VMs), or with --vse-batch=inside in
//     the first VM; the time limit stops the tasks in the guests; the epilog removes the VMs;
//   - a job whose VMs could not be deployed fails its tasks saying why, never runs them on the host;
//   - jobs without --vse are untouched.
// VMs are few: one allocation (2 nodes x 2 VMs) carries most checks.
import { hostname } from "node:os";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, chownSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  JOB_USER,
  VSE,
  VSE_PREFIX,
  asRoot,
  asUser,
  cancelAll,
  helloXml,
  jobInfo,
  qemuOfJob,
  resumeNodes,
  sbatch,
  slurmdLog,
  startAsUser,
  tail,
  unwellNodes,
  userDir,
  vseJobDirs,
  vseLog,
  waitFor,
  waitJob,
  waitNodesIdle,
  writeUserFile,
} from "./cluster.js";

const SITE = join(VSE_PREFIX, "etc", "vse", "site.json");

function diagnostics(id: string): string {
  return [
    `---- prolog.log (job ${id}) ----`, vseLog("prolog", id),
    `---- epilog.log (job ${id}) ----`, vseLog("epilog", id),
    "---- slurmd n1 ----", tail(slurmdLog("n1"), 20),
    "---- slurmd n2 ----", tail(slurmdLog("n2"), 20),
  ].join("\n");
}

/** After a job: finished as `expected`, nothing of it left on the host, both nodes idle and well. */
async function expectCleanAfter(id: string, expected: string): Promise<void> {
  const state = await waitJob(id, 240_000);
  expect(state, `job ${id}\n${diagnostics(id)}`).toBe(expected);
  expect(vseJobDirs(id), diagnostics(id)).toEqual([]);
  expect(qemuOfJob(id).map((p) => p.pid), diagnostics(id)).toEqual([]);
  await waitNodesIdle(60_000);
  expect(await unwellNodes(), diagnostics(id)).toEqual([]);
}

/** How many processes run `command` (exactly that command line) in each VM of job `id` (as root, through `vse exec`). */
async function guestProcesses(id: string, command: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const node of ["n1", "n2"]) {
    const r = await asRoot([VSE, "exec", "--job", id, "--node", node, "--all", "--", "ps"]);
    if (r.exitCode !== 0) throw new Error(`vse exec on ${node} failed: ${r.stderr}`);
    // busybox ps: "VM:   PID USER     COMMAND"
    for (const line of r.stdout.split("\n")) {
      const m = /^(\S+):\s+\d+\s+\S+\s+(.*)$/.exec(line);
      if (m?.[1] === undefined) continue;
      out[m[1]] = (out[m[1]] ?? 0) + (m[2] === command ? 1 : 0);
    }
  }
  return out;
}

/**
 * What a script printed on stderr but srun's notes that a step waits for the previous one's CPUs
 * (Slurm frees them a moment after srun returns; a script that starts the next at once sees it).
 */
function problems(stderr: string): string {
  return stderr.split("\n").filter((l) => !/^srun: (Job \d+ step creation temporarily disabled|Step created for job \d+)/.test(l)).join("\n");
}

/** Same text, whatever job and step ids it ran as: for comparing srun's reports of two jobs. */
function normalise(text: string, job: string): string[] {
  return problems(text)
    .replace(new RegExp(`(StepId=|STEP |JOB |[Jj]ob |allocation )${job}\\b`, "g"), "$1JOB")
    .replace(/StepId=JOB\.\d+/g, "StepId=JOB.N")
    .split("\n")
    .filter((l) => l !== "")
    .sort();
}

/**
 * A salloc session as a user would have it: `salloc ARGS bash driver`, where the driver stands in
 * for the user typing at the allocation's shell: it runs each script the test hands it, in turn,
 * in the allocation's environment (SLURM_JOB_ID, the --vse option as Slurm passes it to srun, ...).
 */
class AllocationShell {
  private n = 0;
  private constructor(
    readonly dir: string,
    readonly proc: ReturnType<typeof startAsUser>,
    readonly job: string,
  ) {}

  static async start(name: string, sallocArgs: string[]): Promise<AllocationShell> {
    const dir = join(userDir(), name);
    mkdirSync(dir, { mode: 0o755 });
    const u = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${JOB_USER}:`))?.split(":");
    chownSync(dir, Number(u?.[2]), Number(u?.[3]));
    const driver = writeUserFile(`${name}-driver.sh`, [
      "#!/bin/bash",
      `dir=${dir}; n=0`,
      'echo "$SLURM_JOB_ID" > "$dir/job.tmp" && mv "$dir/job.tmp" "$dir/job"',
      "while :; do",
      "  n=$((n+1))",
      '  while [ ! -e "$dir/cmd-$n.sh" ] && [ ! -e "$dir/exit" ]; do sleep 0.1; done',
      '  [ -e "$dir/cmd-$n.sh" ] || exit 0',
      '  (cd "$dir" && bash "$dir/cmd-$n.sh" > "$dir/out-$n" 2> "$dir/err-$n" < /dev/null)',
      '  echo $? > "$dir/rc-$n.tmp" && mv "$dir/rc-$n.tmp" "$dir/rc-$n"',
      "done",
      "",
    ].join("\n"), 0o755);
    const proc = startAsUser(["salloc", ...sallocArgs, "bash", driver], { timeoutMs: 1_200_000 });
    const job = await waitFor(`salloc ${sallocArgs.join(" ")} to start its shell`, () => {
      if (proc.exitCode !== null) throw new Error(`salloc ended (exit ${proc.exitCode}) before its shell ran`);
      return existsSync(join(dir, "job")) ? readFileSync(join(dir, "job"), "utf8").trim() : undefined;
    }, 240_000);
    return new AllocationShell(dir, proc, job);
  }

  /** Hand the shell a script without waiting for it; returns its number. */
  send(script: string): number {
    const n = ++this.n;
    // written whole, then renamed into place: the driver never reads half a script
    const name = `${this.dir.split("/").pop() ?? ""}-cmd-${n}.sh`;
    writeUserFile(name, script);
    renameSync(join(userDir(), name), join(this.dir, `cmd-${n}.sh`));
    return n;
  }

  /** Where script n's stdout, stderr or exit code go. */
  file(kind: "out" | "err" | "rc", n: number): string {
    return join(this.dir, `${kind}-${n}`);
  }

  /** Hand the shell a bash script; resolves with what it printed and its exit code. */
  async run(script: string, timeoutMs = 120_000): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const n = this.send(script);
    await waitFor(`script ${n} of job ${this.job}:\n${script}`, () => (existsSync(this.file("rc", n)) ? true : undefined), timeoutMs, () => diagnostics(this.job));
    const read = (k: "out" | "err" | "rc"): string => readFileSync(this.file(k, n), "utf8");
    return { stdout: read("out"), stderr: read("err"), exitCode: Number(read("rc").trim()) };
  }

  /** Leave the shell: salloc gives the allocation up. */
  async exit(): Promise<void> {
    writeFileSync(join(this.dir, "exit"), "");
    await this.proc;
  }
}

// ---- a salloc --vse allocation: 2 nodes, 2 VMs each, the user's directory shared at the same path ----

describe("srun inside salloc --vse", () => {
  let shell: AllocationShell;
  let sitePolicy: string;
  let native: { stdout: string; stderr: string; job: string };
  const dir = userDir();
  /** What the allocation's srun reports for a few endings, and the same in a plain allocation. */
  const endings = [
    "srun -N1 -n1 sh -c 'exit 0'; echo \"rc=$?\"",
    "srun -N2 -n2 -l sh -c 'echo out $SLURM_PROCID; echo err $SLURM_PROCID >&2; exit 3'; echo \"rc=$?\"",
    "srun -N1 -n1 sh -c 'kill -TERM $$'; echo \"rc=$?\"",
    "srun -N1 -n1 sh -c 'kill -SEGV $$'; echo \"rc=$?\"",
    "",
  ].join("\n");

  beforeAll(async () => {
    // the site lets VMs see the user's test directory (read-write, with the user's rights)
    sitePolicy = readFileSync(SITE, "utf8");
    writeFileSync(SITE, JSON.stringify({ ...JSON.parse(sitePolicy), allowedHostPaths: [{ path: dir, modes: ["ro", "rw"] }] }, null, 2));
    // the admin's one-time step: the guest is in the cache before the first prolog needs it
    const pre = await asRoot([VSE, "create", writeUserFile("tasks-prebuild.xml", helloXml(1))], { timeoutMs: 900_000 });
    expect(pre.exitCode, pre.stderr).toBe(0);
    // what a plain allocation's srun reports for the same endings (the cluster's CPUs are the VSE allocation's after)
    const n = await asUser(["salloc", "-N2", "-n4", "-J", "native", "bash", writeUserFile("endings.sh", endings)], { timeoutMs: 120_000 });
    native = { stdout: n.stdout, stderr: n.stderr, job: /Granted job allocation (\d+)/.exec(n.stderr)?.[1] ?? "?" };
    writeUserFile("tasks-shared.xml", helloXml(2, `<resources><mount guest="${dir}" host="${dir}" mode="rw"/></resources>`));
    shell = await AllocationShell.start("alloc", ["-N2", "-n4", "--vse=tasks-shared.xml", "-J", "vse-tasks"]);
  }, 600_000);

  afterAll(async () => {
    if (sitePolicy !== undefined) writeFileSync(SITE, sitePolicy);
    if (shell !== undefined && shell.proc.exitCode === null) {
      await cancelAll();
      await shell.exit();
    }
    await waitNodesIdle(120_000).catch(() => undefined);
    await resumeNodes();
  }, 300_000);

  it("task i runs on VM i mod the VMs per node: srun prints the guests' host names, -l labels them", async () => {
    const j = shell.job;
    const r = await shell.run("srun -N2 -n4 -l hostname | sort\nsrun -N2 -n2 -l hostname | sort\nhostname\n");
    expect(problems(r.stderr)).toBe("");
    expect(r.stdout).toBe(
      [`0: ${j}-n1-0`, `1: ${j}-n1-1`, `2: ${j}-n2-0`, `3: ${j}-n2-1`, `0: ${j}-n1-0`, `1: ${j}-n2-0`, hostname(), ""].join("\n"),
    );
  });

  it("exit codes 0 and 3 and a signal in the guest are reported by srun as for native tasks", async () => {
    const r = await shell.run(endings);
    expect(r.stdout.split("\n").filter((l) => l.startsWith("rc="))).toEqual(["rc=0", "rc=3", "rc=143", "rc=139"]);
    expect(r.stderr).toContain("srun: error: n1: task 0: Exited with exit code 3");
    expect(r.stderr).toContain("srun: error: n1: task 0: Terminated");
    expect(r.stderr).toContain("srun: error: n1: task 0: Segmentation fault");
    // line by line what a plain allocation printed for the same commands (salloc's own lines aside)
    expect(normalise(r.stdout, shell.job)).toEqual(normalise(native.stdout, native.job));
    expect(normalise(r.stderr, shell.job)).toEqual(normalise(native.stderr, native.job).filter((l) => !l.startsWith("salloc: ")));
  });

  it("stdout and stderr of each task reach srun, labelled with -l; stdin reaches task 0", async () => {
    const r = await shell.run([
      "srun -N2 -n4 -l sh -c 'echo out $SLURM_PROCID; echo err $SLURM_PROCID >&2'",
      "printf 'line 1\\nline 2\\n' | srun -N2 -n4 -l --input=0 sh -c 'while read -r l; do echo \"got $l\"; done; echo \"eof $(hostname)\"' | sort",
      "",
    ].join("\n"));
    const j = shell.job;
    expect(r.stdout.split("\n").slice(0, 4).sort()).toEqual(["0: out 0", "1: out 1", "2: out 2", "3: out 3"]);
    expect(problems(r.stderr).split("\n").filter((l) => l !== "").sort()).toEqual(["0: err 0", "1: err 1", "2: err 2", "3: err 3"]);
    expect(r.stdout.split("\n").slice(4)).toEqual([
      `0: eof ${j}-n1-0`, "0: got line 1", "0: got line 2", `1: eof ${j}-n1-1`, `2: eof ${j}-n2-0`, `3: eof ${j}-n2-1`, "",
    ]);
  });

  it("Slurm's task environment and the user's variables are there; the directory is the same where a share covers it, else the home", async () => {
    const r = await shell.run([
      "export MY_SETTING='a b'",
      "mkdir -p sub && cd sub",
      "srun -N2 -n4 -l sh -c 'echo $SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SLURM_NTASKS $SLURM_JOB_ID $SLURMD_NODENAME $(id -un) \"$MY_SETTING\" $(pwd) $VSE_VM_INDEX' | sort",
      "srun -N1 -n1 sh -c 'echo written in $(hostname) > from-guest.txt'; cat from-guest.txt",
      "cd / && srun -N1 -n1 pwd",
      "export LD_LIBRARY_PATH=/host-only/lib",
      "srun -N1 -n1 sh -c 'test -z \"$SLURM_SPANK_VSE_DESC$LD_LIBRARY_PATH\" && echo host-only variables stay on the host'",
      "",
    ].join("\n"));
    const j = shell.job;
    expect(problems(r.stderr)).toBe("");
    expect(r.stdout).toBe([
      `0: 0 0 0 4 ${j} n1 ${JOB_USER} a b ${dir}/alloc/sub 0`,
      `1: 1 1 0 4 ${j} n1 ${JOB_USER} a b ${dir}/alloc/sub 1`,
      `2: 2 0 1 4 ${j} n2 ${JOB_USER} a b ${dir}/alloc/sub 0`,
      `3: 3 1 1 4 ${j} n2 ${JOB_USER} a b ${dir}/alloc/sub 1`,
      `written in ${j}-n1-0`,
      `/home/${JOB_USER}`,
      "host-only variables stay on the host",
      "",
    ].join("\n"));
  });

  it("vse exec still runs ad-hoc commands in the job's VMs", async () => {
    const r = await shell.run(`${VSE} exec --node n2 --vm 1 -- hostname\n${VSE} exec --node n1 --all -- true; echo "rc=$?"\n`);
    expect(r.stdout).toBe(`${shell.job}-n2-1\nrc=0\n`);
  });

  it("Ctrl-C on srun (twice within a second, as srun wants) stops the commands in the guests", async () => {
    const j = shell.job;
    const r = await shell.run([
      "srun -N2 -n4 -l sh -c 'echo started; sleep 4242' > ctrlc.out 2>&1 &",
      "p=$!",
      'n=0; while [ "$(grep -c started ctrlc.out)" -lt 4 ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done',
      "kill -INT $p; sleep 0.3; kill -INT $p",
      'wait $p; echo "srun rc=$?"',
      "cat ctrlc.out",
      "",
    ].join("\n"));
    expect(r.stdout).toContain(`srun: sending Ctrl-C to StepId=${j}.`);
    expect(r.stdout).not.toContain("srun rc=0");
    const left = await waitFor("the commands to be gone from the guests", async () => {
      const p = await guestProcesses(j, "sleep 4242");
      return Object.values(p).every((n) => n === 0) ? p : undefined;
    }, 15_000);
    expect(Object.keys(left).sort()).toEqual([`${j}-n1-0`, `${j}-n1-1`, `${j}-n2-0`, `${j}-n2-1`]);
  });

  it("scancel of a step stops the commands in the guests, not only the tasks on the host", async () => {
    const j = shell.job;
    const n = shell.send([
      "srun -N2 -n4 -l sh -c 'echo started $SLURM_STEP_ID; exec sleep 4242' > step.out 2>&1",
      'echo "srun rc=$?"',
      "cat step.out",
      "",
    ].join("\n"));
    const step = await waitFor("the step's 4 tasks to run in the guests", () => {
      const text = existsSync(join(shell.dir, "step.out")) ? readFileSync(join(shell.dir, "step.out"), "utf8") : "";
      const ids = [...text.matchAll(/started (\d+)/g)].map((m) => m[1]);
      return ids.length === 4 ? ids[0] : undefined;
    }, 60_000);
    expect(Object.values(await guestProcesses(j, "sleep 4242"))).toEqual([1, 1, 1, 1]);
    const c = await asUser(["scancel", `${j}.${step ?? "?"}`]);
    expect(c.exitCode, c.stderr).toBe(0);
    await waitFor("srun to end", () => (existsSync(shell.file("rc", n)) ? true : undefined), 60_000);
    const text = readFileSync(shell.file("out", n), "utf8");
    expect(text).toMatch(/srun rc=(137|143)/);
    expect(text).toContain(`STEP ${j}.${step ?? "?"} ON n1 CANCELLED`);
    await waitFor("the commands to be gone from the guests", async () => {
      const p = await guestProcesses(j, "sleep 4242");
      return Object.values(p).every((n) => n === 0) ? p : undefined;
    }, 15_000);
  });

  it("scancel of the job stops its commands in the guests; the epilog removes the VMs", async () => {
    const j = shell.job;
    const out = shell.file("out", shell.send("srun -N2 -n4 -l sh -c 'trap \"echo got TERM in $(hostname); exit 143\" TERM; echo started; sleep 4242 & wait'\n"));
    await waitFor("the tasks to run in the guests", () => {
      const text = existsSync(out) ? readFileSync(out, "utf8") : "";
      return (text.match(/started/g) ?? []).length === 4 ? true : undefined;
    }, 60_000);
    const c = await asUser(["scancel", j]);
    expect(c.exitCode, c.stderr).toBe(0);
    // the user leaves salloc's shell once srun has ended
    await shell.exit();
    await expectCleanAfter(j, "CANCELLED");
    const text = readFileSync(out, "utf8");
    for (const vm of [`${j}-n1-0`, `${j}-n1-1`, `${j}-n2-0`, `${j}-n2-1`]) expect(text).toContain(`got TERM in ${vm}`);
  });
});

// ---- one-off allocations -------------------------------------------------------------------

describe("srun --vse without an allocation", () => {
  afterEach(async () => {
    await cancelAll();
    await resumeNodes();
  });

  it("makes its own, prints the guests' host names, and leaves the nodes clean", async () => {
    writeUserFile("tasks-one.xml", helloXml(1));
    const r = await asUser(["srun", "-N2", "-n4", "-l", "-J", "vse-srun", "--vse=tasks-one.xml", "sh", "-c", "echo $(hostname) $SLURM_JOB_ID"], { timeoutMs: 240_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.split("\n").filter((l) => l !== "").sort();
    const job = /^0: \S+ (\d+)$/.exec(lines[0] ?? "")?.[1] ?? "?";
    expect(lines).toEqual([`0: ${job}-n1-0 ${job}`, `1: ${job}-n1-0 ${job}`, `2: ${job}-n2-0 ${job}`, `3: ${job}-n2-0 ${job}`]);
    await expectCleanAfter(job, "COMPLETED");
  });

  it("a job without --vse is unchanged: its tasks run on the host and it gets no VMs", async () => {
    const since = new Date().toISOString();
    const r = await asUser(["srun", "-N2", "-n2", "-l", "sh", "-c", "echo $(hostname) $SLURM_JOB_ID"], { timeoutMs: 60_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.split("\n").filter((l) => l !== "").sort();
    const job = /^0: \S+ (\d+)$/.exec(lines[0] ?? "")?.[1] ?? "?";
    expect(lines).toEqual([`0: ${hostname()} ${job}`, `1: ${hostname()} ${job}`]);
    // the prolog did nothing for it (the log keeps earlier clusters' jobs of the same id: only lines since it started)
    expect(vseLog("prolog", job).split("\n").filter((l) => l !== "" && l.slice(0, 24) >= since)).toEqual([]);
    await expectCleanAfter(job, "COMPLETED");
  });
});

describe("sbatch --vse", () => {
  afterEach(async () => {
    await cancelAll();
    await waitNodesIdle(120_000).catch(() => undefined);
    await resumeNodes();
  });

  it("runs the script on the host and its srun steps in the VMs; the time limit stops the commands in the guests", async () => {
    writeUserFile("tasks-batch.xml", helloXml(1));
    const d = userDir();
    const id = await sbatch(["-N2", "-t", "1", "--vse=tasks-batch.xml", "-J", "vse-batch", "-o", `${d}/batch-%j.out`], [
      "#!/bin/sh",
      'echo "script on $(hostname)"',
      "srun -N2 -n2 -l hostname | sort",
      `${VSE} exec -- hostname`,
      "srun -N2 -n2 -l sh -c 'trap \"echo got TERM in $(hostname); exit 143\" TERM; sleep 4242 & wait'",
      "",
    ].join("\n"));
    // Slurm ends the job one minute in (checked every 30 s), then the epilog runs
    await expectCleanAfter(id, "TIMEOUT");
    const text = readFileSync(`${d}/batch-${id}.out`, "utf8");
    expect(text.split("\n").slice(0, 4)).toEqual([`script on ${hostname()}`, `0: ${id}-n1-0`, `1: ${id}-n2-0`, `${id}-n1-0`]);
    expect(text).toContain(`0: got TERM in ${id}-n1-0`);
    expect(text).toContain(`1: got TERM in ${id}-n2-0`);
    expect(text).toMatch(/JOB \d+ ON n1 CANCELLED .* DUE TO TIME LIMIT/);
  }, 300_000);

  it("with --vse-batch=inside runs the script itself in the first VM of the first node, and passes its exit code", async () => {
    writeUserFile("tasks-inside.xml", helloXml(1));
    const d = userDir();
    const id = await sbatch(["-N2", "--vse=tasks-inside.xml", "--vse-batch=inside", "-J", "vse-inside", "-o", `${d}/inside-%j.out`], [
      "#!/bin/sh",
      'echo "script on $(hostname) as $(id -un) for job $SLURM_JOB_ID with $*"',
      "exit 4",
      "",
    ].join("\n"));
    await expectCleanAfter(id, "FAILED");
    expect(readFileSync(`${d}/inside-${id}.out`, "utf8")).toBe(`script on ${id}-n1-0 as ${JOB_USER} for job ${id} with \n`);
    expect((await jobInfo(id))?.ExitCode).toBe("4:0");
  });

  it("--vse-batch takes host or inside, and inside needs --vse", async () => {
    const bad = await asUser(["sbatch", "--vse-batch=elsewhere", "--wrap", "true"]);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toContain("vse: --vse-batch=elsewhere: expected host or inside");
    const alone = await asUser(["sbatch", "--vse-batch=inside", "--wrap", "true"]);
    expect(alone.exitCode).not.toBe(0);
    expect(alone.stderr).toContain("vse: --vse-batch=inside: the job has no --vse=FILE");
  });
});

describe("a job whose VMs could not be deployed", () => {
  let sitePolicy: string;
  afterAll(async () => {
    if (sitePolicy !== undefined) writeFileSync(SITE, sitePolicy);
    await cancelAll();
    await resumeNodes();
  });

  it("fails its tasks saying why; they never run on the host; no node is drained", async () => {
    writeUserFile("tasks-two.xml", helloXml(2));
    const d = userDir();
    const id = await sbatch(["-N1", "--hold", "--vse=tasks-two.xml", "-J", "vse-failed", "-o", `${d}/failed-%j.out`], [
      "#!/bin/sh",
      "srun -n1 hostname",
      'echo "srun rc=$?"',
      "",
    ].join("\n"));
    // between submission and start the site lowers its limit: the node's prolog refuses the job's
    // description (the user's mistake now, so it exits 0 and the job runs)
    sitePolicy = readFileSync(SITE, "utf8");
    const policy = JSON.parse(sitePolicy) as { limits?: Record<string, unknown> };
    writeFileSync(SITE, JSON.stringify({ ...policy, limits: { ...policy.limits, maxVmsPerNode: 1 } }));
    expect((await asRoot(["scontrol", "release", id])).exitCode).toBe(0);
    await expectCleanAfter(id, "COMPLETED");
    const text = readFileSync(`${d}/failed-${id}.out`, "utf8");
    expect(text).toMatch(new RegExp(`vse: task 0 \\(step ${id}\\.0 on n1\\) cannot run in the job's VMs: the VMs of job ${id} on n1 were not deployed: .*VMs per node 2 exceeds the site limit`));
    expect(text).toContain("srun: error: n1: task 0: Exited with exit code 2");
    expect(text).toContain("srun rc=2");
    expect(text.split("\n"), "the task ran on the host").not.toContain(hostname());
  });
});
