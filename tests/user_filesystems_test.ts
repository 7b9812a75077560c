// Filesystems a user mounts (issue 17.3): alice mounts a real FUSE filesystem (bindfs, with allow_other, as
// sites with user_allow_other allow) over a folder in her home and stops its daemon, so that every lookup
// inside waits for an answer that never comes. socker must refuse it as a mount source, as her current
// folder and as the working folder, quickly, without touching it (socker is root: a stuck lookup there
// outlives SIGTERM and Slurm's KillWait) and without the engine touching it (its threads would stay stuck);
// bob's runs go on. With `user_filesystems = allow` in socker.conf, a live one is mounted.
import assert from "node:assert/strict";
import { DOCKER, IMAGE, sh, socker, sockerContainers, stagingLeft, userLine, withSettings } from "./helpers.ts";

const SRC = "/home/alice/ufs-src";
const MNT = "/home/alice/ufs-mnt";
/** How long a refusal may take (a run that starts takes ~1 s here; a stuck probe takes forever). */
const QUICK_MS = 10_000;
/** Every line that runs as alice with the mount is bounded: a hang ends the test, not the machine's CI. */
const BOUND = "timeout -s KILL 40";

/** alice mounts bindfs over MNT (showing SRC) and returns the daemon's pid. */
async function mount(): Promise<number> {
  const line = `mkdir -p ${SRC} ${MNT} && echo alice-data > ${SRC}/whose && mkdir -p ${SRC}/sub && ` +
    `bindfs -o allow_other ${SRC} ${MNT} && pgrep -u alice -x -n bindfs`;
  const result = await userLine("alice", line);
  assert.equal(result.code, 0, result.stderr);
  const mountinfo = await Deno.readTextFile("/proc/self/mountinfo");
  assert.match(mountinfo, new RegExp(` ${MNT} .* - fuse\\S* .*user_id=2001`), "alice's FUSE filesystem is mounted");
  return Number(result.stdout.trim());
}

/** Lets the daemon go on, unmounts, removes the folders (never touches MNT before the daemon answers). */
async function unmount(pid: number): Promise<void> {
  await sh("/bin/kill", ["-CONT", String(pid)]);
  await userLine("alice", `fusermount3 -u ${MNT}; rm -rf ${SRC}; rmdir ${MNT}`);
}

/** Threads of the engine's daemons in uninterruptible sleep (D): stuck on a filesystem. */
async function engineThreadsStuck(): Promise<number> {
  const result = await sh("/bin/sh", [
    "-c",
    "for p in $(pgrep -x dockerd) $(pgrep -x containerd); do cat /proc/$p/task/*/stat 2>/dev/null; done",
  ]);
  return result.stdout.split("\n").filter((line) => / D /.test(line.replace(/^.*\) /, ") "))).length;
}

/** Runs a bash line as alice, bounded, and measures it. */
async function timed(line: string): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const start = performance.now();
  // A socker stuck as root on the filesystem keeps the output open past the line's own bound: the test
  // gives up at 60 s and fails (the daemon's SIGCONT in `unmount` then frees what hangs).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    timer = setTimeout(() => resolve({ code: -1, stdout: "", stderr: "hung for 60 s" }), 60_000);
  });
  const result = await Promise.race([userLine("alice", line), hung]);
  clearTimeout(timer);
  return { ...result, ms: Math.round(performance.now() - start) };
}

/**
 * Runs `line` as alice from MNT/sub while the daemon is stopped, as a user whose shell sat in the folder
 * when it stalled. The line waits for the test's go (on its stdin) in dash, which never looks at its
 * folder (bash stats "." before every command, and would hang itself); the test stops the daemon, waits
 * for the kernel's cached answers to expire, and gives the go. Measured from the go.
 */
async function fromStalledFolder(pid: number, line: string) {
  await sh("/bin/kill", ["-CONT", String(pid)]);
  const child = new Deno.Command("/usr/bin/setpriv", {
    args: [
      "--reuid=alice",
      "--regid=alice",
      "--init-groups",
      "/bin/sh",
      "-c",
      `cd ${MNT}/sub && echo in && exec /usr/bin/env -u PWD /bin/sh -c 'read go; exec ${line}'`,
    ],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/home/alice" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await new Promise((resolve) => setTimeout(resolve, 500));
  await sh("/bin/kill", ["-STOP", String(pid)]);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const start = performance.now();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("go\n"));
  await writer.close();
  const result = await child.output();
  const decoder = new TextDecoder();
  return {
    code: result.code,
    stdout: decoder.decode(result.stdout).replace(/^in\n/, ""),
    stderr: decoder.decode(result.stderr),
    ms: Math.round(performance.now() - start),
  };
}

function assertQuickRefusal(result: { code: number; stdout: string; stderr: string; ms: number }, what: string) {
  assert.equal(result.code, 125, `${what}: expected 125, got ${result.code} after ${result.ms} ms; ${result.stderr}`);
  assert.match(result.stderr, /is on a filesystem a user mounted \(fuse.*, by uid 2001\)/, what);
  assert.match(result.stderr, /user_filesystems/, what);
  assert.equal(result.stderr.trimEnd().split("\n").length, 1, `${what}: one line: ${result.stderr}`);
  assert.ok(result.ms < QUICK_MS, `${what}: refused in ${result.ms} ms`);
  console.log(`${what}: refused in ${result.ms} ms`);
}

Deno.test("user filesystems: a FUSE filesystem alice mounted is refused as -v even while it answers", async () => {
  const pid = await mount();
  try {
    const result = await timed(`${BOUND} socker run -v ${MNT}:/data ${IMAGE} cat /data/whose`);
    assertQuickRefusal(result, "-v on a live bindfs");
    assert.match(result.stderr, new RegExp(`-v ${MNT}:/data: '${MNT}' is on a filesystem`));
  } finally {
    await unmount(pid);
  }
});

Deno.test("user filesystems: stalled, it is refused quickly as -v, as the current folder, as -w; the engine is not stuck; bob runs", async () => {
  const before = await sockerContainers();
  const stuckBefore = await engineThreadsStuck();
  const pid = await mount();
  try {
    // alice's daemon stops (as she may stop it: it is hers): every lookup inside now hangs.
    await sh("/bin/kill", ["-STOP", String(pid)]);
    await new Promise((resolve) => setTimeout(resolve, 2000)); // the kernel's cached answers expire
    assertQuickRefusal(
      await timed(`${BOUND} socker run -v ${MNT}/sub:/data ${IMAGE} ls /data`),
      "-v below a stalled bindfs",
    );
    assertQuickRefusal(await timed(`${BOUND} socker run -v ${MNT}:/data ${IMAGE} ls /data`), "-v on a stalled bindfs");
    const cwd = await fromStalledFolder(pid, `${BOUND} socker run ${IMAGE} pwd`);
    assertQuickRefusal(cwd, "the current folder in a stalled bindfs");
    assert.match(cwd.stderr, /your current folder \/home\/alice\/ufs-mnt\/sub is on a filesystem/);
    assertQuickRefusal(await timed(`${BOUND} socker run -w ${MNT}/sub ${IMAGE} pwd`), "-w in a stalled bindfs");
    assertQuickRefusal(
      await timed(`${BOUND} socker run -w ${MNT}/new ${IMAGE} pwd`),
      "-w to create in a stalled bindfs",
    );

    // The engine answers at once and none of its threads waits on the filesystem.
    const start = performance.now();
    const ps = await sh(DOCKER, ["ps", "-q"]);
    const psMs = Math.round(performance.now() - start);
    assert.equal(ps.code, 0, ps.stderr);
    assert.ok(psMs < 5000, `docker ps answered in ${psMs} ms`);
    assert.equal(await engineThreadsStuck(), stuckBefore, "no engine thread in uninterruptible sleep");
    console.log(`docker ps answered in ${psMs} ms; engine threads stuck: ${await engineThreadsStuck()}`);

    // bob is unaffected.
    const bobStart = performance.now();
    const bob = await socker("bob", ["run", IMAGE, "echo", "bob-ok"]);
    const bobMs = Math.round(performance.now() - bobStart);
    assert.equal(bob.code, 0, bob.stderr);
    assert.equal(bob.stdout, "bob-ok\n");
    assert.ok(bobMs < QUICK_MS, `bob's run took ${bobMs} ms`);
    console.log(`bob's run took ${bobMs} ms`);
    assert.deepEqual(await sockerContainers(), before, "no container left");
    assert.equal(await stagingLeft(), "");
  } finally {
    await unmount(pid);
  }
});

Deno.test("user filesystems: with user_filesystems = allow, a live bindfs is mounted", async () => {
  const pid = await mount();
  try {
    await withSettings("user_filesystems = allow\n", async () => {
      const result = await socker("alice", ["run", "-v", `${MNT}:/data`, IMAGE, "cat", "/data/whose"]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, "alice-data\n");
    });
    assertQuickRefusal(
      await timed(`${BOUND} socker run -v ${MNT}:/data ${IMAGE} cat /data/whose`),
      "-v on a live bindfs once the setting is gone",
    );
  } finally {
    await unmount(pid);
  }
});
