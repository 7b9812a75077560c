// Unit tests of the rules of step containers: who shares, what the key covers, what a joined container
// must be, what each task's exec may be.
import assert from "node:assert/strict";
import {
  execRequest,
  HOLDER_MOUNT,
  type InspectedContainer,
  LABEL,
  liveTasks,
  parseSettings,
  planOrphans,
  planRun,
  planShare,
  type RunPlan,
  runsAsCaller,
  SHARE_LABEL,
  sharedContainerName,
  sharedContainerProblem,
  sharedContainerSpec,
  sharedLabels,
  shareSpecText,
  tasksHint,
} from "../../socker.ts";
import { IMAGE_ID, inJob, run, runFacts } from "./facts.ts";

const stepPlan = (args: string[] = ["socker-test/busybox:2", "hostname"], facts = inJob()) =>
  planRun(run(...args), facts);

Deno.test("share: only inside a numbered step, with a command, with share = step, unless one task is hinted", () => {
  const plan = stepPlan();
  assert.equal(plan.job?.stepId, "0");
  assert.equal(planShare(plan, "step", undefined), true);
  assert.equal(planShare(plan, "step", 8), true);
  assert.equal(planShare(plan, "step", 1), false);
  assert.equal(planShare(plan, "none", 8), false);
  assert.equal(planShare(planRun(run("socker-test/busybox:2", "hostname"), runFacts()), "step", 8), false);
  assert.equal(planShare({ ...plan, job: { ...plan.job!, stepId: "batch" } }, "step", 8), false);
  assert.equal(planShare({ ...plan, imageId: undefined }, "step", 8), false);
  assert.equal(planShare({ ...plan, argv: [], imageEntrypoint: [], cmd: [] }, "step", 8), false);
  assert.equal(planShare({ ...plan, argv: [], imageEntrypoint: [], cmd: ["serve"] }, "step", 8), true);
});

Deno.test("share: the task count hint reads Slurm's per-node lists", () => {
  assert.equal(tasksHint({ SLURM_STEP_TASKS_PER_NODE: "8(x2)" }), 8);
  assert.equal(tasksHint({ SLURM_STEP_TASKS_PER_NODE: "9,1" }), 9);
  assert.equal(tasksHint({ SLURM_STEP_TASKS_PER_NODE: "1" }), 1);
  assert.equal(tasksHint({ SLURM_NTASKS: "3" }), 3);
  assert.equal(tasksHint({}), undefined);
  assert.equal(tasksHint({ SLURM_STEP_TASKS_PER_NODE: "x" }), undefined);
});

Deno.test("share: the key covers user, groups, job, step, cgroup, image, mounts, limits, namespaces; not the task", () => {
  const plan = stepPlan();
  const key = shareSpecText(plan, "n1");
  const differs = (change: Partial<RunPlan>, node = "n1") => shareSpecText({ ...plan, ...change }, node) !== key;
  assert.ok(differs({ caller: { ...plan.caller, uid: 2002 } }));
  assert.ok(differs({ caller: { ...plan.caller, groups: [3002] } }));
  assert.ok(differs({ job: { ...plan.job!, jobId: "2" } }));
  assert.ok(differs({ job: { ...plan.job!, stepId: "1" } }));
  assert.ok(differs({ cgroupParent: "/slurm_n1/uid_2001/job_1/step_1" }));
  assert.ok(differs({ imageId: `sha256:${"5".repeat(64)}` }));
  assert.ok(differs({ mounts: [] }));
  assert.ok(differs({ devices: ["/dev/nvidia0"] }));
  assert.ok(differs({ pid: "host" }));
  assert.ok(differs({ ulimits: [] }));
  assert.ok(differs({}, "n2"));
  assert.ok(!differs({ argv: ["other"], env: ["SLURM_PROCID=3"], tty: true, stdin: false }));
  // The caller's environment is not a fact of the key: forged Slurm variables give the same plan.
  const forged = stepPlan(
    undefined,
    inJob({ callerEnv: { SLURM_JOB_ID: "9", SLURM_STEP_ID: "4", SLURM_LOCALID: "0" } }),
  );
  assert.equal(shareSpecText(forged, "n1"), key);
  assert.match(sharedContainerName(2001, "ab".repeat(32)), /^socker-2001-[0-9a-f]{24}$/);
});

Deno.test("share: the step container runs only the holder, bound read-only, with socker's labels", () => {
  const plan = stepPlan();
  const spec = sharedContainerSpec(plan, "k".repeat(64), ["/home/alice", "/home/alice/work"], {}) as {
    Entrypoint: string[];
    Cmd: string[];
    Env: string[];
    Labels: Record<string, string>;
    User: string;
    HostConfig: { Mounts: { Target: string; ReadOnly: boolean }[]; Privileged: boolean; CapDrop: string[] };
  };
  assert.equal(spec.Entrypoint[0], `${HOLDER_MOUNT}/busybox`);
  assert.deepEqual(spec.Cmd, []);
  assert.deepEqual(spec.Env, []);
  assert.equal(spec.User, "2001:2001");
  assert.equal(spec.Labels[SHARE_LABEL], "k".repeat(64));
  assert.equal(spec.Labels[LABEL.supervisor], undefined);
  assert.ok(spec.HostConfig.Mounts.some((m) => m.Target === HOLDER_MOUNT && m.ReadOnly));
  assert.equal(spec.HostConfig.Privileged, false);
  assert.deepEqual(spec.HostConfig.CapDrop, ["ALL"]);
});

Deno.test("share: each task's exec is its own command and environment, as the caller, never privileged", () => {
  const plan = stepPlan(["-e", "X=1", "socker-test/busybox:2", "sh", "-c", "echo"]);
  const request = execRequest(plan, undefined);
  assert.equal(request.User, "2001:2001");
  assert.equal(request.Privileged, false);
  assert.deepEqual(request.Cmd, ["sh", "-c", "echo"]);
  assert.ok((request.Env as string[]).includes("X=1"));
  assert.equal(request.WorkingDir, plan.workdir);
});

Deno.test("share: a container is joined only when it is exactly this plan's, as the engine sees it", () => {
  const plan = stepPlan();
  const key = "c".repeat(64);
  const name = sharedContainerName(plan.caller.uid, key);
  const good: InspectedContainer = {
    Id: "d".repeat(64),
    Name: `/${name}`,
    Image: IMAGE_ID,
    State: { Running: true, Pid: 77 },
    Config: { User: "2001:2001", Image: plan.entry.canonical, Labels: sharedLabels(plan, key) },
    HostConfig: {
      CgroupParent: plan.cgroupParent,
      Privileged: false,
      CapDrop: ["ALL"],
      GroupAdd: ["3001"],
      NetworkMode: "bridge",
      PidMode: "",
    },
    Mounts: [
      ...plan.mounts.map((m) => ({ Destination: m.destination, RW: !m.readOnly })),
      { Destination: HOLDER_MOUNT, RW: false },
    ],
  };
  assert.equal(sharedContainerProblem(good, plan, key, name), undefined);
  const bad = (change: Partial<InspectedContainer>) => sharedContainerProblem({ ...good, ...change }, plan, key, name);
  assert.match(bad({ Config: { ...good.Config, User: "0:0" } })!, /another user/);
  assert.match(bad({ Config: { ...good.Config, Labels: sharedLabels(plan, "e".repeat(64)) } })!, /label/);
  assert.match(bad({ HostConfig: { ...good.HostConfig, CgroupParent: "/other" } })!, /cgroup/);
  assert.match(bad({ HostConfig: { ...good.HostConfig, Privileged: true } })!, /privileges/);
  assert.match(bad({ HostConfig: { ...good.HostConfig, GroupAdd: ["0"] } })!, /groups/);
  assert.match(bad({ HostConfig: { ...good.HostConfig, PidMode: "host" } })!, /pid/);
  assert.match(bad({ Image: `sha256:${"9".repeat(64)}` })!, /image/);
  assert.match(bad({ Mounts: good.Mounts!.slice(1) })!, /mounts/);
  assert.match(bad({ State: { Running: false } })!, /not running/);
  assert.match(bad({ Name: "/other" })!, /name/);
});

Deno.test("share: a process runs as the caller only with exactly the caller's ids and groups", () => {
  const caller = { uid: 2001, gid: 2001, user: "alice", groups: [3001] };
  const status = (uid: string, gid: string, groups: string) =>
    `Name:\tsh\nUid:\t${uid}\t${uid}\t${uid}\t${uid}\nGid:\t${gid}\t${gid}\t${gid}\t${gid}\nGroups:\t${groups}\n`;
  assert.ok(runsAsCaller(status("2001", "2001", "3001 "), caller));
  assert.ok(runsAsCaller(status("2001", "2001", "2001 3001"), caller));
  assert.ok(!runsAsCaller(status("2001", "2001", "3001 0"), caller));
  assert.ok(!runsAsCaller(status("2001", "2001", ""), caller));
  assert.ok(!runsAsCaller(status("0", "2001", "3001"), caller));
  assert.ok(!runsAsCaller(status("2001", "0", "3001"), caller));
  assert.ok(!runsAsCaller(undefined, caller));
});

Deno.test("share: live tasks are registered pids whose start time matches; idle step containers are orphans", () => {
  const stat = (pid: number, start: number) => `${pid} (socker) S ${"1 ".repeat(18)}${start} 0`;
  assert.deepEqual(
    liveTasks([
      { name: "100-5000", stat: stat(100, 5000) },
      { name: "101-5000", stat: stat(101, 6000) },
      { name: "102-5000" },
      { name: "junk", stat: stat(1, 1) },
    ]),
    ["100-5000"],
  );
  const container = (labels: Record<string, string>) => ({ Id: "a".repeat(64), Names: ["/x"], Labels: labels });
  const plan = planOrphans({
    containers: [
      { container: container({ [SHARE_LABEL]: "k" }), liveTasks: 0 },
      { container: { ...container({ [SHARE_LABEL]: "k" }), Id: "b".repeat(64) }, liveTasks: 2 },
    ],
    staging: [],
  });
  assert.deepEqual(plan.containers, ["a".repeat(64)]);
});

Deno.test("share: socker.conf's share is step or none, step by default", () => {
  assert.equal(parseSettings("", "f").share, "step");
  assert.equal(parseSettings("share = none\n", "f").share, "none");
  assert.throws(() => parseSettings("share = node\n", "f"));
});
