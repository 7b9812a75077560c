// Helpers for the tests that run real Slurm jobs on the two-node test cluster (n1, n2 on this host, made by
// tests/setup.sh): submitting as alice, waiting for the end of a job and its Epilog, reading what it left.
import assert from "node:assert/strict";
import { asUser, sh, sockerContainers, waitFor } from "./helpers.ts";

export const USER = "alice";
export const HOME = `/home/${USER}`;

/** Runs a Slurm client command (or anything) as alice, from her home. */
export function asAlice(cmd: string[], stdin?: string) {
  return asUser(USER, cmd, { stdin });
}

/** Jobs submitted by this test file, cancelled when it asks (so that one failure cannot hold the nodes). */
const submitted: string[] = [];

/** Submits a batch script as alice; returns the job id. */
export async function sbatch(script: string, options: string[] = []): Promise<string> {
  const result = await asAlice(
    ["/usr/bin/sbatch", "--parsable", `--output=${HOME}/slurm-%j.out`, ...options],
    `#!/bin/sh\n${script}\n`,
  );
  assert.equal(result.code, 0, result.stderr);
  const job = result.stdout.trim().split(";")[0];
  submitted.push(job);
  return job;
}

/** Cancels every job this file submitted that still runs (call in `finally`). */
export async function cancelSubmitted(): Promise<void> {
  if (submitted.length > 0) await sh("/usr/bin/scancel", submitted.splice(0));
}

/** The job's state as scontrol reports it (PENDING, RUNNING, COMPLETED, CANCELLED, ...), or "GONE". */
export async function jobState(jobId: string): Promise<string> {
  const result = await sh("/usr/bin/scontrol", ["show", "job", "-o", jobId]);
  return /JobState=(\S+)/.exec(result.stdout)?.[1] ?? "GONE";
}

/** Waits until the job has ended and its Epilog has run on every node. */
export async function waitJobEnd(jobId: string, timeoutMs = 90_000): Promise<void> {
  const ended = await waitFor(
    async () => !["PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED"].includes(await jobState(jobId)),
    timeoutMs,
    100,
  );
  assert.ok(ended >= 0, `job ${jobId} did not end: ${await jobState(jobId)}`);
}

/** Waits until the job runs (its nodes may be busy with an earlier test's job). */
export async function waitJobRuns(jobId: string, timeoutMs = 90_000): Promise<void> {
  const running = await waitFor(async () => (await jobState(jobId)) === "RUNNING", timeoutMs, 100);
  assert.ok(running >= 0, `job ${jobId} did not start: ${await jobState(jobId)}`);
}

export function jobOutput(jobId: string): string {
  return Deno.readTextFileSync(`${HOME}/slurm-${jobId}.out`);
}

/** Every cgroup folder of the job left on this host, in any controller. */
export async function jobCgroupFolders(jobId: string): Promise<string[]> {
  const result = await sh("/usr/bin/find", ["/sys/fs/cgroup", "-maxdepth", "5", "-type", "d", "-name", `job_${jobId}`]);
  return result.stdout.split("\n").filter((line) => line !== "");
}

/** Every process on this host in a cgroup of the job, as "PID COMMAND" (Podman's conmon among them). */
export function jobProcesses(jobId: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (!Deno.readTextFileSync(`/proc/${entry.name}/cgroup`).includes(`/job_${jobId}/`)) continue;
      found.push(`${entry.name} ${Deno.readTextFileSync(`/proc/${entry.name}/comm`).trim()}`);
    } catch { /* the process ended meanwhile */ }
  }
  return found;
}

export async function jobContainers(jobId: string): Promise<string[]> {
  return await sockerContainers(`label=socker.job=${jobId}`);
}

/** Nodes Slurm has drained or downed (a failing Epilog drains its node). */
export async function drainedNodes(): Promise<string[]> {
  const result = await sh("/usr/bin/sinfo", ["-h", "-N", "-o", "%N %t"]);
  return result.stdout.split("\n").filter((line) => /\s(drain|drng|drained|down|fail)/.test(line));
}

/** A test that runs Slurm jobs: whatever happens, none of its jobs is left to hold the nodes. */
export function jobTest(
  feature: string,
  name: string,
  body: () => Promise<void>,
  around?: { before: () => void; after: () => void },
): void {
  Deno.test(`${feature}: ${name}`, async () => {
    around?.before();
    try {
      await body();
    } finally {
      await cancelSubmitted();
      around?.after();
    }
  });
}
