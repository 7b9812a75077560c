// Unit tests of GPUs: the job's GPUs from Slurm's record of the job on this node (never from text the user
// sets), their device nodes, and the device rules on cgroup v1 under ConstrainDevices=yes: which runtime a
// container gets, what a step's devices.list allows, which of the job's GPUs a step may not use.
import assert from "node:assert/strict";
import {
  constrainsDevices,
  containerRuntime,
  containerSpec,
  DEVICE_RUNTIME,
  DEVICE_RUNTIME_PATH,
  devicesCgroupAllows,
  gpuDeviceNodes,
  gpusFromJobRecord,
  type JobStep,
  stepDeniedGpus,
} from "../../socker.ts";
import { fixture, IMAGE, inJob, jobRecord, planTests, refusal, rootFile, run, runFacts, V1_ENGINE } from "./facts.ts";

const V1: JobStep = { version: 1, jobId: "7", stepId: "0", parent: "/slurm_n1/uid_2001/job_7/step_0" };
const V2: JobStep = { version: 2, jobId: "7", stepId: "0", parent: "/system.slice/slurmstepd.scope/job_7/step_0/user" };
const REGISTERED = { runc: { path: "runc" }, [DEVICE_RUNTIME]: { path: DEVICE_RUNTIME_PATH } };

Deno.test("ConstrainDevices=yes is read from cgroup.conf, case and spaces as Slurm takes them; default no", () => {
  assert.equal(constrainsDevices("CgroupPlugin=autodetect\nConstrainDevices=yes\n"), true);
  assert.equal(constrainsDevices("constraindevices = YES # GPUs\n"), true);
  assert.equal(constrainsDevices("#ConstrainDevices=yes\nConstrainCores=yes\n"), false);
  assert.equal(constrainsDevices("ConstrainDevices=no\n"), false);
  assert.equal(constrainsDevices(undefined), false);
});

Deno.test("socker-runc only in a v1 job with constrained devices; every other container keeps the default", () => {
  assert.equal(containerRuntime(V1, true, REGISTERED, true), DEVICE_RUNTIME);
  assert.equal(containerRuntime(V1, false, REGISTERED, true), undefined);
  assert.equal(containerRuntime(V2, true, REGISTERED, true), undefined);
  assert.equal(containerRuntime(undefined, true, REGISTERED, true), undefined);
  // Not needed: nothing is checked.
  assert.equal(containerRuntime(V1, false, undefined, false), undefined);
});

Deno.test("socker-runc missing, elsewhere or not installed where it is needed: one clear refusal", () => {
  const needed = /ConstrainDevices=yes\) and .*: ask your administrator to run socker's install\.sh on this node/;
  refusal(() => containerRuntime(V1, true, { runc: { path: "runc" } }, true), needed);
  refusal(() => containerRuntime(V1, true, undefined, true), needed);
  refusal(() => containerRuntime(V1, true, { [DEVICE_RUNTIME]: { path: "/tmp/socker-runc" } }, true), needed);
  refusal(() => containerRuntime(V1, true, REGISTERED, false), /socker-runc is missing/);
});

Deno.test("a deny-by-default devices.list allows exactly its rules; allow-by-default says a *:* rwm", () => {
  const list = "c 1:3 rwm\nc 195:0 rwm\nc 195:255 rw\nc 136:* rwm\nb 195:1 rwm\nc 195:2 r\n";
  assert.equal(devicesCgroupAllows(list, 195, 0), true);
  assert.equal(devicesCgroupAllows(list, 195, 255), true);
  assert.equal(devicesCgroupAllows(list, 195, 1), false, "a block rule does not allow a character device");
  assert.equal(devicesCgroupAllows(list, 195, 2), false, "read only is not enough");
  assert.equal(devicesCgroupAllows(list, 195, 3), false);
  assert.equal(devicesCgroupAllows("a *:* rwm\n", 195, 1), true);
  assert.equal(devicesCgroupAllows("c 195:* rwm\n", 195, 7), true);
  assert.equal(devicesCgroupAllows("", 195, 0), false);
  assert.equal(devicesCgroupAllows("c 195:0 rwm junk\nc x:0 rwm\n", 195, 0), false);
});

Deno.test("the GPUs a step may not use: those its list denies and those the kernel refused socker", () => {
  assert.deepEqual(stepDeniedGpus([0, 1], undefined, []), []);
  assert.deepEqual(stepDeniedGpus([0, 1], undefined, [1]), [1]);
  assert.deepEqual(stepDeniedGpus([0, 1], "c 195:1 rwm\n", []), [0]);
  assert.deepEqual(stepDeniedGpus([0, 1], "a *:* rwm\n", [0]), [0]);
  assert.deepEqual(stepDeniedGpus([0, 1, 2], "c 195:0 rwm\n", [2]), [1, 2]);
});

/** Slurm's structured records (`squeue --json`): a finished job 6, then job 7 with the fields socker reads. */
const record = (fields: Record<string, unknown>) => ({
  jobs: [{ job_id: 6, user_id: 2001, nodes: "n[1-2]", gres_detail: [] }, {
    job_id: 7,
    user_id: 2001,
    nodes: "n[1-2]",
    ...fields,
  }],
});
const squeue = (name: string) => JSON.parse(fixture(`slurm/squeue-json-${name}.json`));

Deno.test("GPUs from squeue --json as Slurm 22.05 wrote it on the test cluster", () => {
  assert.deepEqual(gpusFromJobRecord(squeue("gpu1-two-nodes"), "166", 2001, "n2"), [0]);
  assert.deepEqual(gpusFromJobRecord(squeue("gpu1-two-nodes"), "166", 2001, "n1"), [0]);
  assert.match(gpusFromJobRecord(squeue("gpu1-two-nodes"), "166", 2002, "n1") as string, /not yours/);
  const two = squeue("gpu2-two-nodes");
  const twoJob = two.jobs.find((j: { gres_detail: string[] }) => j.gres_detail.length === 2);
  assert.deepEqual(gpusFromJobRecord(two, String(twoJob.job_id), 2001, "n1"), [0, 1]);
  const forged = squeue("forged-text");
  const forgedJob = forged.jobs.find((j: { name: string }) => j.name.includes("GRES"));
  assert.deepEqual(gpusFromJobRecord(forged, String(forgedJob.job_id), 2001, "n1"), []);
});

Deno.test("GPUs come only from Slurm's record of the job on this node", () => {
  assert.deepEqual(
    gpusFromJobRecord(record({ gres_detail: ["gpu:a100:2(IDX:0-1)", "gpu:a100:1(IDX:3)"] }), "7", 2001, "n2"),
    [3],
  );
  assert.deepEqual(gpusFromJobRecord(record({ gres_detail: ["gpu:2(IDX:0,2)", ""] }), "7", 2001, "n1"), [0, 2]);
  assert.deepEqual(gpusFromJobRecord(record({ gres_detail: ["", ""] }), "7", 2001, "n1"), []);
  assert.deepEqual(gpusFromJobRecord(record({ gres_detail: [] }), "7", 2001, "n1"), []);
  assert.deepEqual(gpusFromJobRecord(record({ gres_detail: ["gpu:1(IDX:N/A)", ""] }), "7", 2001, "n1"), []);
  assert.deepEqual(gpusFromJobRecord(record({ gres_detail: ["mps:100(0),gpu:1(IDX:1)", ""] }), "7", 2001, "n1"), [1]);
});

Deno.test("text the user sets in the job (name, comment, folder) never counts", () => {
  const forged = record({
    name: "GRES=gpu(IDX:0-3)",
    comment: "gres_detail GRES=gpu:4(IDX:0-3)",
    current_working_directory: "/home/alice/GRES=gpu(IDX:0-3)",
    gres_detail: ["", ""],
  });
  assert.deepEqual(gpusFromJobRecord(forged, "7", 2001, "n1"), []);
});

Deno.test("a record that is not this caller's job on this node, or unreadable, gives no GPU", () => {
  assert.match(
    gpusFromJobRecord(record({ gres_detail: ["gpu:1(IDX:0)", ""] }), "8", 2001, "n1") as string,
    /no single record of job 8/,
  );
  assert.match(
    gpusFromJobRecord(record({ user_id: 2002, gres_detail: ["gpu:1(IDX:0)", ""] }), "7", 2001, "n1") as string,
    /not yours/,
  );
  assert.match(
    gpusFromJobRecord(record({ gres_detail: ["gpu:1(IDX:0)", ""] }), "7", 2001, "n9") as string,
    /no allocation on node n9/,
  );
  assert.match(
    gpusFromJobRecord(record({ gres_detail: ["gpu:1(IDX:0)"] }), "7", 2001, "n1") as string,
    /does not match the job's nodes/,
  );
  assert.match(
    gpusFromJobRecord(record({ gres_detail: ["gpu:1(IDX:0-99999)", ""] }), "7", 2001, "n1") as string,
    /unreadable GPU index/,
  );
  assert.match(
    gpusFromJobRecord(record({ gres_detail: ["gpu:1(IDX:5-2)", ""] }), "7", 2001, "n1") as string,
    /unreadable GPU index/,
  );
  assert.match(gpusFromJobRecord({ jobs: [] }, "7", 2001, "n1") as string, /no single record of job 7/);
  assert.match(gpusFromJobRecord("garbage", "7", 2001, "n1") as string, /no job records/);
  const allocated = record({ job_resources: { allocated_nodes: [{ nodename: "n2" }] }, gres_detail: ["gpu:1(IDX:1)"] });
  assert.deepEqual(
    gpusFromJobRecord(allocated, "7", 2001, "n2"),
    [1],
    "allocated_nodes names the nodes of gres_detail",
  );
  assert.match(gpusFromJobRecord(record({ nodes: "n[1-" }), "7", 2001, "n1") as string, /no node list/);
});

Deno.test("the GPUs' device nodes, with the shared control devices this node has", () => {
  assert.deepEqual(gpuDeviceNodes([0, 3], (p) => p === "/dev/nvidiactl"), [
    "/dev/nvidia0",
    "/dev/nvidia3",
    "/dev/nvidiactl",
  ]);
});

// planRun's rules on devices and GPUs: one table row each, a refusal (a pattern of its one-line reason) or a check
// of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  ["--gpus outside a job is refused", run("--gpus", IMAGE, "id"), runFacts(), /only inside a Slurm job/],
  [
    "--gpus gives exactly the GPUs Slurm allocated on this node",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:a100:2(IDX:1,3)"]), gpuControlDevices: ["/dev/nvidiactl"] }),
    (plan) => {
      assert.deepEqual(plan.devices, ["/dev/nvidia1", "/dev/nvidia3", "/dev/nvidiactl"]);
    },
  ],
  [
    "--gpus gives only the GPUs the step may use (the kernel refused socker the others)",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:2(IDX:0-1)"]), gpusRefused: [0], gpuControlDevices: ["/dev/nvidiactl"] }),
    (plan) => {
      assert.deepEqual(plan.devices, ["/dev/nvidia1", "/dev/nvidiactl"]);
    },
  ],
  [
    "--gpus in a step that may use none of the job's GPUs is refused",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:2(IDX:0-1)"]), stepDevicesList: "c 1:3 rwm\nc 195:255 rwm\n" }),
    /may use none of the job's GPUs on node n1 \(0,1\)/,
  ],
  [
    "in a v1 job with ConstrainDevices=yes the container gets the runtime socker-runc",
    run(IMAGE, "id"),
    inJob({
      cgroupConf: rootFile("/etc/slurm/cgroup.conf", "ConstrainDevices=yes\n"),
      deviceRuntimeInstalled: true,
      engineInfo: { ...V1_ENGINE, Runtimes: { runc: { path: "runc" }, "socker-runc": { path: DEVICE_RUNTIME_PATH } } },
    }),
    (plan) => {
      assert.equal(plan.runtime, "socker-runc");
      assert.equal((containerSpec(plan, []).HostConfig as Record<string, unknown>).Runtime, "socker-runc");
    },
  ],
  [
    "in a v1 job without ConstrainDevices the engine's default runtime is kept",
    run(IMAGE, "id"),
    inJob({ cgroupConf: rootFile("/etc/slurm/cgroup.conf", "ConstrainCores=yes\n"), deviceRuntimeInstalled: true }),
    (plan) => {
      assert.equal(plan.runtime, undefined);
      assert.ok(!("Runtime" in (containerSpec(plan, []).HostConfig as object)));
    },
  ],
  [
    "in a v1 job with ConstrainDevices=yes and no socker-runc in the engine, the run is refused",
    run(IMAGE, "id"),
    inJob({ cgroupConf: rootFile("/etc/slurm/cgroup.conf", "ConstrainDevices=yes\n"), deviceRuntimeInstalled: true }),
    /ConstrainDevices=yes\) and the Docker engine has no runtime socker-runc .*run socker's install\.sh/,
  ],
  [
    "--gpus in a job without GPUs is refused",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord([""]) }),
    /no GPU is allocated to job 1 on node n1/,
  ],
  [
    "--gpus never reads another user's job record",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:1(IDX:0)"], "n1", 2002) }),
    /the job is not yours/,
  ],
  [
    "--gpus with an index out of range is refused, not looped over",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:1(IDX:0-99999999999)"]) }),
    /unreadable GPU index/,
  ],
  [
    "--gpus takes this node's entry of a two-node job",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:1(IDX:0)", "gpu:1(IDX:1)"], "n[0-1]") }),
    (plan) => {
      assert.deepEqual(plan.devices, ["/dev/nvidia1"]);
    },
  ],
]);
