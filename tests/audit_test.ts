// The audit log: every run, refusal and cleanup is one JSON line in the root-owned audit file (the record
// of truth), copied to the system log when one runs; a run never starts unlogged, and a missing system log
// never stops a run. rsyslogd (started by tests/setup.sh) writes authpriv to /var/log/auth.log.
import assert from "node:assert/strict";
import {
  assertRefused,
  AUDIT_LOG,
  auditRecords,
  folder,
  IMAGE,
  marker,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  stagingLeft,
  userLine,
  waitFor,
} from "./helpers.ts";

const asAlice = (line: string, env: Record<string, string> = {}) => userLine("alice", line, env);

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

// Issue 17.4: text a user controls reaches the administrator's terminal through `cat audit.log`. One sample
// of each family (NUL and lone surrogates cannot be in an argument or a file name; the unit tests cover them).
const UNSAFE_FAMILIES: Record<string, string> = {
  "C0 ESC erase-line": "\x1b[2K",
  "C0 CR LF BEL": "\r\n\x07",
  "DEL": "\x7f",
  "C1 CSI": "\u009b2K",
  "C1 OSC window title": "\u009d0;forged\u009c",
  "C1 NEL": "\u0085",
  "bidi override RLO": "\u202etxt.exe",
  "bidi isolate FSI PDI": "\u2068x\u2069",
  "line and paragraph separators": "\u2028\u2029",
};
// deno-lint-ignore no-control-regex
const RAW_UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

Deno.test("audit: control characters and bidi overrides in the command, the working folder, a mount and a refused image name land escaped", async () => {
  const tags: string[] = [];
  for (const [family, sample] of Object.entries(UNSAFE_FAMILIES)) {
    const tag = marker("unsafe");
    tags.push(tag);
    const dir = `/home/alice/${tag}${sample}`;
    folder(dir, 2001, 2001, 0o755);
    try {
      // The folder is the cwd, a -v source and the -w: it lands in workdir, mounts and command.
      const ran = await socker("alice", ["run", "-v", `${dir}:/data`, "-w", dir, IMAGE, "echo", `${tag}${sample}`], {
        cwd: dir,
      });
      assert.equal(ran.code, 0, `${family}: ${ran.stderr}`);
      assert.equal(ran.stdout, `${tag}${sample}\n`, family);
      const refused = await socker("alice", ["run", `busybox${sample}`, "echo", tag]);
      assert.equal(refused.code, 125, family);
      assert.doesNotMatch(refused.stderr.trimEnd(), RAW_UNSAFE, `${family}: the refusal line`);
      const records = await auditRecords(tag, 3);
      assert.deepEqual(records.map((record) => record.event), ["start", "end", "refused"], family);
      assert.deepEqual(records[0].command, ["echo", `${tag}${sample}`], `${family}: the command reads back`);
      assert.equal(records[0].workdir, dir, `${family}: the working folder reads back`);
      assert.ok((records[0].mounts as string[]).includes(`${dir}:/data`), `${family}: the mount reads back`);
      assert.match(String(records[2].rule), /busybox/, family);
    } finally {
      Deno.removeSync(dir);
    }
  }
  const lines = (await Deno.readTextFile(AUDIT_LOG)).split("\n").filter((line) => tags.some((t) => line.includes(t)));
  assert.equal(lines.length, 3 * tags.length);
  for (const line of lines) assert.doesNotMatch(line, RAW_UNSAFE, line);
  const copies = (await Deno.readTextFile("/var/log/auth.log").catch(() => "")).split("\n")
    .filter((line) => tags.some((t) => line.includes(t)));
  for (const line of copies) assert.doesNotMatch(line, RAW_UNSAFE, `system log: ${line}`);
});

// ---- attacks (issue 9 §5 and older): audit records forged, cut, skipped or flooded

Deno.test("attack: a record forged on syslog never reaches the audit file", async () => {
  const tag = marker("forged");
  for (const forged of [`{"event":"cleanup","job":"${tag}"}`, `socker[4242]: {"event":"end","user":"${tag}"}`]) {
    await asAlice(`logger -t socker -p authpriv.info '${forged}'`);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.ok(!Deno.readTextFileSync(AUDIT_LOG).includes(tag));
  assert.equal(Deno.statSync(AUDIT_LOG).mode! & 0o777, 0o600);
  assert.equal(Deno.statSync("/var/log/socker").mode! & 0o777, 0o700);
});

Deno.test("attack: long commands cannot hide their tail or the outcome", async () => {
  const spellings = [
    ["echo", " ".repeat(250), "REALCMD"],
    ["echo", ...Array(69).fill("padding"), "REALCMD"],
    ["echo", ...Array(60).fill("x".repeat(200)), "REALCMD"],
  ];
  for (const argv of spellings) {
    const tag = marker("long");
    const result = await socker("alice", ["run", IMAGE, ...argv, tag]);
    assert.equal(result.code, 0, result.stderr);
    const records = await auditRecords(tag, 2);
    for (const record of records) {
      assert.deepEqual(record.command, [...argv, tag], "the file keeps the whole command");
      assert.ok(record.container, "no short field lost");
    }
    assert.equal(records.find((r) => r.event === "end")?.outcome, "exit 0");
  }
});

Deno.test("attack: refusals at the parser, and doctor or cleanup by a user, are recorded", async () => {
  const cases = [
    ["run", "--privileged", IMAGE, "id"],
    ["run", "--", "--privileged", "id"],
    ["--network=host", "run", IMAGE, "id"],
    ["doctor"],
    ["cleanup", "--job", "1"],
    ["cleanup", "--orphans"],
  ];
  for (const args of cases) {
    const tag = marker("refused");
    const result = await socker("alice", [...args, tag]);
    assert.equal(result.code, 125);
    const [record] = await auditRecords(tag);
    assert.equal(record.event, "refused", args.join(" "));
    assert.equal(record.user, "alice");
    assert.ok(String(record.rule).length > 0);
  }
});

Deno.test("attack: a flood of refusals adds at most one system-log line each to the audit file", async () => {
  const before = Deno.statSync("/var/log/socker/audit.log").size;
  const tag = marker("flood");
  const result = await socker("bob", ["run", "socker-test/nope:1", "echo", tag, "x".repeat(60_000)]);
  assertRefused(result, /not in the allowlist|not allowed/);
  const [record] = await auditRecords(tag);
  assert.equal(record.event, "refused");
  assert.equal(record.command_length, 60_000 + tag.length + 4);
  const grown = Deno.statSync("/var/log/socker/audit.log").size - before;
  assert.ok(grown <= 4001, `the file grew by ${grown} bytes`);
  assert.match(String(record.command_sha256), /^[0-9a-f]{64}$/, "the digest of the cut command is whole");
  // The caller's text quoted in the reason itself: a huge -v source or destination, with control bytes.
  for (
    const spec of [
      `/home/bob/${"\x01".repeat(130_000)}:/x`,
      `/home/bob:/${"a".repeat(130_000)}`,
      `/home/bob:/${"a\n".repeat(60_000)}`,
    ]
  ) {
    const start = Deno.statSync("/var/log/socker/audit.log").size;
    const tagged = marker("flood");
    const refused = await socker("bob", ["run", "-v", spec, "-v", spec, IMAGE, "echo", tagged]);
    assert.equal(refused.code, 125);
    assert.ok(refused.stderr.length <= 1100, `a ${refused.stderr.length}-byte refusal line`);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x09\x0b-\x1f]/.test(refused.stderr), "control bytes on the caller's terminal");
    assert.equal(refused.stderr.trimEnd().split("\n").length, 1, "one line");
    const [line] = await auditRecords(tagged);
    assert.equal(line?.event, "refused");
    const size = Deno.statSync("/var/log/socker/audit.log").size - start;
    assert.ok(size <= 4001, `the file grew by ${size} bytes`);
  }
});

Deno.test("attack: a file-size limit just past the audit log's end cuts no record short, and tells nothing of its size", async () => {
  // Each limit lands inside the refusal's own line, where the kernel would cut it; none may be written in part.
  for (const extra of [1, 60, 300]) {
    const tag = marker("fsize");
    const before = Deno.statSync(AUDIT_LOG).size;
    const result = await asAlice(`exec prlimit --fsize=${before + extra} socker run ${IMAGE} echo ${tag}`);
    assertRefused(result, /file-size limit \(ulimit -f\) is \d+ KiB; socker needs it unlimited/);
    const text = Deno.readTextFileSync(AUDIT_LOG);
    assert.ok(text.endsWith("\n"), `+${extra}: the log still ends with a whole line`);
    for (const line of text.slice(before).split("\n").filter((l) => l !== "")) JSON.parse(line);
    assert.ok(!text.slice(before).includes(tag), `+${extra}: the file took no part of the refused record`);
    const copied = await waitFor(
      async () => (await Deno.readTextFile("/var/log/auth.log").catch(() => "")).includes(tag),
      5000,
    );
    assert.ok(copied >= 0, `+${extra}: the system log has the refusal`);
  }
});
