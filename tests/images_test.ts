// Images: what `socker images` shows, and images delivered to the node under the administrator's
// `pull = missing`: exactly the allowlisted reference (by digest when pinned), once however many runs start
// together, never anything else. Against a real registry on 127.0.0.1:5000 (tests/setup-registry.sh).
import assert from "node:assert/strict";
import {
  ABSENT_IMAGE,
  ALLOWLIST,
  assertRefused,
  auditRecords,
  DOCKER,
  IMAGE,
  marker,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  withAllowlist,
  withSettings,
} from "./helpers.ts";

const REGISTRY = "127.0.0.1:5000";
const TAGGED = `${REGISTRY}/socker-test/pullme:1`;
const DIGEST = Deno.readTextFileSync("/var/lib/socker-tests/registry/pinned.digest").trim();
const PINNED = `${REGISTRY}/socker-test/pinned@${DIGEST}`;
const NOT_ALLOWED = `${REGISTRY}/socker-test/notallowed:1`;

/** The engine forgets the registry's images again, so that the next run has to pull. */
async function forgetPulled(): Promise<void> {
  const reset = await sh("/bin/bash", ["tests/setup-registry.sh"]);
  assert.equal(reset.code, 0, reset.stderr);
}

/** The engine's pull events since `since` (seconds), of references that contain `name`. */
async function pullsSince(since: number, name: string): Promise<string[]> {
  const until = Math.floor(Date.now() / 1000) + 1;
  const events = await sh(DOCKER, [
    "events",
    "--since",
    String(since),
    "--until",
    String(until),
    "--filter",
    "type=image",
    "--filter",
    "event=pull",
    "--format",
    "{{.ID}}",
  ]);
  return events.stdout.split("\n").filter((line) => line.includes(name));
}

const now = () => Math.floor(Date.now() / 1000);

async function withPullMissing(body: () => Promise<void>): Promise<void> {
  const restore = withAllowlist(`${IMAGE}\n${TAGGED}\n${PINNED}\n`);
  try {
    await withSettings("pull = missing\n", body);
  } finally {
    restore();
  }
}

Deno.test("images: each allowed image, present or missing on this node, with its digest or its image id", async () => {
  const result = await socker("bob", ["images"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^IMAGE\s+NORMALISED\s+ON THIS NODE\s+DIGEST$/m);
  assert.match(
    result.stdout,
    new RegExp(`^${IMAGE}\\s+docker\\.io/${IMAGE}\\s+present\\s+image id sha256:[0-9a-f]{64}$`, "m"),
  );
  assert.match(result.stdout, new RegExp(`^${ABSENT_IMAGE}\\s+docker\\.io/${ABSENT_IMAGE}\\s+missing\\s+-$`, "m"));
});

Deno.test("images: pull = never (the default): an allowed image missing on the node is refused, never pulled", async () => {
  await forgetPulled();
  const since = now();
  const restore = withAllowlist(`${IMAGE}\n${TAGGED}\n`);
  try {
    assertRefused(await socker("alice", ["run", TAGGED, "true"]), /allowed but not present on node .*pull = missing/);
  } finally {
    restore();
  }
  assert.deepEqual(await pullsSince(since, "pullme"), []);
});

Deno.test("images: pull = missing: a tag entry is pulled on first use, once; the pull is recorded with its digest", async () => {
  await forgetPulled();
  await withPullMissing(async () => {
    const since = now();
    const first = await socker("alice", ["run", TAGGED, "echo", "first"]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, "first\n");
    assert.equal(first.stderr, "", "no progress when stderr is not a terminal");
    const second = await socker("alice", ["run", TAGGED, "echo", "second"]);
    assert.equal(second.stdout, "second\n");
    assert.equal((await pullsSince(since, "pullme")).length, 1, "pulled once, not again");
    const [record] = await auditRecords(`"image":"${TAGGED}"`).then((all) => all.filter((r) => r.event === "pull"));
    assert.equal(record?.outcome, "pulled");
    assert.match(String(record?.repo_digest), /^sha256:[0-9a-f]{64}$/);
    const images = await socker("alice", ["images"]);
    assert.match(
      images.stdout,
      new RegExp(`^${TAGGED}\\s+\\S+\\s+present\\s+sha256:[0-9a-f]{64}$`, "m"),
      images.stdout,
    );
  });
});

Deno.test("images: pull = missing: a digest-pinned entry is pulled by its digest", async () => {
  await forgetPulled();
  await withPullMissing(async () => {
    const since = now();
    const result = await socker("alice", ["run", PINNED, "echo", "pinned"]);
    assert.equal(result.stdout, "pinned\n", result.stderr);
    const pulls = await pullsSince(since, "pinned");
    assert.equal(pulls.length, 1, pulls.join("\n"));
    assert.ok(pulls[0].includes(DIGEST), `pulled by digest: ${pulls[0]}`);
  });
});

Deno.test("images: eight runs started together on one node pull once", async () => {
  await forgetPulled();
  await withPullMissing(async () => {
    const since = now();
    const runs = await Promise.all(
      Array.from({ length: 8 }, (_, i) => socker(i % 2 ? "alice" : "bob", ["run", TAGGED, "echo", `run${i}`])),
    );
    runs.forEach((run, i) => assert.equal(run.stdout, `run${i}\n`, run.stderr));
    assert.equal((await pullsSince(since, "pullme")).length, 1);
  });
});

Deno.test("images: a reference that is not allowlisted is never pulled", async () => {
  await forgetPulled();
  await withPullMissing(async () => {
    const since = now();
    for (const image of [NOT_ALLOWED, `${REGISTRY}/socker-test/pullme:2`, `${REGISTRY}/socker-test/pinned:1`]) {
      assertRefused(await socker("alice", ["run", image, "true"]), /is not allowed on this cluster/);
    }
    assert.deepEqual(await pullsSince(since, REGISTRY), []);
  });
});

Deno.test("images: the registry stopped: a clear 125, nothing half-pulled, and doctor says so", async () => {
  await forgetPulled();
  await withPullMissing(async () => {
    assert.equal((await sh("/bin/bash", ["tests/setup-registry.sh", "--stop"])).code, 0);
    try {
      assertRefused(
        await socker("alice", ["run", TAGGED, "true"]),
        /the pull of 127\.0\.0\.1:5000\/socker-test\/pullme:1 failed: .*connection refused/,
      );
      const inspect = await sh(DOCKER, ["image", "inspect", TAGGED]);
      assert.notEqual(inspect.code, 0, "no image appeared");
      const doctor = await sh(PRIVILEGED_SOCKER, ["doctor"]);
      assert.match(
        doctor.stdout,
        /^FIX {2}registry of 127\.0\.0\.1:5000\/socker-test\/pullme:1: 127\.0\.0\.1:5000 does not answer/m,
        doctor.stdout,
      );
    } finally {
      assert.equal((await sh("/bin/bash", ["tests/setup-registry.sh", "--start"])).code, 0);
    }
    const doctor = await sh(PRIVILEGED_SOCKER, ["doctor"]);
    assert.match(
      doctor.stdout,
      /^ok {3}registry of 127\.0\.0\.1:5000\/socker-test\/pullme:1: 127\.0\.0\.1:5000 answers/m,
      doctor.stdout,
    );
  });
});

Deno.test("images: socker pull IMAGE|--all is root's, regardless of the pull setting", async () => {
  await forgetPulled();
  const restore = withAllowlist(`${IMAGE}\n${TAGGED}\n${PINNED}\n`);
  try {
    assertRefused(await socker("alice", ["pull", "--all"]), /'pull' is for root/);
    assertRefused(await socker("alice", ["pull", TAGGED]), /'pull' is for root/);
    const one = await sh(PRIVILEGED_SOCKER, ["pull", TAGGED]);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, new RegExp(`^${TAGGED.replaceAll(".", "\\.")}: pulled \\(sha256:[0-9a-f]{64}\\)$`, "m"));
    const all = await sh(PRIVILEGED_SOCKER, ["pull", "--all"]);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /pullme:1: present/);
    assert.match(all.stdout, /pinned@sha256:[0-9a-f]{64}: pulled/);
    assert.match(all.stdout, /busybox:2: present/);
    const refused = await sh(PRIVILEGED_SOCKER, ["pull", NOT_ALLOWED]);
    assert.equal(refused.code, 125);
    assert.match(refused.stderr, /is not allowed on this cluster/);
  } finally {
    restore();
  }
  const tag = marker("after");
  assert.equal((await socker("alice", ["run", IMAGE, "echo", tag])).code, 0);
});

// ---- attacks (older classes): the allowlist

Deno.test("attack: a world-writable, user-owned or symlinked allowlist is refused", async () => {
  const info = Deno.statSync(ALLOWLIST);
  try {
    Deno.chmodSync(ALLOWLIST, 0o666);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /refusing to trust .*socker-images is writable by/);
    Deno.chmodSync(ALLOWLIST, 0o644);
    Deno.chownSync(ALLOWLIST, 2001, 2001);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /not owned by root \(owner uid 2001\)/);
    Deno.chownSync(ALLOWLIST, 0, 0);
    Deno.chmodSync("/etc/socker", 0o777);
    assertRefused(await socker("alice", ["images"]), /\/etc\/socker is writable by/);
  } finally {
    Deno.chmodSync("/etc/socker", 0o755);
    Deno.chownSync(ALLOWLIST, info.uid, info.gid);
    Deno.chmodSync(ALLOWLIST, info.mode! & 0o7777);
  }
  const userFile = "/home/alice/my-images";
  Deno.writeTextFileSync(userFile, `${IMAGE}\nsocker-test/anything:1\n`);
  Deno.chownSync(userFile, 2001, 2001);
  const saved = `${ALLOWLIST}.saved`;
  Deno.renameSync(ALLOWLIST, saved);
  try {
    Deno.symlinkSync(userFile, ALLOWLIST);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /refusing to trust/);
  } finally {
    Deno.removeSync(ALLOWLIST);
    Deno.renameSync(saved, ALLOWLIST);
    Deno.removeSync(userFile);
  }
  assert.equal((await socker("alice", ["run", IMAGE, "true"])).code, 0);
});
