// Unit tests of the administrator's and the user's operations: doctor's table (one fault, one FIX line;
// what needs it says skipped), cleanup's plans, the reaper's judgement, and ps and stop.
import assert from "node:assert/strict";
import {
  ageText,
  DOCTOR_ROWS,
  doctorReport,
  type DoctorRow,
  type ListedContainer,
  planJobCleanup,
  planOrphans,
  planPs,
  planStop,
  Refusal,
  runcFixed,
} from "../../socker.ts";

const row = (name: string, needs: string[], ok: boolean): DoctorRow => ({
  name,
  needs,
  probe: () => undefined,
  judge: () => ({ name, ok, detail: ok ? "fine" : "do x" }),
});

Deno.test("doctor: one line per check, exit 0 only when all pass", () => {
  assert.deepEqual(doctorReport([row("a", [], true)], new Map()), {
    lines: ["ok   a: fine", "all 1 checks passed"],
    exitCode: 0,
  });
  assert.deepEqual(doctorReport([row("a", [], true), row("b", [], false)], new Map()), {
    lines: ["ok   a: fine", "FIX  b: do x", "1 of 2 checks need a fix"],
    exitCode: 1,
  });
});

Deno.test("doctor: a check whose prerequisite failed says skipped, so one fault gives one FIX line", () => {
  const rows = [
    row("engine", [], false),
    row("runc", ["engine"], true),
    row("images", ["engine", "allowlist"], true),
    row("deeper", ["runc"], true),
    row("allowlist", [], true),
  ];
  const report = doctorReport(rows, new Map());
  assert.deepEqual(report.lines, [
    "FIX  engine: do x",
    "skip runc: skipped: needs engine",
    "skip images: skipped: needs engine",
    "skip deeper: skipped: needs runc",
    "ok   allowlist: fine",
    "1 of 2 checks need a fix",
  ]);
});

Deno.test("doctor's real table: a stopped engine is one FIX line, the rest that needs it is skipped", () => {
  const down = new Refusal("engine", "the Docker engine is not reachable at /var/run/docker.sock: refused");
  const facts = new Map<string, unknown>(DOCTOR_ROWS.map((r) => [r.name, down]));
  const report = doctorReport(
    DOCTOR_ROWS.filter((r) =>
      ["the Docker engine", "runc", "containerd", "images", "registries", "Slurm's cgroups"].includes(r.name)
    ),
    facts,
  );
  assert.equal(report.lines.filter((line) => line.startsWith("FIX")).length, 1, report.lines.join("\n"));
  assert.match(report.lines[0], /^FIX {2}Docker engine: the Docker engine is not reachable/);
  assert.ok(
    report.lines.slice(1, -1).every((line) => /^skip .*: skipped: needs the Docker engine/.test(line)),
    report.lines.join("\n"),
  );
  for (const needs of DOCTOR_ROWS.flatMap((r) => r.needs)) {
    assert.ok(DOCTOR_ROWS.some((r) => r.name === needs), `a row needs '${needs}', which is a row`);
  }
});

Deno.test("runc: 1.1.12 or later, or a distribution build known to carry the CVE-2024-21626 fix", () => {
  assert.equal(runcFixed("1.1.12"), true);
  assert.equal(runcFixed("v1.1.14-0-g2c9f560"), true);
  assert.equal(runcFixed("1.1.11"), false);
  assert.equal(runcFixed("1.1.5+ds1-1+deb12u1"), true);
  assert.equal(runcFixed("1.1.5+ds1-1"), false);
  assert.equal(runcFixed("f19387a6"), undefined);
});

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

const stat = (pid: number, start: number) => `${pid} (deno) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 ${start} 0 0`;
const container = (
  id: string,
  labels: Record<string, string>,
  name = `/socker-${labels["socker.uid"]}-${id.slice(0, 4)}`,
): ListedContainer => ({
  Id: id,
  Names: [name],
  Image: "docker.io/socker-test/busybox:2",
  Command: "/sbin/docker-init -- sleep 1000",
  Created: 1000,
  Labels: { "socker.managed": "true", ...labels },
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

const facts = (callerUid: number) => ({
  caller: { uid: callerUid, gid: callerUid, user: callerUid === 0 ? "root" : "alice" },
  rootCaller: callerUid === 0,
  now: 1000 + 3725,
  containers: [
    {
      container: container(A, {
        "socker.uid": "2001",
        "socker.user": "alice",
        "socker.job": "42",
        "socker.supervisor": "10:5",
      }),
      supervisorStat: stat(10, 5),
    },
    {
      container: container(B, { "socker.uid": "2002", "socker.user": "bob", "socker.supervisor": "11:7" }),
      supervisorStat: undefined,
    },
  ],
});

Deno.test("socker ps shows the caller's own containers only; root sees everyone's", () => {
  assert.deepEqual(planPs(facts(2001)), [
    ["NAME", "IMAGE", "COMMAND", "AGE", "JOB"],
    ["socker-2001-aaaa", "docker.io/socker-test/busybox:2", "sleep 1000", "1h", "42"],
  ]);
  assert.deepEqual(planPs(facts(0)).map((r) => r.at(-1)), ["USER", "alice", "bob"]);
  assert.deepEqual([ageText(5), ageText(65), ageText(7200), ageText(200000)], ["5s", "1m", "2h", "2d"]);
});

Deno.test("socker stop: only the caller's own, by name or id prefix; another's is as if it did not exist", () => {
  assert.deepEqual(planStop("socker-2001-aaaa", facts(2001)), { id: A, name: "socker-2001-aaaa", supervisorPid: 10 });
  assert.deepEqual(planStop("aaaa", facts(2001)).id, A);
  for (const target of ["socker-2002-bbbb", "bbbb", B]) {
    assert.throws(() => planStop(target, facts(2001)), /no container of yours named/);
  }
  assert.throws(() => planStop("aaa", facts(2001)), /no container of yours/, "an id prefix needs four digits");
  assert.deepEqual(
    planStop("bbbb", facts(0)),
    { id: B, name: "socker-2002-bbbb", supervisorPid: undefined },
    "root may stop an orphan",
  );
});
