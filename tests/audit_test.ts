// The audit log: every run, refusal and cleanup is one JSON line in the root-owned audit file (the record
// of truth), copied to the system log when one runs; a run never starts unlogged, and a missing system log
// never stops a run. rsyslogd (started by tests/setup.sh) writes authpriv to /var/log/auth.log.
import assert from "node:assert/strict";
import {
  assertRefused,
  AUDIT_LOG,
  auditRecords,
  IMAGE,
  marker,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  stagingLeft,
  waitFor,
} from "./helpers.ts";

Deno.test("audit: a run leaves a start and an end record: who, where, what, which container, outcome, duration", async () => {
  const tag = marker("audit");
  const result = await socker("alice", ["run", "-v", "/home/alice:/work:ro", IMAGE, "sh", "-c", `echo ${tag}; exit 3`]);
  assert.equal(result.code, 3, result.stderr);
  const [start, end] = await auditRecords(tag, 2);
  assert.deepEqual([start.event, end.event], ["start", "end"]);
  for (const record of [start, end]) {
    assert.equal(record.user, "alice");
    assert.equal(record.uid, 2001);
    assert.ok(record.host);
    assert.ok(Date.parse(String(record.time)) > 0);
    assert.equal(record.image, `docker.io/${IMAGE}`);
    assert.match(String(record.image_id), /^sha256:[0-9a-f]{64}$/);
    assert.match(String(record.container), /^socker-2001-[0-9a-f]{12}$/);
    assert.deepEqual(record.command, ["sh", "-c", `echo ${tag}; exit 3`]);
    assert.ok((record.mounts as string[]).includes("/home/alice:/work:ro"), String(record.mounts));
  }
  assert.equal(end.outcome, "exit 3");
  assert.match(String(end.container_id), /^[0-9a-f]{64}$/);
  assert.ok(Number(end.duration_ms) > 0);
  assert.ok(Object.keys(end).indexOf("outcome") < Object.keys(end).indexOf("command"), "short fields first");
});

Deno.test("audit: a refusal is recorded with the rule it broke", async () => {
  const tag = marker("refusal");
  assert.equal((await socker("bob", ["run", "-v", "/etc:/x", IMAGE, "echo", tag])).code, 125);
  const [refused] = await auditRecords(tag);
  assert.equal(refused.event, "refused");
  assert.equal(refused.user, "bob");
  assert.match(String(refused.rule), /not under a folder users may mount/);
});

Deno.test("audit: cleanup is recorded", async () => {
  const result = await sh(PRIVILEGED_SOCKER, ["cleanup", "--job", "987654"]);
  assert.equal(result.code, 0, result.stderr);
  const [cleanup] = await auditRecords('"job":"987654"');
  assert.equal(cleanup.event, "cleanup");
  assert.equal(cleanup.outcome, "ok");
});

Deno.test("audit: the file is root's alone, and the system log gets a copy when it runs", async () => {
  assert.equal(Deno.statSync(AUDIT_LOG).uid, 0);
  assert.equal(Deno.statSync(AUDIT_LOG).mode! & 0o777, 0o600);
  assert.equal(Deno.statSync("/var/log/socker").mode! & 0o777, 0o700);
  const tag = marker("copy");
  assert.equal((await socker("alice", ["run", IMAGE, "echo", tag])).code, 0);
  const copied = await waitFor(
    async () => (await Deno.readTextFile("/var/log/auth.log").catch(() => "")).includes(tag),
    5000,
  );
  assert.ok(copied >= 0, "the system log has the copy");
});

Deno.test("audit: without a system log the run goes ahead, recorded in the file", async () => {
  await sh("/usr/bin/pkill", ["-x", "rsyslogd"]);
  await waitFor(async () => (await sh("/usr/bin/pgrep", ["-x", "rsyslogd"])).code !== 0, 5000);
  const socket = "/dev/log";
  try {
    Deno.removeSync(socket);
  } catch { /* gone with the daemon */ }
  try {
    const tag = marker("nosyslog");
    const result = await socker("alice", ["run", IMAGE, "echo", tag]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "");
    assert.equal((await auditRecords(tag, 2)).length, 2);
  } finally {
    await sh("/usr/sbin/rsyslogd", []);
    await waitFor(
      async () => (await sh("/usr/bin/logger", ["--socket-errors=on", "-t", "probe", "x"])).code === 0,
      5000,
    );
  }
});

Deno.test("audit: when the audit file cannot be written, no container is started", async () => {
  Deno.chmodSync("/var/log/socker", 0o755);
  try {
    const before = await sockerContainers();
    assertRefused(
      await socker("alice", ["run", IMAGE, "echo", "should-not-run"]),
      /cannot write the audit log .*refusing to run unlogged/,
    );
    assert.deepEqual(await sockerContainers(), before);
    assert.equal(await stagingLeft(), "");
  } finally {
    Deno.chmodSync("/var/log/socker", 0o700);
  }
  assert.equal((await socker("alice", ["run", IMAGE, "true"])).code, 0);
});
