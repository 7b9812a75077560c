// Unit tests of the node's watcher: which containers it removes (only those whose supervisor is gone, or a
// step container none of whose tasks lives) and which step folders follow.
import assert from "node:assert/strict";
import {
  type ListedContainer,
  parseCommandLine,
  planWatchOrphans,
  Refusal,
  SHARE_LABEL,
  stepFolders,
  WATCH_MAX_TRACKED,
  watchedContainers,
} from "../../socker.ts";

const stat = (pid: number, start: number) => `${pid} (deno) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 ${start} 0 0`;
const listed = (id: string, labels: Record<string, string>): ListedContainer => ({
  Id: id.padEnd(64, "0"),
  Names: [`/socker-2001-${id}`],
  Labels: { "socker.managed": "true", ...labels },
});

Deno.test("watch: tracks socker's containers by their labels, at most WATCH_MAX_TRACKED", () => {
  const [one] = watchedContainers([
    listed("a1", { "socker.supervisor": "10:5", "socker.job": "7", "socker.step": "0" }),
  ]);
  assert.deepEqual(one, { id: "a1".padEnd(64, "0"), name: "socker-2001-a1", supervisor: "10:5", job: "7", step: "0" });
  const many = Array.from({ length: WATCH_MAX_TRACKED + 50 }, (_, i) => listed(`b${i}`, {}));
  assert.equal(watchedContainers(many).length, WATCH_MAX_TRACKED);
});

Deno.test("watch: a container whose supervisor died (or whose pid was reused) is removed; a live one never", () => {
  const containers = watchedContainers([
    listed("a1", { "socker.supervisor": "10:5" }), // alive
    listed("a2", { "socker.supervisor": "11:5" }), // gone
    listed("a3", { "socker.supervisor": "12:5" }), // pid reused: another start time
    listed("a4", {}), // no supervisor label: never judged
    listed("a5", { "socker.supervisor": "13:5" }), // not looked at this tick: left alone
  ]);
  const stats = new Map<string, string | undefined>([
    ["10:5", stat(10, 5)],
    ["11:5", undefined],
    ["12:5", stat(12, 999)],
  ]);
  assert.deepEqual(planWatchOrphans(containers, stats).map((c) => c.name), ["socker-2001-a2", "socker-2001-a3"]);
  assert.deepEqual(planWatchOrphans(containers, new Map([["10:5", stat(10, 5)]])), []);
  const zombie = stat(10, 5).replace("(deno) S", "(deno) Z");
  assert.deepEqual(planWatchOrphans(containers, new Map([["10:5", zombie]])).map((c) => c.name), ["socker-2001-a1"]);
});

Deno.test("watch: the cancelled step's cgroup folders, deepest first; never another step's, never a forged step", () => {
  const base = "/sys/fs/cgroup/memory/slurm_n1/uid_2001/job_7";
  const folders = [`${base}/step_0`, `${base}/step_0/task_0`, `${base}/step_1`, `${base}/step_10`, base];
  assert.deepEqual(stepFolders(folders, "0"), [`${base}/step_0/task_0`, `${base}/step_0`]);
  assert.deepEqual(stepFolders(folders, "batch"), []);
  assert.deepEqual(stepFolders(folders, "../x"), []);
  assert.deepEqual(stepFolders(folders, ""), []);
});

Deno.test("watch: `socker watch` takes no arguments", () => {
  assert.deepEqual(parseCommandLine(["watch"]), { command: "watch" });
  assert.throws(
    () => parseCommandLine(["watch", "now"]),
    (error) => error instanceof Refusal && error.kind === "usage",
  );
});

Deno.test("watch: a step container goes once none of its tasks lives, never while one does", () => {
  const containers = watchedContainers([
    listed("s1", { [SHARE_LABEL]: "k1" }), // two tasks alive
    listed("s2", { [SHARE_LABEL]: "k2" }), // every task gone
    listed("s3", { [SHARE_LABEL]: "k3" }), // not counted this tick: left alone
  ]);
  const tasks = new Map([["socker-2001-s1", 2], ["socker-2001-s2", 0]]);
  assert.deepEqual(planWatchOrphans(containers, new Map(), tasks).map((c) => c.name), ["socker-2001-s2"]);
  assert.deepEqual(planWatchOrphans(containers, new Map()), []);
});
