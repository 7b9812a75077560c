// Unit tests of resource limits: the caller's limits read from the kernel's text, socker's own raised, the
// container's exactly the caller's, and /dev/shm sized by the job's memory limit.
import assert from "node:assert/strict";
import {
  containerSpec,
  containerUlimits,
  exitCodeFor,
  LIMIT_ROWS,
  memoryLimitOf,
  parseProcLimits,
  parseSettings,
  planOwnLimits,
  shmBytes,
  signalAction,
  sizeBytes,
  SUPERVISOR_CPU_RESERVE,
  SUPERVISOR_NEEDS,
} from "../../socker.ts";
import { IMAGE, limits, planTests, refusal, run, runFacts } from "./facts.ts";

Deno.test("shm: half the job's memory limit, at least 64 MiB, a fixed size bounded by the limit", () => {
  const gib = 1 << 30;
  assert.equal(shmBytes({ percent: 50 }, gib), gib / 2);
  assert.equal(shmBytes({ percent: 50 }, 100 << 20), 64 << 20);
  assert.equal(shmBytes({ percent: 50 }, undefined), 64 << 20);
  assert.equal(shmBytes({ bytes: 4 * gib }, gib), gib);
  assert.equal(shmBytes({ bytes: 4 * gib }, undefined), 4 * gib);
  assert.equal(memoryLimitOf(["9223372036854771712\n", "1073741824\n", undefined]), gib);
  assert.equal(memoryLimitOf(["max\n", undefined]), undefined);
  assert.deepEqual([sizeBytes("64m"), sizeBytes("1G"), sizeBytes("512"), sizeBytes("0"), sizeBytes("2T1")], [
    64 << 20,
    gib,
    512,
    undefined,
    undefined,
  ]);
  const parsed = parseSettings(
    "shm_size = 25%\nenv_inherit = no\nrendezvous_variables = no\ndefault_gpus = yes\n",
    "c",
  );
  assert.deepEqual([parsed.shmSize, parsed.envInherit, parsed.rendezvousVariables, parsed.defaultGpus], [
    { percent: 25 },
    false,
    false,
    true,
  ]);
  assert.deepEqual(parseSettings("shm_size = 2G\n", "c").shmSize, { bytes: 2 * gib });
  refusal(() => parseSettings("shm_size = 150%\n", "c"), /shm_size must be/);
  refusal(() => parseSettings("env_inherit = maybe\n", "c"), /env_inherit must be yes or no/);
});

/** /proc/self/limits as the kernel writes it. */
const PROC_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              30                   unlimited            seconds
Max file size             1048576              unlimited            bytes
Max data size             unlimited            unlimited            bytes
Max stack size            8388608              unlimited            bytes
Max core file size        0                    0                    bytes
Max resident set          unlimited            unlimited            bytes
Max processes             64                   64                   processes
Max open files            128                  128                  files
Max locked memory         8388608              8388608              bytes
Max address space         unlimited            unlimited            bytes
Max file locks            unlimited            unlimited            locks
Max pending signals       96362                96362                signals
Max msgqueue size         819200               819200               bytes
Max nice priority         0                    0
Max realtime priority     0                    0
Max realtime timeout      unlimited            unlimited            us
`;

Deno.test("the caller's limits are read from the kernel's text, every row, bounded", () => {
  const parsed = parseProcLimits(PROC_LIMITS);
  assert.deepEqual(parsed.cpu, { soft: 30, hard: Infinity });
  assert.deepEqual(parsed.nproc, { soft: 64, hard: 64 });
  assert.deepEqual(parsed.nofile, { soft: 128, hard: 128 });
  assert.deepEqual(parsed.nice, { soft: 0, hard: 0 });
  assert.equal(Object.keys(parsed).length, LIMIT_ROWS.length);
  refusal(() => parseProcLimits(PROC_LIMITS.replace(/^Max open files.*$/m, "")), /lack Max open files/);
  refusal(
    () => parseProcLimits(PROC_LIMITS.replace("128                  128", "-1 128")),
    /cannot read the resource limit 'Max open files/,
  );
  refusal(
    () => parseProcLimits(PROC_LIMITS.replace("128                  128", "256 128")),
    /cannot read the resource limit/,
  );
  refusal(
    () => parseProcLimits(PROC_LIMITS.replace("96362                96362", "99999999999999999999 x")),
    /cannot read/,
  );
  // A limit above 2^53 (prlimit --as=2^54, --fsize=2^60) is the caller's to change, said in their words.
  for (const [row, text] of [["Max file size             1048576", "Max file size             1152921504606846976"]]) {
    refusal(
      () => parseProcLimits(PROC_LIMITS.replace(row, text)),
      /^your file size limit \(1152921504606846976\) is too large for socker to pass on exactly: set it to unlimited/,
    );
  }
  refusal(
    () =>
      parseProcLimits(
        PROC_LIMITS.replace(
          "Max address space         unlimited            unlimited",
          "Max address space 18014398509481984 unlimited",
        ),
      ),
    /your address space limit \(18014398509481984\) is too large/,
  );
});

Deno.test("the container gets exactly the caller's limits, for every limit docker can set", () => {
  const ulimits = containerUlimits(parseProcLimits(PROC_LIMITS));
  assert.deepEqual(ulimits.find((u) => u.Name === "nproc"), { Name: "nproc", Soft: 64, Hard: 64 });
  assert.deepEqual(ulimits.find((u) => u.Name === "nofile"), { Name: "nofile", Soft: 128, Hard: 128 });
  assert.deepEqual(ulimits.find((u) => u.Name === "fsize"), { Name: "fsize", Soft: 1048576, Hard: -1 });
  assert.deepEqual(ulimits.find((u) => u.Name === "cpu"), { Name: "cpu", Soft: 30, Hard: -1 });
  assert.equal(ulimits.find((u) => u.Name === "as"), undefined, "docker cannot pass the address space on");
  assert.equal(ulimits.length, LIMIT_ROWS.length - 1);
});

const needs = SUPERVISOR_NEEDS;

Deno.test("socker raises its own soft limits to the hard ones, so soft limits cannot stop the supervisor", () => {
  const changes = planOwnLimits(parseProcLimits(PROC_LIMITS), needs, false);
  assert.deepEqual(changes.find((c) => c.name === "cpu"), { resource: 0, name: "cpu", soft: Infinity, hard: Infinity });
  assert.deepEqual(changes.find((c) => c.name === "fsize"), {
    resource: 1,
    name: "fsize",
    soft: Infinity,
    hard: Infinity,
  });
  assert.equal(changes.find((c) => c.name === "nofile"), undefined, "already at its hard limit");
  assert.equal(changes.find((c) => c.name === "stack"), undefined, "the stack is left at 8 MiB, never unlimited");
  assert.deepEqual(
    planOwnLimits(limits({ stack: { soft: 1 << 20, hard: Infinity } }), needs, false).find((c) => c.name === "stack")
      ?.soft,
    8 << 20,
  );
});

Deno.test("a hard limit below what socker needs is a one-line refusal, unless root may raise it", () => {
  const low = (name: string, value: number) => limits({ [name]: { soft: value, hard: value } });
  refusal(
    () => planOwnLimits(low("cpu", 1), needs, false),
    /^your CPU-time limit \(ulimit -t\) is 1 s; socker needs at least 10 s to supervise the container/,
  );
  refusal(
    () => planOwnLimits(low("nofile", 64), needs, false),
    /your open-files limit \(ulimit -n\) is 64; socker needs at least 128/,
  );
  // Any finite hard file size: the audit log grows with every user's runs.
  refusal(
    () => planOwnLimits(low("fsize", 2 ** 40), needs, false),
    /your file-size limit \(ulimit -f\) is 1073741824 KiB; socker needs it unlimited to supervise the container/,
  );
  assert.deepEqual(planOwnLimits(low("nofile", 64), needs, true).find((c) => c.name === "nofile"), {
    resource: 7,
    name: "nofile",
    soft: 128,
    hard: 128,
  });
});

Deno.test("where root may raise hard limits, socker's own CPU time and file size are unlimited", () => {
  const low = limits({ cpu: { soft: 1, hard: 1 }, fsize: { soft: 8, hard: 8 } });
  const changes = planOwnLimits(low, needs, true);
  assert.deepEqual(changes.find((c) => c.name === "cpu"), { resource: 0, name: "cpu", soft: Infinity, hard: Infinity });
  assert.deepEqual(changes.find((c) => c.name === "fsize"), {
    resource: 1,
    name: "fsize",
    soft: Infinity,
    hard: Infinity,
  });
});

Deno.test("a finite CPU time keeps a reserve, so SIGXCPU comes while socker can still stop the container", () => {
  const cpu = (soft: number, hard: number) =>
    planOwnLimits(limits({ cpu: { soft, hard } }), needs, false).find((c) => c.name === "cpu");
  assert.deepEqual(cpu(10, 10), { resource: 0, name: "cpu", soft: 10 - SUPERVISOR_CPU_RESERVE, hard: 10 });
  assert.deepEqual(cpu(2, 3600), { resource: 0, name: "cpu", soft: 3600 - SUPERVISOR_CPU_RESERVE, hard: 3600 });
  assert.equal(signalAction("SIGXCPU")?.kind, "terminate", "SIGXCPU ends the run like SIGTERM");
  assert.equal(exitCodeFor(0, signalAction("SIGXCPU")!.number), 152);
});

// planRun's rules on limits and the OOM killer: one table row each, a refusal (a pattern of its
// one-line reason) or a check of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  // the OOM killer
  [
    "where socker cannot keep the OOM killer off itself, the container's processes are the OOM killer's first choice",
    run(IMAGE, "id"),
    runFacts({ oomProtected: false }),
    (plan) => {
      assert.equal(plan.oomScoreAdj, 1000);
      assert.equal(
        (containerSpec(plan, plan.mounts.map((m) => m.source)).HostConfig as Record<string, unknown>).OomScoreAdj,
        1000,
      );
    },
  ],
  [
    "where socker keeps the OOM killer off itself, the container keeps the engine's default",
    run(IMAGE, "id"),
    runFacts({ oomProtected: true }),
    (plan) => {
      assert.equal(plan.oomScoreAdj, undefined);
      assert.equal(
        "OomScoreAdj" in (containerSpec(plan, plan.mounts.map((m) => m.source)).HostConfig as object),
        false,
      );
    },
  ],
  // limits
  [
    "the caller's limits go to the container, never raised",
    run(IMAGE, "id"),
    runFacts({ callerLimits: limits({ nproc: { soft: 64, hard: 64 }, cpu: { soft: 30, hard: 60 } }) }),
    (plan) => {
      assert.deepEqual(plan.ulimits.find((u) => u.Name === "nproc"), { Name: "nproc", Soft: 64, Hard: 64 });
      assert.deepEqual(plan.ulimits.find((u) => u.Name === "cpu"), { Name: "cpu", Soft: 30, Hard: 60 });
      assert.deepEqual(plan.ulimits.find((u) => u.Name === "fsize"), { Name: "fsize", Soft: -1, Hard: -1 });
      assert.equal(plan.ulimits.find((u) => u.Name === "as"), undefined, "docker has no address-space limit");
    },
  ],
]);
