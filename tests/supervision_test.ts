// The root supervisor's memory: whatever a container writes, and however long it runs, socker's resident
// memory stays near its start. Before the fix each chunk of output left ~300 bytes on a promise pending for
// the whole run (+150 MB in a minute of small lines). Real users, real engine, real Slurm.
import assert from "node:assert/strict";
import { asUserArgv, IMAGE, marker, sh, SOCKER, userEnv } from "./helpers.ts";
import { cancelSubmitted } from "./slurm.ts";

/** How far socker's RSS may rise above its level once the output flows (V8's young generation included). */
const RSS_BOUND_KIB = 12 * 1024;

/** The root supervisor of the run whose command line holds `mark`: the Deno process (or compiled socker). */
async function supervisorPid(mark: string): Promise<number | undefined> {
  const found = await sh("/usr/bin/pgrep", ["-f", mark]);
  for (const pid of found.stdout.split("\n").filter((line) => line !== "").map(Number)) {
    try {
      const exe = Deno.readLinkSync(`/proc/${pid}/exe`);
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      if (/\/(deno|socker-bin)$/.test(exe) && /^Uid:\s+0\s/m.test(status)) return pid;
    } catch { /* gone */ }
  }
  return undefined;
}

/** Resident memory of a process in KiB, or undefined once it is gone. */
function rssKiB(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return match === null ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

/** A container that writes `lines` small lines on stdout and as many on stderr, one write each. */
function chatty(lines: number): string[] {
  return [IMAGE, "sh", "-c", `i=0; while [ $i -lt ${lines} ]; do echo o$i; echo e$i >&2; i=$((i+1)); done`];
}

/**
 * Starts `argv` (as alice), reads and drops its output, samples the supervisor's RSS every 100 ms; returns
 * the exit code, the bytes that came back, the RSS once output flows and the peak.
 */
async function measure(argv: string[], mark: string) {
  const child = new Deno.Command("/usr/bin/setpriv", {
    args: asUserArgv("alice", userEnv("alice", { SOCKER_MARK: mark }), argv),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    cwd: "/home/alice",
  }).spawn();
  let bytes = 0;
  const count = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) bytes += chunk.length;
  };
  const reading = Promise.all([count(child.stdout), count(child.stderr)]);
  let pid: number | undefined;
  let first: number | undefined;
  let peak = 0;
  const sampling = (async () => {
    const start = performance.now();
    while (pid === undefined && performance.now() - start < 60_000) {
      pid = await supervisorPid(mark);
      if (pid === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    for (;;) {
      const rss = pid === undefined ? undefined : rssKiB(pid);
      if (rss === undefined) return;
      // The level once output flows (Deno has loaded, the container runs) is the start.
      if (first === undefined && bytes > 1_000_000) first = rss;
      peak = Math.max(peak, rss);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  const status = await child.status;
  await reading;
  await sampling;
  return { code: status.code, bytes, first: first ?? 0, peak };
}

async function assertFlat(where: string, argv: string[], mark: string, lines: number) {
  const started = performance.now();
  const result = await measure(argv, mark);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `${where}: ${(result.bytes / 1e6).toFixed(1)} MB in ${seconds} s; supervisor RSS ${
      (result.first / 1024).toFixed(1)
    } MiB once output flowed, peak ${(result.peak / 1024).toFixed(1)} MiB`,
  );
  assert.equal(result.code, 0);
  // Every line came back (o0..o{lines-1}, e0..e{lines-1}: the digits and a newline each).
  assert.ok(result.bytes >= lines * 2 * 3, `all output came back: ${result.bytes} bytes`);
  assert.ok(result.first > 0, "socker's RSS was read while output flowed");
  assert.ok(
    result.peak - result.first <= RSS_BOUND_KIB,
    `socker's RSS rose by ${((result.peak - result.first) / 1024).toFixed(1)} MiB (bound ${RSS_BOUND_KIB / 1024} MiB)`,
  );
}

const LINES = 800_000;

Deno.test("supervision: millions of small lines on stdout and stderr leave socker's memory flat", async () => {
  const mark = marker("rss");
  await assertFlat("outside a job", [SOCKER, "run", "-e", `M=${mark}`, ...chatty(LINES)], mark, LINES);
});

Deno.test("supervision: inside a job (srun) too, socker's memory stays flat over millions of lines", async () => {
  const mark = marker("rss");
  try {
    await assertFlat(
      "inside srun",
      ["/usr/bin/srun", "-N1", "-n1", `--job-name=${mark}`, SOCKER, "run", "-e", `M=${mark}`, ...chatty(LINES)],
      mark,
      LINES,
    );
  } finally {
    await sh("/usr/bin/scancel", ["-n", mark]);
    await cancelSubmitted();
  }
});
