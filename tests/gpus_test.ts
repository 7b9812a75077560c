// GPUs: --gpus gives the container exactly the GPUs Slurm allocated to the job on this node, read from
// Slurm's structured record, never from the environment or from text the user sets (job name, comment,
// working folder). The test cluster has two fake GPUs per node (tests/setup.sh: /dev/nvidia0-1 exist as
// character devices, gres.conf names files Slurm can count but not constrain).
import assert from "node:assert/strict";
import { assertRefused, IMAGE, socker } from "./helpers.ts";
import { HOME, jobOutput, jobTest, sbatch, waitJobEnd } from "./slurm.ts";

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
  // slurmstepd complains on stderr that the fake GPUs have no device files: it says nothing of socker.
  const lines = (job: string) => jobOutput(job).split("\n").filter((line) => !line.startsWith("slurmstepd"));
  assert.deepEqual(lines(one), ["nvidia0 ", "rc=0", "0", ""], jobOutput(one));
  assert.deepEqual(lines(two), ["nvidia0 nvidia1 ", "rc=0", ""], jobOutput(two));
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
    assert.match(jobOutput(withOne), /^nvidia0 \nrc=0$/m, "the allocated GPU only, not the name's");
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
