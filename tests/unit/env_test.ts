// The pure rules behind a batch script moved into socker: the inherited environment and its precedence,
// /dev/shm and --tmpfs sizes, relative -v, PyTorch's rendezvous variables, the MPI hint, the start command,
// a missing -w in the image, and the settings that turn them on and off.
import assert from "node:assert/strict";
import {
  containerEnvironment,
  DEFAULT_SETTINGS,
  dropImageNames,
  environmentNames,
  expandTasksPerNode,
  imageEnvNames,
  isRelativeSource,
  memoryLimitOf,
  mpiNamespaceHint,
  parseSettings,
  parseTmpfs,
  parseVolume,
  rendezvousVariables,
  resolveRelative,
  type Settings,
  shmBytes,
  sizeBytes,
  startCommand,
  tmpfsMounts,
  withCallerFolder,
  workdirProblem,
} from "../../socker.ts";
import { refusal } from "./facts.ts";

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
  assert.deepEqual(dropImageNames(["A=1", "B=2", "C=3"], ["A", "B"], ["B", "C"]), ["A=1", "C=3"]);
  assert.deepEqual(imageEnvNames({ Config: { Env: ["PATH=/bin", "X=1=2", 3, "bad"] } }), ["PATH", "X"]);
});

Deno.test("rendezvous: RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from Slurm's", () => {
  const step = {
    SLURM_PROCID: "3",
    SLURM_LOCALID: "1",
    SLURM_STEP_NUM_TASKS: "4",
    SLURM_NTASKS: "8",
    SLURM_STEP_TASKS_PER_NODE: "1,3",
    SLURM_NODEID: "1",
    SLURM_STEP_NODELIST: "gpu[07-08]",
    SLURM_JOB_ID: "20000",
  };
  assert.deepEqual(rendezvousVariables(step), {
    RANK: "3",
    LOCAL_RANK: "1",
    WORLD_SIZE: "4",
    LOCAL_WORLD_SIZE: "3",
    MASTER_ADDR: "gpu07",
    MASTER_PORT: String(49152 + 20000 % 16384),
  });
  assert.deepEqual(rendezvousVariables({ SLURM_JOB_ID: "1" }), {}, "not in a step");
  assert.deepEqual(rendezvousVariables({ SLURM_PROCID: "-1" }), {});
  assert.deepEqual(rendezvousVariables({ SLURM_PROCID: "0", SLURM_STEP_NODELIST: "n[1-" }), { RANK: "0" });
  assert.deepEqual(expandTasksPerNode("2(x3),1"), [2, 2, 2, 1]);
  assert.equal(expandTasksPerNode("2(x99999999)"), undefined);
  assert.equal(expandTasksPerNode("x"), undefined);
});

Deno.test("MPI hint: a PMIx step with several ranks here and private namespaces names the settings needed", () => {
  const step = { PMIX_RANK: "0", SLURM_STEP_TASKS_PER_NODE: "2", SLURM_NODEID: "0" };
  assert.match(mpiNamespaceHint(step, settings())!, /2 MPI ranks .* network = host, ipc = host, pid = host/);
  assert.match(mpiNamespaceHint(step, settings({ network: "host" }))!, /for ipc = host, pid = host in/);
  assert.equal(mpiNamespaceHint(step, settings({ network: "host", ipc: "host", pid: "host" })), undefined);
  assert.equal(mpiNamespaceHint({ ...step, SLURM_STEP_TASKS_PER_NODE: "1,2" }, settings()), undefined);
  assert.equal(mpiNamespaceHint({ SLURM_STEP_TASKS_PER_NODE: "2", SLURM_MPI_TYPE: "pmi2" }, settings()), undefined);
  assert.ok(mpiNamespaceHint({ SLURM_STEP_TASKS_PER_NODE: "4", SLURM_MPI_TYPE: "pmix_v3" }, settings()));
});

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

Deno.test("--tmpfs: DST[:size=N] only, bounded, never at or around a mount or a forbidden destination", () => {
  assert.deepEqual(parseTmpfs("/scratch", settings(), undefined), { destination: "/scratch", bytes: 64 << 20 });
  assert.deepEqual(parseTmpfs("/scratch:size=1g", settings(), undefined), { destination: "/scratch", bytes: 1 << 30 });
  refusal(() => parseTmpfs("/scratch:size=2g", settings(), 1 << 30), /exceed the job's memory limit/);
  refusal(() => parseTmpfs("/scratch:exec", settings(), undefined), /only size=N/);
  refusal(() => parseTmpfs("/scratch:size=1g,mode=4777", settings(), undefined), /only size=N/);
  refusal(() => parseTmpfs("scratch", settings(), undefined), /clean absolute path/);
  refusal(() => parseTmpfs("/etc/x", settings(), undefined), /forbidden destination \/etc/);
  refusal(() => tmpfsMounts(["/home/a/t"], settings(), undefined, [{ destination: "/home/a" }]), /overlaps the mount/);
  refusal(() => tmpfsMounts(["/data"], settings(), undefined, [{ destination: "/data/x" }]), /overlaps the mount/);
  refusal(() => tmpfsMounts(["/t", "/t"], settings(), undefined, []), /overlaps the mount at \/t/);
});

Deno.test("-v: ./ and ../ resolve against the caller's folder; a bare name is Docker's named volume, refused", () => {
  assert.deepEqual(["./d", "../d", ".", "..", "d", "/d", ".d"].map(isRelativeSource), [
    true,
    true,
    true,
    true,
    false,
    false,
    false,
  ]);
  assert.equal(resolveRelative("./data/../x/./y", "/home/alice/w"), "/home/alice/w/x/y");
  assert.equal(resolveRelative("../../../..", "/home/a"), "/");
  assert.equal(withCallerFolder(parseVolume("./d:/d:ro"), "/home/a").source, "/home/a/d");
  refusal(() => withCallerFolder(parseVolume("./d:/d"), undefined), /current folder is gone/);
  refusal(() => parseVolume("data:/data"), /named volume .* \.\/data/);
});

Deno.test("start: no COMMAND runs the image's CMD; --entrypoint replaces entrypoint and CMD, '' removes it", () => {
  const image = { Config: { Entrypoint: ["/entry"], Cmd: ["serve"] } };
  assert.deepEqual(startCommand(image, undefined, [], "i"), { entrypoint: ["/entry"], cmd: ["serve"] });
  assert.deepEqual(startCommand(image, undefined, ["x"], "i"), { entrypoint: ["/entry"], cmd: ["x"] });
  assert.deepEqual(startCommand(image, "", ["x"], "i"), { entrypoint: [], cmd: ["x"] });
  assert.deepEqual(startCommand(image, "/bin/prog", [], "i"), { entrypoint: ["/bin/prog"], cmd: [] });
  refusal(() => startCommand(image, "", [], "img"), /image img has no CMD or ENTRYPOINT of its own: give a COMMAND/);
  refusal(() => startCommand({}, undefined, [], "img"), /give a COMMAND/);
});

Deno.test("-w: a folder missing in the image is refused as pyxis does; a folder or the image's symlink is fine", () => {
  assert.match(workdirProblem("/x", "missing", "img")!, /^-w \/x: No such file or directory in image img/);
  assert.match(workdirProblem("/x", "whiteout", "img")!, /No such file or directory/);
  assert.match(workdirProblem("/x", "other", "img")!, /Not a directory/);
  for (const found of ["dir", "opaque", "symlink"] as const) {
    assert.equal(workdirProblem("/x", found, "img"), undefined);
  }
});
