// Unit tests of the container's environment: the caller's variables and -e, env_deny, env_pass and env_set,
// the inherited environment and its precedence (a batch script moved into socker), and its bounds.
import assert from "node:assert/strict";
import {
  containerEnvironment,
  DEFAULT_SETTINGS,
  environmentNames,
  imageEnvNames,
  matchesPattern,
  planRun,
  type Settings,
} from "../../socker.ts";
import { env, IMAGE, IMAGE_ID, inJob, planTests, refusal, run, runFacts, settingsFile } from "./facts.ts";

const alice = { user: "alice", home: "/home/alice" };
const settings = (over: Partial<Settings> = {}): Settings => ({ ...DEFAULT_SETTINGS, ...over });
const asMap = (entries: string[]) =>
  Object.fromEntries(entries.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));

Deno.test("environment: the caller's passes by default, never PATH, LD_*, HOME, SHELL, PWD, SUDO_* or env_deny", () => {
  const caller = {
    FOO: "bar",
    OMP_NUM_THREADS: "4",
    PATH: "/evil",
    LD_PRELOAD: "/x.so",
    HOME: "/evil",
    SHELL: "/bin/bash",
    PWD: "/x",
    OLDPWD: "/y",
    SUDO_USER: "root",
    _: "/usr/bin/srun",
    SECRET: "s",
    "BAD-NAME": "x",
  };
  const env = asMap(containerEnvironment([], caller, alice, settings({ envDeny: ["SECRET"] }), false));
  assert.deepEqual(env, { HOME: "/home/alice", USER: "alice", LOGNAME: "alice", FOO: "bar", OMP_NUM_THREADS: "4" });
  const off = asMap(containerEnvironment([], caller, alice, settings({ envInherit: false }), false));
  assert.deepEqual(Object.keys(off), ["HOME", "USER", "LOGNAME"]);
});

Deno.test("environment: the image's ENV wins over inherited, -e over both, env_set over all; TERM always passes", () => {
  const caller = { IMAGE_VAR: "host", TERM: "vt220", SITE: "mine" };
  const more = { imageNames: ["IMAGE_VAR", "PATH"] };
  const s = settings({ envSet: { SITE: "admin" } });
  assert.deepEqual(asMap(containerEnvironment([], caller, alice, s, false, more)).IMAGE_VAR, undefined);
  assert.equal(asMap(containerEnvironment(["IMAGE_VAR=e"], caller, alice, s, false, more)).IMAGE_VAR, "e");
  assert.equal(asMap(containerEnvironment(["IMAGE_VAR"], caller, alice, s, false, more)).IMAGE_VAR, "host");
  assert.equal(asMap(containerEnvironment([], caller, alice, s, false, more)).SITE, "admin");
  assert.equal(asMap(containerEnvironment([], caller, alice, settings({ envInherit: false }), false)).TERM, "vt220");
});

Deno.test("environment: outside a job the job's variables are not inherited; inside they are", () => {
  const caller = { SLURM_JOB_ID: "7", PMIX_RANK: "0" };
  assert.deepEqual(Object.keys(asMap(containerEnvironment([], caller, alice, settings(), false))), [
    "HOME",
    "USER",
    "LOGNAME",
  ]);
  assert.equal(asMap(containerEnvironment([], caller, alice, settings(), true)).SLURM_JOB_ID, "7");
});

Deno.test("environment: past 1024 variables, 128 KiB a value or 1 MiB in all, a refusal names the bound", () => {
  const many = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [`V${i}`, "1"]));
  refusal(() => containerEnvironment([], many, alice, settings(), false), /bound of 1024 variables/);
  refusal(
    () => containerEnvironment([], { BIG: "x".repeat(131073) }, alice, settings(), false),
    /BIG holds 131073 bytes, more than the 131072 bytes a variable may pass/,
  );
  const big = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`B${i}`, "x".repeat(120_000)]));
  refusal(() => containerEnvironment([], big, alice, settings(), false), /at most 1048576 bytes in all/);
});

Deno.test("environment: derived variables yield to the caller's and to -e; names only for the audit", () => {
  const derived = { RANK: "1", MASTER_ADDR: "n1" };
  const env = containerEnvironment(["MASTER_ADDR=x"], { RANK: "9" }, alice, settings(), true, { derived });
  assert.deepEqual([asMap(env).RANK, asMap(env).MASTER_ADDR], ["9", "x"]);
  assert.deepEqual(environmentNames(["A=1", "B==2", "C="]), ["A", "B", "C"]);
  // After a pull runCommand decides again from the pulled image's record: its ENV names win over inherited ones.
  const pulled = { Id: IMAGE_ID, Config: { Env: ["B=image", "C=image"] } };
  const names = environmentNames(
    planRun(run(IMAGE, "true"), runFacts({ callerEnv: { A: "1", B: "2" }, image: pulled })).env,
  );
  assert.deepEqual([names.includes("A"), names.includes("B")], [true, false]);
  assert.deepEqual(imageEnvNames({ Config: { Env: ["PATH=/bin", "X=1=2", 3, "bad"] } }), ["PATH", "X"]);
});

Deno.test("environment: caller's HOME/USER/LOGNAME, -e values, env_deny refused, env_set wins", () => {
  const settings = {
    ...DEFAULT_SETTINGS,
    envSet: { SITE: "x", FOO: "admin" },
    envDeny: ["LD_PRELOAD"],
    envInherit: false,
  };
  const env = containerEnvironment(
    ["FOO=1", "BAR", "GONE", "A=b=c"],
    { BAR: "from-caller" },
    { user: "alice", home: "/home/alice" },
    settings,
    false,
  );
  assert.deepEqual(env, [
    "HOME=/home/alice",
    "USER=alice",
    "LOGNAME=alice",
    "FOO=admin",
    "BAR=from-caller",
    "A=b=c",
    "SITE=x",
  ]);
  refusal(
    () => containerEnvironment(["LD_PRELOAD=/x.so"], {}, { user: "a" }, settings, false),
    /never lets LD_PRELOAD/,
  );
  refusal(() => containerEnvironment(["1X=2"], {}, { user: "a" }, settings, false), /not a variable name/);
  refusal(() => containerEnvironment(["BAR"], undefined, { user: "a" }, settings, false), /give -e BAR=VALUE/);
  for (const name of ["HOME", "USER", "LOGNAME"]) {
    refusal(
      () => containerEnvironment([`${name}=x`], {}, { user: "a" }, settings, false),
      new RegExp(`${name} is always yours`),
    );
  }
  refusal(
    () => containerEnvironment(["X=" + "y".repeat(1 << 20)], {}, { user: "a" }, DEFAULT_SETTINGS, false),
    /at most 1048576/,
  );
  assert.deepEqual(containerEnvironment([], {}, { user: "a" }, DEFAULT_SETTINGS, false)[0], "HOME=/");
  assert.deepEqual(
    containerEnvironment(["__proto__=1"], {}, { user: "a" }, DEFAULT_SETTINGS, false).at(-1),
    "__proto__=1",
  );
});

Deno.test("env_pass patterns match whole names, * and ? only", () => {
  assert.ok(matchesPattern("OMP_NUM_THREADS", "OMP_*"));
  assert.ok(matchesPattern("NCCL_X", "NCCL_?"));
  assert.ok(!matchesPattern("NCCL_XY", "NCCL_?"));
  assert.ok(!matchesPattern("XOMP_A", "OMP_*"));
  assert.ok(matchesPattern("ANY", "*"));
});

// planRun's rules on the environment: one table row each, a refusal (a pattern of its one-line reason) or a check
// of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  [
    "-e HOME, USER or LOGNAME is refused: they are always the caller's",
    run("-e", "HOME=/tmp", IMAGE, "id"),
    runFacts(),
    /-e HOME: HOME is always yours/,
  ],
  [
    "-e LOGNAME without a value is refused too",
    run("-e", "LOGNAME", IMAGE, "id"),
    runFacts(),
    /-e LOGNAME: LOGNAME is always yours/,
  ],
  [
    "env_deny refuses -e",
    run("-e", "LD_PRELOAD=/x.so", IMAGE, "id"),
    runFacts({ settings: settingsFile("env_deny = LD_PRELOAD") }),
    /never lets LD_PRELOAD/,
  ],
  [
    "-e NAME takes the caller's value, env_set wins",
    run("-e", "FOO", "-e", "SITE=mine", IMAGE, "id"),
    runFacts({ settings: settingsFile("env_set = SITE=hpc") }),
    (plan) => {
      assert.deepEqual([env(plan).FOO, env(plan).SITE, env(plan).HOME, env(plan).USER], [
        "bar",
        "hpc",
        "/home/alice",
        "alice",
      ]);
    },
  ],
  [
    "inside a job the step's SLURM, PMI and PMIx variables reach the container",
    run(IMAGE, "id"),
    inJob({
      settings: settingsFile("env_inherit = no"),
      callerEnv: { SLURM_PROCID: "1", PMIX_RANK: "1", PMI_SIZE: "2", OMP_NUM_THREADS: "4", PATH: "/evil" },
    }),
    (plan) => {
      assert.deepEqual([env(plan).SLURM_PROCID, env(plan).PMIX_RANK, env(plan).PMI_SIZE], ["1", "1", "2"]);
      assert.equal(env(plan).OMP_NUM_THREADS, undefined, "not passed unless the administrator says so");
      assert.equal(env(plan).PATH, undefined);
    },
  ],
  [
    "outside a job no SLURM variable passes",
    run(IMAGE, "id"),
    runFacts({ callerEnv: { SLURM_PROCID: "1" } }),
    (plan) => assert.equal(env(plan).SLURM_PROCID, undefined),
  ],
  [
    "env_pass passes the administrator's patterns, never PATH, LD_* or the caller's names",
    run(IMAGE, "id"),
    runFacts({
      settings: settingsFile("env_pass = OMP_* NCCL_? * \n"),
      callerEnv: { OMP_NUM_THREADS: "4", NCCL_X: "1", LD_LIBRARY_PATH: "/x", PATH: "/x", HOME: "/evil", USER: "root" },
    }),
    (plan) => {
      assert.deepEqual([env(plan).OMP_NUM_THREADS, env(plan).NCCL_X], ["4", "1"]);
      assert.deepEqual([env(plan).LD_LIBRARY_PATH, env(plan).PATH, env(plan).HOME, env(plan).USER], [
        undefined,
        undefined,
        "/home/alice",
        "alice",
      ]);
    },
  ],
  [
    "env_deny wins over the job's variables",
    run(IMAGE, "id"),
    inJob({ settings: settingsFile("env_deny = SLURM_PROCID"), callerEnv: { SLURM_PROCID: "1", SLURM_NTASKS: "2" } }),
    (plan) => {
      assert.deepEqual([env(plan).SLURM_PROCID, env(plan).SLURM_NTASKS], [undefined, "2"]);
    },
  ],
  [
    "a caller environment beyond the bounds is refused",
    run(IMAGE, "id"),
    inJob({ callerEnv: Object.fromEntries(Array.from({ length: 1100 }, (_, i) => [`SLURM_X${i}`, "1"])) }),
    /more than 1024 of your variables/,
  ],
]);
