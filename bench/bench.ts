// socker's benchmarks: prints tables of measured figures (not a test; nothing here passes or fails).
//   sudo deno run --allow-all bench/bench.ts [--pairs N] [--cancels N] [--scale N] [--no-slurm] [--no-mpi]
//   sudo deno run --allow-all bench/bench.ts --steps [--rounds N]
//   sudo deno run --allow-all bench/bench.ts --podman [--pairs N]   (after install.sh --engine podman)
// Needs what `sudo tests/run.sh` sets up: the installed socker, the test users and images (the OpenMPI one
// for the MPI figures), the two-node Slurm cluster, and the test images in the allowlist.
//
// 1. Overhead: `socker run IMG true` as alice against plain `docker run` with the same options (read from
//    `socker -v`), interleaved pair by pair; wall time and the CPU time of the whole process tree of the
//    command (getrusage of the children: the engine's own work is not counted, for either).
// 2. Profile: where socker's time goes (Deno's start, sudo and the launcher, socker's own reading and
//    deciding, the engine), each part measured the same way.
// 3. Cleanup: SIGTERM to socker until its container is gone; scancel until it is gone.
// 4. socker's own peak memory (the privileged Deno process and sudo) while a container runs.
// 4b. The supervisor's RSS after N GB of a container's output (issue 17); SIGKILL of a supervisor until its
//    container is gone (issue 19: the node's watcher).
// 5. Scale: N concurrent `socker run` on this node, and an N-task Slurm job array; every exit code and
//    output checked, and nothing left behind.
// 6. MPI (issue 10): ping-pong between two nodes natively and through socker, interleaved (8 B latency and
//    1 MiB bandwidth, medians, ratios); the start-up of an N-rank step, native and through socker. A rank
//    that fails ends its job at once (--kill-on-bad-exit), never at its time limit.
// --steps (issue 21) prints only this: the start-up of N-rank steps (N = 2..32, two nodes, --overcommit) in
//    one held allocation: native srun, socker with one container per task (share = none), socker with step
//    containers (share = step); interleaved round by round, medians, and the cost of each extra rank.
import { parseArgs } from "node:util";
import { engineList, parseProcLimits, ulimitsWithin } from "../socker.ts";

const { values } = parseArgs({
  options: {
    scale: { type: "string", default: "50" },
    pairs: { type: "string", default: "25" },
    cancels: { type: "string", default: "10" },
    "output-gb": { type: "string", default: "1,4" },
    "no-slurm": { type: "boolean", default: false },
    "no-mpi": { type: "boolean", default: false },
    steps: { type: "boolean", default: false },
    rounds: { type: "string", default: "3" },
    podman: { type: "boolean", default: false },
  },
});
const PAIRS = Number(values.pairs);
const CANCELS = Number(values.cancels);
const SCALE = Number(values.scale);
const IMAGE = "socker-test/busybox:2";
const MPI_IMAGE = "socker-test/openmpi:1";
const MPI = "/opt/socker-tests/mpi";
const SOCKER = "/usr/local/bin/socker";
const DENO = "/usr/local/lib/socker/deno";
const DOCKER = "/usr/bin/docker";

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (x: number) => `${x.toFixed(0)} ms`;
const ms1 = (x: number) => `${x.toFixed(1)} ms`;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

/** The CPU time (user + system, ms) of every child this process has waited for, and theirs. */
const libc = Deno.dlopen("libc.so.6", { getrusage: { parameters: ["i32", "buffer"], result: "i32" } }).symbols;
function childrenCpu(): number {
  const usage = new BigInt64Array(18); // struct rusage: ru_utime, ru_stime (timevals) first
  libc.getrusage(-1, new Uint8Array(usage.buffer)); // RUSAGE_CHILDREN
  return Number(usage[0] + usage[2]) * 1000 + Number(usage[1] + usage[3]) / 1000;
}

/** A shell line as a user (their groups, a login-like environment), or as root when user is "root". */
function shell(user: string, line: string): Deno.Command {
  const env = ["PATH=/usr/local/bin:/usr/bin:/bin", `HOME=/home/${user}`, `USER=${user}`, `LOGNAME=${user}`];
  const args = user === "root"
    ? ["/usr/bin/env", "-i", ...env, "/bin/sh", "-c", line]
    : [`--reuid=${user}`, `--regid=${user}`, "--init-groups", "/usr/bin/env", "-i", ...env, "/bin/sh", "-c", line];
  return new Deno.Command(user === "root" ? args[0] : "/usr/bin/setpriv", {
    args: user === "root" ? args.slice(1) : args,
    cwd: "/tmp",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs a command; its wall time and the CPU time of its whole process tree. */
async function measured(command: Deno.Command, allowFailure = false): Promise<{ wall: number; cpu: number }> {
  const cpu = childrenCpu();
  const start = performance.now();
  const output = await command.output();
  const wall = performance.now() - start;
  if (!output.success && !allowFailure) throw new Error(new TextDecoder().decode(output.stderr));
  return { wall, cpu: childrenCpu() - cpu };
}

/**
 * The CPU time every process on the machine used so far (user, nice, system, irq, softirq, steal from
 * /proc/stat, all cores; ms at the kernel's 100 ticks a second): the engine's, runc's and Slurm's included,
 * which a command's own rusage never sees.
 */
function machineBusy(): number {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields;
  return (user + nice + system + irq + softirq + steal) * 10;
}

async function containersWith(label: string): Promise<number> {
  return (await engineList([label])).length;
}

async function waitUntil(probe: () => Promise<boolean>, timeoutMs: number, stepMs = 10): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < timeoutMs) {
    if (await probe()) return performance.now() - start;
    await sleep(stepMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms`);
}

/** Whether Slurm's queue no longer lists the job (or any task of an array job). */
async function jobLeftQueue(job: string): Promise<boolean> {
  const out = await new Deno.Command("/usr/bin/squeue", { args: ["-h", "-j", job] }).output();
  return new TextDecoder().decode(out.stdout).trim() === "";
}

function table(title: string, rows: string[][]): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(`\n${title}`);
  for (const row of rows) console.log("  " + row.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd());
}

const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

/** The docker CLI's options for what socker asks the engine for (its create request, from `socker -v`). */
function cliOptions(spec: Record<string, unknown> & { HostConfig: Record<string, unknown> }, name: string): string[] {
  const host = spec.HostConfig as Record<string, unknown> & {
    Mounts: { Source: string; Target: string; ReadOnly: boolean }[];
    Ulimits: { Name: string; Soft: number; Hard: number }[];
    GroupAdd: string[];
  };
  const limit = (n: number) => (n < 0 ? "-1" : String(n));
  return [
    "run",
    "--rm",
    "--init",
    "--pull=never",
    "--name",
    name,
    ...Object.entries(spec.Labels as Record<string, string>).flatMap(([k, v]) => ["--label", `${k}=${v}`]),
    "--user",
    String(spec.User),
    ...host.GroupAdd.flatMap((g) => ["--group-add", g]),
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--log-driver",
    "none",
    "--network",
    String(host.NetworkMode),
    // socker's staging paths are bind mounts of the checked folders: plain docker mounts the folders.
    ...host.Mounts.flatMap((
      m,
    ) => ["--mount", `type=bind,source=${m.Target},target=${m.Target}${m.ReadOnly ? ",readonly" : ""}`]),
    ...(spec.WorkingDir ? ["--workdir", String(spec.WorkingDir)] : []),
    ...(spec.Env as string[]).flatMap((e) => ["--env", e]),
    ...host.Ulimits.flatMap((u) => ["--ulimit", `${u.Name}=${limit(u.Soft)}:${limit(u.Hard)}`]),
    String(spec.Image),
    ...(spec.Cmd as string[]),
  ];
}

// ---- machine
const cpuName = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
const version = new TextDecoder().decode(
  (await new Deno.Command(DOCKER, { args: ["version", "--format", "{{.Server.Version}}"] }).output()).stdout,
).trim();
console.log(
  `machine: ${cpuName}, ${navigator.hardwareConcurrency} cores; Docker ${version}; Deno ${Deno.version.deno}`,
);

// ---- --steps: start-up of N-rank steps, native and through socker with and without step containers
if (values.steps) {
  const ROUNDS = Number(values.rounds);
  const SIZES = [2, 4, 8, 16, 32];
  const alloc = await shell("alice", "salloc --no-shell -N2 -n32 --overcommit 2>&1").output();
  const jobId = /allocation (\d+)/.exec(new TextDecoder().decode(alloc.stdout))?.[1];
  if (jobId === undefined) throw new Error(`no allocation: ${new TextDecoder().decode(alloc.stdout)}`);
  const settings = (share: string) =>
    Deno.writeTextFileSync("/etc/socker/socker.conf", `share = ${share}\n`, { mode: 0o644 });
  const kinds = [
    { name: "native srun", share: "step", line: "true" },
    { name: "socker, share = none", share: "none", line: `socker run ${IMAGE} true` },
    { name: "socker, share = step", share: "step", line: `socker run ${IMAGE} true` },
  ];
  const times = new Map<string, number[]>();
  const busy = new Map<string, number[]>();
  const load: string[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const n of SIZES) {
        // Interleaved: the order of the three kinds turns with each round.
        for (const k of [0, 1, 2].map((i) => kinds[(i + round) % 3])) {
          settings(k.share);
          const before = machineBusy();
          const { wall } = await measured(shell("alice", `srun --jobid=${jobId} -n${n} --overcommit ${k.line}`));
          const key = `${k.name}/${n}`;
          times.set(key, [...(times.get(key) ?? []), wall]);
          busy.set(key, [...(busy.get(key) ?? []), machineBusy() - before]);
        }
      }
      load.push(Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" "));
    }
  } finally {
    try {
      Deno.removeSync("/etc/socker/socker.conf");
    } catch { /* none */ }
    await shell("root", `scancel ${jobId}`).output();
  }
  const m = (kind: string, n: number) => median(times.get(`${kind}/${n}`) ?? []);
  const rows = [["ranks", ...kinds.map((k) => k.name)]];
  for (const n of SIZES) rows.push([String(n), ...kinds.map((k) => ms(m(k.name, n)))]);
  rows.push(["per extra rank (2 -> 32)", ...kinds.map((k) => ms1((m(k.name, 32) - m(k.name, 2)) / 30))]);
  rows.push(["16 ranks / 2 ranks", ...kinds.map((k) => (m(k.name, 16) / m(k.name, 2)).toFixed(2))]);
  table(
    `Start-up of an N-rank step on two nodes (salloc -N2 --overcommit; ${ROUNDS} interleaved rounds, medians; ` +
      `load average after each round: ${load.join(" | ")}; CPUs: ${navigator.hardwareConcurrency})`,
    rows,
  );
  // Where the time goes: with N tasks on two CPUs a step is CPU-bound, so its CPU time (every process on
  // the machine: socker, sudo, Deno, the engine, containerd, runc, Slurm) bounds its wall time from below.
  const c = (kind: string, n: number) => median(busy.get(`${kind}/${n}`) ?? []);
  const cpuRows = [["ranks", ...kinds.map((k) => k.name)]];
  for (const n of SIZES) cpuRows.push([String(n), ...kinds.map((k) => ms(c(k.name, n)))]);
  cpuRows.push(["CPU per extra rank (2 -> 32)", ...kinds.map((k) => ms1((c(k.name, 32) - c(k.name, 2)) / 30))]);
  cpuRows.push([
    "CPU / 2 CPUs vs wall, 16 ranks",
    ...kinds.map((k) => `${ms(c(k.name, 16) / navigator.hardwareConcurrency)} / ${ms(m(k.name, 16))}`),
  ]);
  table("CPU time of the whole machine during each step (medians; all processes, all cores)", cpuRows);
  Deno.exit(0);
}

// ---- --podman (issue 23): socker on Podman against plain `podman run` with the same options, and socker
// on Podman against socker on Docker; every kind in turn (the order turns each round), medians. socker.conf's
// engine is switched for each run (and removed at the end, as --steps does); plain podman is Podman's CLI
// as root (it runs the container itself, without the API service), with socker's create request's options.
if (values.podman) {
  const PODMAN = "/usr/bin/podman";
  const engine = (name: string) =>
    Deno.writeTextFileSync("/etc/socker/socker.conf", `engine = ${name}\n`, { mode: 0o644 });
  const serviceLimits = () => {
    const pid = new TextDecoder().decode(
      new Deno.Command("/usr/bin/pgrep", { args: ["-f", "-o", "podman .*system service"] }).outputSync().stdout,
    ).trim();
    return parseProcLimits(Deno.readTextFileSync(`/proc/${pid}/limits`));
  };
  const runs = new Map<string, { wall: number; cpu: number }[]>();
  const kinds: { name: string; engine: string; run: (i: number) => Deno.Command }[] = [];
  try {
    engine("podman");
    const verbose = await shell("alice", `exec ${SOCKER} -v run ${IMAGE} true`).output();
    const specLine = new TextDecoder().decode(verbose.stderr).split("\n")[0];
    const spec = JSON.parse(specLine.slice(specLine.indexOf("{")));
    // As socker's engine client sends it to Podman: the image by Podman's name, limits within the service's.
    spec.Image = `localhost/${IMAGE}`;
    spec.HostConfig.Ulimits = ulimitsWithin(spec.HostConfig.Ulimits, serviceLimits());
    const plainLine = (i: number) =>
      // Podman's CNI bridge runs iptables, from /usr/sbin (the service has it on its PATH).
      `PATH=/usr/sbin:/sbin:$PATH exec ${PODMAN} ${
        cliOptions(spec, `bench-podman-${Deno.pid}-${i}`).map(quote).join(" ")
      }`;
    kinds.push(
      { name: "plain podman run (same options)", engine: "podman", run: (i) => shell("root", plainLine(i)) },
      { name: "socker run on Podman", engine: "podman", run: () => shell("alice", `exec ${SOCKER} run ${IMAGE} true`) },
      { name: "socker run on Docker", engine: "docker", run: () => shell("alice", `exec ${SOCKER} run ${IMAGE} true`) },
    );
    for (const k of kinds) { // warm every path
      engine(k.engine);
      await measured(k.run(-1));
    }
    for (let i = 0; i < PAIRS; i++) {
      for (const k of [0, 1, 2].map((j) => kinds[(j + i) % 3])) {
        engine(k.engine);
        runs.set(k.name, [...(runs.get(k.name) ?? []), await measured(k.run(i))]);
      }
    }
  } finally {
    try {
      Deno.removeSync("/etc/socker/socker.conf");
    } catch { /* none */ }
  }
  const version = new TextDecoder().decode(
    (await new Deno.Command(PODMAN, { args: ["version", "--format", "{{.Server.Version}}"] }).output()).stdout,
  ).trim();
  const walls = (name: string) => runs.get(name)!.map((r) => r.wall);
  const cpus = (name: string) => runs.get(name)!.map((r) => r.cpu);
  const pairs = (a: string, b: string, of: (name: string) => number[]) => median(of(a).map((x, i) => x - of(b)[i]));
  const [plainP, sockerP, sockerD] = kinds.map((k) => k.name);
  table(`Podman ${version}: ${PAIRS} interleaved rounds of 'run ${IMAGE} true' (CPU: the command's process tree)`, [
    ["", "wall median", "wall min", "wall max", "CPU median"],
    ...kinds.map((k) => [
      k.name,
      ms(median(walls(k.name))),
      ms(Math.min(...walls(k.name))),
      ms(Math.max(...walls(k.name))),
      ms(median(cpus(k.name))),
    ]),
    [
      "socker on Podman - plain podman (median of pairs)",
      ms(pairs(sockerP, plainP, walls)),
      "",
      "",
      ms(pairs(sockerP, plainP, cpus)),
    ],
    [
      "socker on Podman - socker on Docker (median of pairs)",
      ms(pairs(sockerP, sockerD, walls)),
      "",
      "",
      ms(pairs(sockerP, sockerD, cpus)),
    ],
  ]);
  Deno.exit(0);
}

// ---- 1. overhead
const verbose = await shell("alice", `exec ${SOCKER} -v run ${IMAGE} true`).output();
const specLine = new TextDecoder().decode(verbose.stderr).split("\n")[0];
const spec = JSON.parse(specLine.slice(specLine.indexOf("{")));
const plainLine = (i: number) =>
  `exec ${DOCKER} ${cliOptions(spec, `bench-plain-${Deno.pid}-${i}`).map(quote).join(" ")}`;
await measured(shell("alice", `exec ${SOCKER} run ${IMAGE} true`)); // warm both paths
await measured(shell("root", plainLine(-1)));
const socker: { wall: number; cpu: number }[] = [];
const plain: { wall: number; cpu: number }[] = [];
for (let i = 0; i < PAIRS; i++) {
  // Alternate which goes first, so that neither always runs on a warmer engine.
  const runSocker = async () => socker.push(await measured(shell("alice", `exec ${SOCKER} run ${IMAGE} true`)));
  const runPlain = async () => plain.push(await measured(shell("root", plainLine(i))));
  if (i % 2 === 0) {
    await runSocker();
    await runPlain();
  } else {
    await runPlain();
    await runSocker();
  }
}
const wallS = median(socker.map((r) => r.wall)), wallP = median(plain.map((r) => r.wall));
const cpuS = median(socker.map((r) => r.cpu)), cpuP = median(plain.map((r) => r.cpu));
table(`Overhead: ${PAIRS} interleaved pairs of 'run ${IMAGE} true' (CPU: the command's whole process tree)`, [
  ["", "wall median", "wall min", "wall max", "CPU median"],
  [
    "plain docker run (same options)",
    ms(wallP),
    ms(Math.min(...plain.map((r) => r.wall))),
    ms(Math.max(...plain.map((r) => r.wall))),
    ms(cpuP),
  ],
  [
    "socker run",
    ms(wallS),
    ms(Math.min(...socker.map((r) => r.wall))),
    ms(Math.max(...socker.map((r) => r.wall))),
    ms(cpuS),
  ],
  [
    "difference (median of pairs)",
    ms(median(socker.map((r, i) => r.wall - plain[i].wall))),
    "",
    "",
    ms(median(socker.map((r, i) => r.cpu - plain[i].cpu))),
  ],
  ["ratio of medians", (wallS / wallP).toFixed(3), "", "", (cpuS / cpuP).toFixed(3)],
]);

// ---- 2. profile: each part on its own, 15 runs each, medians
Deno.writeTextFileSync("/tmp/bench-empty.ts", "export {};\n");
const DENO_RUN = `${DENO} run --quiet --no-config --no-lock --no-remote --no-npm --cached-only --allow-all`;
const parts: [string, string, string][] = [
  [
    "Deno's start (an empty module)",
    "root",
    `exec env -i DENO_DIR=/usr/local/lib/socker/deno-dir ${DENO_RUN} /tmp/bench-empty.ts`,
  ],
  [
    "+ socker.ts loaded (--version)",
    "root",
    `exec env -i DENO_DIR=/usr/local/lib/socker/deno-dir ${DENO_RUN} /usr/local/lib/socker/socker.ts --version`,
  ],
  ["+ launcher, sudo, entry point", "alice", `exec ${SOCKER} --version`],
  ["+ reading and deciding (refused: image absent)", "alice", `exec ${SOCKER} run socker-test/absent:1 true`],
  ["+ the container (the whole run)", "alice", `exec ${SOCKER} run ${IMAGE} true`],
  ["the docker CLI alone (docker version)", "root", `exec ${DOCKER} version >/dev/null`],
];
const profile: string[][] = [["part", "wall median", "CPU median"]];
for (const [name, user, line] of parts) {
  const runs = [];
  for (let i = 0; i < 15; i++) runs.push(await measured(shell(user, line), true));
  profile.push([name, ms1(median(runs.map((r) => r.wall))), ms1(median(runs.map((r) => r.cpu)))]);
}
table("Profile: each part measured alone (15 runs, medians; each line includes the ones above it)", profile);

// ---- 3. cleanup after SIGTERM
const termGone: number[] = [];
const termExit: number[] = [];
for (let i = 0; i < CANCELS; i++) {
  const child = shell("alice", `exec ${SOCKER} run ${IMAGE} sleep 1000`).spawn();
  await waitUntil(async () => (await containersWith("socker.uid=2001")) === 1, 10_000);
  await sleep(200);
  const start = performance.now();
  child.kill("SIGTERM");
  const exited = child.status.then(() => performance.now() - start);
  termGone.push(await waitUntil(async () => (await containersWith("socker.uid=2001")) === 0, 10_000, 5));
  termExit.push(await exited);
  await child.output().catch(() => undefined);
}

// ---- 4. peak memory while a container runs
const memoryChild = shell("alice", `exec ${SOCKER} run ${IMAGE} sleep 3`).spawn();
await waitUntil(async () => (await containersWith("socker.uid=2001")) === 1, 10_000);
await sleep(500);
let denoPeak = 0, sudoPeak = 0;
for (const entry of Deno.readDirSync("/proc")) {
  if (!/^\d+$/.test(entry.name)) continue;
  let cmdline = "", status = "";
  try {
    cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
    status = Deno.readTextFileSync(`/proc/${entry.name}/status`);
  } catch {
    continue;
  }
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  if (/socker\.ts run .*sleep 3/.test(cmdline)) denoPeak = Math.max(denoPeak, hwm);
  if (cmdline.startsWith("/usr/bin/sudo -n -- ") && cmdline.includes("sleep 3")) sudoPeak = Math.max(sudoPeak, hwm);
}
await memoryChild.output();

// ---- scancel under Slurm
const cancelGone: number[] = [];
if (!values["no-slurm"]) {
  for (let i = 0; i < CANCELS; i++) {
    const submit = await shell(
      "alice",
      `printf '#!/bin/sh\\nsrun -n1 socker run ${IMAGE} sleep 1000\\n' | sbatch --parsable --output=/dev/null`,
    ).output();
    const job = new TextDecoder().decode(submit.stdout).trim();
    await waitUntil(async () => (await containersWith(`socker.job=${job}`)) === 1, 60_000, 50);
    await sleep(300);
    const start = performance.now();
    await new Deno.Command("/usr/bin/scancel", { args: [job] }).output();
    await waitUntil(async () => (await containersWith(`socker.job=${job}`)) === 0, 10_000, 5);
    cancelGone.push(performance.now() - start);
    await waitUntil(() => jobLeftQueue(job), 60_000, 200).catch(() => 0);
  }
}
const rows = [
  ["", "median", "worst", "runs"],
  ["SIGTERM to socker -> container gone", ms(median(termGone)), ms(Math.max(...termGone)), String(CANCELS)],
  ["SIGTERM to socker -> socker exited", ms(median(termExit)), ms(Math.max(...termExit)), String(CANCELS)],
];
if (cancelGone.length > 0) {
  rows.push([
    "scancel (srun socker) -> container gone",
    ms(median(cancelGone)),
    ms(Math.max(...cancelGone)),
    String(CANCELS),
  ]);
}
table("Cleanup", rows);
table("Peak memory while a container runs (VmHWM)", [
  ["process", "peak RSS"],
  ["privileged socker (Deno)", `${(denoPeak / 1024).toFixed(1)} MiB`],
  ["sudo", `${(sudoPeak / 1024).toFixed(1)} MiB`],
]);

// ---- 4b. the supervisor's memory over a long chatty run, and SIGKILL of a supervisor
/** The root socker process (Deno or the compiled binary) whose command line holds `mark`. */
function supervisorOf(mark: string): number | undefined {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
      const exe = Deno.readLinkSync(`/proc/${entry.name}/exe`);
      if (cmdline.includes(mark) && /\/(deno|socker-bin)$/.test(exe)) return Number(entry.name);
    } catch { /* gone */ }
  }
  return undefined;
}
const rssMiB = (pid: number) => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
};
const outputRows = [["output", "wall time", "RSS at start", "peak RSS", "growth"]];
for (const gb of values["output-gb"].split(",").map(Number).filter((n) => n > 0)) {
  const mark = `bench-out-${crypto.randomUUID().slice(0, 8)}`;
  const bytes = Math.round(gb * 1e9);
  // 17-byte lines, written by `yes` through `head` in the pipe's chunks: as many writes as the engine frames.
  const child = shell(
    "alice",
    `exec ${SOCKER} run -e M=${mark} ${IMAGE} sh -c 'yes 0123456789abcdef | head -c ${bytes}' >/dev/null`,
  )
    .spawn();
  const start = performance.now();
  let pid: number | undefined;
  await waitUntil(() => Promise.resolve((pid = supervisorOf(mark)) !== undefined), 30_000, 20);
  await sleep(1000);
  const first = pid === undefined ? 0 : rssMiB(pid);
  let peak = first;
  const done = child.status.then(() => true);
  while (!(await Promise.race([done, sleep(200).then(() => false)]))) peak = Math.max(peak, rssMiB(pid!));
  outputRows.push([
    `${gb} GB`,
    ms(performance.now() - start),
    `${first.toFixed(1)} MiB`,
    `${peak.toFixed(1)} MiB`,
    `${(peak - first).toFixed(1)} MiB`,
  ]);
}
table("The supervisor's RSS over a long chatty run (a container writing N GB)", outputRows);
const killGone: number[] = [];
for (let i = 0; i < CANCELS; i++) {
  const mark = `bench-k9-${crypto.randomUUID().slice(0, 8)}`;
  const child = shell("alice", `exec ${SOCKER} run -e M=${mark} ${IMAGE} sleep 1000`).spawn();
  await waitUntil(async () => (await containersWith("socker.uid=2001")) === 1, 10_000);
  await sleep(200);
  const pid = supervisorOf(mark);
  const start = performance.now();
  if (pid !== undefined) Deno.kill(pid, "SIGKILL");
  const gone = await waitUntil(async () => (await containersWith("socker.uid=2001")) === 0, 15_000, 5).catch(() => -1);
  killGone.push(gone < 0 ? NaN : performance.now() - start);
  await child.output().catch(() => undefined);
}
table("SIGKILL of a supervisor -> container gone (the node's watcher)", [
  ["", "median", "worst", "runs"],
  ["kill -9 of socker -> container gone", ms(median(killGone)), ms(Math.max(...killGone)), String(CANCELS)],
]);

// ---- 5. scale
const leftovers = async (jobs: string[] = []) => {
  const containers = await containersWith("socker.managed=true");
  let staging = 0;
  try {
    staging = [...Deno.readDirSync("/run/socker")].length;
  } catch { /* none */ }
  let folders = 0;
  for (const job of jobs) {
    const found = await new Deno.Command("/usr/bin/find", {
      args: ["/sys/fs/cgroup", "-maxdepth", "5", "-type", "d", "-name", `job_${job}`],
    }).output();
    folders += new TextDecoder().decode(found.stdout).split("\n").filter((l) => l !== "").length;
  }
  return `${containers} containers, ${staging} staging folders, ${folders} job cgroup folders`;
};
const scaleStart = performance.now();
const results = await Promise.all(Array.from({ length: SCALE }, async (_, i) => {
  const output = await shell("alice", `exec ${SOCKER} run ${IMAGE} sh -c 'echo task-${i}; exit ${i % 7}'`).output();
  return output.code === i % 7 && new TextDecoder().decode(output.stdout) === `task-${i}\n`;
}));
const scaleRows = [
  ["", "succeeded", "wall time", "left behind"],
  [
    `${SCALE} concurrent socker run`,
    `${results.filter(Boolean).length}/${SCALE}`,
    ms(performance.now() - scaleStart),
    await leftovers(),
  ],
];
if (!values["no-slurm"]) {
  const arrayStart = performance.now();
  const submit = await shell(
    "alice",
    `printf '#!/bin/sh\\nsrun -n1 socker run ${IMAGE} sh -c "echo task-$SLURM_ARRAY_TASK_ID; exit $((SLURM_ARRAY_TASK_ID %% 7))"; echo "rc=$?"\\n' | ` +
      `sbatch --parsable --array=1-${SCALE} --output=/home/alice/bench-%A_%a.out`,
  ).output();
  const arrayJob = new TextDecoder().decode(submit.stdout).trim();
  await waitUntil(() => jobLeftQueue(arrayJob), 900_000, 500);
  await sleep(2000); // the last Epilogs
  let good = 0;
  for (let task = 1; task <= SCALE; task++) {
    const file = `/home/alice/bench-${arrayJob}_${task}.out`;
    const text = Deno.readTextFileSync(file);
    if (text.includes(`task-${task}\n`) && text.includes(`rc=${task % 7}\n`)) good++;
    Deno.removeSync(file);
  }
  scaleRows.push([
    `${SCALE}-task Slurm job array (2 one-CPU nodes)`,
    `${good}/${SCALE}`,
    ms(performance.now() - arrayStart),
    await leftovers([arrayJob]),
  ]);
}
table("Scale", scaleRows);

// ---- 6. MPI
if (!values["no-slurm"] && !values["no-mpi"]) {
  Deno.writeTextFileSync(
    "/etc/socker/socker.conf",
    "network = host\nipc = host\npid = host\nenv_set = OMPI_MCA_btl_tcp_if_exclude=127.0.0.1/8,docker0\n" +
      "env_set = OMPI_MCA_btl_vader_single_copy_mechanism=none\n",
    { mode: 0o644 },
  );
  try {
    /** Runs a batch job as alice and returns its output. */
    const job = async (script: string, options: string) => {
      const submit = await shell(
        "alice",
        `printf '#!/bin/sh\\n%s\\n' ${
          quote(script)
        } | sbatch --parsable ${options} --output=/home/alice/bench-mpi-%j.out`,
      ).output();
      const id = new TextDecoder().decode(submit.stdout).trim();
      await waitUntil(() => jobLeftQueue(id), 600_000, 200);
      const file = `/home/alice/bench-mpi-${id}.out`;
      const text = Deno.readTextFileSync(file);
      Deno.removeSync(file);
      return text;
    };
    const pingpong = (text: string) => {
      const match = /lat_8B_us=([\d.]+) bw_1MiB_MBps=([\d.]+) check_1MiB=ok/.exec(text);
      if (!match) throw new Error(`no ping-pong result: ${text}`);
      return { lat: Number(match[1]), bw: Number(match[2]) };
    };
    const native: { lat: number; bw: number }[] = [];
    const inSocker: { lat: number; bw: number }[] = [];
    for (let i = 0; i < 5; i++) {
      const nativeRun = async () =>
        native.push(pingpong(await job(`srun --mpi=pmix -K1 -N2 -n2 ${MPI}/pingpong 2000`, "-N2 -n2 --time=10")));
      const sockerRun = async () =>
        inSocker.push(
          pingpong(
            await job(`srun --mpi=pmix -K1 -N2 -n2 socker run ${MPI_IMAGE} ${MPI}/pingpong 2000`, "-N2 -n2 --time=10"),
          ),
        );
      if (i % 2 === 0) {
        await nativeRun();
        await sockerRun();
      } else {
        await sockerRun();
        await nativeRun();
      }
    }
    const latN = median(native.map((r) => r.lat)), latS = median(inSocker.map((r) => r.lat));
    const bwN = median(native.map((r) => r.bw)), bwS = median(inSocker.map((r) => r.bw));
    table("MPI ping-pong, two ranks on two nodes (5 interleaved jobs of 2000 round trips each, medians)", [
      ["", "native", "socker", "ratio"],
      ["8 B latency (one way)", `${latN.toFixed(2)} us`, `${latS.toFixed(2)} us`, (latS / latN).toFixed(3)],
      ["1 MiB bandwidth", `${bwN.toFixed(0)} MB/s`, `${bwS.toFixed(0)} MB/s`, (bwS / bwN).toFixed(3)],
    ]);
    const startRows = [["", "native srun", "srun socker run", "difference"]];
    for (const n of [2, 8]) {
      const nativeTimes: number[] = [], sockerTimes: number[] = [];
      for (let i = 0; i < 3; i++) {
        const time = async (line: string) => {
          const text = await job(
            `s=$(date +%s%N); ${line}; echo "ms=$((($(date +%s%N) - s) / 1000000))"`,
            `-N2 -n${n} --overcommit`,
          );
          return Number(/ms=(\d+)/.exec(text)?.[1]);
        };
        nativeTimes.push(await time(`srun -n${n} --overcommit true`));
        sockerTimes.push(await time(`srun -n${n} --overcommit socker run ${IMAGE} true`));
      }
      startRows.push([
        `${n}-rank step`,
        ms(median(nativeTimes)),
        ms(median(sockerTimes)),
        ms(median(sockerTimes) - median(nativeTimes)),
      ]);
    }
    table("Start-up of an N-rank step on the two nodes (3 runs each, medians)", startRows);
  } finally {
    Deno.removeSync("/etc/socker/socker.conf");
  }
}
Deno.exit(0);
