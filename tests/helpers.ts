// Shared helpers for the integration tests: they drive the installed socker exactly as a user would, as
// real users (alice, bob; created by tests/setup.sh) through the real launcher and sudo, on the real Docker
// engine. Nothing here stands in for socker, sudo or docker.
import assert from "node:assert/strict";

export const SOCKER = "/usr/local/bin/socker";
export const PRIVILEGED_SOCKER = "/usr/local/libexec/socker/socker";
/**
 * The engine the integration tests run against: `SOCKER_TEST_ENGINE=podman` (tests/podman.sh, which
 * switches socker.conf's engine for that part) or Docker. With Podman every test's name starts with
 * `[podman] `, so that a report names the engine of each case.
 */
export const TEST_ENGINE: "docker" | "podman" = Deno.env.get("SOCKER_TEST_ENGINE") === "podman" ? "podman" : "docker";
/** The engine's own CLI, root's, for what the tests check behind socker's back (podman's takes the same flags). */
export const DOCKER = TEST_ENGINE === "podman" ? "/usr/bin/podman" : "/usr/bin/docker";
/** The engine's socket, as socker.conf's default for the engine says. */
export const ENGINE_SOCKET = TEST_ENGINE === "podman" ? "/run/socker-engine/podman.sock" : "/var/run/docker.sock";
/** A container's cgroup folder's name, as a pattern: Docker's is its id, Podman's (cgroupfs) `libpod-<id>`. */
export const CONTAINER_FOLDER = TEST_ENGINE === "podman" ? "libpod-[0-9a-f]{64}" : "[0-9a-f]{64}";
/** How the engine's messages name it. */
export const ENGINE_TITLE = TEST_ENGINE === "podman" ? "Podman" : "Docker";
if (TEST_ENGINE === "podman") {
  const test = Deno.test;
  const named = (args: unknown[]) => {
    if (typeof args[0] === "string") args[0] = `[podman] ${args[0]}`;
    else if (typeof args[0] === "object" && args[0] !== null && "name" in args[0]) {
      args[0] = { ...args[0], name: `[podman] ${(args[0] as { name: string }).name}` };
    }
    return args;
  };
  // deno-lint-ignore no-explicit-any
  (Deno as any).test = Object.assign((...args: unknown[]) => (test as any).apply(Deno, named(args)), {
    only: test.only,
    ignore: test.ignore,
  });
}
export const ALLOWLIST = "/etc/socker/socker-images";
export const IMAGE = "socker-test/busybox:2";
export const ABSENT_IMAGE = "socker-test/absent:1";

export type Result = { code: number; stdout: string; stderr: string; stdoutBytes: Uint8Array<ArrayBuffer> };

const decoder = new TextDecoder();

/** Runs a command and collects its output. */
export async function sh(
  cmd: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<Result> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    clearEnv: options.env !== undefined,
    env: options.env,
    cwd: options.cwd,
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const output = await child.output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
    stdoutBytes: output.stdout,
  };
}

/** The environment a user's login shell would have. */
export function userEnv(user: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    HOME: `/home/${user}`,
    USER: user,
    LOGNAME: user,
    LANG: "C.UTF-8",
    ...extra,
  };
}

/** The argument vector that runs `cmd` as `user` with the user's own groups and a chosen environment. */
export function asUserArgv(user: string, env: Record<string, string>, cmd: string[]): string[] {
  return [
    "--reuid",
    user,
    "--regid",
    user,
    "--init-groups",
    "--",
    "/usr/bin/env",
    "-i",
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    ...cmd,
  ];
}

/** Runs `socker ARGS` as `user` through the installed launcher. */
export function socker(
  user: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<Result> {
  const env = userEnv(user, options.env);
  return sh("/usr/bin/setpriv", asUserArgv(user, env, [SOCKER, ...args]), {
    stdin: options.stdin,
    cwd: options.cwd ?? `/home/${user}`,
  });
}

/** Starts `socker ARGS` as `user` in the background; the returned pid is the launcher's, which became sudo. */
export function spawnSocker(user: string, args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command("/usr/bin/setpriv", {
    args: asUserArgv(user, userEnv(user, env), [SOCKER, ...args]),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    cwd: `/home/${user}`,
  }).spawn();
}

/** A shell line run as a test user (their uid, gid and groups), for tests that act as a user's shell. */
export function userShell(user: string, line: string, output: "piped" | "null" = "piped"): Deno.Command {
  return new Deno.Command("/usr/bin/setpriv", {
    args: [`--reuid=${user}`, `--regid=${user}`, "--init-groups", "/bin/sh", "-c", line],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin" },
    stdout: output,
    stderr: output,
  });
}

/** Runs a shell line as a test user inside a terminal (script(1) gives it a pty), as an interactive user would. */
export function inTerminal(user: string, line: string, stdin?: string): Promise<Result> {
  const env = { PATH: "/usr/local/bin:/usr/bin:/bin", TERM: "xterm" };
  return sh("/usr/bin/setpriv", asUserArgv(user, env, ["/usr/bin/script", "-qec", line, "/dev/null"]), {
    cwd: "/tmp",
    stdin,
  });
}

/** What socker left in its staging folder (nothing, after every run). */
export async function stagingLeft(): Promise<string> {
  return (await sh("/bin/sh", ["-c", "ls -A /run/socker 2>/dev/null"])).stdout;
}

/** Names of all containers socker made (running or not). */
export async function sockerContainers(filter = "label=socker.managed=true"): Promise<string[]> {
  const result = await sh(DOCKER, ["ps", "-a", "--filter", filter, "--format", "{{.Names}}"]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.split("\n").filter((line) => line !== "");
}

/** Waits until `probe` is true or the timeout passes; returns the time it took in ms, or -1. */
export async function waitFor(probe: () => Promise<boolean>, timeoutMs: number, stepMs = 25): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < timeoutMs) {
    if (await probe()) return performance.now() - start;
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
  return -1;
}

/** Replaces the allowlist for a test and gives a function that restores it exactly. */
export function withAllowlist(content: string): () => void {
  const original = Deno.readTextFileSync(ALLOWLIST);
  const info = Deno.statSync(ALLOWLIST);
  Deno.writeTextFileSync(ALLOWLIST, content);
  return () => {
    Deno.writeTextFileSync(ALLOWLIST, original);
    Deno.chmodSync(ALLOWLIST, info.mode! & 0o7777);
    Deno.chownSync(ALLOWLIST, info.uid, info.gid);
  };
}

/** Asserts that a refusal looks right: exit 125, one line, naming what it should. */
export function assertRefused(result: Result, pattern: RegExp): void {
  assert.equal(result.code, 125, `expected 125, got ${result.code}; stderr: ${result.stderr}`);
  assert.match(result.stderr, pattern);
  assert.equal(result.stderr.trimEnd().split("\n").length, 1, `one line: ${result.stderr}`);
  assert.equal(result.stdout, "");
}

export const SETTINGS = "/etc/socker/socker.conf";
export const AUDIT_LOG = "/var/log/socker/audit.log";

/** The line of socker.conf that every test's own settings keep: the engine under test (Docker's is the default). */
export const ENGINE_SETTING = TEST_ENGINE === "podman" ? "engine = podman\n" : "";

/** Writes a socker.conf of a test's own, the engine under test kept. */
export function writeSettings(text: string): void {
  Deno.writeTextFileSync(SETTINGS, text + ENGINE_SETTING, { mode: 0o644 });
  Deno.chmodSync(SETTINGS, 0o644);
}

/** Puts socker.conf back as the part left it: none on Docker, the engine line on Podman. */
export function restoreSettings(): void {
  if (ENGINE_SETTING === "") Deno.removeSync(SETTINGS);
  else Deno.writeTextFileSync(SETTINGS, ENGINE_SETTING, { mode: 0o644 });
}

/** Runs `body` with a socker.conf of the test's own, and puts it back after (whatever happens). */
export async function withSettings(text: string, body: () => Promise<void>): Promise<void> {
  writeSettings(text);
  try {
    await body();
  } finally {
    restoreSettings();
  }
}

/** Makes a folder with an owner, group and mode (and a file `whose` inside saying whose it is). */
export function folder(path: string, owner: number, group: number, mode: number, content?: string): void {
  Deno.mkdirSync(path, { recursive: true });
  if (content !== undefined) {
    Deno.writeTextFileSync(`${path}/whose`, content);
    Deno.chownSync(`${path}/whose`, owner, group);
    Deno.chmodSync(`${path}/whose`, 0o640);
  }
  Deno.chownSync(path, owner, group);
  Deno.chmodSync(path, mode);
}

/** The audit file's records whose line contains `marker`, parsed (waits until `count` arrived). */
export async function auditRecords(marker: string, count = 1): Promise<Record<string, unknown>[]> {
  let found: Record<string, unknown>[] = [];
  await waitFor(
    async () => {
      const text = await Deno.readTextFile(AUDIT_LOG).catch(() => "");
      found = text.split("\n").filter((line) => line.includes(marker)).map((line) => JSON.parse(line));
      return found.length >= count;
    },
    5000,
    50,
  );
  return found;
}

/** A marker no other record holds. */
export const marker = (what = "t") => `${what}-${crypto.randomUUID().slice(0, 8)}`;

/** Files and folders under `paths` owned by root (what the engine created as root where the user could). */
export async function rootOwnedUnder(...paths: string[]): Promise<string[]> {
  const result = await sh("/usr/bin/find", [...paths, "-xdev", "-user", "root"]);
  return result.stdout.split("\n").filter((line) => line !== "");
}

/** Runs a Slurm client command (or any command) as a test user, from their home. */
export function asUser(user: string, cmd: string[], options: { stdin?: string; env?: Record<string, string> } = {}) {
  return sh("/usr/bin/setpriv", asUserArgv(user, userEnv(user, options.env), cmd), {
    stdin: options.stdin,
    cwd: `/home/${user}`,
  });
}

export const MPI_IMAGE = "socker-test/openmpi:1";
/** busybox with symlinks of its own outside the system folders: /data -> work, /scratch -> /home/alice. */
export const LINKS_IMAGE = "socker-test/links:1";
/** busybox with ENV IMAGE_VAR=from-image, an ENTRYPOINT printing a banner, and a CMD (tests/batch_test.ts). */
export const BATCH_IMAGE = "socker-test/batch:2";
/** The allowlist the integration tests run with. */
export const TEST_ALLOWLIST = `# written by socker's integration tests
${IMAGE}
${ABSENT_IMAGE}
${MPI_IMAGE}
${LINKS_IMAGE}
${BATCH_IMAGE}
`;

async function engineUp(): Promise<boolean> {
  return (await sh(DOCKER, ["info", "--format", "{{.ServerVersion}}"])).code === 0;
}

/** Stops the Docker engine (as an administrator or a crash would). */
export async function stopEngine(): Promise<void> {
  await sh("/usr/bin/pkill", ["-TERM", "-x", "dockerd"]);
  const stopped = await waitFor(async () => (await sh("/usr/bin/pgrep", ["-x", "dockerd"])).code !== 0, 30_000, 100);
  assert.ok(stopped >= 0, "dockerd stopped");
}

/** Starts the Docker engine the way tests/setup.sh does, and waits until it answers. */
export async function startEngine(): Promise<void> {
  await sh("/bin/sh", ["-c", "setsid -f /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 </dev/null"]);
  const started = await waitFor(engineUp, 60_000, 200);
  assert.ok(started >= 0, "dockerd started again");
}

/** Runs a bash line as a test user, with their groups, from /tmp (limits and signals are set in the line). */
export function userLine(user: string, line: string, env: Record<string, string> = {}): Promise<Result> {
  return sh("/usr/bin/setpriv", [
    `--reuid=${user}`,
    `--regid=${user}`,
    "--init-groups",
    "/bin/bash",
    "-c",
    `cd /tmp; ${line}`,
  ], {
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: `/home/${user}`, ...env },
  });
}

/** The node's watcher (`socker watch`): its own record of its pid and start time, and its loop's pid file. */
export const WATCH_PID_FILE = "/run/socker-locks/watch.pid";
const WATCH_LOOP = "/usr/local/libexec/socker/socker-watch-loop";
const WATCH_LOOP_PID = "/run/socker-watch-loop.pid";
const hasSystemd = () => {
  try {
    return Deno.statSync("/run/systemd/system").isDirectory;
  } catch {
    return false;
  }
};

/** The watcher's pid when it runs (its recorded pid with the recorded start time), else undefined. */
export function watcherPid(): number | undefined {
  try {
    const [pid, start] = Deno.readTextFileSync(WATCH_PID_FILE).trim().split(":");
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] === start ? Number(pid) : undefined;
  } catch {
    return undefined;
  }
}

/** Stops the watcher as an administrator would (its service, or the loop install.sh started). */
export async function stopWatcher(): Promise<void> {
  if (hasSystemd()) await sh("/usr/bin/systemctl", ["stop", "socker-watch.service"]);
  else {
    const loop = Deno.readTextFileSync(WATCH_LOOP_PID).trim();
    await sh("/bin/kill", ["-TERM", "--", `-${loop}`]);
  }
  const stopped = await waitFor(() => Promise.resolve(watcherPid() === undefined), 10_000, 50);
  assert.ok(stopped >= 0, "the watcher stopped");
}

/** Starts the watcher again and waits until it runs. */
export async function startWatcher(): Promise<void> {
  if (hasSystemd()) await sh("/usr/bin/systemctl", ["start", "socker-watch.service"]);
  else await sh("/bin/sh", ["-c", `setsid -f /bin/sh ${WATCH_LOOP} </dev/null >/dev/null 2>&1`]);
  const started = await waitFor(() => Promise.resolve(watcherPid() !== undefined), 20_000, 50);
  assert.ok(started >= 0, "the watcher runs again");
}

/**
 * Runs `body` with the node's watcher stopped (for tests of what the reaper and the Epilog do on their own,
 * which the watcher would otherwise do first), and starts it again after, whatever happens.
 */
export async function withWatcherStopped(body: () => Promise<void>): Promise<void> {
  await stopWatcher();
  try {
    await body();
  } finally {
    await startWatcher();
  }
}

/** Nothing of socker's is left: no container, no staging mount. */
export async function nothingLeft(timeoutMs = 10_000): Promise<void> {
  const clean = await waitFor(
    async () => (await sockerContainers()).length === 0 && (await stagingLeft()) === "",
    timeoutMs,
    100,
  );
  assert.ok(clean >= 0, `left: ${await sockerContainers()} / ${await stagingLeft()}`);
}

/** The pid of the privileged socker (Deno) under the sudo with this pid. */
export async function privilegedPid(sudoPid: number): Promise<number> {
  let pid = 0;
  await waitFor(async () => {
    pid = Number((await sh("/usr/bin/pgrep", ["-P", String(sudoPid)])).stdout.trim().split("\n")[0] || 0);
    return pid > 0;
  }, 10_000);
  return pid;
}
