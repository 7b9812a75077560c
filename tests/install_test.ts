// Tests of install.sh as a sysadmin uses it, on this machine (root). tests/run.sh has already installed
// socker with the default paths and --epilog; these tests check what that left, and that the script
// behaves: refuses set-id, refuses unknown options, changes nothing in --dry-run or on a second run.
import assert from "node:assert/strict";
import { sh } from "./helpers.ts";

const REPO = new URL("..", import.meta.url).pathname;
const INSTALLED = [
  "/usr/local/bin/socker",
  "/usr/local/libexec/socker/socker",
  "/usr/local/libexec/socker/slurm-epilog",
  "/usr/local/lib/socker/socker.ts",
  "/usr/local/lib/socker/deno",
  "/etc/sudoers.d/socker",
  "/etc/socker/socker-images",
];

function install(args: string[]) {
  return sh("/bin/bash", [`${REPO}install.sh`, ...args], { cwd: REPO });
}

async function snapshot(): Promise<string> {
  const result = await sh("/bin/sh", [
    "-c",
    `stat -c '%n %u:%g %a %s %Y' ${INSTALLED.join(" ")}; sha256sum ${INSTALLED.join(" ")}`,
  ]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

Deno.test("installed files are root-owned, not writable by others, and nothing is set-id", async () => {
  for (const path of INSTALLED) {
    const info = Deno.statSync(path);
    assert.equal(info.uid, 0, path);
    assert.equal(info.mode! & 0o022, 0, `${path} is group/other-writable`);
    assert.equal(info.mode! & 0o6000, 0, `${path} is set-id`);
  }
  const setId = await sh("/usr/bin/find", [
    "/usr/local/bin/socker",
    "/usr/local/libexec/socker",
    "/usr/local/lib/socker",
    "-perm",
    "/6000",
  ]);
  assert.equal(setId.stdout, "");
  assert.equal(Deno.statSync("/etc/sudoers.d/socker").mode! & 0o777, 0o440);
  const visudo = await sh("/usr/sbin/visudo", ["-cf", "/etc/sudoers.d/socker"]);
  assert.equal(visudo.code, 0, visudo.stdout + visudo.stderr);
  assert.match(
    Deno.readTextFileSync("/usr/local/bin/socker"),
    /^exec \/usr\/bin\/sudo -n -- \/usr\/local\/libexec\/socker\/socker "\$@"$/m,
  );
});

Deno.test("dockerroot's only group is docker; the privileged Deno cache is root-owned and filled", async () => {
  const groups = await sh("/usr/bin/id", ["-Gn", "dockerroot"]);
  assert.equal(groups.stdout.trim(), "docker");
  const cache = await sh("/usr/bin/find", ["/usr/local/lib/socker/deno-dir", "-not", "-user", "root"]);
  assert.equal(cache.stdout, "");
  const entries = [...Deno.readDirSync("/usr/local/lib/socker/deno-dir")];
  assert.ok(entries.length > 0, "DENO_DIR is filled at install time");
});

Deno.test("install.sh refuses to set a set-id bit, and says why", async () => {
  for (const flag of ["--setuid", "--setgid"]) {
    const result = await install([flag]);
    assert.equal(result.code, 2);
    assert.match(result.stdout + result.stderr, /DENO_INTERNAL_CHILD_ENTRYPOINT|set-?id/i);
  }
});

Deno.test("install.sh: unknown options are one-line errors; --help documents every option", async () => {
  const bad = await install(["--frobnicate"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /frobnicate/);
  const help = await install(["--help"]);
  assert.equal(help.code, 0);
  for (
    const option of [
      "--prefix",
      "--sysconfdir",
      "--docker",
      "--denort",
      "--epilog",
      "--demo",
      "--dry-run",
      "--uninstall",
    ]
  ) {
    assert.ok(help.stdout.includes(option), option);
  }
});

Deno.test("install.sh --dry-run and a second install change nothing", async () => {
  const before = await snapshot();
  const dry = await install(["--dry-run", "--epilog"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal(await snapshot(), before);
  const again = await install(["--epilog"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /unchanged/);
  assert.match(again.stdout, /kept existing \/etc\/socker\/socker-images/);
  assert.equal(await snapshot(), before);
});
