// Smoke test of the Slurm test harness itself (no vse involved beyond the installed
// prolog/epilog being harmless for jobs without --vse).
import { describe, expect, it } from "vitest";
import { asUser, jobInfo, nodeStates, sbatch, slurmConf, tail, slurmdLog, waitJob, waitNodesIdle, writeUserFile } from "./cluster.js";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";

describe("slurm test cluster", () => {
  it("has both nodes idle", async () => {
    expect(await nodeStates()).toEqual({ n1: "idle", n2: "idle" });
  });

  it("lets the job user query it", async () => {
    const r = await asUser(["id", "-un"]);
    expect(r.stdout.trim()).toBe("vsetest");
    const s = await asUser(["sinfo", "-h", "-o", "%P"]);
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout.trim()).toBe("debug*");
    expect(slurmConf()).toMatch(/slurm\.conf$/);
  });

  it("runs a two-node batch job with steps on both nodes", async () => {
    const marker = writeUserFile("marker.txt", "hello\n");
    const out = join(dirname(marker), "two-node-%j.out");
    const id = await sbatch(
      ["-N2", "-o", out, "-J", "harness"],
      `#!/bin/sh\ncat ${marker}\nsrun -l printenv SLURMD_NODENAME | sort\nid -un\n`,
    );
    const state = await waitJob(id, 60_000);
    const info = await jobInfo(id);
    expect(state, `${JSON.stringify(info)}\n${tail(slurmdLog("n1"))}`).toBe("COMPLETED");
    expect(info?.NodeList).toBe("n[1-2]");
    const text = readFileSync(out.replace("%j", id), "utf8");
    expect(text).toBe("hello\n0: n1\n1: n2\nvsetest\n");
    await waitNodesIdle(30_000);
  });
});
