// Integration tests of the core runner on the real Docker engine, through the real launcher and sudo, as
// real users: alice (uid 2001, supplementary group proj 3001) and bob (uid 2002). Needs root, the
// installed socker (install.sh) and tests/setup.sh's users and images; `sudo tests/run.sh` does it all.
import assert from "node:assert/strict";
import {
  ABSENT_IMAGE,
  ALLOWLIST,
  assertRefused,
  DOCKER,
  IMAGE,
  inTerminal,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  spawnSocker,
  stagingLeft,
  waitFor,
  withAllowlist,
} from "./helpers.ts";

// tests/run.sh installs the test allowlist (helpers.ts TEST_ALLOWLIST) for the run and restores it after.

/** Asserts that no socker container is left on the engine. */
async function assertNoContainers(): Promise<void> {
  assert.deepEqual(await sockerContainers(), []);
}

// ---- identity inside the container

Deno.test("the container runs as the caller: uid, gid and supplementary groups", async () => {
  const alice = await socker("alice", ["run", IMAGE, "id"]);
  assert.equal(alice.code, 0, alice.stderr);
  assert.equal(alice.stdout.trim(), "uid=2001 gid=2001 groups=2001,3001");
  const bob = await socker("bob", ["run", IMAGE, "id"]);
  assert.equal(bob.stdout.trim(), "uid=2002 gid=2002 groups=2002");
  await assertNoContainers();
});

Deno.test("the callers are not in the docker group and cannot use docker themselves", async () => {
  const groups = await sh("/usr/bin/id", ["-nG", "alice"]);
  assert.ok(!groups.stdout.split(/\s+/).includes("docker"), groups.stdout);
  const direct = await sh("/usr/bin/setpriv", [
    "--reuid=alice",
    "--regid=alice",
    "--init-groups",
    DOCKER,
    "ps",
  ]);
  assert.notEqual(direct.code, 0);
  assert.match(direct.stderr, /permission denied/i);
});

Deno.test("a setuid-root binary in the image does not give root inside the container", async () => {
  const result = await socker("alice", ["run", IMAGE, "/suid/id", "-u"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), "2001");
  const caps = await socker("alice", ["run", IMAGE, "sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"]);
  for (const line of caps.stdout.trim().split("\n")) assert.match(line, /:\s+0+$/, line);
  const nnp = await socker("alice", ["run", IMAGE, "grep", "NoNewPrivs", "/proc/self/status"]);
  assert.match(nnp.stdout, /NoNewPrivs:\s+1/);
});

Deno.test("the caller's 0700 working folder does not stop socker", async () => {
  const mode = Deno.statSync("/home/alice").mode! & 0o777;
  assert.equal(mode, 0o700);
  const result = await socker("alice", ["run", IMAGE, "true"], { cwd: "/home/alice" });
  assert.equal(result.code, 0, result.stderr);
});

// ---- pass-through: exit codes, streams

Deno.test("the container's exit code passes through", async () => {
  const cases: [string[], number][] = [
    [["true"], 0],
    [["false"], 1],
    [["sh", "-c", "exit 3"], 3],
    [["sh", "-c", "exit 124"], 124],
    [["sh", "-c", "exit 255"], 255],
    [["sh", "-c", "kill -KILL $$"], 137],
    [["/no/such/program"], 127],
  ];
  for (const [argv, expected] of cases) {
    const result = await socker("alice", ["run", IMAGE, ...argv]);
    assert.equal(result.code, expected, `${argv.join(" ")}: ${result.stderr}`);
  }
  await assertNoContainers();
});

Deno.test("sh -c keeps its own options: socker does not read the container's command", async () => {
  const result = await socker("alice", ["run", IMAGE, "sh", "-c", "echo $HOME; exit 3"]);
  assert.equal(result.code, 3);
  assert.equal(result.stdout.trim(), "/home/alice");
});

Deno.test("stdout and stderr stay apart; stdin is piped in", async () => {
  const streams = await socker("alice", ["run", IMAGE, "sh", "-c", "echo out; echo err >&2"]);
  assert.equal(streams.stdout, "out\n");
  assert.equal(streams.stderr, "err\n");
  const piped = await socker("alice", ["run", IMAGE, "cat"], { stdin: "hi\n" });
  assert.equal(piped.code, 0);
  assert.equal(piped.stdout, "hi\n");
  const counted = await socker("alice", ["run", IMAGE, "wc", "-l"], { stdin: "a\nb\nc\n" });
  assert.equal(counted.stdout.trim(), "3");
});

Deno.test("100 MB of stdout arrive intact", async () => {
  const count = "13000000";
  const expected = await sh("/bin/sh", ["-c", `seq 1 ${count} | sha256sum`]);
  const result = await socker("alice", ["run", IMAGE, "seq", "1", count]);
  assert.equal(result.code, 0, result.stderr);
  assert.ok(result.stdoutBytes.length > 100_000_000, `${result.stdoutBytes.length} bytes`);
  const digest = await crypto.subtle.digest("SHA-256", result.stdoutBytes);
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(hex, expected.stdout.split(" ")[0]);
});

Deno.test("a terminal is attached only when stdin and stdout are terminals", async () => {
  const tty = await socker("alice", ["run", IMAGE, "sh", "-c", "tty"]);
  assert.equal(tty.stdout.trim(), "not a tty");
  const viaScript = await inTerminal("alice", `socker run ${IMAGE} sh -c 'tty; exit 5'`);
  assert.equal(viaScript.code, 5, viaScript.stdout);
  assert.match(viaScript.stdout, /\/dev\/pts\/\d+/);
});

// ---- the command line

Deno.test("--version, --help and -v", async () => {
  const version = await socker("alice", ["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^socker \d+\.\d+\.\d+/);
  const help = await socker("alice", ["--help"]);
  assert.equal(help.code, 0);
  for (const section of ["NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXAMPLES", "FILES", "EXIT STATUS"]) {
    assert.match(help.stdout, new RegExp(`^${section}$`, "m"), section);
  }
  const verbose = await socker("alice", ["-v", "run", IMAGE, "echo", "hi"]);
  assert.equal(verbose.stdout, "hi\n");
  assert.match(
    verbose.stderr,
    /^socker: \/usr\/bin\/docker run --rm .*--user 2001:2001 .* -- docker\.io\/socker-test\/busybox:2 echo hi\n$/,
  );
});

Deno.test("socker images lists the allowed images and whether each is here", async () => {
  const result = await socker("bob", ["images"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^IMAGE\s+NORMALISED\s+ON THIS NODE$/m);
  assert.match(result.stdout, new RegExp(`^${IMAGE}\\s+docker\\.io/${IMAGE}\\s+yes$`, "m"));
  assert.match(result.stdout, new RegExp(`^${ABSENT_IMAGE}\\s+docker\\.io/${ABSENT_IMAGE}\\s+no$`, "m"));
});

Deno.test("refusals: exit 125, one line naming the problem, nothing started", async () => {
  const before = await sh(DOCKER, ["ps", "-aq"]);
  const cases: [string[], RegExp][] = [
    [["run", "socker-test/other:1", "id"], /image 'socker-test\/other:1' is not allowed.*socker images/],
    [["run", "SOCKER-TEST/busybox:2", "id"], /image 'SOCKER-TEST\/busybox:2' is not allowed/],
    [["run", "socker-test/BUSYBOX:2", "id"], /not a valid image reference: repository name must be lowercase/],
    [["run", "socker-test/busybox:2 ", "id"], /not a valid image reference/],
    [["run", "socker-test/busybox", "id"], /is not allowed/],
    [["run", ABSENT_IMAGE, "id"], /allowed but not present on node .*ask your administrator.*never pulls/],
    [["run", "--privileged", IMAGE, "id"], /unknown option '--privileged' for 'run'/],
    [["run", "-v", "/:/host", IMAGE, "id"], /not under a folder users may mount/],
    [["run", "--user", "0", IMAGE, "id"], /unknown option '--user'/],
    [["run", "-u", "0", IMAGE, "id"], /unknown option '-u'/],
    [["--group-add", "0", "run", IMAGE, "id"], /unknown option '--group-add'/],
    [["run", "--", "--privileged", "id"], /IMAGE must not start with '-'/],
    [["run", IMAGE], /needs a COMMAND/],
    [["run"], /needs an IMAGE and a COMMAND/],
    [[], /no command given/],
    [["frobnicate"], /unknown command/],
    [["cleanup", "--job", "1"], /root|Epilog/],
  ];
  for (const [args, pattern] of cases) assertRefused(await socker("alice", args), pattern);
  assert.equal((await sh(DOCKER, ["ps", "-aq"])).stdout, before.stdout);
});

Deno.test("root calling socker is refused: containers never run as root", async () => {
  const result = await sh("/usr/local/bin/socker", ["run", IMAGE, "id"], {
    env: { PATH: "/usr/bin:/bin", HOME: "/root" },
  });
  assertRefused(result, /refusing to run a container as root/);
});

// ---- signals

async function startAndKill(signal: Deno.Signal, expectedCode: number): Promise<number> {
  const child = spawnSocker("alice", ["run", IMAGE, "sleep", "1000"]);
  const started = await waitFor(async () => (await sockerContainers()).length === 1, 10_000);
  assert.ok(started >= 0, "the container started");
  const start = performance.now();
  child.kill(signal);
  const output = await child.output();
  const elapsed = performance.now() - start;
  assert.equal(output.code, expectedCode, new TextDecoder().decode(output.stderr));
  // socker exits only once its container is gone.
  await assertNoContainers();
  return elapsed;
}

Deno.test("SIGTERM to socker kills the container, waits until it is gone, exits 143", async () => {
  const elapsed = await startAndKill("SIGTERM", 143);
  assert.ok(elapsed < 3000, `took ${elapsed} ms`);
});

Deno.test("SIGINT to socker: container gone, exit 130", async () => {
  await startAndKill("SIGINT", 130);
});

Deno.test("SIGHUP to socker: container gone, exit 129", async () => {
  await startAndKill("SIGHUP", 129);
});

Deno.test("SIGUSR1 reaches the container's process", async () => {
  const child = spawnSocker("alice", [
    "run",
    IMAGE,
    "sh",
    "-c",
    "trap 'echo got-usr1; exit 7' USR1; echo ready; while true; do sleep 0.1; done",
  ]);
  const reader = child.stdout.getReader();
  const first = await reader.read();
  assert.equal(new TextDecoder().decode(first.value), "ready\n");
  child.kill("SIGUSR1");
  let rest = "";
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    rest += new TextDecoder().decode(chunk.value);
  }
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(rest, "got-usr1\n");
  assert.equal(status.code, 7);
  await assertNoContainers();
});

Deno.test("a signal while socker prepares the run leaves nothing behind: no container, no staging mount", async () => {
  // A folder in alice's own home is staged (she could rename it), so preparation changes something.
  Deno.mkdirSync("/home/alice/signal-test", { recursive: true });
  Deno.chownSync("/home/alice/signal-test", 2001, 2001);
  for (const delay of [0, 20, 40, 60, 80, 100, 150, 200, 300]) {
    const child = spawnSocker("alice", ["run", "-v", "/home/alice/signal-test:/d", IMAGE, "sleep", "1000"]);
    await new Promise((resolve) => setTimeout(resolve, delay));
    child.kill("SIGTERM");
    const output = await child.output();
    assert.ok(output.code === 143 || output.code > 128, `delay ${delay}: ${output.code}`);
    await assertNoContainers();
    assert.equal(await stagingLeft(), "", `delay ${delay}`);
  }
  Deno.removeSync("/home/alice/signal-test");
});

// ---- attacks

Deno.test("attack: a fake docker first in PATH is never run", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socker-evil-" });
  const marker = `${dir}/ran`;
  Deno.writeTextFileSync(`${dir}/docker`, `#!/bin/sh\ntouch ${marker}\nexit 0\n`, { mode: 0o755 });
  for (const name of ["id", "sudo", "env", "deno", "sh"]) Deno.copyFileSync(`${dir}/docker`, `${dir}/${name}`);
  Deno.chmodSync(dir, 0o755);
  try {
    const result = await socker("alice", ["run", IMAGE, "id", "-u"], {
      env: { PATH: `${dir}:/usr/local/bin:/usr/bin:/bin` },
    });
    assert.equal(result.stdout.trim(), "2001", result.stderr);
    assert.throws(() => Deno.statSync(marker));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("attack: DOCKER_HOST, DOCKER_CONFIG, DOCKER_CONTEXT, HOME and proxies from the caller are ignored", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socker-evil-" });
  Deno.mkdirSync(`${dir}/cli-plugins`);
  Deno.writeTextFileSync(`${dir}/config.json`, JSON.stringify({ currentContext: "evil", psFormat: "x" }));
  Deno.chmodSync(dir, 0o755);
  try {
    const result = await socker("alice", ["run", IMAGE, "id", "-u"], {
      env: {
        DOCKER_HOST: "tcp://127.0.0.1:1",
        DOCKER_CONFIG: dir,
        DOCKER_CONTEXT: "evil",
        DOCKER_TLS_VERIFY: "1",
        DOCKER_CERT_PATH: dir,
        HOME: dir,
        HTTP_PROXY: "http://127.0.0.1:1",
        HTTPS_PROXY: "http://127.0.0.1:1",
      },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), "2001");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("attack: LD_PRELOAD, DENO_* and NODE_* from the caller never run code as root", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socker-evil-" });
  Deno.chmodSync(dir, 0o777);
  const marker = `${dir}/ran-as-root`;
  const payload = `${dir}/payload.js`;
  Deno.writeTextFileSync(payload, `Deno.writeTextFileSync("${marker}", "pwned");\n`, { mode: 0o644 });
  Deno.writeTextFileSync(
    `${dir}/preload.c`,
    `#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) { FILE *f = fopen("${marker}", "w"); if (f) fclose(f); }\n`,
  );
  const cc = await sh("/usr/bin/cc", ["-shared", "-fPIC", "-o", `${dir}/preload.so`, `${dir}/preload.c`]);
  assert.equal(cc.code, 0, cc.stderr);
  Deno.chmodSync(`${dir}/preload.so`, 0o755);
  try {
    const result = await socker("alice", ["run", IMAGE, "id", "-u"], {
      env: {
        LD_PRELOAD: `${dir}/preload.so`,
        LD_LIBRARY_PATH: dir,
        DENO_DIR: dir,
        DENO_V8_FLAGS: "--allow-natives-syntax",
        DENO_INTERNAL_CHILD_ENTRYPOINT: payload,
        NODE_CHANNEL_FD: "3",
        DENO_CERT: `${dir}/x`,
        DENO_AUTH_TOKENS: "x@example.org",
        NODE_OPTIONS: `--require ${payload}`,
        DENO_FUTURE: "1",
      },
    });
    assert.equal(result.stdout.trim(), "2001", result.stderr);
    const info = await sh("/usr/bin/stat", ["-c", "%u", marker]);
    // The preload library may run as alice inside her own processes (the launcher shell); never as root.
    assert.ok(info.code !== 0 || info.stdout.trim() !== "0", "payload ran as root");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("attack: options smuggled into the command stay the container's arguments", async () => {
  const result = await socker("alice", [
    "-v",
    "run",
    IMAGE,
    "sh",
    "-c",
    'echo "$@"; id -u; ls /host 2>&1',
    "sh",
    "--privileged",
    "-v",
    "/:/host",
    "--user",
    "0",
  ]);
  assert.match(result.stdout, /^--privileged -v \/:\/host --user 0\n2001\n.*No such file/);
  const docker = result.stderr.split("\n")[0];
  const options = docker.slice(0, docker.indexOf(" -- "));
  assert.ok(!/--privileged|\/:\/host|--user 0/.test(options), options);
  const injected = await socker("alice", ["run", `${IMAGE};id`, "id"]);
  assertRefused(injected, /not a valid image reference/);
  const dollar = await socker("alice", ["run", IMAGE, "echo", "$(id -u)", "`id`", ";", "id"]);
  assert.equal(dollar.stdout, "$(id -u) `id` ; id\n");
});

Deno.test("attack: a world-writable or user-owned allowlist is refused", async () => {
  const info = Deno.statSync(ALLOWLIST);
  try {
    Deno.chmodSync(ALLOWLIST, 0o666);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /refusing to trust .*socker-images is writable by/);
    Deno.chmodSync(ALLOWLIST, 0o644);
    Deno.chownSync(ALLOWLIST, 2001, 2001);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /not owned by root \(owner uid 2001\)/);
    Deno.chownSync(ALLOWLIST, 0, 0);
    Deno.chmodSync("/etc/socker", 0o777);
    assertRefused(await socker("alice", ["images"]), /\/etc\/socker is writable by/);
  } finally {
    Deno.chmodSync("/etc/socker", 0o755);
    Deno.chownSync(ALLOWLIST, info.uid, info.gid);
    Deno.chmodSync(ALLOWLIST, info.mode! & 0o7777);
  }
  assert.equal((await socker("alice", ["run", IMAGE, "true"])).code, 0);
});

Deno.test("attack: a symlinked allowlist pointing at a user's file is refused", async () => {
  const userFile = "/home/alice/my-images";
  Deno.writeTextFileSync(userFile, `${IMAGE}\nsocker-test/anything:1\n`);
  Deno.chownSync(userFile, 2001, 2001);
  const saved = `${ALLOWLIST}.saved`;
  Deno.renameSync(ALLOWLIST, saved);
  try {
    Deno.symlinkSync(userFile, ALLOWLIST);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /refusing to trust/);
    Deno.removeSync(ALLOWLIST);
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /socker-images is missing/);
  } finally {
    try {
      Deno.removeSync(ALLOWLIST);
    } catch { /* already gone */ }
    Deno.renameSync(saved, ALLOWLIST);
    Deno.removeSync(userFile);
  }
});

Deno.test("a broken allowlist names the line and changes nothing", async () => {
  const restore = withAllowlist(`${IMAGE}\nNot A Reference\n`);
  try {
    assertRefused(await socker("alice", ["run", IMAGE, "id"]), /socker-images:2: 'Not A Reference'/);
  } finally {
    restore();
  }
  const garbage = withAllowlist("\u0000\u00ff\u0001binary");
  try {
    Deno.writeFileSync(ALLOWLIST, new Uint8Array([0, 255, 1, 2, 0xc3]));
    assertRefused(await socker("alice", ["images"]), /not a text file/);
  } finally {
    garbage();
  }
});

Deno.test("the privileged program refuses to run without root", async () => {
  const result = await sh("/usr/bin/setpriv", [
    "--reuid=alice",
    "--regid=alice",
    "--init-groups",
    "/usr/bin/env",
    "SUDO_UID=2001",
    "SUDO_GID=2001",
    "SUDO_USER=alice",
    PRIVILEGED_SOCKER,
    "run",
    IMAGE,
    "id",
  ]);
  assert.equal(result.code, 125);
  assert.match(result.stderr, /must be started through sudo/);
});
