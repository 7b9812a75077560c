// Faults on the real machine: the Docker engine stopped before and during a run, an image gone, a broken
// allowlist. Each ends with a clear message, the documented exit code, and nothing left behind.
import assert from "node:assert/strict";
import {
  ALLOWLIST,
  assertRefused,
  DOCKER,
  IMAGE,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  spawnSocker,
  stagingLeft,
  startEngine,
  stopEngine,
  waitFor,
  withAllowlist,
} from "./helpers.ts";

Deno.test("faults: the engine stopped before a run: a clear refusal, nothing started", async () => {
  await stopEngine();
  try {
    for (const args of [["run", IMAGE, "true"], ["images"], ["ps"], ["stop", "socker-2001-000000000000"]]) {
      assertRefused(await socker("alice", args), /Docker engine is not reachable at \/var\/run\/docker\.sock/);
    }
  } finally {
    await startEngine();
  }
  assert.deepEqual(await sockerContainers(), []);
});

Deno.test("faults: the engine restarted during a run: socker ends, and leaves nothing once the engine is back", async () => {
  const child = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
  assert.ok(await waitFor(async () => (await sockerContainers()).length === 1, 15_000) >= 0, "container started");
  await stopEngine();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await startEngine();
  const output = await child.output();
  // A stopping engine stops its containers with SIGTERM: that is the container's own end (143); when the
  // engine went away before it could say so, socker says it lost the exit status (125).
  const stderr = new TextDecoder().decode(output.stderr);
  assert.ok(
    output.code === 143 || (output.code === 125 && /^socker: lost the container's exit status/m.test(stderr)),
    `${output.code}: ${stderr}`,
  );
  assert.ok(await waitFor(async () => (await sockerContainers()).length === 0, 10_000) >= 0, "no container left");
  assert.equal(await stagingLeft(), "");
});

Deno.test("faults: cleanup against a stopped engine still runs its other sweeps and returns within its bound", async () => {
  await stopEngine();
  try {
    const started = performance.now();
    const result = await sh(PRIVILEGED_SOCKER, ["cleanup", "--job", "424242"]);
    const elapsed = performance.now() - started;
    assert.equal(result.code, 1, result.stdout);
    assert.match(
      result.stdout,
      /job 424242: containers: 0 removed, 1 problem\(s\): the Docker engine is not reachable/,
    );
    assert.ok(elapsed < 30_000, `took ${elapsed} ms`);
  } finally {
    await startEngine();
  }
});

Deno.test("faults: an image removed after it was allowed: socker says to ask the administrator", async () => {
  await sh(DOCKER, ["tag", IMAGE, "socker-test/removed:1"]);
  const restore = withAllowlist(`${IMAGE}\nsocker-test/removed:1\n`);
  try {
    assert.equal((await socker("alice", ["run", "socker-test/removed:1", "true"])).code, 0);
    await sh(DOCKER, ["rmi", "socker-test/removed:1"]);
    assertRefused(
      await socker("alice", ["run", "socker-test/removed:1", "true"]),
      /allowed but not present on node .*ask your administrator/,
    );
  } finally {
    restore();
  }
});

Deno.test("faults: an allowlist truncated, empty or huge: clear refusals", async () => {
  const cases: [string, RegExp][] = [
    [`${IMAGE}\nsocker-test/busybox@sha256:12ab`, /socker-images:2: .*digest must be/],
    ["", /is not allowed on this cluster/],
    [`${IMAGE}\n${"#".repeat(2 << 20)}\n`, /larger than 1048576 bytes/],
    ["\u0000\u00ff\u0001binary", /not a text file/],
  ];
  for (const [content, pattern] of cases) {
    const restore = withAllowlist(content);
    try {
      assertRefused(await socker("alice", ["run", IMAGE, "true"]), pattern);
    } finally {
      restore();
    }
  }
  assert.ok(Deno.readTextFileSync(ALLOWLIST).length < 10_000);
});
