// Unit tests of cleanup: container and staging names, whether a supervisor lives, cleanup's plan for a job,
// and the reaper's judgement (only what a dead supervisor left).
import assert from "node:assert/strict";
import {
  containerName,
  isRootProcess,
  parseStagingName,
  planJobCleanup,
  planOrphans,
  Refusal,
  stagingName,
  supervisorAlive,
  supervisorId,
} from "../../socker.ts";
import { container, engineDown, IMAGE, planTests, run, runFacts, stat } from "./facts.ts";

const A = "a".repeat(64), B = "b".repeat(64), C = "c".repeat(64);

Deno.test("cleanup of a job: containers by label and by cgroup folder, their folders and the job's staging", () => {
  const plan = planJobCleanup({
    jobId: "5",
    leftovers: [
      {
        mount: { path: "/cg/memory", version: 1, controllers: ["memory"] },
        containers: [`/cg/memory/slurm_n1/uid_2001/job_5/step_0/${A}`],
        jobFolders: [],
        slurmFolders: ["/cg/memory/slurm_n1/uid_2001/job_5/step_0", "/cg/memory/slurm_n1/uid_2001/job_5"],
      },
      {
        mount: { path: "/cg/pids", version: 1, controllers: ["pids"] },
        containers: [],
        jobFolders: ["/cg/pids/slurm_n1/uid_2001/job_5/step_0", "/cg/pids/slurm_n1/uid_2001/job_5"],
        slurmFolders: [],
      },
    ],
    labelled: [{ Id: B }],
    staging: ["job_5.socker-2001-aa@1-2", "job_50.socker-2001-bb@1-2", "socker-2001-cc@3-4", "pull-x.lock"],
  });
  assert.deepEqual(plan.containers.sort(), [A, B]);
  assert.deepEqual(plan.folders, [
    `/cg/memory/slurm_n1/uid_2001/job_5/step_0/${A}`,
    "/cg/pids/slurm_n1/uid_2001/job_5/step_0",
    "/cg/pids/slurm_n1/uid_2001/job_5",
  ]);
  assert.deepEqual(plan.slurmFolders, [
    "/cg/memory/slurm_n1/uid_2001/job_5/step_0",
    "/cg/memory/slurm_n1/uid_2001/job_5",
  ]);
  assert.deepEqual(plan.staging, ["job_5.socker-2001-aa@1-2"]);
  const engineDown = planJobCleanup({
    jobId: "5",
    leftovers: [],
    labelled: new Refusal("engine", "down"),
    staging: ["job_5.socker-1-aa@1-2"],
  });
  assert.deepEqual(
    engineDown,
    { jobId: "5", containers: [], folders: [], slurmFolders: [], staging: ["job_5.socker-1-aa@1-2"] },
    "the engine down stops no other sweep",
  );
});

Deno.test("the reaper removes what a dead supervisor left, never what a live one holds", () => {
  const plan = planOrphans({
    containers: [
      { container: container(A, { "socker.uid": "2001", "socker.supervisor": "10:5" }), supervisorStat: undefined },
      { container: container(B, { "socker.uid": "2001", "socker.supervisor": "11:7" }), supervisorStat: stat(11, 7) },
      { container: container(C, { "socker.uid": "2002" }), supervisorStat: undefined },
    ],
    staging: [{ name: "socker-2001-aa@10-5" }, { name: "socker-2001-bb@11-7", supervisorStat: stat(11, 7) }, {
      name: "socker-2001-old",
    }],
  });
  assert.deepEqual(plan, { containers: [A], folders: [], slurmFolders: [], staging: ["socker-2001-aa@10-5"] });
  assert.deepEqual(
    planOrphans({ containers: new Refusal("engine", "down"), staging: [{ name: "socker-1-a@1-1" }] }).staging,
    ["socker-1-a@1-1"],
  );
});

Deno.test("container and staging names carry the caller, the job and the supervisor", () => {
  const name = containerName(2001, new Uint8Array([0, 1, 255, 16, 32, 48]));
  assert.equal(name, "socker-2001-0001ff102030");
  assert.equal(stagingName(name, "42", "77:1234"), "job_42.socker-2001-0001ff102030@77-1234");
  assert.equal(stagingName(name, undefined, "77:1234"), "socker-2001-0001ff102030@77-1234");
  assert.deepEqual(parseStagingName("job_42.socker-2001-ab@77-1234"), {
    jobId: "42",
    container: "socker-2001-ab",
    supervisor: "77:1234",
  });
  assert.deepEqual(parseStagingName("socker-2001-ab"), {
    container: "socker-2001-ab",
    jobId: undefined,
    supervisor: undefined,
  });
  assert.deepEqual(parseStagingName("pull-abc.lock"), { container: "pull-abc.lock" });
});

Deno.test("a supervisor is alive only when its pid runs with the same start time", () => {
  const stat = (pid: number, start: number, comm = "deno") =>
    `${pid} (${comm}) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 ${start} 0 0`;
  assert.equal(supervisorId(77, stat(77, 1234)), "77:1234");
  assert.equal(supervisorId(77, stat(77, 1234, "a) b ) c")), "77:1234", "a process may put ')' in its name");
  assert.equal(supervisorAlive("77:1234", stat(77, 1234)), true);
  assert.equal(supervisorAlive("77:1234", stat(77, 9999)), false, "a reused pid is another process");
  assert.equal(supervisorAlive("77:1234", undefined), false);
  assert.equal(supervisorAlive("garbage", stat(77, 1234)), false);
  assert.equal(supervisorAlive(undefined, stat(77, 1234)), false);
});

// planRun's rules on orphans removed first: one table row each, a refusal (a pattern of its one-line reason) or a check
// of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  [
    "the caller's containers whose socker died are removed first, the living are not",
    run(IMAGE, "id"),
    runFacts({
      ownContainers: [
        {
          container: { Id: "a".repeat(64), Names: ["/socker-2001-aa"], Labels: { "socker.supervisor": "10:5" } },
          supervisorStat: undefined,
        },
        {
          container: { Id: "b".repeat(64), Names: ["/socker-2001-bb"], Labels: { "socker.supervisor": "11:7" } },
          supervisorStat: "11 (deno) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 0",
        },
        {
          container: { Id: "c".repeat(64), Names: ["/socker-2001-cc"], Labels: { "socker.supervisor": "12:9" } },
          supervisorStat: "12 (deno) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0",
        },
      ],
      staging: [{ name: "socker-2001-dd@13-1" }, { name: "socker-2002-ee@14-1" }],
    }),
    (plan) => {
      assert.deepEqual(plan.orphans.map((o) => o.container ?? o.staging), [
        "a".repeat(64),
        "c".repeat(64),
        "socker-2001-dd@13-1",
      ]);
    },
  ],
  [
    "an engine that cannot list the caller's containers is a refusal",
    run(IMAGE, "id"),
    runFacts({ ownContainers: engineDown }),
    /Docker engine is not reachable/,
  ],
]);

Deno.test("cleanup waits only for root's slurmstepd: a user's process titled like one does not count", () => {
  const status = (uids: string) =>
    `Name:\tslurmstepd\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t${uids}\nGid:\t0\t0\t0\t0\n`;
  assert.equal(isRootProcess(status("0\t0\t0\t0")), true);
  assert.equal(isRootProcess(status("2001\t2001\t2001\t2001")), false, "alice's exec -a 'slurmstepd: [N.0]'");
  assert.equal(isRootProcess(status("2001\t0\t0\t0")), false, "a set-uid program started by alice");
  assert.equal(isRootProcess(status("0\t0\t0\t2001")), false);
  assert.equal(isRootProcess(undefined), false, "gone");
  assert.equal(isRootProcess("Uid:\t0\n"), false, "not the kernel's four fields");
});
