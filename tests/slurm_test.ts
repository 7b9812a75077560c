// Integration tests of socker inside real Slurm jobs: a two-node cluster (n1, n2: two slurmd on this host,
// proctrack/cgroup, task/cgroup with ConstrainCores/RAMSpace/Devices, socker's Epilog), jobs submitted by
// alice with sbatch and srun, containers on the real Docker engine. `sudo tests/run.sh` sets it all up.
import assert from "node:assert/strict";
import {
  assertRefused,
  asUserArgv,
  DOCKER,
  IMAGE,
  sh,
  socker,
  sockerContainers,
  stagingLeft,
  userEnv,
  waitFor,
} from "./helpers.ts";

// tests/run.sh installs the test allowlist (helpers.ts TEST_ALLOWLIST) for the run and restores it after.

const USER = "alice";
const HOME = `/home/${USER}`;

/** Runs a Slurm client command as alice. */
function asAlice(cmd: string[], stdin?: string) {
  return sh("/usr/bin/setpriv", asUserArgv(USER, userEnv(USER), cmd), { stdin, cwd: HOME });
}

/** Submits a batch script as alice; returns the job id. */
async function sbatch(script: string, options: string[] = []): Promise<string> {
  const result = await asAlice([
    "/usr/bin/sbatch",
    "--parsable",
    `--output=${HOME}/slurm-%j.out`,
    ...options,
  ], `#!/bin/sh\n${script}\n`);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim().split(";")[0];
}

/** The job's state as scontrol reports it (PENDING, RUNNING, COMPLETED, CANCELLED, ...), or "GONE". */
async function jobState(jobId: string): Promise<string> {
  const result = await sh("/usr/bin/scontrol", ["show", "job", "-o", jobId]);
  return /JobState=(\S+)/.exec(result.stdout)?.[1] ?? "GONE";
}

/** Waits until the job has ended and its Epilog has run on every node. */
async function waitJobEnd(jobId: string, timeoutMs = 60_000): Promise<void> {
  const ended = await waitFor(
    async () => {
      const state = await jobState(jobId);
      // COMPLETING lasts until the Epilog has finished on every node of the job.
      return !["PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED"].includes(state);
    },
    timeoutMs,
    100,
  );
  assert.ok(ended >= 0, `job ${jobId} did not end: ${await jobState(jobId)}`);
}

function jobOutput(jobId: string): string {
  return Deno.readTextFileSync(`${HOME}/slurm-${jobId}.out`);
}

/** Every cgroup folder of the job left on this host, in any controller. */
async function jobCgroupFolders(jobId: string): Promise<string[]> {
  const result = await sh("/usr/bin/find", ["/sys/fs/cgroup", "-maxdepth", "5", "-type", "d", "-name", `job_${jobId}`]);
  return result.stdout.split("\n").filter((line) => line !== "");
}

async function jobContainers(jobId: string): Promise<string[]> {
  return await sockerContainers(`label=socker.job=${jobId}`);
}

/** The memory-controller cgroup lines of every process the container printed. */
function memoryLines(output: string): string[] {
  return output.split("\n").filter((line) => /:memory:/.test(line));
}

// ---- placement

Deno.test("srun step: every container process sits in the step's cgroup, forged SLURM_JOB_ID or not", async () => {
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
    assert.match(line, new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_[0-2]/[0-9a-f]{64}$`));
  }
  for (const step of ["0", "1", "2"]) assert.equal(lines.filter((l) => l.includes(`/step_${step}/`)).length, 3);
  await waitJobEnd(other);
});

Deno.test("batch step: the container sits in step_batch, also with SLURM_JOB_ID pointing at another job", async () => {
  const other = await sbatch("sleep 60", ["--job-name=other"]);
  const job = await sbatch(
    `export SLURM_JOB_ID=${other} SLURM_JOBID=${other}\nsocker run ${IMAGE} sh -c 'cat /proc/self/cgroup'`,
  );
  await waitJobEnd(job);
  await sh("/usr/bin/scancel", [other]);
  const lines = memoryLines(jobOutput(job));
  assert.equal(lines.length, 1, jobOutput(job));
  assert.match(lines[0], new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_batch/[0-9a-f]{64}$`));
  await waitJobEnd(other);
});

Deno.test("labels name the job, step, user and node; an administrator can filter on them", async () => {
  const job = await sbatch(`srun -n1 socker run ${IMAGE} sleep 30`);
  const seen = await waitFor(async () => (await jobContainers(job)).length === 1, 20_000);
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

Deno.test("the job's memory limit holds inside the container: 300 MB is killed (137), 50 MB is not", async () => {
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

Deno.test("the container's allowed CPUs are the step's", async () => {
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
  assert.ok(await waitFor(async () => (await jobContainers(job)).length > 0, 20_000) >= 0, "container started");
  await new Promise((resolve) => setTimeout(resolve, 300));
  const start = performance.now();
  await sh("/usr/bin/scancel", [job]);
  const gone = await waitFor(async () => (await jobContainers(job)).length === 0, 15_000, 20);
  const goneMs = gone >= 0 ? performance.now() - start : -1;
  console.log(`scancel to container gone: ${goneMs.toFixed(0)} ms`);
  await waitJobEnd(job);
  assert.deepEqual(await jobContainers(job), []);
  assert.deepEqual(await jobCgroupFolders(job), [], "every cgroup folder of the job is removed");
  return { goneMs, job };
}

Deno.test("scancel with srun socker: the container is gone within 1 second", async () => {
  const { goneMs } = await cancelAndMeasure(`srun -n1 socker run ${IMAGE} sleep 1000`);
  assert.ok(goneMs >= 0 && goneMs < 1000, `gone after ${goneMs} ms`);
});

Deno.test("scancel with exec socker: the container is gone within 1 second", async () => {
  const { goneMs } = await cancelAndMeasure(`exec socker run ${IMAGE} sleep 1000`);
  assert.ok(goneMs >= 0 && goneMs < 1000, `gone after ${goneMs} ms`);
});

Deno.test("scancel with a plain socker line: the Epilog removes the container within 3 seconds", async () => {
  const { goneMs } = await cancelAndMeasure(`socker run ${IMAGE} sleep 1000\necho never`);
  assert.ok(goneMs >= 0 && goneMs < 3000, `gone after ${goneMs} ms`);
});

Deno.test("kill -9 of socker inside a job: container and staging mount are gone once the job ends", async () => {
  // A folder of alice's own is staged (she could rename it): the Epilog must undo that too.
  Deno.mkdirSync(`${HOME}/k9`, { recursive: true });
  Deno.chownSync(`${HOME}/k9`, 2001, 2001);
  const job = await sbatch(`socker run -v ${HOME}/k9:/d ${IMAGE} sleep 1000 &\nsleep 6\necho done`);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length === 1, 20_000) >= 0, "container started");
  const pids = await sh("/usr/bin/pgrep", ["-f", "-u", "root", "socker.ts run|libexec/socker/socker run"]);
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

Deno.test("sbatch --signal=USR1 reaches the process inside the container", async () => {
  const script =
    `srun -n1 socker run ${IMAGE} sh -c "trap 'echo got-usr1; exit 9' USR1; while true; do sleep 0.2; done"; echo "rc=$?"`;
  const job = await sbatch(script, ["--time=2", "--signal=USR1@110"]);
  await waitJobEnd(job, 150_000);
  const output = jobOutput(job);
  assert.match(output, /got-usr1/, output);
  assert.match(output, /rc=9/, output);
});

// ---- multi-node

Deno.test("srun -N2: each task's container is in its own node's job cgroup; output and exit codes come back", async () => {
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
  for (const line of lines) assert.match(line, new RegExp(`/uid_2001/job_${job}/step_0/[0-9a-f]{64}$`));
  assert.match(output, /^rc=3$/m);
});

Deno.test("a cancel of a two-node job cleans both nodes", async () => {
  const job = await sbatch(`srun -N2 -n2 socker run ${IMAGE} sleep 1000`, ["-N2", "-n2"]);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length === 2, 20_000) >= 0, "two containers");
  await sh("/usr/bin/scancel", [job]);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length === 0, 3000) >= 0, "containers gone");
  await waitJobEnd(job);
  assert.deepEqual(await jobCgroupFolders(job), []);
});

// ---- outside a job

Deno.test("outside a job: no cgroup parent; refused when the administrator requires a job", async () => {
  const free = await socker(USER, ["-v", "run", IMAGE, "true"]);
  assert.equal(free.code, 0, free.stderr);
  assert.ok(!free.stderr.includes("--cgroup-parent"));
  const settings = "/etc/socker/socker.conf";
  Deno.writeTextFileSync(settings, "require_job = yes\n", { mode: 0o644 });
  try {
    assertRefused(await socker(USER, ["run", IMAGE, "true"]), /only inside Slurm jobs/);
    const job = await sbatch(`srun -n1 socker run ${IMAGE} echo inside-ok`);
    await waitJobEnd(job);
    assert.match(jobOutput(job), /inside-ok/);
  } finally {
    Deno.removeSync(settings);
  }
});

Deno.test("cleanup --job is refused to users and works for root", async () => {
  assertRefused(await socker(USER, ["cleanup", "--job", "1"]), /root and Slurm's Epilog only/);
  const result = await sh("/usr/local/libexec/socker/socker", ["cleanup", "--job", "999999"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /job 999999: containers: 0 removed/);
});

// ---- interactive allocations

Deno.test("salloc: a step started with srun places the container in the allocation's step", async () => {
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
  assert.match(result.stdout, new RegExp(`:memory:/slurm_n\\d/uid_2001/job_${job}/step_0/[0-9a-f]{64}\\n`));
});

Deno.test("srun --pty: the container gets a terminal, inside the step's cgroup, and its exit code", async () => {
  const line = `srun -n1 --pty socker run ${IMAGE} sh -c 'tty; grep :memory: /proc/self/cgroup; exit 4'`;
  const result = await asAlice(["/usr/bin/script", "-qec", line, "/dev/null"]);
  assert.equal(result.code, 4, result.stdout + result.stderr);
  assert.match(result.stdout, /\/dev\/pts\/\d+/);
  assert.match(result.stdout, /:memory:\/slurm_n\d\/uid_2001\/job_\d+\/step_0\/[0-9a-f]{64}/);
});

Deno.test("--gpus inside a job with no GPU allocated is refused, whatever the environment says", async () => {
  const job = await sbatch(
    `CUDA_VISIBLE_DEVICES=0 SLURM_JOB_GPUS=0 srun -n1 socker run --gpus ${IMAGE} true; echo "rc=$?"`,
  );
  await waitJobEnd(job);
  const output = jobOutput(job);
  assert.match(output, new RegExp(`--gpus: no GPU is allocated to job ${job}`), output);
  assert.match(output, /rc=125/);
});
