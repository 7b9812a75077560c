// Resource limits: the container keeps the caller's own limits (Slurm's PropagateResourceLimits and the
// site's limits hold), never raised; docker has no address-space limit (README says so).
import assert from "node:assert/strict";
import { assertRefused, auditRecords, IMAGE, marker, nothingLeft, userLine } from "./helpers.ts";

const asAlice = (line: string, env: Record<string, string> = {}) => userLine("alice", line, env);

const probe =
  `socker run ${IMAGE} sh -c 'echo u=$(ulimit -u) n=$(ulimit -n) f=$(ulimit -f) t=$(ulimit -t) s=$(ulimit -s) Hn=$(ulimit -H -n) Hu=$(ulimit -H -u)'`;

Deno.test("limits: the container has the caller's processes, open files, file size and CPU time", async () => {
  const result = await asAlice(`ulimit -S -u 64; ulimit -S -n 128; ulimit -S -f 1024; ulimit -S -t 30; ${probe}`);
  assert.equal(result.code, 0, result.stderr);
  // busybox counts file size in 512-byte blocks: bash's 1024 KiB are 2048 blocks.
  assert.match(result.stdout, /^u=64 n=128 f=2048 t=30 s=8192 /, result.stdout);
});

Deno.test("limits: hard limits the caller lowered hold in the container, and are never raised", async () => {
  const result = await asAlice(`ulimit -u 100; ulimit -n 256; ${probe}`);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /u=100 n=256 .* Hn=256 Hu=100$/m, result.stdout);
  const raise = await asAlice(
    `ulimit -n 256; socker run ${IMAGE} sh -c 'ulimit -n 4096 && echo raised || echo refused'`,
  );
  assert.match(raise.stdout + raise.stderr, /refused|Operation not permitted|Invalid argument/);
  assert.ok(!raise.stdout.includes("raised"), raise.stdout);
});

Deno.test("limits: the process limit is the caller's across the node, as for any of their processes", async () => {
  const result = await asAlice(
    `ulimit -S -u 20; socker run ${IMAGE} sh -c 'for i in $(seq 40); do sleep 5 & done 2>&1; wait' 2>&1 | grep -c -i "can't fork\\|Resource temporarily"`,
  );
  assert.ok(Number(result.stdout.trim()) > 0, `the 20-process limit held: ${result.stdout}${result.stderr}`);
});

// ---- attacks (issue 9 §2): the caller's limits reach the root supervisor through sudo

Deno.test("attack: hard limits lowered below what socker needs are refused at once, nothing started", async () => {
  const cases: [string, RegExp][] = [
    ["ulimit -t 1", /CPU-time limit \(ulimit -t\) is 1 s; socker needs at least 10 s/],
    ["ulimit -t 5", /CPU-time limit/],
    ["ulimit -n 64", /open-files limit \(ulimit -n\) is 64/],
    ["ulimit -n 20", /open-files limit|socker needs at least/],
    ["ulimit -v 1000000", /address-space limit \(ulimit -v\) is 1000000/],
    ["ulimit -S -v 500000; ulimit -H -v 8000000", /address-space limit \(ulimit -v\) is 8000000/],
    ["ulimit -d 100000", /data-size limit/],
    ["ulimit -f 100000", /file-size limit \(ulimit -f\) is 100000 KiB; socker needs it unlimited/],
    [
      "ulimit -S -f 1000; ulimit -H -f 2000000",
      /file-size limit \(ulimit -f\) is 2000000 KiB; socker needs it unlimited/,
    ],
  ];
  for (const [limit, pattern] of cases) {
    const tag = marker("limits");
    const result = await asAlice(`${limit}; exec socker run ${IMAGE} echo ${tag}`);
    assertRefused(result, pattern);
  }
  await nothingLeft(1000);
});

Deno.test("attack: soft limits lowered (any of them) never stop socker; the container still gets them", async () => {
  const result = await asAlice(
    `ulimit -S -t 2; ulimit -S -v 1000000; ulimit -S -n 32; ulimit -S -f 8; exec socker run ${IMAGE} sh -c 'ulimit -t; ulimit -n'`,
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, "2\n32\n");
});

Deno.test("attack: a CPU-time limit and a flood of output stop the container in good order, with its end record", async () => {
  const tag = marker("xcpu");
  const started = performance.now();
  const result = await asAlice(
    `ulimit -t 10; socker run --no-stdin ${IMAGE} sh -c 'head -c 60000000000 /dev/zero; sleep 300; echo ${tag}' >/dev/null`,
  );
  assert.equal(result.code, 152, `128 + SIGXCPU; stderr: ${result.stderr}`);
  assert.match(
    result.stderr,
    /^socker: your CPU-time limit \(ulimit -t\) ran out while socker supervised the container/,
  );
  assert.doesNotMatch(result.stderr, /Killed/);
  await nothingLeft();
  const records = await auditRecords(tag, 2);
  assert.deepEqual(records.map((r) => [r.event, r.outcome]), [["start", undefined], ["end", "exit 152"]]);
  console.log(`stopped after ${((performance.now() - started) / 1000).toFixed(1)} s`);
});

Deno.test("attack: a job's memory limit never lets the OOM killer take the supervisor", async () => {
  const tag = marker("oom");
  // Fourteen processes of 20 MiB each under a 250 MiB limit: the largest process in the step's memory
  // cgroup would be socker (~45 MB) if it stayed there with its default OOM score.
  const result = await asAlice(
    `srun -N1 -n1 --mem=250M socker run --no-stdin ${IMAGE} sh -c 'i=0; while [ $i -lt 14 ]; do ` +
      `(dd if=/dev/zero bs=20M count=1 2>/dev/null | sleep 4) & i=$((i+1)); sleep 0.3; done; wait; echo survived ${tag}; exit 7'`,
  );
  assert.equal(result.code, 7, `the container's own code, from a supervisor that survived; stderr: ${result.stderr}`);
  assert.match(result.stdout, new RegExp(`survived ${tag}`));
  const records = await auditRecords(tag, 2);
  assert.deepEqual(records.map((r) => [r.event, r.outcome]), [["start", undefined], ["end", "exit 7"]]);
  await nothingLeft();
});
