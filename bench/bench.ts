// socker's benchmarks: prints tables of measured figures (not a test; nothing here passes or fails).
//   sudo deno run --allow-all bench/bench.ts [--pairs N] [--cancels N] [--no-slurm]
// Needs what `sudo tests/run.sh` sets up: the installed socker, the test users and image, the Slurm
// cluster, and the test image in the allowlist.
//
// 1. Overhead: `socker run IMG true` as alice against plain `docker run` with exactly the flags socker
//    uses (read from `socker -v`), as dockerroot (the docker group), both started the same way
//    (setpriv, then /bin/sh -c 'exec ...'), interleaved pair by pair.
// 2. Cleanup: SIGTERM to socker until its container is gone, and (with Slurm) scancel until it is gone.
// 3. socker's own peak memory (the privileged Deno process and sudo) while a container runs.
// 4. Scale: N concurrent `socker run` on this node, and an N-task Slurm job array; every exit code and
//    output checked, and nothing left behind (containers, staging mounts, job cgroup folders).
import { parseArgs } from "node:util";
import { dockerApi } from "../socker.ts";

const { values } = parseArgs({
  options: {
    scale: { type: "string", default: "50" },
    pairs: { type: "string", default: "25" },
    cancels: { type: "string", default: "10" },
    "no-slurm": { type: "boolean", default: false },
  },
});
const PAIRS = Number(values.pairs);
const CANCELS = Number(values.cancels);
const SCALE = Number(values.scale);
const IMAGE = "socker-test/busybox:2";
const SOCKER = "/usr/local/bin/socker";
const userEnv = (user: string) => [
  "PATH=/usr/local/bin:/usr/bin:/bin",
  `HOME=${user === "alice" ? "/home/alice" : "/nonexistent"}`,
  `USER=${user}`,
  `LOGNAME=${user}`,
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (x: number) => `${x.toFixed(0)} ms`;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

function asUser(user: string, group: string, shellLine: string): Deno.Command {
  return new Deno.Command("/usr/bin/setpriv", {
    args: [
      `--reuid=${user}`,
      `--regid=${group}`,
      "--init-groups",
      "/usr/bin/env",
      "-i",
      ...userEnv(user),
      "/bin/sh",
      "-c",
      shellLine,
    ],
    cwd: "/tmp",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

async function timed(command: Deno.Command): Promise<number> {
  const start = performance.now();
  const output = await command.output();
  const elapsed = performance.now() - start;
  if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
  return elapsed;
}

const quote = (arg: string) => `'${arg.replaceAll("'", `'\\''`)}'`;

async function containersWith(label: string): Promise<number> {
  const filter = encodeURIComponent(JSON.stringify({ label: [label] }));
  const { body } = await dockerApi("GET", `/containers/json?all=1&filters=${filter}`);
  return JSON.parse(body).length;
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

// ---- machine
const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
const dockerVersion = JSON.parse((await dockerApi("GET", "/version")).body).Version;
console.log(
  `machine: ${cpu}, ${navigator.hardwareConcurrency} cores; Docker ${dockerVersion}; Deno ${Deno.version.deno}`,
);

// ---- 1. overhead
const verbose = await asUser("alice", "alice", `exec ${SOCKER} -v run ${IMAGE} true`).output();
const line = new TextDecoder().decode(verbose.stderr).trim();
const dockerArgs = line.replace(/^socker: /, "").split(" ");
// Plain docker with socker's flags, but its own unique container name each run, and socker's staged
// mounts (root-owned bind mounts of the checked folders) replaced by the folders themselves.
const nameAt = dockerArgs.indexOf("--name") + 1;
const plainArg = (arg: string, index: number, i: number) =>
  index === nameAt
    ? `bench-plain-${Deno.pid}-${i}`
    : arg.replace(/source=\/run\/socker\/[^,]+,target=([^,]+)/, "source=$1,target=$1");
const plainLine = (i: number) => "exec " + dockerArgs.map((a, j) => plainArg(a, j, i)).map(quote).join(" ");
// Warm both paths once.
await timed(asUser("alice", "alice", `exec ${SOCKER} run ${IMAGE} true`));
await timed(asUser("dockerroot", "docker", plainLine(-1)));
const sockerTimes: number[] = [];
const dockerTimes: number[] = [];
for (let i = 0; i < PAIRS; i++) {
  // Alternate which goes first, so that neither always runs on a warmer engine.
  const runSocker = async () =>
    sockerTimes.push(await timed(asUser("alice", "alice", `exec ${SOCKER} run ${IMAGE} true`)));
  const runDocker = async () => dockerTimes.push(await timed(asUser("dockerroot", "docker", plainLine(i))));
  if (i % 2 === 0) {
    await runSocker();
    await runDocker();
  } else {
    await runDocker();
    await runSocker();
  }
}
const ms2 = median(sockerTimes), md = median(dockerTimes);
const differences = sockerTimes.map((t, i) => t - dockerTimes[i]);
table(`Overhead: ${PAIRS} interleaved pairs of 'run ${IMAGE} true'`, [
  ["", "median", "min", "max"],
  ["plain docker run", ms(md), ms(Math.min(...dockerTimes)), ms(Math.max(...dockerTimes))],
  ["socker run", ms(ms2), ms(Math.min(...sockerTimes)), ms(Math.max(...sockerTimes))],
  ["difference (median of pairs)", ms(median(differences)), "", ""],
  ["ratio of medians", (ms2 / md).toFixed(3), "", ""],
]);

// ---- 2. cleanup after SIGTERM
const termGone: number[] = [];
const termExit: number[] = [];
for (let i = 0; i < CANCELS; i++) {
  const child = asUser("alice", "alice", `exec ${SOCKER} run ${IMAGE} sleep 1000`).spawn();
  await waitUntil(async () => (await containersWith("socker.uid=2001")) === 1, 10_000);
  await sleep(200);
  const start = performance.now();
  child.kill("SIGTERM");
  const exited = child.status.then(() => performance.now() - start);
  termGone.push(await waitUntil(async () => (await containersWith("socker.uid=2001")) === 0, 10_000, 5));
  termExit.push(await exited);
  await child.output().catch(() => undefined);
}

// ---- 3. peak memory while a container runs
const memoryChild = asUser("alice", "alice", `exec ${SOCKER} run ${IMAGE} sleep 3`).spawn();
await waitUntil(async () => (await containersWith("socker.uid=2001")) === 1, 10_000);
await sleep(500);
const status = (pid: string) => {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return "";
  }
};
let denoPeak = 0, sudoPeak = 0;
for (const entry of Deno.readDirSync("/proc")) {
  if (!/^\d+$/.test(entry.name)) continue;
  let cmdline = "";
  try {
    cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
  } catch {
    continue;
  }
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(status(entry.name))?.[1] ?? 0);
  if (/socker\.ts run .*sleep 3/.test(cmdline) || /libexec\/socker\/socker run .*sleep 3/.test(cmdline)) {
    denoPeak = Math.max(denoPeak, hwm);
  }
  if (cmdline.startsWith("/usr/bin/sudo -n -- ") && cmdline.includes("sleep 3")) sudoPeak = Math.max(sudoPeak, hwm);
}
await memoryChild.output();

// ---- 4. scancel under Slurm
const cancelGone: number[] = [];
if (!values["no-slurm"]) {
  for (let i = 0; i < CANCELS; i++) {
    const submit = await asUser(
      "alice",
      "alice",
      `printf '#!/bin/sh\\nsrun -n1 socker run ${IMAGE} sleep 1000\\n' | sbatch --parsable --output=/dev/null`,
    ).output();
    const job = new TextDecoder().decode(submit.stdout).trim();
    await waitUntil(async () => (await containersWith(`socker.job=${job}`)) === 1, 30_000, 50);
    await sleep(300);
    const start = performance.now();
    await new Deno.Command("/usr/bin/scancel", { args: [job] }).output();
    await waitUntil(async () => (await containersWith(`socker.job=${job}`)) === 0, 10_000, 5);
    cancelGone.push(performance.now() - start);
    // Let the job finish completing before the next one.
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

// ---- 5. scale
const tempEntries = () =>
  new Set(["/tmp", "/var/tmp"].flatMap((dir) => [...Deno.readDirSync(dir)].map((entry) => `${dir}/${entry.name}`)));
const tempBefore = tempEntries();
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
  const temps = [...tempEntries()].filter((path) => !tempBefore.has(path)).length;
  return `${containers} containers, ${staging} staging folders, ${folders} job cgroup folders, ${temps} temp files`;
};
const scaleStart = performance.now();
const results = await Promise.all(Array.from({ length: SCALE }, async (_, i) => {
  const output = await asUser("alice", "alice", `exec ${SOCKER} run ${IMAGE} sh -c 'echo task-${i}; exit ${i % 7}'`)
    .output();
  return output.code === i % 7 && new TextDecoder().decode(output.stdout) === `task-${i}\n`;
}));
const scaleMs = performance.now() - scaleStart;
const scaleRows = [
  ["", "succeeded", "wall time", "left behind"],
  [`${SCALE} concurrent socker run`, `${results.filter(Boolean).length}/${SCALE}`, ms(scaleMs), await leftovers()],
];
if (!values["no-slurm"]) {
  const arrayStart = performance.now();
  const submit = await asUser(
    "alice",
    "alice",
    `printf '#!/bin/sh\\nsrun -n1 socker run ${IMAGE} sh -c "echo task-$SLURM_ARRAY_TASK_ID; exit $((SLURM_ARRAY_TASK_ID %% 7))"; echo "rc=$?"\\n' | ` +
      `sbatch --parsable --array=1-${SCALE} --output=/home/alice/bench-%A_%a.out`,
  ).output();
  const arrayJob = new TextDecoder().decode(submit.stdout).trim();
  await waitUntil(() => jobLeftQueue(arrayJob), 600_000, 500);
  await sleep(2000); // the last Epilogs
  let good = 0;
  const taskJobs: string[] = [];
  for (let task = 1; task <= SCALE; task++) {
    const file = `/home/alice/bench-${arrayJob}_${task}.out`;
    const text = Deno.readTextFileSync(file);
    if (text.includes(`task-${task}\n`) && text.includes(`rc=${task % 7}\n`)) good++;
    Deno.removeSync(file);
  }
  const ids = await new Deno.Command("/bin/sh", {
    args: [
      "-c",
      `grep -h "JobId=" /var/log/slurm/slurmctld.log | grep -o "JobId=${arrayJob}_[0-9]*([0-9]*)" | grep -o "([0-9]*)" | tr -d "()" | sort -u`,
    ],
  }).output();
  taskJobs.push(...new TextDecoder().decode(ids.stdout).split("\n").filter((l) => l !== ""));
  scaleRows.push([
    `${SCALE}-task Slurm job array (2 one-CPU nodes)`,
    `${good}/${SCALE}`,
    ms(performance.now() - arrayStart),
    await leftovers([arrayJob, ...taskJobs]),
  ]);
}
table("Scale", scaleRows);
