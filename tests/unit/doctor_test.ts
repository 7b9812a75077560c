// Unit tests of socker doctor: its table (one fault, one FIX line; what needs it says skipped), the runc
// and containerd version checks, and the watcher's row.
import assert from "node:assert/strict";
import {
  containerdFixed,
  containerdVersion,
  DOCTOR_ROWS,
  doctorReport,
  type DoctorRow,
  Refusal,
  runcFixed,
  watcherVerdict,
} from "../../socker.ts";

const row = (name: string, needs: string[], ok: boolean): DoctorRow => ({
  name,
  needs,
  probe: () => undefined,
  judge: () => ({ name, ok, detail: ok ? "fine" : "do x" }),
});

Deno.test("doctor: one line per check, exit 0 only when all pass", () => {
  assert.deepEqual(doctorReport([row("a", [], true)], new Map()), {
    lines: ["ok   a: fine", "all 1 checks passed"],
    exitCode: 0,
  });
  assert.deepEqual(doctorReport([row("a", [], true), row("b", [], false)], new Map()), {
    lines: ["ok   a: fine", "FIX  b: do x", "1 of 2 checks need a fix"],
    exitCode: 1,
  });
});

Deno.test("doctor: a check whose prerequisite failed says skipped, so one fault gives one FIX line", () => {
  const rows = [
    row("engine", [], false),
    row("runc", ["engine"], true),
    row("images", ["engine", "allowlist"], true),
    row("deeper", ["runc"], true),
    row("allowlist", [], true),
  ];
  const report = doctorReport(rows, new Map());
  assert.deepEqual(report.lines, [
    "FIX  engine: do x",
    "skip runc: skipped: needs engine",
    "skip images: skipped: needs engine",
    "skip deeper: skipped: needs runc",
    "ok   allowlist: fine",
    "1 of 2 checks need a fix",
  ]);
});

Deno.test("doctor's real table: a stopped engine is one FIX line, the rest that needs it is skipped", () => {
  const down = new Refusal("engine", "the Docker engine is not reachable at /var/run/docker.sock: refused");
  const facts = new Map<string, unknown>(DOCTOR_ROWS.map((r) => [r.name, down]));
  const report = doctorReport(
    DOCTOR_ROWS.filter((r) =>
      ["the Docker engine", "runc", "containerd", "images", "registries", "Slurm's cgroups"].includes(r.name)
    ),
    facts,
  );
  assert.equal(report.lines.filter((line) => line.startsWith("FIX")).length, 1, report.lines.join("\n"));
  assert.match(report.lines[0], /^FIX {2}Docker engine: the Docker engine is not reachable/);
  assert.ok(
    report.lines.slice(1, -1).every((line) => /^skip .*: skipped: needs the Docker engine/.test(line)),
    report.lines.join("\n"),
  );
  for (const needs of DOCTOR_ROWS.flatMap((r) => r.needs)) {
    assert.ok(DOCTOR_ROWS.some((r) => r.name === needs), `a row needs '${needs}', which is a row`);
  }
});

Deno.test("runc: 1.1.12 or later, or a distribution build known to carry the CVE-2024-21626 fix", () => {
  assert.equal(runcFixed("1.1.12"), true);
  assert.equal(runcFixed("v1.1.14-0-g2c9f560"), true);
  assert.equal(runcFixed("1.1.11"), false);
  assert.equal(runcFixed("1.1.5+ds1-1+deb12u1"), true);
  assert.equal(runcFixed("1.1.5+ds1-1"), false);
  assert.equal(runcFixed("f19387a6"), undefined);
});

const stat = (pid: number, start: number) => `${pid} (deno) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 ${start} 0 0`;

Deno.test("containerd before the CVE-2020-15257 fix is recognised", () => {
  for (const fixed of ["1.3.9", "1.4.3", "1.4.12", "1.5.0", "1.6.20~ds1", "v1.7.2", "2.0.0"]) {
    assert.equal(containerdFixed(fixed), true, fixed);
  }
  for (const vulnerable of ["1.3.8", "1.4.2", "1.4.0", "1.2.13", "0.9.0"]) {
    assert.equal(containerdFixed(vulnerable), false, vulnerable);
  }
  assert.equal(containerdFixed("abcdef"), undefined);
  assert.equal(
    containerdVersion({
      Components: [{ Name: "Engine", Version: "20.10" }, { Name: "containerd", Version: "1.6.20~ds1" }],
    }),
    "1.6.20~ds1",
  );
  assert.equal(containerdVersion({}), undefined);
});

Deno.test("doctor: the watcher runs, or the row says what is lost without it", () => {
  assert.match(watcherVerdict({ recorded: "42:100", stat: stat(42, 100) }), /socker watch runs \(pid 42\)/);
  for (const fact of [{}, { recorded: "42:100" }, { recorded: "42:100", stat: stat(42, 7) }, { recorded: "x" }]) {
    assert.throws(() => watcherVerdict(fact), (error) => error instanceof Refusal && /does not run/.test(error.reason));
  }
});
