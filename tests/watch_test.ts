// Every way a step ends ends its containers, while the job goes on: the node's watcher (`socker watch`)
// removes a container within 5 s of its supervising socker's death (kill -9 by root, scancel JOB.STEP,
// --kill-on-bad-exit), inside and outside a job; without the watcher, runs still start, the Epilog still
// cleans, and doctor says it. Real users, real Slurm, real engine.
import assert from "node:assert/strict";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
import {
  DOCKER,
  IMAGE,
  PRIVILEGED_SOCKER,
  sh,
  sockerContainers,
  spawnSocker,
  stagingLeft,
  startWatcher,
  stopWatcher,
  waitFor,
  watcherPid,
  withSettings,
} from "./helpers.ts";
import {
  cancelSubmitted,
  jobCgroupFolders,
  jobContainers,
  jobOutput,
  jobState,
  sbatch,
  waitJobEnd,
  waitJobRuns,
} from "./slurm.ts";

/** The bound the issue sets: a killed step's container is gone within this. */
const GONE_MS = 5000;

/** The root socker processes (Deno or the compiled binary) running `run`, whose command line holds `mark`. */
async function supervisors(mark: string): Promise<number[]> {
  const found = await sh("/usr/bin/pgrep", ["-f", mark]);
  return found.stdout.split("\n").filter((line) => line !== "").map(Number).filter((pid) => {
    try {
      const exe = Deno.readLinkSync(`/proc/${pid}/exe`);
      return /\/(deno|socker-bin)$/.test(exe) && /^Uid:\s+0\s/m.test(Deno.readTextFileSync(`/proc/${pid}/status`));
    } catch {
      return false;
    }
  });
}

/** Milliseconds from now until `names` are all gone from the engine, or -1 after `timeoutMs`. */
async function goneWithin(names: string[], timeoutMs = 15_000): Promise<number> {
  return await waitFor(
    async () => {
      const left = await sockerContainers();
      return names.every((name) => !left.includes(name));
    },
    timeoutMs,
    20,
  );
}

/** The job's containers once `count` of them run (created is not enough: a start may still fail). */
async function containersOf(job: string, count: number): Promise<string[]> {
  let names: string[] = [];
  const running = async () => {
    const listed = await sh(DOCKER, [
      "ps",
      "--filter",
      `label=socker.job=${job}`,
      "--filter",
      "status=running",
      "--format",
      "{{.Names}}",
    ]);
    return listed.stdout.split("\n").filter((line) => line !== "");
  };
  const started = await waitFor(async () => (names = await running()).length >= count, 60_000, 100);
  assert.ok(started >= 0, `job ${job}: ${names.length} of ${count} containers started`);
  return names;
}

function watchTest(name: string, body: () => Promise<void>): void {
  Deno.test(`watch: ${name}`, async () => {
    if (watcherPid() === undefined) await startWatcher();
    try {
      await body();
    } finally {
      await cancelSubmitted();
    }
  });
}

watchTest("kill -9 of a supervisor outside a job: its container is gone within 5 s", async () => {
  const mark = `w9-${crypto.randomUUID().slice(0, 8)}`;
  const child = spawnSocker("alice", ["run", "-e", `M=${mark}`, IMAGE, "sleep", "1000"]);
  assert.ok(await waitFor(async () => (await sockerContainers()).length === 1, 15_000) >= 0, "started");
  const names = await sockerContainers();
  const [pid] = await supervisors(mark);
  assert.ok(pid > 0, "the supervisor runs");
  await sh("/bin/kill", ["-KILL", String(pid)]);
  const gone = await goneWithin(names);
  await child.output();
  console.log(`kill -9 of the supervisor (no job): container gone after ${gone.toFixed(0)} ms`);
  assert.ok(gone >= 0 && gone < GONE_MS, `gone after ${gone} ms`);
  assert.ok(await waitFor(async () => (await stagingLeft()) === "", 5000) >= 0, "its staging is gone too");
});

watchTest("kill -9 of a supervisor inside a job: container gone within 5 s, the job runs on", async () => {
  const mark = `wj-${crypto.randomUUID().slice(0, 8)}`;
  const job = await sbatch(`socker run -e M=${mark} ${IMAGE} sleep 1000 &\nsleep 1000`);
  await waitJobRuns(job);
  const names = await containersOf(job, 1);
  for (const pid of await supervisors(mark)) await sh("/bin/kill", ["-KILL", String(pid)]);
  const gone = await goneWithin(names);
  console.log(`kill -9 of the supervisor (in a job): container gone after ${gone.toFixed(0)} ms`);
  assert.ok(gone >= 0 && gone < GONE_MS, `gone after ${gone} ms`);
  assert.equal(await jobState(job), "RUNNING");
});

watchTest(
  "scancel JOB.STEP in a batch job: container gone within 5 s, the job runs on, its next step runs",
  async () => {
    const job = await sbatch(
      `srun -n1 socker run ${IMAGE} sleep 1000; echo "step0=$?"\nsrun -n1 socker run ${IMAGE} echo next-step-ran\nsleep 1000`,
    );
    await waitJobRuns(job);
    const names = await containersOf(job, 1);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = performance.now();
    await sh("/usr/bin/scancel", [`${job}.0`]);
    const gone = await goneWithin(names);
    console.log(
      `scancel ${job}.0: container gone after ${gone.toFixed(0)} ms (${(performance.now() - started).toFixed(0)})`,
    );
    assert.ok(gone >= 0 && gone < GONE_MS, `gone after ${gone} ms`);
    assert.ok(
      await waitFor(() => Promise.resolve(jobOutput(job).includes("next-step-ran")), 30_000) >= 0,
      jobOutput(job),
    );
    assert.equal(await jobState(job), "RUNNING");
    // What the cancelled step left of its cgroups goes too (the job's own folders stay while it runs).
    assert.ok(
      await waitFor(async () => (await jobCgroupFolders(job)).length > 0 && !(await stepFolders(job, "0")), 15_000) >=
        0,
      "the cancelled step's cgroup folders are removed",
    );
  },
);

watchTest(
  "scancel JOB.STEP of a step sharing one container: the container and its lock file go, the job runs on",
  async () => {
    const locks = () => new Set(Array.from(Deno.readDirSync("/run/socker-locks")).map((entry) => entry.name));
    const before = locks();
    const job = await sbatch(`srun -n2 -O socker run ${IMAGE} sleep 1000\nsleep 1000`, [
      "-N1",
      "-w",
      "n1",
      "-n2",
      "-O",
    ]);
    await waitJobRuns(job);
    const names = await containersOf(job, 1);
    const stepLocks = [...locks()].filter((name) => name.startsWith("share-") && !before.has(name));
    assert.equal(stepLocks.length, 1, `the step's lock: ${stepLocks}`);
    await sh("/usr/bin/scancel", [`${job}.0`]);
    assert.ok((await goneWithin(names)) >= 0, "the step container is gone");
    const lockGone = await waitFor(() => Promise.resolve(!locks().has(stepLocks[0])), GONE_MS);
    assert.ok(lockGone >= 0, `${stepLocks[0]} is left in /run/socker-locks`);
    assert.equal(await jobState(job), "RUNNING");
  },
);

/** Whether any cgroup folder of the job's step is left on this host. */
async function stepFolders(job: string, step: string): Promise<boolean> {
  const found = await sh("/usr/bin/find", [
    "/sys/fs/cgroup",
    "-maxdepth",
    "6",
    "-type",
    "d",
    "-path",
    `*/job_${job}/step_${step}`,
  ]);
  return found.stdout.trim() !== "";
}

watchTest("scancel JOB.STEP in a live salloc: container gone within 5 s, the next step runs", async () => {
  const mark = `ws-${crypto.randomUUID().slice(0, 8)}`;
  const alloc = new Deno.Command("/usr/bin/setpriv", {
    args: [
      "--reuid=alice",
      "--regid=alice",
      "--init-groups",
      "/usr/bin/env",
      "-i",
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "HOME=/home/alice",
      "/usr/bin/salloc",
      "-N1",
      `--job-name=${mark}`,
      "/bin/sh",
      "-c",
      `srun -n1 socker run ${IMAGE} sleep 1000; echo "step0=$?"; srun -n1 socker run ${IMAGE} echo next-step-ran; sleep 3`,
    ],
    cwd: "/home/alice",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    let job = "";
    assert.ok(
      await waitFor(async () => {
        job = (await sh("/usr/bin/squeue", ["-h", "-n", mark, "-o", "%i"])).stdout.trim();
        return job !== "";
      }, 30_000) >= 0,
      "the allocation exists",
    );
    const names = await containersOf(job, 1);
    await sh("/usr/bin/scancel", [`${job}.0`]);
    const gone = await goneWithin(names);
    console.log(`salloc, scancel ${job}.0: container gone after ${gone.toFixed(0)} ms`);
    assert.ok(gone >= 0 && gone < GONE_MS, `gone after ${gone} ms`);
    const output = await alloc.output();
    const text = new TextDecoder().decode(output.stdout);
    assert.match(text, /next-step-ran/);
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  } finally {
    await sh("/usr/bin/scancel", ["-n", mark]);
  }
});

for (const [share, containers] of [["none", 3], ["step", 2]] as const) {
  watchTest(
    `a 4-task step on 2 nodes with --kill-on-bad-exit=1, one task exits 3: every container gone within 5 s (share = ${share})`,
    async () => {
      // Task 1 exits 3 when the test says so (a file appears), once the other three tasks' containers run
      // (tasks 0 and 1 on n1, 2 and 3 on n2: with step containers, one container a node).
      const signal = `/tmp/socker-kobe-${crypto.randomUUID().slice(0, 8)}`;
      await withSettings(`share = ${share}\n`, async () => {
        const job = await sbatch(
          `srun -N2 -n4 -O --kill-on-bad-exit=1 sh -c 'if [ "$SLURM_PROCID" = 1 ]; then while [ ! -e ${signal} ]; do sleep 0.05; done; exit 3; fi; exec socker run ${IMAGE} sleep 1000'; echo "step=$?"\nsleep 1000`,
          ["-N2", "-n4", "-O"],
        );
        try {
          await waitJobRuns(job);
          const names = await containersOf(job, containers);
          if (share === "step") await sleep(1000); // the last task joins the container of n2
          Deno.writeTextFileSync(signal, "");
          const gone = await goneWithin(names);
          console.log(
            `--kill-on-bad-exit (share = ${share}): every container gone ${gone.toFixed(0)} ms after the bad exit`,
          );
          assert.ok(gone >= 0 && gone < GONE_MS, `gone after ${gone} ms`);
          const ended = await waitFor(() => Promise.resolve(jobOutput(job).includes("step=")), 30_000);
          assert.ok(ended >= 0, "srun ended");
          assert.equal(await jobState(job), "RUNNING");
        } finally {
          try {
            Deno.removeSync(signal);
          } catch { /* never written: the containers did not all start */ }
        }
      });
    },
  );
}

watchTest("20 steps cancelled in a row: no container, staging mount or step cgroup folder accumulates", async () => {
  const job = await sbatch(
    `for i in $(seq 0 19); do srun -n1 socker run ${IMAGE} sleep 1000; done\necho all-steps-done\nsleep 1000`,
  );
  await waitJobRuns(job);
  const watcher = watcherPid()!;
  const rssBefore = rss(watcher);
  const times: number[] = [];
  for (let step = 0; step < 20; step++) {
    const names = await containersOf(job, 1);
    // The step that runs it (a step whose container failed to start would shift the count).
    const label = await sh(DOCKER, ["inspect", "--format", '{{index .Config.Labels "socker.step"}}', names[0]]);
    await sh("/usr/bin/scancel", [`${job}.${label.stdout.trim()}`]);
    const gone = await goneWithin(names);
    assert.ok(gone >= 0 && gone < GONE_MS, `step ${step}: gone after ${gone} ms`);
    times.push(gone);
  }
  assert.ok(
    await waitFor(() => Promise.resolve(jobOutput(job).includes("all-steps-done")), 30_000) >= 0,
    jobOutput(job),
  );
  assert.deepEqual(await jobContainers(job), []);
  assert.ok(await waitFor(async () => (await stagingLeft()) === "", 10_000) >= 0, await stagingLeft());
  const stepsLeft = await waitFor(async () => {
    for (let step = 0; step < 20; step++) if (await stepFolders(job, String(step))) return false;
    return true;
  }, 20_000);
  const folders = await sh("/usr/bin/find", [
    "/sys/fs/cgroup",
    "-maxdepth",
    "7",
    "-type",
    "d",
    "-path",
    `*/job_${job}/step_[0-9]*`,
  ]);
  assert.ok(stepsLeft >= 0, `no step cgroup folder left: ${folders.stdout}`);
  assert.equal(watcherPid(), watcher, "one watcher, the same");
  const rssAfter = rss(watcher);
  console.log(
    `20 steps cancelled: gone after ${Math.min(...times).toFixed(0)}-${Math.max(...times).toFixed(0)} ms; ` +
      `watcher RSS ${(rssBefore / 1024).toFixed(1)} -> ${(rssAfter / 1024).toFixed(1)} MiB`,
  );
  assert.ok(rssAfter - rssBefore < 16 * 1024, "the watcher's memory stays bounded");
  assert.equal(await jobState(job), "RUNNING");
});

function rss(pid: number): number {
  return Number(/^VmRSS:\s+(\d+)/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? 0);
}

Deno.test("watch: the watcher killed: runs still start, doctor says it, the Epilog still cleans up", async () => {
  if (watcherPid() === undefined) await startWatcher();
  await stopWatcher();
  try {
    const doctor = await sh(PRIVILEGED_SOCKER, ["doctor"]);
    assert.match(doctor.stdout, /^FIX\s+watcher: socker watch does not run/m);
    const run = await sh("/usr/bin/setpriv", [
      "--reuid=alice",
      "--regid=alice",
      "--init-groups",
      "/usr/local/bin/socker",
      "run",
      IMAGE,
      "echo",
      "still-runs",
    ], { env: { PATH: "/usr/bin:/bin" } });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /still-runs/);
    const mark = `wk-${crypto.randomUUID().slice(0, 8)}`;
    const job = await sbatch(`socker run -e M=${mark} ${IMAGE} sleep 1000 &\nsleep 1000`);
    await waitJobRuns(job);
    const names = await containersOf(job, 1);
    for (const pid of await supervisors(mark)) await sh("/bin/kill", ["-KILL", String(pid)]);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(await jobContainers(job), names, "no watcher: the container stays until the job ends");
    await sh("/usr/bin/scancel", [job]);
    await waitJobEnd(job);
    assert.deepEqual(await jobContainers(job), [], "the Epilog removed it");
  } finally {
    await cancelSubmitted();
    await startWatcher();
  }
  const doctor = await sh(PRIVILEGED_SOCKER, ["doctor"]);
  assert.match(doctor.stdout, /^ok\s+watcher: socker watch runs/m);
});
