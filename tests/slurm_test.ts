// Integration tests of socker inside real Slurm jobs: a two-node cluster (n1, n2: two slurmd on this host,
// proctrack/cgroup, task/cgroup with ConstrainCores/RAMSpace/Devices, socker's Epilog), jobs submitted by
// alice with sbatch and srun, containers on the real Docker engine. `sudo tests/run.sh` sets it all up.
import assert from "node:assert/strict";
import {
  assertRefused,
  CONTAINER_FOLDER,
  DOCKER,
  IMAGE,
  restoreSettings,
  sh,
  socker,
  stagingLeft,
  TEST_ENGINE,
  waitFor,
  withWatcherStopped,
  writeSettings,
} from "./helpers.ts";

import {
  asAlice,
  HOME,
  jobCgroupFolders,
  jobContainers,
  jobOutput,
  jobProcesses,
  jobTest,
  sbatch,
  USER,
  waitJobEnd,
  waitJobRuns,
} from "./slurm.ts";

const slurmTest = (name: string, body: () => Promise<void>) => jobTest("slurm", name, body);

/** The memory-controller cgroup lines of every process the container printed. */
function memoryLines(output: string): string[] {
  return output.split("\n").filter((line) => /:memory:/.test(line));
}

// ---- placement

slurmTest("srun step: every container process sits in the step's cgroup, forged SLURM_JOB_ID or not", async () => {
  const other = await sbatch("sleep 60", ["--job-name=other"]);
  const probe = `${IMAGE} sh -c 'sleep 5 & cat /proc/1/cgroup /proc/self/cgroup /proc/$!/cgroup; kill $!'`;
  const job = await sbatch(
    [
      `srun -n1 socker run ${probe}`,
      // The forged variables must reach socker, not srun (srun itself would follow them to the other job,
      // or make a new allocation without them).
      `srun -n1 env SLURM_JOB_ID=${other} SLURM_JOBID=${other} SLURM_STEP_ID=7 socker run ${probe}`,
      `srun -n1 env -u SLURM_JOB_ID -u SLURM_JOBID -u SLURM_STEP_ID socker run ${probe}`,
    ].join("\n"),
  );
  await waitJobEnd(job);
  await sh("/usr/bin/scancel", [other]);
  const lines = memoryLines(jobOutput(job));
  assert.equal(lines.length, 9, jobOutput(job));
  for (const line of lines) {
    assert.match(line, new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_[0-2]/${CONTAINER_FOLDER}$`));
  }
  for (const step of ["0", "1", "2"]) assert.equal(lines.filter((l) => l.includes(`/step_${step}/`)).length, 3);
  await waitJobEnd(other);
});

slurmTest("batch step: the container sits in step_batch, also with SLURM_JOB_ID pointing at another job", async () => {
  const other = await sbatch("sleep 60", ["--job-name=other"]);
  const job = await sbatch(
    `export SLURM_JOB_ID=${other} SLURM_JOBID=${other}\nsocker run ${IMAGE} sh -c 'cat /proc/self/cgroup'`,
  );
  await waitJobEnd(job);
  await sh("/usr/bin/scancel", [other]);
  const lines = memoryLines(jobOutput(job));
  assert.equal(lines.length, 1, jobOutput(job));
  assert.match(lines[0], new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_batch/${CONTAINER_FOLDER}$`));
  await waitJobEnd(other);
});

slurmTest("labels name the job, step, user and node; an administrator can filter on them", async () => {
  const job = await sbatch(`srun -n1 socker run ${IMAGE} sleep 30`);
  await waitJobRuns(job);
  const seen = await waitFor(async () => (await jobContainers(job)).length === 1, 30_000);
  assert.ok(seen >= 0, "container started");
  const inspect = await sh(DOCKER, [
    "inspect",
    "--format",
    "{{json .Config.Labels}} {{.HostConfig.CgroupParent}}",
    (await jobContainers(job))[0],
  ]);
  const [labels, parent] = inspect.stdout.trim().split(" ");
  const parsed = JSON.parse(labels);
  assert.equal(parsed["socker.job"], job);
  assert.equal(parsed["socker.step"], "0");
  assert.equal(parsed["socker.uid"], "2001");
  assert.equal(parsed["socker.user"], "alice");
  assert.ok(parsed["socker.node"]);
  assert.match(parent, new RegExp(`^/slurm_n\\d/uid_2001/job_${job}/step_0$`));
  await sh("/usr/bin/scancel", [job]);
  await waitJobEnd(job);
  assert.deepEqual(await jobContainers(job), []);
});

// ---- limits

slurmTest("the job's memory limit holds inside the container: 300 MB is killed (137), 50 MB is not", async () => {
  const job = await sbatch(
    [
      `srun -n1 socker run ${IMAGE} dd if=/dev/zero of=/dev/null bs=300M count=1; echo "big=$?"`,
      `srun -n1 socker run ${IMAGE} dd if=/dev/zero of=/dev/null bs=50M count=1; echo "small=$?"`,
    ].join("\n"),
    ["--mem=100M"],
  );
  await waitJobEnd(job);
  const output = jobOutput(job);
  assert.match(output, /^big=137$/m, output);
  assert.match(output, /^small=0$/m, output);
});

slurmTest("the container's allowed CPUs are the step's", async () => {
  const job = await sbatch(
    `srun -n1 grep Cpus_allowed_list /proc/self/status\nsrun -n1 socker run ${IMAGE} grep Cpus_allowed_list /proc/self/status`,
  );
  await waitJobEnd(job);
  const lines = jobOutput(job).split("\n").filter((line) => line.startsWith("Cpus_allowed_list"));
  assert.equal(lines.length, 2, jobOutput(job));
  assert.equal(lines[1], lines[0]);
});

// ---- cancel, time-out and SIGKILL: nothing outlives the job

async function cancelAndMeasure(script: string): Promise<{ goneMs: number; job: string }> {
  const job = await sbatch(script);
  await waitJobRuns(job);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length > 0, 30_000) >= 0, "container started");
  await new Promise((resolve) => setTimeout(resolve, 300));
  if (TEST_ENGINE === "podman") {
    const running = jobProcesses(job);
    assert.ok(running.some((line) => line.endsWith(" conmon")), `Podman's conmon runs in the job: ${running}`);
  }
  const start = performance.now();
  await sh("/usr/bin/scancel", [job]);
  const gone = await waitFor(async () => (await jobContainers(job)).length === 0, 15_000, 20);
  const goneMs = gone >= 0 ? performance.now() - start : -1;
  console.log(`scancel to container gone: ${goneMs.toFixed(0)} ms`);
  await waitJobEnd(job);
  assert.deepEqual(await jobContainers(job), []);
  assert.deepEqual(await jobCgroupFolders(job), [], "every cgroup folder of the job is removed");
  assert.deepEqual(jobProcesses(job), [], "no process of the job is left (Podman's conmon included)");
  return { goneMs, job };
}

slurmTest("scancel with srun socker: the container is gone within 1 second", async () => {
  const { goneMs } = await cancelAndMeasure(`srun -n1 socker run ${IMAGE} sleep 1000`);
  assert.ok(goneMs >= 0 && goneMs < 1000, `gone after ${goneMs} ms`);
});

slurmTest("scancel with exec socker: the container is gone within 1 second", async () => {
  const { goneMs } = await cancelAndMeasure(`exec socker run ${IMAGE} sleep 1000`);
  assert.ok(goneMs >= 0 && goneMs < 1000, `gone after ${goneMs} ms`);
});

slurmTest("scancel with a plain socker line: the Epilog removes the container within 3 seconds", async () => {
  const { goneMs } = await cancelAndMeasure(`socker run ${IMAGE} sleep 1000\necho never`);
  assert.ok(goneMs >= 0 && goneMs < 3000, `gone after ${goneMs} ms`);
});

slurmTest("kill -9 of socker inside a job: container and staging mount are gone once the job ends", async () => {
  await withWatcherStopped(async () => {
    // A folder of alice's own is staged (she could rename it): the Epilog must undo that too.
    Deno.mkdirSync(`${HOME}/k9`, { recursive: true });
    Deno.chownSync(`${HOME}/k9`, 2001, 2001);
    const job = await sbatch(`socker run -v ${HOME}/k9:/d ${IMAGE} sleep 1000 &\nsleep 6\necho done`);
    await waitJobRuns(job);
    assert.ok(await waitFor(async () => (await jobContainers(job)).length === 1, 30_000) >= 0, "container started");
    // socker itself (Deno), not its sudo: with sudo gone first, socker would hang up and remove it.
    const pids = await sh("/usr/bin/pgrep", ["-f", "-u", "root", "lib/socker/socker.ts run|lib/socker/socker-bin run"]);
    assert.equal(pids.code, 0, "the privileged socker runs");
    for (const pid of pids.stdout.trim().split("\n")) await sh("/bin/kill", ["-KILL", pid]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await jobContainers(job)).length, 1, "SIGKILL cannot be trapped: the container still runs");
    assert.match(await stagingLeft(), new RegExp(`^job_${job}\\.socker-2001-`), "the killed socker left its staging");
    await waitJobEnd(job);
    assert.deepEqual(await jobContainers(job), []);
    assert.deepEqual(await jobCgroupFolders(job), []);
    assert.equal(await stagingLeft(), "");
    Deno.removeSync(`${HOME}/k9`);
  });
});

slurmTest("sbatch --signal=USR1 reaches the process inside the container", async () => {
  const script =
    `srun -n1 socker run ${IMAGE} sh -c "trap 'echo got-usr1; exit 9' USR1; while true; do sleep 0.2; done"; echo "rc=$?"`;
  const job = await sbatch(script, ["--time=2", "--signal=USR1@110"]);
  await waitJobEnd(job, 150_000);
  const output = jobOutput(job);
  assert.match(output, /got-usr1/, output);
  assert.match(output, /rc=9/, output);
});

// ---- multi-node

slurmTest(
  "srun -N2: each task's container is in its own node's job cgroup; output and exit codes come back",
  async () => {
    const job = await sbatch(
      `srun -N2 -n2 socker run ${IMAGE} sh -c 'grep :memory: /proc/self/cgroup; exit 3'; echo "rc=$?"`,
      ["-N2", "-n2"],
    );
    await waitJobEnd(job);
    const output = jobOutput(job);
    const lines = memoryLines(output);
    assert.equal(lines.length, 2, output);
    const nodes = lines.map((line) => /\/(slurm_n\d)\//.exec(line)?.[1]).sort();
    assert.deepEqual(nodes, ["slurm_n1", "slurm_n2"]);
    for (const line of lines) assert.match(line, new RegExp(`/uid_2001/job_${job}/step_0/${CONTAINER_FOLDER}$`));
    assert.match(output, /^rc=3$/m);
  },
);

slurmTest("a cancel of a two-node job cleans both nodes", async () => {
  const job = await sbatch(`srun -N2 -n2 socker run ${IMAGE} sleep 1000`, ["-N2", "-n2"]);
  await waitJobRuns(job);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length === 2, 30_000) >= 0, "two containers");
  await sh("/usr/bin/scancel", [job]);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length === 0, 3000) >= 0, "containers gone");
  await waitJobEnd(job);
  assert.deepEqual(await jobCgroupFolders(job), []);
});

// ---- outside a job

slurmTest("outside a job: no cgroup parent; refused when the administrator requires a job", async () => {
  const free = await socker(USER, ["-v", "run", IMAGE, "true"]);
  assert.equal(free.code, 0, free.stderr);
  assert.ok(!free.stderr.includes("--cgroup-parent"));
  writeSettings("require_job = yes\n");
  try {
    assertRefused(await socker(USER, ["run", IMAGE, "true"]), /only inside Slurm jobs/);
    const job = await sbatch(`srun -n1 socker run ${IMAGE} echo inside-ok`);
    await waitJobEnd(job);
    assert.match(jobOutput(job), /inside-ok/);
  } finally {
    restoreSettings();
  }
});

slurmTest("cleanup --job is refused to users and works for root", async () => {
  assertRefused(await socker(USER, ["cleanup", "--job", "1"]), /root and Slurm's Epilog only/);
  const result = await sh("/usr/local/libexec/socker/socker", ["cleanup", "--job", "999999"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /job 999999: containers: 0 removed/);
});

// ---- interactive allocations

slurmTest("salloc: a step started with srun places the container in the allocation's step", async () => {
  const result = await asAlice([
    "/usr/bin/salloc",
    "-n1",
    "/usr/bin/srun",
    "socker",
    "run",
    IMAGE,
    "sh",
    "-c",
    "grep :memory: /proc/self/cgroup",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const job = /Granted job allocation (\d+)/.exec(result.stderr)?.[1];
  assert.ok(job, result.stderr);
  assert.match(result.stdout, new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_0/${CONTAINER_FOLDER}\\n`));
});

slurmTest("srun --pty: the container gets a terminal, inside the step's cgroup, and its exit code", async () => {
  const line = `srun -n1 --pty socker run ${IMAGE} sh -c 'tty; grep :memory: /proc/self/cgroup; exit 4'`;
  const result = await asAlice(["/usr/bin/script", "-qec", line, "/dev/null"]);
  assert.equal(result.code, 4, result.stdout + result.stderr);
  assert.match(result.stdout, /\/dev\/pts\/\d+/);
  assert.match(result.stdout, new RegExp(`:memory:/slurm_n\\d/uid_2001/job_\\d+/step_0/${CONTAINER_FOLDER}`));
});

// ---- the job visible inside the container

slurmTest("srun -N2 -n2: each container knows its rank, the task count and the node list", async () => {
  const job = await sbatch(
    `export FOO=passed\nsrun -N2 -n2 socker run ${IMAGE} sh -c 'echo "$SLURM_PROCID $SLURM_NTASKS $SLURM_JOB_NODELIST $SLURMD_NODENAME foo=$FOO"'`,
    ["-N2", "-n2"],
  );
  await waitJobEnd(job);
  const lines = jobOutput(job).split("\n").filter((line) => /^\d /.test(line)).sort();
  // The batch script's own exports reach every task too (env_inherit = yes, the default).
  assert.deepEqual(lines, ["0 2 n[1-2] n1 foo=passed", "1 2 n[1-2] n2 foo=passed"], jobOutput(job));
});

slurmTest("env_deny wins over the job's own variables; a forged SLURM_JOB_ID reaches the container only", async () => {
  writeSettings("env_deny = SLURM_NTASKS\n");
  try {
    const job = await sbatch(
      `srun -n1 env SLURM_JOB_ID=424242 socker run ${IMAGE} sh -c 'echo "ntasks=$SLURM_NTASKS job=$SLURM_JOB_ID"; grep :memory: /proc/self/cgroup'`,
    );
    await waitJobEnd(job);
    const output = jobOutput(job);
    assert.match(output, /^ntasks= job=424242$/m, output);
    assert.match(output, new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_0/${CONTAINER_FOLDER}$`, "m"));
  } finally {
    restoreSettings();
  }
});
