// Tests of `socker doctor` against this machine's real installation, healthy and broken on purpose. Each
// break is undone in `finally`.
import assert from "node:assert/strict";
import { ALLOWLIST, assertRefused, IMAGE, PRIVILEGED_SOCKER, sh, socker, withAllowlist } from "./helpers.ts";

async function doctor() {
  const result = await sh(PRIVILEGED_SOCKER, ["doctor"]);
  return { ...result, fixes: result.stdout.split("\n").filter((line) => line.startsWith("FIX ")) };
}

/** Runs doctor with a break in place and expects exactly one FIX line matching `pattern`. */
async function expectFix(pattern: RegExp): Promise<void> {
  const report = await doctor();
  assert.equal(report.code, 1, report.stdout);
  assert.equal(report.fixes.length, 1, report.stdout);
  assert.match(report.fixes[0], pattern);
  assert.match(report.stdout, /1 of \d+ checks need a fix/);
}

Deno.test("doctor: a healthy installation passes every check, one line each, exit 0", async () => {
  const restore = withAllowlist(`${IMAGE}\n`);
  try {
    const report = await doctor();
    assert.equal(report.code, 0, report.stdout);
    assert.deepEqual(report.fixes, []);
    for (
      const name of [
        "installed",
        "allowlist",
        "sudoers rule",
        "account dockerroot",
        "Docker engine",
        "runc",
        "image",
        "Slurm configuration",
        "audit log",
      ]
    ) {
      assert.match(report.stdout, new RegExp(`^ok   ${name}`, "m"), name);
    }
    assert.match(report.stdout, /all \d+ checks passed\n$/);
  } finally {
    restore();
  }
});

Deno.test("doctor: each broken piece gets one FIX line saying how to fix it", async () => {
  const restore = withAllowlist(`${IMAGE}\n`);
  try {
    Deno.chmodSync(ALLOWLIST, 0o666);
    await expectFix(/allowlist .* writable by/);
    Deno.chmodSync(ALLOWLIST, 0o644);

    Deno.writeTextFileSync(ALLOWLIST, `${IMAGE}\nsocker-test/absent:1\n`);
    await expectFix(/image socker-test\/absent:1: not present on this node: docker pull or docker load/);
    Deno.writeTextFileSync(ALLOWLIST, `${IMAGE}\n`);

    Deno.chmodSync("/etc/sudoers.d/socker", 0o644);
    try {
      await expectFix(/sudoers rule .* mode 0440/);
    } finally {
      Deno.chmodSync("/etc/sudoers.d/socker", 0o440);
    }

    Deno.chmodSync("/usr/local/bin/socker", 0o4755);
    try {
      await expectFix(/installed \/usr\/local\/bin\/socker: .*set-id/);
    } finally {
      Deno.chmodSync("/usr/local/bin/socker", 0o755);
    }

    await sh("/usr/sbin/usermod", ["-a", "-G", "proj", "dockerroot"]);
    try {
      await expectFix(/account dockerroot: .*only group must be docker/);
    } finally {
      await sh("/usr/sbin/usermod", ["-G", "", "dockerroot"]);
    }

    Deno.writeTextFileSync("/etc/socker/socker.conf", "no_such_key = 1\n", { mode: 0o644 });
    try {
      await expectFix(/settings .*unknown setting 'no_such_key'/);
    } finally {
      Deno.removeSync("/etc/socker/socker.conf");
    }
  } finally {
    restore();
  }
  assert.equal((await doctor()).code === 0 || (await doctor()).fixes.every((l) => /image/.test(l)), true);
});

Deno.test("doctor is for root", async () => {
  assertRefused(await socker("alice", ["doctor"]), /'doctor' is for root/);
});
