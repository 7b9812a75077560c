// GPUs: --gpus gives the container exactly the GPUs Slurm allocated to the job on this node, read from
// Slurm's structured record, never from the environment or from text the user sets (job name, comment,
// working folder). The test cluster has two fake GPUs per node (tests/setup.sh: /dev/nvidia0-1, character
// devices 195:0-1 without a driver, and /dev/nvidiactl 195:255), named in gres.conf, with
// ConstrainDevices=yes: Slurm denies each step the GPUs it did not get, on cgroup v1 in the step's devices
// cgroup, where socker's containers run under the runtime socker-runc (install.sh).
import assert from "node:assert/strict";
import { assertRefused, IMAGE, sh, socker } from "./helpers.ts";
import { HOME, jobOutput, jobTest, sbatch, waitJobEnd, waitJobRuns } from "./slurm.ts";

const gpuTest = (name: string, body: () => Promise<void>) => jobTest("gpus", name, body);

const listDevices = `socker run --gpus ${IMAGE} sh -c 'ls /dev | grep nvidia | tr "\\n" " "; echo'; echo "rc=$?"`;

gpuTest("outside a job --gpus is refused, whatever the environment says", async () => {
  assertRefused(await socker("alice", ["run", "--gpus", IMAGE, "true"]), /only inside a Slurm job/);
  const forged = await socker("alice", ["run", "--gpus", IMAGE, "true"], {
    env: { CUDA_VISIBLE_DEVICES: "0,1", SLURM_JOB_GPUS: "0,1", SLURM_JOB_ID: "1", SLURM_STEP_GPUS: "0" },
  });
  assertRefused(forged, /only inside a Slurm job/);
});

gpuTest("a job with one GPU gets exactly that one; with two, both; without --gpus, none", async () => {
  const one = await sbatch(
    `srun -n1 ${listDevices}\nsrun -n1 socker run ${IMAGE} sh -c 'ls /dev | grep -c nvidia; true'`,
    [
      "--gres=gpu:1",
      "-w",
      "n1",
    ],
  );
  const two = await sbatch(`srun -n1 ${listDevices}`, ["--gres=gpu:2", "-w", "n2"]);
  await waitJobEnd(one);
  await waitJobEnd(two);
  // Without slurmstepd's own lines on stderr.
  const lines = (job: string) => jobOutput(job).split("\n").filter((line) => !line.startsWith("slurmstepd"));
  assert.deepEqual(lines(one), ["nvidia0 nvidiactl ", "rc=0", "0", ""], jobOutput(one));
  assert.deepEqual(lines(two), ["nvidia0 nvidia1 nvidiactl ", "rc=0", ""], jobOutput(two));
});

gpuTest("a job without GPUs is refused, even with CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS forged", async () => {
  const job = await sbatch(`CUDA_VISIBLE_DEVICES=0,1 SLURM_JOB_GPUS=0,1 srun -n1 ${listDevices}`);
  await waitJobEnd(job);
  assert.match(jobOutput(job), new RegExp(`--gpus: no GPU is allocated to job ${job} on node n\\d`), jobOutput(job));
  assert.match(jobOutput(job), /rc=125/);
});

gpuTest("a job name, comment or working folder saying GRES=gpu(IDX:0-3) gives no GPU", async () => {
  const folder = `${HOME}/GRES=gpu(IDX:0-3)`;
  Deno.mkdirSync(folder, { recursive: true });
  Deno.chownSync(folder, 2001, 2001);
  try {
    const forgeries = [
      ["-J", "GRES=gpu(IDX:0-3)"],
      ["--comment", "GRES=gpu:4(IDX:0-3)"],
      ["--comment", "x\n     Nodes=n1 CPU_IDs=0 Mem=4000 GRES=gpu:4(IDX:0-3)"],
      ["--chdir", folder],
    ];
    const jobs = [];
    for (const forged of forgeries) jobs.push(await sbatch(`srun -n1 ${listDevices}`, [...forged, "-w", "n1"]));
    const withOne = await sbatch(`srun -n1 ${listDevices}`, ["-J", "GRES=gpu:2(IDX:0-1)", "--gres=gpu:1", "-w", "n1"]);
    for (const job of jobs) {
      await waitJobEnd(job);
      assert.match(jobOutput(job), /no GPU is allocated/, jobOutput(job));
      assert.match(jobOutput(job), /rc=125/);
    }
    await waitJobEnd(withOne);
    assert.match(jobOutput(withOne), /^nvidia0 nvidiactl \nrc=0$/m, "the allocated GPU only, not the name's");
  } finally {
    Deno.removeSync(folder);
  }
});

gpuTest("a huge GPU index in user text cannot make socker loop", async () => {
  const job = await sbatch(
    `s=$(date +%s%N); srun -n1 ${listDevices} 2>&1; echo "ms=$((($(date +%s%N) - s) / 1000000))"`,
    ["-J", "GRES=gpu(IDX:0-99999999999)", "-w", "n2"],
  );
  await waitJobEnd(job, 60_000);
  const output = jobOutput(job);
  assert.match(output, /no GPU is allocated/, output);
  const ms = Number(/^ms=(\d+)$/m.exec(output)?.[1] ?? "999999");
  assert.ok(ms < 10_000, `took ${ms} ms`);
});

// Device nodes of both GPUs in alice's home (mounted in her containers), made by root: opening one there
// reaches the kernel's devices cgroup of the container. A GPU the container may use answers ENXIO (no
// driver behind the fake device); one it may not, EPERM.
const NODES = `${HOME}/gpu-nodes`;
const openBoth = `for i in 0 1; do cat ${NODES}/nvidia$i 2>&1 | sed "s|.*: ||; s|^|gpu$i: |"; done`;
const seeAndOpen = (flags: string) =>
  `socker run ${flags} ${IMAGE} sh -c 'echo "sees: $(ls /dev | grep nvidia | tr "\\n" " ")"; ${openBoth}'; echo "rc=$?"`;

function makeNodes() {
  Deno.mkdirSync(NODES, { recursive: true });
  for (const i of [0, 1]) {
    try {
      Deno.removeSync(`${NODES}/nvidia${i}`);
    } catch { /* absent */ }
  }
}

async function withNodes(body: () => Promise<void>) {
  makeNodes();
  for (const i of [0, 1]) {
    const made = await sh("/usr/bin/mknod", ["-m", "0666", `${NODES}/nvidia${i}`, "c", "195", String(i)]);
    assert.equal(made.code, 0, made.stderr);
  }
  try {
    await body();
  } finally {
    Deno.removeSync(NODES, { recursive: true });
  }
}

/** The job's output without slurmstepd's and srun's own lines. */
const own = (job: string) =>
  jobOutput(job).split("\n").filter((line) => line !== "" && !/^(slurmstepd|srun)/.test(line)).join("\n");

gpuTest(
  "a job with one GPU of two runs; with --gpus it sees that one only, and the kernel refuses the other",
  async () => {
    await withNodes(async () => {
      const job = await sbatch(`srun -n1 ${seeAndOpen("--gpus")}\nsrun -n1 ${seeAndOpen("")}`, [
        "--gres=gpu:1",
        "-w",
        "n1",
      ]);
      await waitJobEnd(job);
      assert.equal(
        own(job),
        [
          "sees: nvidia0 nvidiactl ",
          "gpu0: No such device or address",
          "gpu1: Operation not permitted",
          "rc=0",
          "sees: ",
          "gpu0: Operation not permitted",
          "gpu1: Operation not permitted",
          "rc=0",
        ].join("\n"),
        jobOutput(job),
      );
    });
  },
);

gpuTest("a job with no GPU runs, sees none, and the kernel refuses both", async () => {
  await withNodes(async () => {
    const job = await sbatch(`srun -n1 ${seeAndOpen("")}`, ["-w", "n2"]);
    await waitJobEnd(job);
    assert.equal(
      own(job),
      ["sees: ", "gpu0: Operation not permitted", "gpu1: Operation not permitted", "rc=0"].join("\n"),
      jobOutput(job),
    );
  });
});

gpuTest("a job with both GPUs sees both; a step given one of them gets only that one", async () => {
  await withNodes(async () => {
    const job = await sbatch(`srun -n1 ${seeAndOpen("--gpus")}\nsrun -n1 --gres=gpu:1 ${seeAndOpen("--gpus")}`, [
      "--gres=gpu:2",
      "-w",
      "n2",
    ]);
    await waitJobEnd(job);
    const lines = own(job).split("\n");
    assert.deepEqual(lines.slice(0, 4), [
      "sees: nvidia0 nvidia1 nvidiactl ",
      "gpu0: No such device or address",
      "gpu1: No such device or address",
      "rc=0",
    ], jobOutput(job));
    // The step's GPU is one of the two (Slurm picks it); the other is refused.
    const step = lines.slice(4).join("\n");
    assert.match(
      step,
      /^sees: nvidia0 nvidiactl \ngpu0: No such device or address\ngpu1: Operation not permitted\nrc=0$|^sees: nvidia1 nvidiactl \ngpu0: Operation not permitted\ngpu1: No such device or address\nrc=0$/,
      jobOutput(job),
    );
  });
});

/** A job that holds one GPU of a node until the file `go` exists (at most 60 s). */
const holdUntil = (go: string, then: string) =>
  `for i in $(seq 600); do [ -e ${go} ] && break; sleep 0.1; done\n${then}`;
const sharing = ["--oversubscribe", "--mem=200", "--gres=gpu:1"];

gpuTest("two jobs on one node, one GPU each, each sees only its own", async () => {
  await withNodes(async () => {
    const go = `${HOME}/gpus-go-${Date.now()}`;
    try {
      const first = await sbatch(holdUntil(go, `srun -n1 ${seeAndOpen("--gpus")}`), [...sharing, "-w", "n1"]);
      const second = await sbatch(holdUntil(go, `srun -n1 ${seeAndOpen("--gpus")}`), [...sharing, "-w", "n1"]);
      await waitJobRuns(first);
      await waitJobRuns(second); // both at once: each holds one of n1's two GPUs
      Deno.writeTextFileSync(go, "");
      await waitJobEnd(first);
      await waitJobEnd(second);
      const outputs = [own(first), own(second)].sort();
      assert.deepEqual(outputs, [
        ["sees: nvidia0 nvidiactl ", "gpu0: No such device or address", "gpu1: Operation not permitted", "rc=0"]
          .join("\n"),
        ["sees: nvidia1 nvidiactl ", "gpu0: Operation not permitted", "gpu1: No such device or address", "rc=0"]
          .join("\n"),
      ], `${jobOutput(first)}\n---\n${jobOutput(second)}`);
    } finally {
      try {
        Deno.removeSync(go);
      } catch { /* not made */ }
    }
  });
});

gpuTest("--gpus on two nodes gives each node's own index", async () => {
  const go = `${HOME}/gpus-go-${Date.now()}`;
  try {
    // n2's GPU 0 is held by another job: this job gets GPU 0 on n1 and GPU 1 on n2.
    const holder = await sbatch(holdUntil(go, "true"), [...sharing, "-w", "n2"]);
    await waitJobRuns(holder);
    const job = await sbatch(
      `srun -l -N2 -n2 socker run --gpus ${IMAGE} sh -c 'ls /dev | grep nvidia | tr "\\n" " "; echo'`,
      [...sharing, "-N2", "-w", "n1,n2"],
    );
    await waitJobEnd(job);
    Deno.writeTextFileSync(go, "");
    await waitJobEnd(holder);
    assert.deepEqual(own(job).split("\n").sort(), ["0: nvidia0 nvidiactl ", "1: nvidia1 nvidiactl "], jobOutput(job));
  } finally {
    try {
      Deno.removeSync(go);
    } catch { /* not made */ }
  }
});

gpuTest("the engine cannot change a socker container's device rules afterwards (update is refused)", async () => {
  const job = await sbatch(`srun -n1 socker run ${IMAGE} sleep 30`, ["--gres=gpu:1", "-w", "n1"]);
  await waitJobRuns(job);
  let id = "";
  for (let i = 0; i < 100 && id === ""; i++) {
    id = (await sh("/usr/bin/docker", ["ps", "-q", "--filter", `label=socker.job=${job}`])).stdout.trim();
    if (id === "") await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.notEqual(id, "", "no container");
  const updated = await sh("/usr/bin/docker", ["update", "--cpu-shares", "512", id]);
  assert.notEqual(updated.code, 0, updated.stdout);
  assert.match(updated.stderr, /socker-runc: update is refused/);
});
