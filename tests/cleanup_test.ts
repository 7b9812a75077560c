// Cleanup never fights Slurm and never hangs: jobs cancelled while their steps are being torn down leave no
// container and no cgroup folder, drain no node; the Epilog hook always exits 0 within its bound.
import assert from "node:assert/strict";
import {
  auditRecords,
  folder,
  IMAGE,
  nothingLeft,
  PRIVILEGED_SOCKER,
  privilegedPid,
  sh,
  socker,
  sockerContainers,
  spawnSocker,
  stagingLeft,
  startEngine,
  stopEngine,
  waitFor,
  withWatcherStopped,
} from "./helpers.ts";
import {
  cancelSubmitted,
  drainedNodes,
  jobCgroupFolders,
  jobContainers,
  sbatch,
  waitJobEnd,
  waitJobRuns,
} from "./slurm.ts";

const EPILOG = "/usr/local/libexec/socker/slurm-epilog";

Deno.test("cleanup: 20 jobs cancelled while their steps are torn down: no container, no folder, no drained node", async () => {
  const jobs: string[] = [];
  try {
    for (let round = 0; round < 10; round++) {
      // One job per node: an srun step (socker cleans up itself) and a plain line (the Epilog does).
      const pair = [
        await sbatch(`srun -n1 socker run ${IMAGE} sleep 1000`, ["-w", "n1"]),
        await sbatch(`socker run ${IMAGE} sleep 1000`, ["-w", "n2"]),
      ];
      jobs.push(...pair);
      for (const job of pair) {
        await waitJobRuns(job);
        assert.ok(
          await waitFor(async () => (await jobContainers(job)).length === 1, 30_000) >= 0,
          `job ${job}'s container`,
        );
      }
      await sh("/usr/bin/scancel", pair);
      await new Promise((resolve) => setTimeout(resolve, 30 * round));
      await sh("/usr/bin/scancel", ["--signal=TERM", ...pair]); // again, while the steps are torn down
      await sh("/usr/bin/scancel", pair);
    }
    for (const job of jobs) await waitJobEnd(job);
  } finally {
    await cancelSubmitted();
  }
  assert.deepEqual(await drainedNodes(), []);
  for (const job of jobs) {
    assert.deepEqual(await jobContainers(job), [], `job ${job}`);
    assert.deepEqual(await jobCgroupFolders(job), [], `job ${job} left cgroup folders`);
  }
  assert.equal(await stagingLeft(), "");
  const slurmdLog = await sh("/bin/sh", [
    "-c",
    `grep -h -E "epilog.*(fail|error)|Epilog failed" /var/log/slurm/slurmd-n?.log | tail -n 5`,
  ]);
  assert.equal(slurmdLog.stdout, "", "no Epilog failure in slurmd's logs");
});

Deno.test("cleanup: the Epilog hook exits 0 within its bound, also with the engine stopped or a bad job id", async () => {
  for (const id of ["", "12; reboot", "99999999999", "-1"]) {
    const result = await sh(EPILOG, [], { env: { SLURM_JOB_ID: id, PATH: "/usr/bin:/bin" } });
    assert.equal(result.code, 0, `SLURM_JOB_ID='${id}': ${result.stderr}`);
  }
  await stopEngine();
  try {
    const started = performance.now();
    const result = await sh(EPILOG, [], { env: { SLURM_JOB_ID: "515151", PATH: "/usr/bin:/bin" } });
    const elapsed = performance.now() - started;
    assert.equal(result.code, 0);
    assert.ok(elapsed < 45_000, `took ${elapsed} ms`);
  } finally {
    await startEngine();
  }
  assert.deepEqual(await sockerContainers(), []);
});

// ---- attacks (issue 9 §2): a supervisor killed through sudo leaves nothing the reaper does not remove

Deno.test("attack: a SIGKILLed supervisor outside a job: the reaper removes its container and mounts, and says so", async () => {
  await withWatcherStopped(async () => {
    folder("/home/alice/k9", 2001, 2001, 0o755);
    const child = spawnSocker("alice", ["run", "-v", "/home/alice/k9:/d", IMAGE, "sleep", "1000"]);
    assert.ok(await waitFor(async () => (await sockerContainers()).length === 1, 15_000) >= 0, "started");
    await sh("/bin/kill", ["-KILL", String(await privilegedPid(child.pid))]);
    await child.output();
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await sockerContainers()).length, 1, "SIGKILL cannot be trapped: the container still runs");
    assert.notEqual(await stagingLeft(), "", "and its staging mount stays");
    const reaped = await sh(PRIVILEGED_SOCKER, ["cleanup", "--orphans"]);
    assert.equal(reaped.code, 0, reaped.stdout + reaped.stderr);
    assert.match(reaped.stdout, /orphans: containers: 1 removed/);
    await nothingLeft(1000);
    const records = await auditRecords('"scope":"orphans"');
    const record = records.filter((r) => r.event === "cleanup" && (r.containers as string[]).length === 1).at(-1);
    assert.equal(record?.outcome, "ok", JSON.stringify(records.at(-1)));
    Deno.removeSync("/home/alice/k9");
  });
});

Deno.test("attack: every run first reaps the caller's own orphans", async () => {
  await withWatcherStopped(async () => {
    const child = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
    assert.ok(await waitFor(async () => (await sockerContainers()).length === 1, 15_000) >= 0, "started");
    await sh("/bin/kill", ["-KILL", String(await privilegedPid(child.pid))]);
    await child.output();
    assert.equal((await sockerContainers()).length, 1);
    const bob = await socker("bob", ["run", IMAGE, "true"]);
    assert.equal(bob.code, 0);
    assert.equal((await sockerContainers()).length, 1, "bob's run never touches alice's containers");
    const next = await socker("alice", ["run", IMAGE, "true"]);
    assert.equal(next.code, 0, next.stderr);
    await nothingLeft(1000);
  });
});
