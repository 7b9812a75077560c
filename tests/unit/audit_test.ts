// Unit tests of the audit log's records: one line of JSON, short fields first, bounded, never losing the
// outcome; the system-log copy; and the trust the audit file needs.
import assert from "node:assert/strict";
import {
  AUDIT_LINE_MAX,
  auditFileProblem,
  auditLine,
  auditLineLimit,
  REASON_MAX,
  Refusal,
  SYSLOG_LINE_MAX,
  syslogDatagram,
} from "../../socker.ts";

const record = (command: string[]) => ({
  event: "end",
  command,
  mounts: ["/home/alice:/home/alice"],
  user: "alice",
  outcome: "exit 0",
  container: "socker-2001-aa",
  uid: 2001,
  job: undefined,
});

Deno.test("a record is one line of JSON, short fields first, undefined fields left out", () => {
  const line = auditLine(record(["sh", "-c", "x\ny"]), AUDIT_LINE_MAX);
  assert.ok(!line.includes("\n"));
  assert.deepEqual(Object.keys(JSON.parse(line)), [
    "event",
    "user",
    "uid",
    "outcome",
    "container",
    "mounts",
    "command",
  ]);
  assert.deepEqual(JSON.parse(line).command, ["sh", "-c", "x\ny"]);
});

Deno.test("a long command keeps its whole arguments while they fit, and says what was cut", () => {
  const long = ["echo", ...Array.from({ length: 69 }, () => "a".repeat(250)), "REALCMD"];
  const whole = JSON.parse(auditLine(record(long), AUDIT_LINE_MAX));
  assert.deepEqual(whole.command, long, "69 arguments of 250 bytes fit in the file's record whole");
  const cut = JSON.parse(auditLine(record(long), SYSLOG_LINE_MAX, "f".repeat(64)));
  assert.equal(cut.outcome, "exit 0");
  assert.equal(cut.command_cut, true);
  assert.equal(cut.command_length, 4 + 69 * 250 + 7);
  assert.equal(cut.command_sha256, "f".repeat(64));
  assert.equal(cut.command[0], "echo");
  assert.ok(
    new TextEncoder().encode(auditLine(record(long), SYSLOG_LINE_MAX, "f".repeat(64))).length <= SYSLOG_LINE_MAX,
  );
});

Deno.test("no record ever exceeds its bound or loses its short fields, whatever it holds", () => {
  const huge = {
    ...record(Array.from({ length: 4000 }, (_, i) => `${i}${"é".repeat(300)}`)),
    mounts: Array.from({ length: 40 }, () => `/home/${"x".repeat(4000)}:/d`),
    workdir: "w".repeat(100000),
  };
  for (const max of [AUDIT_LINE_MAX, SYSLOG_LINE_MAX]) {
    const line = auditLine(huge, max, "0".repeat(64));
    assert.ok(new TextEncoder().encode(line).length <= max, `${max}: ${line.length}`);
    const parsed = JSON.parse(line);
    assert.deepEqual([parsed.event, parsed.user, parsed.uid, parsed.outcome, parsed.container], [
      "end",
      "alice",
      2001,
      "exit 0",
      "socker-2001-aa",
    ]);
    assert.equal(parsed.command_cut, true);
  }
});

Deno.test("syslog datagrams carry facility, time, tag and pid in the traditional local format", () => {
  const date = new Date(2026, 10, 9, 3, 4, 5);
  assert.equal(syslogDatagram("authpriv", 42, date, "{}"), "<86>Nov  9 03:04:05 socker[42]: {}");
  assert.equal(syslogDatagram("local3", 1, date, "x"), "<158>Nov  9 03:04:05 socker[1]: x");
});

Deno.test("the audit folder and file must be root's alone", () => {
  const file = (change: object) => ({ kind: "file" as const, uid: 0, mode: 0o100600, size: 10, nlink: 1, ...change });
  const folder = (change: object) => file({ kind: "dir", mode: 0o40700, ...change });
  assert.equal(auditFileProblem(file({}), false), undefined);
  assert.equal(auditFileProblem(folder({}), true), undefined);
  assert.match(auditFileProblem(file({ mode: 0o100644 }), false)!, /open to others/);
  assert.match(auditFileProblem(file({ uid: 2001 }), false)!, /not owned by root/);
  assert.match(auditFileProblem(file({ nlink: 2 }), false)!, /hard links/);
  assert.match(auditFileProblem(folder({ mode: 0o40755 }), true)!, /open to others \(mode must be 0700\)/);
  assert.match(auditFileProblem(file({}), true)!, /is not a folder/);
  assert.match(auditFileProblem(file({ kind: "other" }), false)!, /is not a regular file/);
});

Deno.test("a refusal's record is bounded like a system-log line, so a flood of refusals cannot fill the disk fast", () => {
  assert.equal(auditLineLimit("refused"), SYSLOG_LINE_MAX);
  for (const event of ["start", "end", "pull", "cleanup", "stop"]) assert.equal(auditLineLimit(event), AUDIT_LINE_MAX);
  const flood = {
    event: "refused",
    user: "bob",
    uid: 2002,
    rule: "image 'x' is not allowed",
    command: ["x".repeat(60_000)],
  };
  const line = auditLine(flood, auditLineLimit("refused"), "0".repeat(64));
  assert.ok(new TextEncoder().encode(line).length <= SYSLOG_LINE_MAX);
  const kept = JSON.parse(line);
  assert.deepEqual([kept.event, kept.rule, kept.command_length, kept.command_sha256], [
    "refused",
    flood.rule,
    60_000,
    "0".repeat(64),
  ]);
});

Deno.test("a refusal quoting the caller's huge text with control bytes is one printable, bounded line", () => {
  const refusal = new Refusal("policy", `mount source '/home/bob/${"\x01\n".repeat(65_000)}' is refused`);
  assert.ok(refusal.reason.length <= REASON_MAX + 3, `${refusal.reason.length} characters`);
  // deno-lint-ignore no-control-regex
  assert.doesNotMatch(refusal.reason, /[\x00-\x1f]/);
  assert.equal(refusal.message, refusal.reason);
  const line = auditLine(
    { event: "refused", rule: refusal.reason, command: ["echo", "x".repeat(10_000)] },
    SYSLOG_LINE_MAX,
    "a".repeat(64),
  );
  assert.ok(new TextEncoder().encode(line).length <= SYSLOG_LINE_MAX);
  assert.equal(JSON.parse(line).command_sha256, "a".repeat(64), "the digest of a cut command is never cut");
});
