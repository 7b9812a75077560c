// Faults and bad input on the real machine: the Docker engine stopped before and during a run, an image
// gone, a broken allowlist, a working directory the caller can no longer enter. Each must end with a clear
// message and nothing left behind. The engine is restarted the way tests/setup.sh starts it.
import assert from "node:assert/strict";
import {
  ALLOWLIST,
  assertRefused,
  DOCKER,
  IMAGE,
  sh,
  socker,
  sockerContainers,
  spawnSocker,
  stagingLeft,
  userShell,
  waitFor,
  withAllowlist,
} from "./helpers.ts";

async function engineUp(): Promise<boolean> {
  return (await sh(DOCKER, ["info", "--format", "{{.ServerVersion}}"])).code === 0;
}

async function stopEngine(): Promise<void> {
  await sh("/usr/bin/pkill", ["-TERM", "-x", "dockerd"]);
  const stopped = await waitFor(async () => (await sh("/usr/bin/pgrep", ["-x", "dockerd"])).code !== 0, 30_000, 100);
  assert.ok(stopped >= 0, "dockerd stopped");
}

async function startEngine(): Promise<void> {
  await sh("/bin/sh", ["-c", "setsid -f /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 </dev/null"]);
  const started = await waitFor(engineUp, 60_000, 200);
  assert.ok(started >= 0, "dockerd started again");
}

Deno.test("engine stopped before a run: a clear refusal, nothing started", async () => {
  await stopEngine();
  try {
    assertRefused(
      await socker("alice", ["run", IMAGE, "true"]),
      /Docker engine is not reachable at \/var\/run\/docker\.sock/,
    );
    const images = await socker("alice", ["images"]);
    assert.equal(images.code, 125);
    assert.match(images.stderr, /Docker engine is not reachable/);
  } finally {
    await startEngine();
  }
  assert.deepEqual(await sockerContainers(), []);
});

Deno.test("engine restarted during a run: socker ends with an error and leaves nothing once the engine is back", async () => {
  const child = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
  assert.ok(await waitFor(async () => (await sockerContainers()).length === 1, 10_000) >= 0, "container started");
  await stopEngine();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await startEngine();
  const output = await child.output();
  assert.notEqual(output.code, 0);
  assert.ok(await waitFor(async () => (await sockerContainers()).length === 0, 10_000) >= 0, "no container left");
  assert.equal(await stagingLeft(), "");
});

Deno.test("an image removed after it was allowed: socker says to ask the administrator", async () => {
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

Deno.test("allowlist truncated, empty or huge: clear refusals", async () => {
  const cases: [string, RegExp][] = [
    [`${IMAGE}\nsocker-test/busybox@sha256:12ab`, /socker-images:2: .*digest must be/],
    ["", /is not allowed on this cluster/],
    [`${IMAGE}\n${"#".repeat(2 << 20)}\n`, /larger than 1048576 bytes/],
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

Deno.test("a working directory the caller can no longer enter: the container runs in the image's", async () => {
  const dir = "/home/alice/closed";
  Deno.mkdirSync(dir, { recursive: true });
  Deno.chownSync(dir, 2001, 2001);
  Deno.chmodSync(dir, 0o755);
  const child = userShell("alice", `cd ${dir} && sleep 1 && exec socker run ${IMAGE} pwd`).spawn();
  await new Promise((resolve) => setTimeout(resolve, 300));
  Deno.chmodSync(dir, 0o000);
  try {
    const output = await child.output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    assert.equal(new TextDecoder().decode(output.stdout), "/\n");
  } finally {
    Deno.chmodSync(dir, 0o755);
    Deno.removeSync(dir);
  }
  // And a folder that no longer exists.
  Deno.mkdirSync(dir);
  Deno.chownSync(dir, 2001, 2001);
  const gone = userShell("alice", `cd ${dir} && rmdir ${dir} && exec socker run ${IMAGE} pwd`);
  const result = await gone.output();
  assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
  assert.equal(new TextDecoder().decode(result.stdout), "/\n");
});
