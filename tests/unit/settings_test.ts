// Unit tests of socker.conf: every key with its good values, every bad value, and the file-level rules.
import assert from "node:assert/strict";
import { DEFAULT_SETTINGS, parseSettings, Refusal, type Settings } from "../../socker.ts";
import { IMAGE, planTests, rootFile, run, runFacts, SETTINGS, settingsFile } from "./facts.ts";

const parse = (text: string) => parseSettings(text, "/etc/socker/socker.conf");

function refused(text: string, pattern: RegExp): void {
  assert.throws(() => parse(text), (error: unknown) => {
    assert.ok(error instanceof Refusal, `${text}: expected a Refusal, got ${error}`);
    assert.equal(error.kind, "installation");
    assert.match(error.reason, pattern, text);
    assert.match(error.reason, /^\/etc\/socker\/socker\.conf:\d+: /, "names the file and line");
    return true;
  });
}

const good: [string, Partial<Settings>][] = [
  ["require_job = yes", { requireJob: true }],
  ["require_job = no", { requireJob: false }],
  ["network = bridge", { network: "bridge" }],
  ["network = none", { network: "none" }],
  ["network = host", { network: "host" }],
  ["ipc = host", { ipc: "host" }],
  ["ipc = private", { ipc: "private" }],
  ["pid = host", { pid: "host" }],
  ["uts = host", { uts: "host" }],
  ["pull = missing", { pull: "missing" }],
  ["pull = never", { pull: "never" }],
  ["default_mounts = home workdir /scratch", { defaultMounts: ["home", "workdir", "/scratch"] }],
  ["default_mounts =", { defaultMounts: [] }],
  ["mount_prefixes = /home /scratch /projects", { mountPrefixes: ["/home", "/scratch", "/projects"] }],
  ["forbidden_destinations = /opt/site /srv", { forbiddenDestinations: ["/opt/site", "/srv"] }],
  ["env_set = OMPI_MCA_btl_tcp_if_exclude=127.0.0.1/8,docker0", {
    envSet: { OMPI_MCA_btl_tcp_if_exclude: "127.0.0.1/8,docker0" },
  }],
  ["env_set = EMPTY=", { envSet: { EMPTY: "" } }],
  ["env_deny = LD_PRELOAD LD_AUDIT", { envDeny: ["LD_PRELOAD", "LD_AUDIT"] }],
  ["env_pass = OMP_* CUDA_VISIBLE_DEVICES NCCL_? *", { envPass: ["OMP_*", "CUDA_VISIBLE_DEVICES", "NCCL_?", "*"] }],
  ["log_facility = local3", { logFacility: "local3" }],
];

for (const [line, expected] of good) {
  Deno.test(`socker.conf: '${line}' is read`, () => {
    const settings = parse(`# a comment\n\n  ${line}  # trailing comment\n`);
    for (const [key, value] of Object.entries(expected)) assert.deepEqual(settings[key as keyof Settings], value, line);
  });
}

const bad: [string, RegExp][] = [
  ["require_job = maybe", /require_job must be yes or no/],
  ["require_job = YES", /require_job must be yes or no/],
  ["network = host2", /network must be bridge or none or host/],
  ["network = container:x", /network must be/],
  ["network =", /network must be/],
  ["ipc = shareable", /ipc must be private or host/],
  ["pid = container:1", /pid must be private or host/],
  ["uts = yes", /uts must be private or host/],
  ["pull = always", /pull must be never or missing/],
  ["log_facility = kern", /log_facility must be auth or authpriv/],
  ["default_mounts = home ~/data", /default_mounts: '~\/data' is not home, workdir or a clean absolute path/],
  ["default_mounts = /a/../etc", /not home, workdir or a clean absolute path/],
  ["mount_prefixes = /", /'\/' would allow mounting the whole host/],
  ["mount_prefixes = /home/", /'\/home\/' is not a clean absolute path/],
  ["mount_prefixes = home", /'home' is not a clean absolute path/],
  ["forbidden_destinations = relative", /forbidden_destinations: 'relative' is not a clean absolute path/],
  ["env_set = NOVALUE", /env_set takes NAME=VALUE/],
  ["env_set = =x", /env_set takes NAME=VALUE/],
  ["env_set = 1X=2", /env_set takes NAME=VALUE/],
  ["env_deny = LD-PRELOAD", /env_deny: 'LD-PRELOAD' is not a variable name/],
  ["env_pass = OMP_[A-Z]", /env_pass: 'OMP_\[A-Z\]' is not a variable name or a pattern/],
  ["env_pass = $(id)", /not a variable name or a pattern/],
  ["docker = /usr/bin/docker", /'docker' is obsolete/],
  ["require_jobs = yes", /unknown setting 'require_jobs'/],
  ["Network = none", /expected 'key = value'/],
  ["require_job", /expected 'key = value'/],
  ["constructor = x", /unknown setting 'constructor'/],
  ["__proto__ = x", /unknown setting '__proto__'/],
];

for (const [line, pattern] of bad) {
  Deno.test(`socker.conf: '${line}' makes the whole file invalid`, () =>
    refused(`require_job = no\n${line}\n`, pattern));
}

Deno.test("socker.conf: an empty file is the defaults; the line number of a fault is its own", () => {
  assert.deepEqual(parse(""), { ...DEFAULT_SETTINGS });
  assert.throws(() => parse("\n\n\npull = sometimes"), /socker\.conf:4: pull must be/);
});

Deno.test("socker.conf: env_deny, env_pass and env_set add up over several lines; lists replace", () => {
  const settings = parse(
    "env_deny = A\nenv_deny = B\nenv_pass = X_*\nenv_pass = Y\nenv_set = P=1\nenv_set = Q=2\n" +
      "mount_prefixes = /a\nmount_prefixes = /b\n",
  );
  assert.deepEqual(settings.envDeny, ["A", "B"]);
  assert.deepEqual(settings.envPass, ["X_*", "Y"]);
  assert.deepEqual(settings.envSet, { P: "1", Q: "2" });
  assert.deepEqual(settings.mountPrefixes, ["/b"]);
});

Deno.test("socker.conf: parsing never changes the defaults of the next file", () => {
  parse("env_deny = A\nenv_pass = B\nenv_set = C=1\n");
  assert.deepEqual(DEFAULT_SETTINGS.envDeny, []);
  assert.deepEqual(DEFAULT_SETTINGS.envPass, []);
  assert.deepEqual(DEFAULT_SETTINGS.envSet, {});
});

// planRun's rules on a broken or untrusted socker.conf: one table row each, a refusal (a pattern of its
// one-line reason) or a check of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  [
    "a broken socker.conf names the line",
    run(IMAGE, "id"),
    runFacts({ settings: settingsFile("require_job = yes\nmount_prefix = /\n") }),
    /socker\.conf:2: unknown setting 'mount_prefix'/,
  ],
  [
    "a group-writable socker.conf is refused",
    run(IMAGE, "id"),
    runFacts({ settings: rootFile(SETTINGS, "", { mode: 0o100664 }) }),
    /refusing to trust .*socker\.conf is writable by its group/,
  ],
]);
