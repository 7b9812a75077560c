// Running a container: who it runs as, what comes back (exit codes, streams, terminals), the command line
// and its refusals. On the real Docker engine, through the real launcher and sudo, as real users: alice
// (uid 2001, group proj 3001) and bob (2002), made by tests/setup.sh; `sudo tests/run.sh` sets it all up.
import assert from "node:assert/strict";
import {
  ABSENT_IMAGE,
  assertRefused,
  DOCKER,
  IMAGE,
  inTerminal,
  PRIVILEGED_SOCKER,
  sh,
  socker,
  sockerContainers,
  TEST_ENGINE,
  userLine,
} from "./helpers.ts";

const asAlice = (line: string, env: Record<string, string> = {}) => userLine("alice", line, env);

async function assertNoContainers(): Promise<void> {
  assert.deepEqual(await sockerContainers(), []);
}

Deno.test("run: the container runs as the caller: uid, gid and supplementary groups", async () => {
  const alice = await socker("alice", ["run", IMAGE, "id"]);
  assert.equal(alice.code, 0, alice.stderr);
  // Podman writes an /etc/passwd and /etc/group entry for the uid and gid into the container: `id` then
  // prints names (`uid=2001(2001)`); the ids are the same.
  const ids = (text: string) => TEST_ENGINE === "podman" ? text.trim().replace(/\(\d+\)/g, "") : text.trim();
  assert.equal(ids(alice.stdout), "uid=2001 gid=2001 groups=2001,3001", alice.stdout);
  const bob = await socker("bob", ["run", IMAGE, "id"]);
  assert.equal(ids(bob.stdout), "uid=2002 gid=2002 groups=2002", bob.stdout);
  await assertNoContainers();
});

Deno.test("run: the callers are not in the docker group and cannot use the engine themselves", async () => {
  const groups = await sh("/usr/bin/id", ["-nG", "alice"]);
  assert.ok(!groups.stdout.split(/\s+/).includes("docker"), groups.stdout);
  const direct = await sh("/usr/bin/setpriv", ["--reuid=alice", "--regid=alice", "--init-groups", DOCKER, "ps"]);
  assert.notEqual(direct.code, 0);
  assert.match(direct.stderr, /permission denied/i);
});

Deno.test("run: a setuid-root binary in the image does not give root; no capabilities, no new privileges", async () => {
  const result = await socker("alice", ["run", IMAGE, "/suid/id", "-u"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), "2001");
  const caps = await socker("alice", ["run", IMAGE, "sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"]);
  for (const line of caps.stdout.trim().split("\n")) assert.match(line, /:\s+0+$/, line);
  const nnp = await socker("alice", ["run", IMAGE, "grep", "NoNewPrivs", "/proc/self/status"]);
  assert.match(nnp.stdout, /NoNewPrivs:\s+1/);
});

Deno.test("run: the caller's 0700 working folder does not stop socker", async () => {
  assert.equal(Deno.statSync("/home/alice").mode! & 0o777, 0o700);
  const result = await socker("alice", ["run", IMAGE, "true"], { cwd: "/home/alice" });
  assert.equal(result.code, 0, result.stderr);
});

Deno.test("run: the container's exit code passes through; 126/127 only when its command cannot run", async () => {
  const cases: [string[], number][] = [
    [["true"], 0],
    [["false"], 1],
    [["sh", "-c", "exit 3"], 3],
    [["sh", "-c", "exit 124"], 124],
    [["sh", "-c", "exit 125"], 125],
    [["sh", "-c", "exit 255"], 255],
    [["sh", "-c", "kill -KILL $$"], 137],
    [["sh", "-c", "kill -TERM $$"], 143],
    // On Podman the init (catatonit) reports a command it cannot run with its own exit 1 and its message.
    [["/no/such/program"], TEST_ENGINE === "podman" ? 1 : 127],
    [["/etc/passwd"], TEST_ENGINE === "podman" ? 1 : 126],
  ];
  for (const [argv, expected] of cases) {
    const result = await socker("alice", ["run", IMAGE, ...argv]);
    assert.equal(result.code, expected, `${argv.join(" ")}: ${result.stderr}`);
    if (TEST_ENGINE === "podman" && argv[0].startsWith("/")) assert.match(result.stderr, /catatonit.*failed to exec/);
  }
  await assertNoContainers();
});

Deno.test("run: the engine's own errors are 125 with its reason, never 126 or 127", async () => {
  // A working directory that is a file in the image: socker now tells it from the image's layers before the
  // engine is asked (batch_test.ts); either way 125 with the reason, and the container never ran.
  const result = await socker("alice", ["run", "-w", "/etc/passwd", IMAGE, "true"]);
  assertRefused(result, /-w \/etc\/passwd: Not a directory in image/);
  await assertNoContainers();
});

Deno.test("run: sh -c keeps its own options: socker does not read the container's command", async () => {
  const result = await socker("alice", ["run", IMAGE, "sh", "-c", "echo $HOME; exit 3"]);
  assert.equal(result.code, 3);
  assert.equal(result.stdout.trim(), "/home/alice");
});

Deno.test("run: stdout and stderr stay apart; stdin is piped in and its end reaches the container", async () => {
  const streams = await socker("alice", ["run", IMAGE, "sh", "-c", "echo out; echo err >&2"]);
  assert.equal(streams.stdout, "out\n");
  assert.equal(streams.stderr, "err\n");
  const piped = await socker("alice", ["run", IMAGE, "cat"], { stdin: "hi\n" });
  assert.equal(piped.code, 0);
  assert.equal(piped.stdout, "hi\n");
  const counted = await socker("alice", ["run", IMAGE, "wc", "-l"], { stdin: "a\nb\nc\n" });
  assert.equal(counted.stdout.trim(), "3");
  const noStdin = await socker("alice", ["run", "--no-stdin", IMAGE, "cat"], { stdin: "never\n" });
  assert.equal(noStdin.stdout, "");
});

Deno.test("run: a reader that pauses longer than 10 s after the container ended still gets every byte", async () => {
  const result = await userLine(
    "alice",
    `socker run ${IMAGE} sh -c 'head -c 1000000 /dev/zero; exit 5' | { sleep 12; wc -c; }; echo "rc=\${PIPESTATUS[0]}"`,
  );
  assert.deepEqual(result.stdout.split("\n").map((line) => line.trim()), ["1000000", "rc=5", ""], result.stderr);
  assert.equal(result.stderr, "");
});

Deno.test("run: 100 MB of stdout and 10 MB of stdin arrive intact", async () => {
  const count = "13000000";
  const expected = await sh("/bin/sh", ["-c", `seq 1 ${count} | sha256sum`]);
  const result = await socker("alice", ["run", IMAGE, "seq", "1", count]);
  assert.equal(result.code, 0, result.stderr);
  assert.ok(result.stdoutBytes.length > 100_000_000, `${result.stdoutBytes.length} bytes`);
  const digest = await crypto.subtle.digest("SHA-256", result.stdoutBytes);
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(hex, expected.stdout.split(" ")[0]);
  const input = "0123456789abcdef\n".repeat(600_000);
  const echoed = await socker("alice", ["run", IMAGE, "sha256sum"], { stdin: input });
  const local = await sh("/usr/bin/sha256sum", [], { stdin: input });
  assert.equal(echoed.stdout, local.stdout);
});

Deno.test("run: a terminal is attached only when stdin and stdout are terminals", async () => {
  const tty = await socker("alice", ["run", IMAGE, "sh", "-c", "tty"]);
  assert.equal(tty.stdout.trim(), "not a tty");
  const viaScript = await inTerminal(
    "alice",
    `stty rows 41 cols 99; socker run ${IMAGE} sh -c 'tty; sleep 0.5; stty size; exit 5'`,
  );
  assert.equal(viaScript.code, 5, viaScript.stdout);
  assert.match(viaScript.stdout, /\/dev\/pts\/\d+/);
  assert.match(viaScript.stdout, /41 99/, "the terminal's size reached the container");
  const typed = await inTerminal("alice", `printf 'typed\\n' | socker run ${IMAGE} cat`);
  assert.match(typed.stdout, /typed/, "stdin piped while stdout is a terminal");
  const noTty = await inTerminal("alice", `socker run --no-tty --no-stdin ${IMAGE} sh -c 'tty; cat; echo done'`);
  assert.match(noTty.stdout, /not a tty/);
  assert.match(noTty.stdout, /done/);
});

Deno.test("run: --version, --help and -v", async () => {
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
  const [line] = verbose.stderr.split("\n");
  assert.match(line, /^socker: POST \/v1\.41\/containers\/create\?name=socker-2001-[0-9a-f]{12} \{/);
  const spec = JSON.parse(line.slice(line.indexOf("{")));
  assert.equal(spec.User, "2001:2001");
  assert.equal(spec.Image, `docker.io/${IMAGE}`);
  assert.deepEqual(spec.Cmd, ["echo", "hi"]);
});

Deno.test("run: refusals: exit 125, one line naming the problem, nothing started", async () => {
  const before = await sh(DOCKER, ["ps", "-aq"]);
  const cases: [string[], RegExp][] = [
    [["run", "socker-test/other:1", "id"], /image 'socker-test\/other:1' is not allowed.*socker images/],
    [["run", "SOCKER-TEST/busybox:2", "id"], /image 'SOCKER-TEST\/busybox:2' is not allowed/],
    [["run", "socker-test/BUSYBOX:2", "id"], /not a valid image reference: repository name must be lowercase/],
    [["run", "socker-test/busybox:2 ", "id"], /not a valid image reference/],
    [["run", "socker-test/busybox", "id"], /is not allowed/],
    [["run", ABSENT_IMAGE, "id"], /allowed but not present on node .*ask your administrator/],
    [["run", "--privileged", IMAGE, "id"], /unknown option '--privileged' for 'run'/],
    [["run", "-v", "/:/host", IMAGE, "id"], /not under a folder users may mount/],
    [["run", "--user", "0", IMAGE, "id"], /unknown option '--user'/],
    [["run", "-u", "0", IMAGE, "id"], /unknown option '-u'/],
    [["--group-add", "0", "run", IMAGE, "id"], /unknown option '--group-add'/],
    [["run", "--", "--privileged", "id"], /IMAGE must not start with '-'/],
    [["run", IMAGE], /has no CMD or ENTRYPOINT of its own: give a COMMAND/],
    [["run"], /needs an IMAGE/],
    [[], /no command given/],
    [["frobnicate"], /unknown command/],
    [["cleanup", "--job", "1"], /root and Slurm's Epilog only/],
    [["pull", IMAGE], /'pull' is for root/],
    [["doctor"], /'doctor' is for root/],
  ];
  for (const [args, pattern] of cases) assertRefused(await socker("alice", args), pattern);
  assert.equal((await sh(DOCKER, ["ps", "-aq"])).stdout, before.stdout);
});

Deno.test("run: root calling socker is refused: containers never run as root", async () => {
  const result = await sh("/usr/local/bin/socker", ["run", IMAGE, "id"], {
    env: { PATH: "/usr/bin:/bin", HOME: "/root" },
  });
  assertRefused(result, /refusing to run a container as root/);
});

Deno.test("run: the privileged program refuses to run without root, whatever SUDO_* say", async () => {
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
  assertRefused(result, /must be started through sudo/);
});

// ---- attacks (issue 9 §2 and older): the container's exit code and command are its own

Deno.test("attack: a container's own exit 125 passes through, told apart from a refusal by having no socker line", async () => {
  const own = await asAlice(`socker run ${IMAGE} sh -c 'exit 125'`);
  assert.deepEqual([own.code, own.stderr], [125, ""]);
  const refused = await asAlice(`socker run socker-test/not-allowed:1 true`);
  assertRefused(refused, /^socker: /);
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
  const spec = JSON.parse(result.stderr.slice(result.stderr.indexOf("{"), result.stderr.indexOf("\n")));
  assert.equal(spec.HostConfig.Privileged, false);
  assert.equal(spec.User, "2001:2001");
  assert.ok(!JSON.stringify(spec.HostConfig.Mounts).includes('"Source":"/"'));
  assertRefused(await socker("alice", ["run", `${IMAGE};id`, "id"]), /not a valid image reference/);
  const dollar = await socker("alice", ["run", IMAGE, "echo", "$(id -u)", "`id`", ";", "id"]);
  assert.equal(dollar.stdout, "$(id -u) `id` ; id\n");
});
