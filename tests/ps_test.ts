// socker ps and socker stop: a user sees and stops their own containers on this node, and nobody else's;
// stop works like a SIGTERM to the supervising socker, which then exits 143. Tested with two users.
import assert from "node:assert/strict";
import {
  assertRefused,
  auditRecords,
  IMAGE,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  spawnSocker,
  waitFor,
} from "./helpers.ts";

async function started(user: string, count: number): Promise<void> {
  const ok = await waitFor(
    async () => (await sockerContainers(`label=socker.uid=${user === "alice" ? 2001 : 2002}`)).length === count,
    15_000,
  );
  assert.ok(ok >= 0, `${user}'s container started`);
}

Deno.test("ps: each user sees their own containers only: name, image, command, age, job", async () => {
  const alice = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
  const bob = spawnSocker("bob", ["run", IMAGE, "sleep", "999"]);
  try {
    await started("alice", 1);
    await started("bob", 1);
    const mine = await socker("alice", ["ps"]);
    assert.equal(mine.code, 0, mine.stderr);
    const lines = mine.stdout.trim().split("\n");
    assert.match(lines[0], /^NAME\s+IMAGE\s+COMMAND\s+AGE\s+JOB$/);
    assert.equal(lines.length, 2, mine.stdout);
    assert.match(lines[1], /^socker-2001-[0-9a-f]{12}\s+docker\.io\/socker-test\/busybox:2\s+sleep 1000\s+\d+s\s+-$/);
    const root = await sh(PRIVILEGED_SOCKER, ["ps"]);
    assert.equal(root.stdout.trim().split("\n").length, 3, "root sees both");
    assert.match(root.stdout, /USER/);
  } finally {
    alice.kill("SIGTERM");
    bob.kill("SIGTERM");
    await alice.output();
    await bob.output();
  }
});

Deno.test("stop: the owner stops a container by name or id; its socker exits 143; the stop is recorded", async () => {
  for (const by of ["name", "id"]) {
    const child = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
    await started("alice", 1);
    const listed = await sh("/usr/bin/docker", [
      "ps",
      "-a",
      "--filter",
      "label=socker.uid=2001",
      "--format",
      "{{.Names}} {{.ID}}",
    ]);
    const [name, id] = listed.stdout.trim().split(" ");
    const result = await socker("alice", ["stop", by === "name" ? name : id.slice(0, 8)]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `socker: stopped ${name}\n`);
    assert.equal((await child.output()).code, 143, "the supervising socker exits as after SIGTERM");
    assert.deepEqual(await sockerContainers(), []);
    const [record] = await auditRecords(`"container":"${name}"`, 1).then((all) =>
      all.filter((r) => r.event === "stop")
    );
    assert.equal(record?.outcome, "stopped through its socker");
  }
});

Deno.test("stop: another user's container is refused as if it did not exist, and keeps running", async () => {
  const child = spawnSocker("bob", ["run", IMAGE, "sleep", "1000"]);
  try {
    await started("bob", 1);
    const listed = await sh("/usr/bin/docker", [
      "ps",
      "-a",
      "--filter",
      "label=socker.uid=2002",
      "--format",
      "{{.Names}} {{.ID}}",
    ]);
    const [name, id] = listed.stdout.trim().split(" ");
    for (const target of [name, id, id.slice(0, 4), "socker-2002-000000000000"]) {
      assertRefused(await socker("alice", ["stop", target]), /no container of yours named .* on this node/);
    }
    assert.equal((await sockerContainers("label=socker.uid=2002")).length, 1, "bob's container still runs");
    assert.doesNotMatch((await socker("alice", ["ps"])).stdout, /2002/);
  } finally {
    child.kill("SIGTERM");
    await child.output();
  }
});

Deno.test("stop: a container whose socker was killed is removed directly", async () => {
  const child = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
  await started("alice", 1);
  const deno = (await sh("/usr/bin/pgrep", ["-P", String(child.pid)])).stdout.trim();
  await sh("/bin/kill", ["-KILL", deno]);
  await child.output();
  const name = (await sockerContainers("label=socker.uid=2001"))[0];
  const result = await socker("alice", ["stop", name]);
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(await sockerContainers(), []);
});
