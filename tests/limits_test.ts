// Resource limits: the container keeps the caller's own limits (Slurm's PropagateResourceLimits and the
// site's limits hold), never raised; docker has no address-space limit (README says so).
import assert from "node:assert/strict";
import { IMAGE, userLine } from "./helpers.ts";

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
