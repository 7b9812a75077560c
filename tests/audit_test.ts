// Integration tests of the audit log: every run, refusal and cleanup arrives in the real system log
// (rsyslogd, started by tests/setup.sh, writes authpriv to /var/log/auth.log) as one JSON line, and a run
// is never started when its record cannot be written.
import assert from "node:assert/strict";
import {
  assertRefused,
  IMAGE,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  stagingLeft,
  waitFor,
} from "./helpers.ts";

const AUTH_LOG = "/var/log/auth.log";

/** The socker records in the system log whose line contains `marker`, parsed. */
async function records(marker: string, count: number): Promise<Record<string, unknown>[]> {
  let found: Record<string, unknown>[] = [];
  await waitFor(
    async () => {
      const text = await Deno.readTextFile(AUTH_LOG).catch(() => "");
      found = text.split("\n")
        .filter((line) => line.includes(" socker[") && line.includes(marker))
        .map((line) => JSON.parse(line.slice(line.indexOf("]: ") + 3)));
      return found.length >= count;
    },
    5000,
    50,
  );
  return found;
}

const marker = () => `audit-${crypto.randomUUID().slice(0, 8)}`;

Deno.test("a run leaves a start and an end record: who, where, what, which container, outcome, duration", async () => {
  const tag = marker();
  const result = await socker("alice", ["run", "-v", "/home/alice:/work:ro", IMAGE, "sh", "-c", `echo ${tag}; exit 3`]);
  assert.equal(result.code, 3, result.stderr);
  const [start, end] = await records(tag, 2);
  assert.equal(start.event, "start");
  assert.equal(end.event, "end");
  for (const record of [start, end]) {
    assert.equal(record.user, "alice");
    assert.equal(record.uid, "2001");
    assert.ok(record.host);
    assert.equal(record.image, `docker.io/${IMAGE}`);
    assert.match(String(record.digest), /^sha256:[0-9a-f]{64}$/);
    assert.match(String(record.container), /^socker-2001-[0-9a-f]{12}$/);
    assert.deepEqual(record.command, ["sh", "-c", `echo ${tag}; exit 3`]);
    assert.ok((record.mounts as string[]).includes("/home/alice:/work:ro"), String(record.mounts));
  }
  assert.equal(end.outcome, "exit 3");
  assert.match(String(end.container_id), /^[0-9a-f]{64}$/);
  assert.ok(Number(end.duration_ms) > 0);
});

Deno.test("a refusal is recorded with the rule it broke", async () => {
  const tag = marker();
  const result = await socker("bob", ["run", "-v", "/etc:/x", IMAGE, "echo", tag]);
  assert.equal(result.code, 125);
  const [refused] = await records(tag, 1);
  assert.equal(refused.event, "refused");
  assert.equal(refused.user, "bob");
  assert.match(String(refused.rule), /not under a folder users may mount/);
});

Deno.test("cleanup is recorded", async () => {
  const result = await sh(PRIVILEGED_SOCKER, ["cleanup", "--job", "987654"]);
  assert.equal(result.code, 0, result.stderr);
  const [cleanup] = await records('"job":"987654"', 1);
  assert.equal(cleanup.event, "cleanup");
  assert.equal(cleanup.outcome, "ok");
});

Deno.test("when the system log cannot be written, no container is started", async () => {
  await sh("/usr/bin/pkill", ["-x", "rsyslogd"]);
  await waitFor(async () => (await sh("/usr/bin/pgrep", ["-x", "rsyslogd"])).code !== 0, 5000);
  try {
    const before = await sockerContainers();
    const result = await socker("alice", ["run", IMAGE, "echo", "should-not-run"]);
    assertRefused(result, /cannot write the audit log .*refusing to run unlogged/);
    assert.deepEqual(await sockerContainers(), before);
    assert.equal(await stagingLeft(), "");
  } finally {
    await sh("/usr/sbin/rsyslogd", []);
    await waitFor(
      async () => (await sh("/usr/bin/logger", ["--socket-errors=on", "-t", "probe", "x"])).code === 0,
      5000,
    );
  }
  const after = await socker("alice", ["run", IMAGE, "true"]);
  assert.equal(after.code, 0, after.stderr);
});
