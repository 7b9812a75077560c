// Unit tests of Slurm: the job step from copies of /proc/self/cgroup seen in real jobs (and hostile ones),
// the cgroup hierarchies, what a finished job leaves, slurm.conf and host lists.
import assert from "node:assert/strict";
import {
  cgroupMounts,
  engineCgroupProblem,
  expandHostList,
  jobLeftovers,
  jobStepFromCgroup,
  LABEL,
  memoryCgroupV1,
  parseSlurmConf,
  Refusal,
  slurmConfProblems,
} from "../../socker.ts";
import { env, fixture, IMAGE, inJob, planTests, run, runFacts, settingsFile, SLURM_CONF } from "./facts.ts";

const cgroup = (name: string) => fixture(`proc/${name}`);

Deno.test("cgroup v1: srun and batch steps resolve to the step's folder, whatever the root is called", () => {
  assert.deepEqual(jobStepFromCgroup(cgroup("v1-srun-step.cgroup"), 2001), {
    version: 1,
    jobId: "1",
    stepId: "0",
    node: "vm",
    parent: "/slurm_vm/uid_2001/job_1/step_0",
  });
  assert.equal(jobStepFromCgroup(cgroup("v1-batch-step.cgroup"), 2001)?.parent, "/slurm_vm/uid_2001/job_1/step_batch");
  assert.deepEqual(jobStepFromCgroup(cgroup("v1-plain-root-systemd.cgroup"), 2001), {
    version: 1,
    jobId: "77",
    stepId: "extern",
    node: undefined,
    parent: "/slurm/uid_2001/job_77/step_extern",
  });
});

Deno.test("cgroup v2: the step's user folder, also with several slurmd per host", () => {
  assert.deepEqual(jobStepFromCgroup(cgroup("v2-batch.cgroup"), 2001), {
    version: 2,
    jobId: "2",
    stepId: "batch",
    node: undefined,
    parent: "/system.slice/slurmstepd.scope/job_2/step_batch/user",
  });
  const multi = jobStepFromCgroup(cgroup("v2-multi-slurmd.cgroup"), 2001);
  assert.deepEqual([multi?.parent, multi?.node], ["/system.slice/n2_slurmstepd.scope/job_9/step_3/user", "n2"]);
});

Deno.test("outside a job there is no cgroup parent", () => {
  assert.equal(jobStepFromCgroup(cgroup("v1-outside-job.cgroup"), 2001), undefined);
  assert.equal(jobStepFromCgroup(cgroup("v2-outside-job.cgroup"), 2001), undefined);
});

Deno.test("hostile cgroup paths fail closed, naming why", () => {
  const cases: [string, RegExp][] = [
    [cgroup("hostile-dotdot.cgroup"), /not normalised/],
    [cgroup("hostile-other-user.cgroup"), /belongs to uid 2002, not to you \(2001\)/],
    [cgroup("hostile-disagree.cgroup"), /controllers disagree/],
    [cgroup("hostile-job-without-step.cgroup"), /is not a Slurm step cgroup/],
    [cgroup("hostile-v2-dotdot.cgroup"), /not normalised/],
    [cgroup("hostile-v2-stepd.cgroup"), /is not a Slurm task cgroup/],
    [cgroup("hostile-garbage.cgroup"), /cannot read the line/],
    ["4:memory:/slurm_n1/uid_2001/job_99999999999/step_0/task_0\n", /job id .* out of range/],
    ["4:memory:/slurm_n1/uid_2001/job_1/step_99999999/task_0\n", /step id .* out of range/],
    ["99999:memory:/slurm_n1/uid_2001/job_1/step_0\n", /cannot read the line/],
    [
      Array.from({ length: 65 }, (_, i) => `${i}:x:/`).join("\n") + "\n4:memory:/slurm/uid_2001/job_1/step_0",
      /more lines/,
    ],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => jobStepFromCgroup(text, 2001), (error: unknown) => {
      assert.ok(error instanceof Refusal);
      assert.match(error.reason, pattern);
      assert.match(error.reason, /refusing to run$/);
      return true;
    });
  }
});

Deno.test("the engine must use the cgroupfs driver and the job's cgroup version", () => {
  const job = jobStepFromCgroup(cgroup("v1-srun-step.cgroup"), 2001)!;
  assert.equal(engineCgroupProblem({ CgroupDriver: "cgroupfs", CgroupVersion: "1" }, job), undefined);
  assert.match(
    engineCgroupProblem({ CgroupDriver: "systemd", CgroupVersion: "1" }, job)!,
    /native\.cgroupdriver=cgroupfs/,
  );
  assert.match(engineCgroupProblem({ CgroupDriver: "cgroupfs", CgroupVersion: "2" }, job)!, /cgroup v2 but this job/);
});

Deno.test("cgroup hierarchies and their controllers come from mountinfo", () => {
  assert.deepEqual(cgroupMounts(cgroup("v1-mountinfo")), [
    { path: "/sys/fs/cgroup/cpu", version: 1, controllers: ["cpu"] },
    { path: "/sys/fs/cgroup/cpuacct", version: 1, controllers: ["cpuacct"] },
    { path: "/sys/fs/cgroup/memory", version: 1, controllers: ["memory"] },
    { path: "/sys/fs/cgroup/systemd", version: 1, controllers: ["name=systemd"] },
    { path: "/sys/fs/cgroup/unified", version: 2, controllers: [] },
  ]);
});

const tree: Record<string, string[]> = {
  "/cg": ["slurm_n1", "slurm_n2", "system.slice", "docker"],
  "/cg/slurm_n1": ["uid_2001"],
  "/cg/slurm_n1/uid_2001": ["job_5", "job_6"],
  "/cg/slurm_n1/uid_2001/job_5": ["step_0"],
  "/cg/slurm_n1/uid_2001/job_5/step_0": ["a".repeat(64)],
  [`/cg/slurm_n1/uid_2001/job_5/step_0/${"a".repeat(64)}`]: ["sub"],
  "/cg/slurm_n2": ["uid_2001"],
  "/cg/slurm_n2/uid_2001": ["job_5"],
  "/cg/system.slice": ["slurmstepd.scope"],
  "/cg/system.slice/slurmstepd.scope": ["job_5", "job_50"],
  "/cg/docker": ["job_5"],
};
const list = (path: string) => tree[path] ?? [];
const A = `/cg/slurm_n1/uid_2001/job_5/step_0/${"a".repeat(64)}`;

Deno.test("in a controller Slurm manages, the containers' folders go now, the job's own once Slurm is done", () => {
  assert.deepEqual(jobLeftovers({ path: "/cg", version: 1, controllers: ["memory"] }, "5", list, false), {
    containers: [`${A}/sub`, A],
    jobFolders: [],
    slurmFolders: [
      "/cg/slurm_n1/uid_2001/job_5/step_0",
      "/cg/slurm_n1/uid_2001/job_5",
      "/cg/slurm_n2/uid_2001/job_5",
      "/cg/system.slice/slurmstepd.scope/job_5",
    ],
  });
  assert.deepEqual(
    jobLeftovers({ path: "/cg", version: 2, controllers: [] }, "5", list, true).jobFolders,
    [],
    "a v2 node's tree is Slurm's",
  );
});

Deno.test("in a controller only Docker filled, the job's folders are socker's to remove, deepest first", () => {
  const expected = [
    "/cg/slurm_n1/uid_2001/job_5/step_0",
    "/cg/slurm_n1/uid_2001/job_5",
    "/cg/slurm_n2/uid_2001/job_5",
    "/cg/system.slice/slurmstepd.scope/job_5",
  ];
  assert.deepEqual(jobLeftovers({ path: "/cg", version: 1, controllers: ["pids"] }, "5", list, false), {
    containers: [`${A}/sub`, A],
    jobFolders: expected,
    slurmFolders: [],
  });
  assert.deepEqual(
    jobLeftovers({ path: "/cg", version: 2, controllers: [] }, "5", list, false).jobFolders,
    expected,
    "a hybrid node's unified tree",
  );
  assert.deepEqual(jobLeftovers({ path: "/cg", version: 1, controllers: ["pids"] }, "6", list, false).jobFolders, [
    "/cg/slurm_n1/uid_2001/job_6",
  ]);
});

Deno.test("slurm.conf: cgroup tracking, task/cgroup and socker's Epilog are required", () => {
  const hook = "/usr/local/libexec/socker/slurm-epilog";
  assert.deepEqual(slurmConfProblems(parseSlurmConf(SLURM_CONF), hook), []);
  const bad =
    "ProctrackType=proctrack/linuxproc\n#Epilog=/usr/local/libexec/socker/slurm-epilog\nTaskPlugin=task/affinity\n";
  assert.deepEqual(slurmConfProblems(parseSlurmConf(bad), hook), [
    "set ProctrackType=proctrack/cgroup",
    "add task/cgroup to TaskPlugin",
    "add Epilog=/usr/local/libexec/socker/slurm-epilog (install.sh --epilog installs it)",
  ]);
});

Deno.test("Slurm host lists expand, bounded", () => {
  assert.deepEqual(expandHostList("n1"), ["n1"]);
  assert.deepEqual(expandHostList("n[1-3]"), ["n1", "n2", "n3"]);
  assert.deepEqual(expandHostList("gpu[01-02,10],login"), ["gpu01", "gpu02", "gpu10", "login"]);
  assert.deepEqual(expandHostList("a[1-2]b"), ["a1b", "a2b"]);
  assert.equal(expandHostList("n[1-1000000000]"), undefined);
  assert.equal(expandHostList("n[3-1]"), undefined);
  assert.equal(expandHostList("n[1-x]"), undefined);
  assert.equal(expandHostList("n[1"), undefined);
});

Deno.test("cgroup v2 as a real v2-only kernel and Slurm 22.05 showed it: srun, batch and salloc steps", () => {
  const scope = "/system.slice/v2node_slurmstepd.scope";
  const cases: [string, string, string][] = [
    ["v2-real-srun-step.cgroup", "1", `${scope}/job_1/step_0/user`],
    ["v2-real-batch-step.cgroup", "1", `${scope}/job_1/step_batch/user`],
    ["v2-real-salloc-srun-step.cgroup", "5", `${scope}/job_5/step_0/user`],
  ];
  for (const [file, job, parent] of cases) {
    const step = jobStepFromCgroup(cgroup(file), 2001);
    assert.deepEqual([step?.version, step?.jobId, step?.parent, step?.node], [2, job, parent, "v2node"], file);
  }
  // A process already inside a container's cgroup (or its namespace) is no Slurm task.
  assert.throws(() => jobStepFromCgroup(cgroup("v2-real-container.cgroup"), 2001), /is not a Slurm task cgroup/);
  assert.equal(jobStepFromCgroup(cgroup("v2-real-container-inside.cgroup"), 2001), undefined);
});

Deno.test("on a real v2 node the job's folders are Slurm's; the container's own are socker's", () => {
  const root = "/sys/fs/cgroup/system.slice/v2node_slurmstepd.scope";
  const dirs = cgroup("v2-real-job-dirs.txt").split("\n").filter((line) => line !== "");
  const tree: Record<string, string[]> = {
    "/sys/fs/cgroup": ["system.slice"],
    "/sys/fs/cgroup/system.slice": ["v2node_slurmstepd.scope"],
    [root]: ["job_1"],
  };
  for (const dir of dirs) {
    const parent = `${root}/${dir.slice(0, dir.lastIndexOf("/"))}`;
    if (dir.includes("/")) (tree[parent] ??= []).push(dir.slice(dir.lastIndexOf("/") + 1));
  }
  const left = jobLeftovers(
    { path: "/sys/fs/cgroup", version: 2, controllers: [] },
    "1",
    (path) => tree[path] ?? [],
    true,
  );
  assert.deepEqual(left.containers, [
    `${root}/job_1/step_0/user/ef4c3ca3b917af647ca989343ad8ed0876dccb2665345eef5d360a236f23f05c`,
  ]);
  assert.deepEqual(left.jobFolders, []);
  assert.ok(left.slurmFolders.includes(`${root}/job_1`) && left.slurmFolders.includes(`${root}/job_1/step_0/slurm`));
  assert.equal(left.slurmFolders.at(-1), `${root}/job_1`, "deepest first, the job last");
});

Deno.test("socker finds its memory cgroup on v1, to leave the step's when it cannot set oom_score_adj", () => {
  assert.equal(memoryCgroupV1(cgroup("v1-srun-step.cgroup")), "/slurm_vm/uid_2001/job_1/step_0/task_0");
  assert.equal(memoryCgroupV1(cgroup("v1-outside-job.cgroup"))?.startsWith("/"), true);
  assert.equal(memoryCgroupV1(cgroup("v2-real-srun-step.cgroup")), undefined, "cgroup v2 has no memory line");
  assert.equal(memoryCgroupV1("5:cpu,memory:/a/b\n"), "/a/b", "a co-mounted controller");
  assert.equal(memoryCgroupV1("5:memoryx:/a\n"), undefined);
});

// planRun's rules on the job (require_job, its cgroup, its labels): one table row each, a refusal (a pattern of its
// one-line reason) or a check of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  // require_job and the job's cgroup
  [
    "require_job refuses outside a job",
    run(IMAGE, "id"),
    runFacts({ settings: settingsFile("require_job = yes") }),
    /only inside Slurm jobs/,
  ],
  [
    "require_job runs inside a job",
    run(IMAGE, "id"),
    inJob({ settings: settingsFile("require_job = yes") }),
    (plan) => assert.equal(plan.job?.jobId, "1"),
  ],
  ["outside a job there is no cgroup parent and no job labels", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.equal(plan.cgroupParent, undefined);
    assert.equal(plan.labels[LABEL.job], undefined);
  }],
  [
    "inside a job the container goes into the step's cgroup, labelled with job and step",
    run(IMAGE, "id"),
    inJob(),
    (plan) => {
      assert.equal(plan.cgroupParent, "/slurm_n1/uid_2001/job_1/step_0");
      assert.deepEqual([plan.labels[LABEL.job], plan.labels[LABEL.step]], ["1", "0"]);
    },
  ],
  [
    "a forged SLURM_JOB_ID changes nothing socker decides",
    run(IMAGE, "id"),
    inJob({ callerEnv: { SLURM_JOB_ID: "999", SLURM_STEP_ID: "7" } }),
    (plan) => {
      assert.equal(plan.cgroupParent, "/slurm_n1/uid_2001/job_1/step_0");
      assert.equal(env(plan).SLURM_JOB_ID, "999", "it reaches the container, which is the caller's own business");
    },
  ],
  [
    "another user's job cgroup is refused",
    run(IMAGE, "id"),
    runFacts({ procSelfCgroup: fixture("proc/hostile-other-user.cgroup") }),
    /belongs to uid 2002/,
  ],
  [
    "the systemd cgroup driver cannot place containers in a job",
    run(IMAGE, "id"),
    inJob({ engineInfo: { CgroupDriver: "systemd", CgroupVersion: "1" } }),
    /native\.cgroupdriver=cgroupfs/,
  ],
  [
    "a v2 job on a v1 engine is refused",
    run(IMAGE, "id"),
    inJob({
      procSelfCgroup: fixture("proc/v2-batch.cgroup"),
      engineInfo: { CgroupDriver: "cgroupfs", CgroupVersion: "1" },
    }),
    /engine sees cgroup v1 but this job is on cgroup v2/,
  ],
  // labels
  ["the container carries the supervisor, uid, user and node", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.equal(plan.containerName, "socker-2001-010203040506");
    assert.deepEqual(plan.labels, {
      "socker.managed": "true",
      "socker.uid": "2001",
      "socker.user": "alice",
      "socker.node": "n1",
      "socker.supervisor": "4242:123456",
    });
    assert.equal(plan.staging, "socker-2001-010203040506@4242-123456");
  }],
]);
