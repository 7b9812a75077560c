// Tests of install.sh as a sysadmin uses it, on this machine (root). tests/run.sh has already installed
// socker with the default paths and --epilog; these tests check what that left (owners, modes, the sudo
// rule, the entry point's guard of signals and resource limits, the audit log's folder and rotation, the
// orphan reaper), and that the script behaves: refuses set-id, refuses unknown options, changes nothing
// in --dry-run (as root or not) or on a second run.
import assert from "node:assert/strict";
import { IMAGE, sh, socker, sockerContainers, spawnSocker, waitFor, watcherPid } from "./helpers.ts";

const REPO = new URL("..", import.meta.url).pathname;
const ENTRY = "/usr/local/libexec/socker/socker";
const LIB = "/usr/local/lib/socker";
const CRON_FILE = "/etc/cron.d/socker-reaper";
const TIMER = "/etc/systemd/system/socker-reaper.timer";
const SERVICE = "/etc/systemd/system/socker-reaper.service";

/** Every path install.sh --epilog installs, with the mode it must have (all root:root). */
const INSTALLED: Record<string, number> = {
  "/usr/local/bin/socker": 0o755,
  "/usr/local/libexec/socker": 0o755,
  [ENTRY]: 0o755,
  "/usr/local/libexec/socker/slurm-epilog": 0o755,
  "/usr/local/libexec/socker/socker-runc": 0o755,
  "/usr/local/libexec/socker/holder": 0o755,
  "/usr/local/libexec/socker/holder/busybox": 0o755,
  [LIB]: 0o755,
  [`${LIB}/socker.ts`]: 0o644,
  [`${LIB}/deno`]: 0o755,
  [`${LIB}/deno-dir`]: 0o755,
  [`${LIB}/docker-config`]: 0o700,
  "/etc/socker": 0o755,
  "/etc/sudoers.d/socker": 0o440,
  "/var/log/socker": 0o700,
  "/etc/logrotate.d/socker": 0o644,
};

const systemdRuns = exists("/run/systemd/system");
// The node's watcher: a systemd service, else the loop install.sh starts.
if (!systemdRuns) INSTALLED["/usr/local/libexec/socker/socker-watch-loop"] = 0o755;
const cronInstalled = exists("/usr/sbin/cron") || exists("/usr/sbin/crond");

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function install(args: string[]) {
  return sh("/bin/bash", [`${REPO}install.sh`, ...args], { cwd: REPO });
}

/** Owner, mode, size, time and content of everything installed: equal snapshots mean nothing changed. */
async function snapshot(): Promise<string> {
  const paths = [...Object.keys(INSTALLED), "/etc/socker/socker-images", CRON_FILE, TIMER, SERVICE].filter(exists);
  const files = paths.filter((p) => Deno.statSync(p).isFile);
  const result = await sh("/bin/sh", [
    "-c",
    `stat -c '%n %u:%g %a %s %Y' "$@"; sha256sum ${files.map((f) => `'${f}'`).join(" ")}`,
    "sh",
    ...paths,
  ]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

/** The pid of the process whose parent is `ppid`, once there is one. */
async function childOf(ppid: number, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      try {
        const status = Deno.readTextFileSync(`/proc/${entry.name}/status`);
        if (new RegExp(`^PPid:\\s+${ppid}$`, "m").test(status)) return Number(entry.name);
      } catch {
        // gone meanwhile
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`no child of ${ppid} within ${timeoutMs} ms`);
}

/** The state letter of a process (R, S, T for stopped, ...). */
function processState(pid: number): string {
  return Deno.readTextFileSync(`/proc/${pid}/stat`).replace(/^.*\) /s, "")[0];
}

/** Runs `socker ARGS` as alice after a shell line that sets her resource limits (ulimit ...). */
function withLimits(limits: string, args = ["--version"]) {
  return sh("/usr/bin/setpriv", [
    "--reuid=alice",
    "--regid=alice",
    "--init-groups",
    "/usr/bin/env",
    "-i",
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "/bin/sh",
    "-c",
    `${limits}; exec socker "$@"`,
    "sh",
    ...args,
  ], { cwd: "/tmp" });
}

Deno.test("every installed file and folder is root:root with its own mode, and nothing is set-id", async () => {
  for (const [path, mode] of Object.entries(INSTALLED)) {
    const info = Deno.lstatSync(path);
    assert.equal(info.uid, 0, `${path} owner`);
    assert.equal(info.gid, 0, `${path} group`);
    assert.equal((info.mode! & 0o7777).toString(8), mode.toString(8), `${path} mode`);
  }
  const allowlist = Deno.statSync("/etc/socker/socker-images");
  assert.equal(allowlist.uid, 0);
  assert.equal(allowlist.mode! & 0o022, 0, "the allowlist is writable by group or others");
  const setId = await sh("/usr/bin/find", [...Object.keys(INSTALLED), "-perm", "/6000"]);
  assert.equal(setId.stdout, "");
  const notRoot = await sh("/usr/bin/find", [
    ...Object.keys(INSTALLED),
    "(",
    "!",
    "-user",
    "root",
    "-o",
    "-perm",
    "/022",
    ")",
    "!",
    "-type",
    "l",
  ]);
  assert.equal(notRoot.stdout, "", "not root-owned, or writable by group or others");
});

Deno.test("the audit log is root's alone: /var/log/socker is 0700 and audit.log, once written, 0600", () => {
  assert.equal(Deno.statSync("/var/log/socker").mode! & 0o777, 0o700);
  if (exists("/var/log/socker/audit.log")) {
    const log = Deno.statSync("/var/log/socker/audit.log");
    assert.equal(log.uid, 0);
    assert.equal(log.mode! & 0o777, 0o600);
  }
});

Deno.test("logrotate rotates the audit log weekly or past 100 MB, keeps 52 compressed, never copies and truncates", async () => {
  const rule = Deno.readTextFileSync("/etc/logrotate.d/socker");
  assert.match(rule, /^\/var\/log\/socker\/audit\.log \{$/m);
  for (
    const directive of [
      "weekly",
      "maxsize 100M",
      "rotate 52",
      "compress",
      "delaycompress",
      "missingok",
      "notifempty",
      "create 0600 root root",
    ]
  ) {
    assert.match(rule, new RegExp(`^\\s+${directive}$`, "m"), directive);
  }
  assert.doesNotMatch(rule, /^\s+copytruncate/m);
  if (exists("/usr/sbin/logrotate")) {
    const debug = await sh("/usr/sbin/logrotate", ["--debug", "/etc/logrotate.d/socker"]);
    assert.equal(debug.code, 0, debug.stderr);
    assert.doesNotMatch(debug.stderr, /error/i);
  }
});

Deno.test("the orphan reaper runs every minute where the node has systemd or cron, else install.sh says what to run", async () => {
  const command = "/usr/local/libexec/socker/socker cleanup --orphans";
  if (systemdRuns) {
    assert.match(Deno.readTextFileSync(SERVICE), new RegExp(`^ExecStart=${command}$`, "m"));
    assert.match(Deno.readTextFileSync(SERVICE), /^Type=oneshot$/m);
    assert.match(Deno.readTextFileSync(TIMER), /^OnCalendar=minutely$/m);
    const enabled = await sh("/usr/bin/systemctl", ["is-enabled", "socker-reaper.timer"]);
    assert.equal(enabled.stdout.trim(), "enabled");
    assert.ok(!exists(CRON_FILE), "a cron entry besides the timer");
  } else if (cronInstalled) {
    const info = Deno.statSync(CRON_FILE);
    assert.equal(info.uid, 0);
    assert.equal(info.mode! & 0o777, 0o644);
    assert.match(
      Deno.readTextFileSync(CRON_FILE),
      new RegExp(`^\\* \\* \\* \\* \\* root /usr/bin/timeout -k 5 50 ${command} `, "m"),
    );
  } else {
    assert.ok(!exists(CRON_FILE) && !exists(TIMER), "a reaper was installed without systemd or cron");
    const dry = await install(["--dry-run"]);
    assert.match(dry.stdout, /neither systemd nor a cron daemon/);
    assert.ok(dry.stdout.includes(command), dry.stdout);
  }
});

Deno.test("the sudo rule is valid, resets the environment, and keeps sudo as socker's parent", async () => {
  const visudo = await sh("/usr/sbin/visudo", ["-cf", "/etc/sudoers.d/socker"]);
  assert.equal(visudo.code, 0, visudo.stdout + visudo.stderr);
  const rule = Deno.readTextFileSync("/etc/sudoers.d/socker");
  assert.match(rule, /^Cmnd_Alias SOCKER = \/usr\/local\/libexec\/socker\/socker$/m);
  assert.match(rule, /^ALL ALL=\(root\) NOPASSWD: SOCKER$/m);
  const defaults = rule.match(/^Defaults!SOCKER (.*)$/m)?.[1] ?? "";
  for (
    const setting of ["env_reset", "!env_keep", "!setenv", "!use_pty", "!log_output", "!pam_session", "!log_allowed"]
  ) {
    assert.ok(defaults.split(/,\s*/).includes(setting), `${setting} in ${defaults}`);
  }
  // Without PAM credentials to delete (and nothing else to do after the command), sudo execs socker
  // in its own place: then socker has no parent relaying the caller's signals.
  assert.ok(!defaults.includes("!pam_setcred"), defaults);
  assert.match(
    Deno.readTextFileSync("/usr/local/bin/socker"),
    /^exec \/usr\/bin\/sudo -n -- \/usr\/local\/libexec\/socker\/socker "\$@"$/m,
  );
});

Deno.test("a running socker's parent is sudo, and a SIGTSTP to sudo does not stop socker", async () => {
  const run = spawnSocker("alice", ["run", IMAGE, "sleep", "30"]);
  try {
    const privileged = await childOf(run.pid);
    // The container runs: socker (sh, then env, then Deno in one process) is supervising it.
    const started = await waitFor(async () => (await sockerContainers("label=socker.uid=2001")).length > 0, 20_000);
    assert.notEqual(started, -1, "the container did not start");
    assert.equal(Deno.readLinkSync(`/proc/${run.pid}/exe`), "/usr/bin/sudo");
    assert.match(Deno.readLinkSync(`/proc/${privileged}/exe`), /^\/usr\/local\/lib\/socker\/(deno|socker-bin)$/);
    // alice owns sudo's real uid: she may signal it, and sudo relays SIGTSTP to its command.
    const stop = await sh("/usr/bin/setpriv", [
      "--reuid=alice",
      "--regid=alice",
      "--clear-groups",
      "/bin/sh",
      "-c",
      `kill -TSTP ${run.pid}`,
    ]);
    assert.equal(stop.code, 0, stop.stderr);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.notEqual(processState(privileged), "T", "socker was stopped by SIGTSTP");
  } finally {
    for (const signal of ["SIGCONT", "SIGTERM"] as const) {
      try {
        Deno.kill(run.pid, signal);
      } catch {
        // already gone
      }
    }
    await run.output();
  }
});

Deno.test("the entry point is an sh script that ignores SIGTSTP, SIGTTIN, SIGTTOU and SIGXFSZ before it execs", () => {
  const text = Deno.readTextFileSync(ENTRY);
  assert.match(text, /^#!\/bin\/sh\n/);
  assert.match(text, /^trap '' TSTP TTIN TTOU XFSZ$/m);
  assert.match(text, /^exec \/usr\/bin\/env -i /m);
  assert.match(text, /SOCKER_LIMITS="\$L"/);
});

Deno.test("the entry point is socker-entry.sh.in with only its @...@ placeholders filled in, each with plain text", () => {
  const placeholder = /@[A-Z][A-Z_]*@/g;
  const template = Deno.readTextFileSync(`${REPO}socker-entry.sh.in`).split("\n");
  const installed = Deno.readTextFileSync(ENTRY).split("\n");
  assert.equal(installed.length, template.length);
  template.forEach((line, i) => {
    // What install.sh's render lets through: letters, digits, blanks and . _ / + , = -
    const pattern = line.split(placeholder).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .join("[A-Za-z0-9._/+,= -]+");
    assert.match(installed[i], new RegExp(`^${pattern}$`), `line ${i + 1}`);
  });
  assert.doesNotMatch(installed.join("\n"), /@[A-Z][A-Z_]*@/);
  assert.match(installed.join("\n"), /^need v address-space ' KiB' 67108864 hard /m);
});

// tests/setup.sh installs shellcheck, so this runs wherever the suite does.
Deno.test("the entry point, installed and as its template, is clean under shellcheck", async () => {
  const result = await sh("/usr/bin/shellcheck", [ENTRY, `${REPO}socker-entry.sh.in`]);
  assert.equal(result.code, 0, result.stdout + result.stderr);
});

/** The installed entry point with its final command replaced by one that shows what socker would get. */
function entryShowing(): string {
  const text = Deno.readTextFileSync(ENTRY);
  const shown = text.replace(
    /^ {2}\/usr\/local\/lib\/socker\/(deno run .*|socker-bin) "\$@"$/m,
    `  /bin/sh -c 'printf "%s" "$SOCKER_LIMITS"; echo ==; ulimit -S -v; ulimit -S -d; ulimit -S -s; ulimit -S -n' sh "$@"`,
  );
  assert.notEqual(shown, text, "the entry point's last line is not the expected exec");
  const path = Deno.makeTempFileSync({ prefix: "socker-entry-" });
  Deno.writeTextFileSync(path, shown);
  return path;
}

Deno.test("the caller's limits reach socker verbatim as SOCKER_LIMITS, and the soft limits Deno needs are raised", async () => {
  const copy = entryShowing();
  try {
    const limits = "ulimit -S -v 2000000; ulimit -S -d 500000; ulimit -S -s 600; ulimit -S -n 40";
    const caller = await sh("/bin/sh", ["-c", `${limits}; cat /proc/self/limits`]);
    const shown = await sh("/bin/sh", ["-c", `${limits}; exec /bin/sh ${copy}`]);
    assert.equal(shown.code, 0, shown.stderr);
    const [passed, after] = shown.stdout.split("==\n");
    // The same text as the caller's own /proc/self/limits, byte for byte.
    assert.equal(passed, caller.stdout);
    assert.match(passed, /^Max open files {12}40 /m);
    assert.match(passed, /^Max address space {9}2048000000 /m);
    assert.deepEqual(after.trim().split("\n"), ["unlimited", "1048576", "8192", "64"]);
  } finally {
    Deno.removeSync(copy);
  }
});

// What Deno needs before socker.ts runs, per limit: a soft limit below it is raised; a hard limit below
// it (root here lacks CAP_SYS_RESOURCE to raise it) is refused with one line and 125; a hard limit
// lowered but still enough works.
const LIMIT_CASES = [
  {
    flag: "v",
    low: 1000000,
    fine: 70000000,
    refusal:
      "socker: your address-space limit (ulimit -v) is 1000000 KiB; socker needs at least 67108864 KiB or unlimited: raise it (ulimit -v unlimited)",
  },
  {
    flag: "d",
    low: 500000,
    fine: 2000000,
    refusal:
      "socker: your data-size limit (ulimit -d) is 500000 KiB; socker needs at least 1048576 KiB or unlimited: raise it (ulimit -d unlimited)",
  },
  {
    flag: "s",
    low: 700,
    fine: 2048,
    refusal:
      "socker: your stack-size limit (ulimit -s) is 700 KiB; socker needs at least 1024 KiB: raise it (ulimit -s 8192)",
  },
  {
    flag: "n",
    low: 30,
    fine: 100,
    refusal: "socker: your open-files limit (ulimit -n) is 30; socker needs at least 64: raise it (ulimit -n 1024)",
  },
];

for (const { flag, low, fine, refusal } of LIMIT_CASES) {
  Deno.test(`ulimit -${flag}: a low soft limit is raised, a hard one below Deno's need is refused in one line, 125`, async () => {
    const soft = await withLimits(`ulimit -S -${flag} ${low}`);
    assert.equal(soft.code, 0, soft.stderr);
    assert.match(soft.stdout, /socker/);
    const hard = await withLimits(`ulimit -${flag} ${low}`);
    assert.equal(hard.code, 125, hard.stdout + hard.stderr);
    assert.equal(hard.stderr, `${refusal}\n`);
    assert.equal(hard.stdout, "");
    const enough = await withLimits(`ulimit -${flag} ${fine}`);
    assert.equal(enough.code, 0, enough.stderr);
  });
}

Deno.test("limits of 2^53 bytes and more (up to the kernel's 2^64-1) get one line and 125, never a shell error", async () => {
  const spellings = [
    "ulimit -v 9007199254740992",
    "prlimit --pid $$ --as=9223372036854775808:unlimited",
    "prlimit --pid $$ --as=18446744073709551614",
    "prlimit --pid $$ --data=9223372036854775808",
    "prlimit --pid $$ --fsize=1152921504606846976",
  ];
  for (const limits of spellings) {
    const result = await withLimits(limits, ["run", "socker-test/busybox:2", "true"]);
    assert.equal(result.code, 125, `${limits}: ${result.stderr}`);
    assert.match(
      result.stderr,
      /^socker: your [a-z ]+ limit \(\d+\) is too large for socker to pass on exactly/,
      limits,
    );
    assert.equal(result.stderr.trimEnd().split("\n").length, 1, `${limits}: one line: ${result.stderr}`);
  }
  // A soft stack limit of 2^63 never reaches socker: sudo puts its own default back (measured: 8192 KiB),
  // so that spelling runs, with the stack sudo gave.
  const stack = await withLimits("prlimit --pid $$ --stack=9223372036854775808:unlimited", [
    "run",
    "socker-test/busybox:2",
    "true",
  ]);
  assert.equal(stack.code, 0, stack.stderr);
});

Deno.test("the Slurm Epilog hook bounds its cleanup in time and always exits 0", async () => {
  const hook = Deno.readTextFileSync("/usr/local/libexec/socker/slurm-epilog");
  assert.match(
    hook,
    /^\/usr\/bin\/timeout -k 5 40 \/usr\/bin\/env -i \/usr\/local\/libexec\/socker\/socker cleanup --job "\$job"/m,
  );
  assert.match(hook, /^exit 0$/m);
  for (const job of ["", "not-a-number", "999999999"]) {
    const result = await sh("/usr/local/libexec/socker/slurm-epilog", [], { env: { SLURM_JOB_ID: job } });
    assert.equal(result.code, 0, `SLURM_JOB_ID=${job}: ${result.stderr}`);
  }
});

Deno.test("socker runs no docker CLI: there is no --docker option, and the registry login folder is root's", async () => {
  const gone = await install(["--docker", "/usr/bin/docker"]);
  assert.equal(gone.code, 2);
  assert.match(gone.stderr, /--docker is gone/);
  assert.equal(Deno.statSync(`${LIB}/docker-config`).mode! & 0o777, 0o700);
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
  assert.equal(bad.stderr.trim().split("\n").length, 1);
  const help = await install(["--help"]);
  assert.equal(help.code, 0);
  for (
    const option of ["--prefix", "--sysconfdir", "--deno", "--denort", "--epilog", "--demo", "--dry-run", "--uninstall"]
  ) {
    assert.ok(help.stdout.includes(option), option);
  }
  for (const path of ["/var/log/socker", "/etc/logrotate.d/socker", "socker-reaper", "SOCKER_LIMITS"]) {
    assert.ok(help.stdout.includes(path), path);
  }
});

Deno.test("install.sh --dry-run changes nothing, as root and as a user without root", async () => {
  const before = await snapshot();
  const dry = await install(["--dry-run", "--epilog"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^dry run done: nothing was changed$/m);
  assert.equal(await snapshot(), before);
  // A copy alice can read (the checkout may sit in root's home).
  const copy = Deno.makeTempDirSync({ prefix: "socker-dry-" });
  try {
    Deno.chmodSync(copy, 0o755);
    for (const file of ["install.sh", "socker-entry.sh.in", "socker.ts", "socker-images.example"]) {
      Deno.copyFileSync(`${REPO}${file}`, `${copy}/${file}`);
      Deno.chmodSync(`${copy}/${file}`, 0o755);
    }
    const asAlice = await sh("/usr/bin/setpriv", [
      "--reuid=alice",
      "--regid=alice",
      "--init-groups",
      "/bin/bash",
      `${copy}/install.sh`,
      "--dry-run",
      "--epilog",
    ], { cwd: "/tmp" });
    assert.equal(asAlice.code, 0, asAlice.stderr);
    assert.match(asAlice.stdout, /^dry run done: nothing was changed$/m);
    assert.equal(await snapshot(), before);
  } finally {
    Deno.removeSync(copy, { recursive: true });
  }
});

Deno.test("a second install.sh --epilog changes nothing and says unchanged", async () => {
  const before = await snapshot();
  const again = await install(["--epilog"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /^unchanged \/etc\/sudoers\.d\/socker$/m);
  assert.match(again.stdout, /^unchanged \/var\/log\/socker\/$/m);
  assert.match(again.stdout, /^unchanged \/etc\/logrotate\.d\/socker$/m);
  assert.match(again.stdout, /^kept existing \/etc\/socker\/socker-images$/m);
  assert.doesNotMatch(again.stdout, /^installed /m);
  assert.equal(await snapshot(), before);
});

Deno.test("install.sh registers socker-runc with the engine, for this node's runc, and the engine knows it", async () => {
  const runtime = "/usr/local/libexec/socker/socker-runc";
  const config = JSON.parse(Deno.readTextFileSync("/etc/docker/daemon.json"));
  assert.deepEqual(config.runtimes?.["socker-runc"], { path: runtime });
  const runc = exists("/usr/sbin/runc") ? "/usr/sbin/runc" : "/usr/bin/runc";
  assert.match(Deno.readTextFileSync(runtime), new RegExp(`^RUNC=${runc} # install\\.sh`, "m"));
  const info = await sh("/usr/bin/docker", ["info", "--format", "{{json .Runtimes}}"]);
  assert.equal(JSON.parse(info.stdout)["socker-runc"]?.path, runtime, info.stdout);
  // Every runc command but create and update goes to runc unchanged.
  const version = await sh(runtime, ["--version"]);
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, /^runc version/);
  const update = await sh(runtime, ["--root", "/nonexistent", "update", "x"]);
  assert.notEqual(update.code, 0);
  assert.match(update.stderr, /^socker-runc: update is refused/);
});

Deno.test("the node's watcher runs after install.sh, as root, kept alive (systemd, else its loop)", async () => {
  const recorded = await waitFor(() => Promise.resolve(watcherPid() !== undefined), 20_000, 50);
  assert.ok(recorded >= 0, "socker watch runs");
  const status = Deno.readTextFileSync(`/proc/${watcherPid()}/status`);
  assert.match(status, /^Uid:\s+0\s/m);
  if (systemdRuns) {
    const active = await sh("/usr/bin/systemctl", ["is-active", "socker-watch.service"]);
    assert.equal(active.stdout.trim(), "active");
    return;
  }
  // Killed, the loop starts it again within a few seconds.
  const first = watcherPid()!;
  await sh("/bin/kill", ["-KILL", String(first)]);
  const again = await waitFor(() => Promise.resolve((watcherPid() ?? first) !== first), 20_000, 50);
  assert.ok(again >= 0, "the loop started the watcher again");
});

Deno.test("socker --version works as a user through sudo", async () => {
  const result = await socker("alice", ["--version"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /socker/);
});
