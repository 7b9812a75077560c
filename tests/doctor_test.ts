// socker doctor against this machine's real installation, healthy and broken on purpose: one fault gives
// exactly one FIX line, checks that need a failed one say skipped, and every break is undone and proven
// undone (doctor is healthy again).
import assert from "node:assert/strict";
import {
  ALLOWLIST,
  assertRefused,
  IMAGE,
  PRIVILEGED_SOCKER,
  restoreSettings,
  sh,
  socker,
  startEngine,
  stopEngine,
  withAllowlist,
  writeSettings,
} from "./helpers.ts";

async function doctor() {
  const result = await sh(PRIVILEGED_SOCKER, ["doctor"]);
  const lines = result.stdout.split("\n");
  return {
    ...result,
    fixes: lines.filter((line) => line.startsWith("FIX ")),
    skips: lines.filter((line) => line.startsWith("skip ")),
  };
}

async function expectHealthy(): Promise<void> {
  const report = await doctor();
  assert.equal(report.code, 0, report.stdout);
  assert.deepEqual(report.fixes, []);
  assert.deepEqual(report.skips, []);
  assert.match(report.stdout, /all \d+ checks passed\n$/);
}

/** Runs doctor with a break in place and expects exactly one FIX line matching `pattern`. */
async function expectOneFix(pattern: RegExp): Promise<string[]> {
  const report = await doctor();
  assert.equal(report.code, 1, report.stdout);
  assert.equal(report.fixes.length, 1, report.stdout);
  assert.match(report.fixes[0], pattern);
  assert.match(report.stdout, /1 of \d+ checks need a fix/);
  return report.skips;
}

Deno.test("doctor: a healthy installation passes every check, one line each, exit 0", async () => {
  const restore = withAllowlist(`${IMAGE}\n`);
  try {
    const report = await doctor();
    assert.equal(report.code, 0, report.stdout);
    for (
      const name of [
        "installed",
        "allowlist",
        "settings",
        "sudoers rule",
        "kernel checks paths",
        "audit log",
        "Docker engine",
        "runc",
        "containerd",
        "image",
        "Slurm configuration",
        "engine fits Slurm's cgroups",
        "device rules in jobs",
        "orphan reaper",
      ]
    ) {
      assert.match(report.stdout, new RegExp(`^ok   ${name}`, "m"), name);
    }
    await expectHealthy();
  } finally {
    restore();
  }
});

Deno.test("doctor: each broken piece gets exactly one FIX line saying how to fix it, and is healthy after", async () => {
  const restore = withAllowlist(`${IMAGE}\n`);
  try {
    Deno.chmodSync(ALLOWLIST, 0o666);
    const skips = await expectOneFix(/allowlist .* writable by/);
    assert.ok(skips.some((line) => /^skip images: skipped: needs allowlist/.test(line)), skips.join("\n"));
    Deno.chmodSync(ALLOWLIST, 0o644);
    await expectHealthy();

    Deno.writeTextFileSync(ALLOWLIST, `${IMAGE}\nsocker-test/absent:1\n`);
    await expectOneFix(/image socker-test\/absent:1: not present on this node: docker load it, run 'socker pull'/);
    Deno.writeTextFileSync(ALLOWLIST, `${IMAGE}\n`);
    await expectHealthy();

    Deno.chmodSync("/etc/sudoers.d/socker", 0o644);
    try {
      await expectOneFix(/sudoers rule .* mode 0440/);
    } finally {
      Deno.chmodSync("/etc/sudoers.d/socker", 0o440);
    }
    await expectHealthy();

    Deno.chmodSync("/usr/local/bin/socker", 0o4755);
    try {
      await expectOneFix(/installed \/usr\/local\/bin\/socker: .*set-id/);
    } finally {
      Deno.chmodSync("/usr/local/bin/socker", 0o755);
    }
    await expectHealthy();

    writeSettings("no_such_key = 1\n");
    try {
      await expectOneFix(/settings .*unknown setting 'no_such_key'/);
    } finally {
      restoreSettings();
    }
    await expectHealthy();

    // ConstrainDevices=yes on this cgroup v1 cluster (tests/setup.sh): socker's runtime must be in place.
    const runtime = "/usr/local/libexec/socker/socker-runc";
    Deno.renameSync(runtime, `${runtime}.moved`);
    try {
      await expectOneFix(
        /device rules in jobs: .*socker-runc is missing: ask your administrator to run socker's install\.sh/,
      );
    } finally {
      Deno.renameSync(`${runtime}.moved`, runtime);
    }
    await expectHealthy();

    Deno.chmodSync("/var/log/socker", 0o755);
    try {
      await expectOneFix(/audit log .*open to others/);
    } finally {
      Deno.chmodSync("/var/log/socker", 0o700);
    }
    await expectHealthy();
  } finally {
    restore();
  }
});

Deno.test("doctor: a stopped engine is one FIX line; the checks that need it say skipped", async () => {
  const restore = withAllowlist(`${IMAGE}\n`);
  await stopEngine();
  try {
    const skips = await expectOneFix(/Docker engine: the Docker engine is not reachable/);
    for (const name of ["runc", "containerd", "images", "Slurm's cgroups"]) {
      assert.ok(
        skips.some((line) => line.startsWith(`skip ${name}: skipped: needs the Docker engine`)),
        `${name}: ${skips.join("\n")}`,
      );
    }
  } finally {
    await startEngine();
    restore();
  }
});

Deno.test("doctor is for root", async () => {
  assertRefused(await socker("alice", ["doctor"]), /'doctor' is for root/);
});
