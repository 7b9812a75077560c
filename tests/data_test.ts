// Integration tests of data and devices: bind mounts judged as the user, working directory, environment
// and terminals, on the real Docker engine through the real launcher and sudo. Users alice (2001, group
// proj 3001) and bob (2002) come from tests/setup.sh.
import assert from "node:assert/strict";
import { assertRefused, IMAGE, inTerminal, sh, socker, stagingLeft, userShell } from "./helpers.ts";

const SETTINGS = "/etc/socker/socker.conf";

/** Runs `body` with a socker.conf of the test's own, and removes it after. */
async function withSettings(text: string, body: () => Promise<void>): Promise<void> {
  Deno.writeTextFileSync(SETTINGS, text, { mode: 0o644 });
  try {
    await body();
  } finally {
    Deno.removeSync(SETTINGS);
  }
}

/** Makes a folder with an owner, group and mode (and a file inside saying whose it is). */
function folder(path: string, owner: number, group: number, mode: number, content?: string): void {
  Deno.mkdirSync(path, { recursive: true });
  if (content !== undefined) {
    Deno.writeTextFileSync(`${path}/whose`, content);
    Deno.chownSync(`${path}/whose`, owner, group);
    Deno.chmodSync(`${path}/whose`, 0o640);
  }
  Deno.chownSync(path, owner, group);
  Deno.chmodSync(path, mode);
}

folder("/home/alice/data", 2001, 2001, 0o755, "alice's");
folder("/home/bob/private", 2002, 2002, 0o700, "bob's secret");
Deno.chmodSync("/home/bob", 0o700);

Deno.test("the user's own files are visible, with the right owner, and home and folder are mounted", async () => {
  const result = await socker("alice", [
    "run",
    "-v",
    "/home/alice/data:/data",
    IMAGE,
    "sh",
    "-c",
    "cat /data/whose; stat -c '%u:%g' /data/whose; pwd; echo $HOME; ls -d /home/alice",
  ], { cwd: "/home/alice/data" });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, "alice's2001:2001\n/home/alice/data\n/home/alice\n/home/alice\n");
});

Deno.test("writes land as the user; ro mounts are read-only", async () => {
  const rw = await socker("alice", ["run", "-v", "/home/alice/data:/data", IMAGE, "sh", "-c", "echo hi > /data/new"]);
  assert.equal(rw.code, 0, rw.stderr);
  const info = Deno.statSync("/home/alice/data/new");
  assert.deepEqual([info.uid, info.gid], [2001, 2001]);
  Deno.removeSync("/home/alice/data/new");
  const ro = await socker("alice", [
    "run",
    "-v",
    "/home/alice/data:/data:ro",
    IMAGE,
    "sh",
    "-c",
    "echo hi > /data/new",
  ]);
  assert.notEqual(ro.code, 0);
  assert.match(ro.stderr, /Read-only file system/);
});

Deno.test("another user's 0700 home is refused: directly, through a symlink, and through ..", async () => {
  try {
    Deno.removeSync("/home/alice/to-bob");
  } catch { /* not there */ }
  Deno.symlinkSync("/home/bob/private", "/home/alice/to-bob");
  try {
    for (const source of ["/home/bob/private", "/home/bob", "/home/alice/to-bob", "/home/alice/../bob/private"]) {
      const result = await socker("alice", ["run", "-v", `${source}:/x`, IMAGE, "cat", "/x/whose"]);
      assertRefused(result, /Permission denied|not readable by you/i);
      assert.ok(result.stderr.includes(source), result.stderr);
    }
  } finally {
    Deno.removeSync("/home/alice/to-bob");
  }
  // bob himself may.
  const bob = await socker("bob", ["run", "-v", "/home/bob/private:/x", IMAGE, "cat", "/x/whose"]);
  assert.equal(bob.stdout, "bob's secret");
});

Deno.test("/etc can be neither mounted over nor mounted from; nor the image's root", async () => {
  const cases: [string, RegExp][] = [
    ["/home/alice/data:/etc", /forbidden destination \/etc/],
    ["/home/alice/data:/etc/ssl", /forbidden destination \/etc/],
    ["/home/alice/data:/usr/bin", /forbidden destination \/usr/],
    ["/home/alice/data:/proc/x", /forbidden destination \/proc/],
    ["/home/alice/data:/", /image's own root|clean absolute/],
    ["/etc:/x", /real path \/etc\) is not under a folder users may mount/],
    ["/:/host", /not under a folder users may mount/],
    ["/var/run/docker.sock:/s", /not under a folder users may mount/],
    ["/home/alice/data:/x,source=/etc", /DST may hold only/],
    ["/home/alice/data:/x:z", /mode must be ro or rw/],
  ];
  for (const [spec, pattern] of cases) {
    assertRefused(await socker("alice", ["run", "-v", spec, IMAGE, "true"]), pattern);
  }
});

Deno.test("prefixes match by whole path components: /scratch does not admit /scratch2", async () => {
  folder("/scratch/alice", 2001, 2001, 0o700, "scratch");
  folder("/scratch2/alice", 2001, 2001, 0o700, "scratch2");
  await withSettings("mount_prefixes = /home /scratch\n", async () => {
    const ok = await socker("alice", ["run", "-v", "/scratch/alice:/s", IMAGE, "cat", "/s/whose"]);
    assert.equal(ok.stdout, "scratch", ok.stderr);
    assertRefused(await socker("alice", ["run", "-v", "/scratch2/alice:/s", IMAGE, "true"]), /not under a folder/);
  });
});

Deno.test("a project folder shared through a supplementary group is readable; others are refused", async () => {
  folder("/projects/p1", 0, 3001, 0o2770, "project data");
  Deno.chownSync("/projects/p1/whose", 0, 3001);
  await withSettings("mount_prefixes = /home /projects\n", async () => {
    const alice = await socker("alice", ["run", "-v", "/projects/p1:/p", IMAGE, "cat", "/p/whose"]);
    assert.equal(alice.stdout, "project data", alice.stderr);
    assertRefused(await socker("bob", ["run", "-v", "/projects/p1:/p", IMAGE, "true"]), /not readable by you/);
  });
});

Deno.test("a symlink swapped between check and run never exposes another user's data", async () => {
  const swap = "/home/alice/swap";
  folder(`${swap}.real`, 2001, 2001, 0o755, "alice's");
  // alice flips `swap` between her own folder and a symlink to bob's private folder, as fast as she can.
  const flipper = userShell(
    "alice",
    `cd /home/alice; end=$(($(date +%s) + 40)); while [ $(date +%s) -lt $end ]; do ` +
      `ln -sfn swap.real swap.tmp && mv -T swap.tmp swap; ln -sfn /home/bob/private swap.tmp && mv -T swap.tmp swap; done`,
    "null",
  ).spawn();
  // Symlinks are resolved as alice; the real folder flips too, by renaming it under the checked name.
  const renamer = userShell(
    "alice",
    `cd /home/alice; end=$(($(date +%s) + 40)); while [ $(date +%s) -lt $end ]; do ` +
      `mv -T swap.real swap2 2>/dev/null; ln -sfn /home/bob/private swap.real; rm -f swap.real; mv -T swap2 swap.real 2>/dev/null; done`,
    "null",
  ).spawn();
  const outcomes = new Map<string, number>();
  try {
    for (let i = 0; i < 25; i++) {
      for (const source of [swap, `${swap}.real`]) {
        const result = await socker("alice", ["run", "-v", `${source}:/s`, IMAGE, "cat", "/s/whose"]);
        assert.ok(!result.stdout.includes("bob"), `run ${i}: bob's data leaked: ${result.stdout}`);
        const key = result.code === 0 ? "mounted alice's" : result.code === 125 ? "refused" : `exit ${result.code}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
    }
  } finally {
    flipper.kill("SIGKILL");
    renamer.kill("SIGKILL");
    await flipper.status;
    await renamer.status;
    await sh("/bin/sh", ["-c", `rm -rf ${swap} ${swap}.tmp ${swap}2; rm -rf ${swap}.real`]);
  }
  console.log(`swap race outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  assert.equal(await stagingLeft(), "");
});

Deno.test("environment variables arrive; HOME works in an image without the user in /etc/passwd", async () => {
  const result = await socker("alice", [
    "run",
    "-e",
    "FOO=bar baz",
    "-e",
    "FROM_CALLER",
    IMAGE,
    "sh",
    "-c",
    'echo "$FOO|$FROM_CALLER|$HOME|$USER|$LOGNAME"; cd && pwd; grep -c alice /etc/passwd',
  ], { env: { FROM_CALLER: "caller's value" } });
  assert.equal(result.stdout, "bar baz|caller's value|/home/alice|alice|alice\n/home/alice\n0\n", result.stderr);
  assertRefused(await socker("alice", ["run", "-e", "1BAD=x", IMAGE, "true"]), /not a variable name/);
  await withSettings("env_deny = LD_PRELOAD\nenv_set = SITE=hpc\n", async () => {
    assertRefused(await socker("alice", ["run", "-e", "LD_PRELOAD=/x.so", IMAGE, "true"]), /never lets LD_PRELOAD/);
    const site = await socker("alice", ["run", "-e", "SITE=mine", IMAGE, "sh", "-c", "echo $SITE"]);
    assert.equal(site.stdout, "hpc\n");
  });
});

Deno.test("working directory: as asked, the caller's when mounted, the image's otherwise; never /proc", async () => {
  const asked = await socker("alice", ["run", "-w", "/tmp", IMAGE, "pwd"]);
  assert.equal(asked.stdout, "/tmp\n");
  const outside = await socker("alice", ["run", IMAGE, "pwd"], { cwd: "/tmp" });
  assert.equal(outside.stdout, "/\n");
  assertRefused(await socker("alice", ["run", "-w", "/proc/self/fd/7", IMAGE, "pwd"]), /never a \/proc path/);
  assertRefused(await socker("alice", ["run", "-w", "rel", IMAGE, "pwd"]), /clean absolute path/);
});

Deno.test("the network is the engine's bridge by default, none when the administrator says so", async () => {
  const bridge = await socker("alice", ["run", IMAGE, "ls", "/sys/class/net"]);
  assert.match(bridge.stdout, /eth0/);
  await withSettings("network = none\n", async () => {
    const none = await socker("alice", ["run", IMAGE, "ls", "/sys/class/net"]);
    assert.equal(none.stdout, "lo\n");
  });
  await withSettings("network = host\n", async () => {
    assertRefused(await socker("alice", ["run", IMAGE, "true"]), /network must be bridge or none/);
  });
});

Deno.test("--no-tty and --no-stdin force batch behaviour even on a terminal", async () => {
  const line = `socker run --no-tty --no-stdin ${IMAGE} sh -c 'tty; cat; echo done'`;
  const result = await inTerminal("alice", line);
  assert.match(result.stdout, /not a tty/);
  assert.match(result.stdout, /done/);
});

Deno.test("--gpus outside a job is refused; GPUs come only from the job", async () => {
  assertRefused(await socker("alice", ["run", "--gpus", IMAGE, "true"]), /only inside a Slurm job/);
  const forged = await socker("alice", ["run", "--gpus", IMAGE, "true"], {
    env: { CUDA_VISIBLE_DEVICES: "0", SLURM_JOB_GPUS: "0", SLURM_JOB_ID: "1" },
  });
  assertRefused(forged, /only inside a Slurm job/);
});

Deno.test("a broken socker.conf names the line; an unknown key is an error", async () => {
  await withSettings("mount_prefixes = /home\nmount_prefix = /\n", async () => {
    assertRefused(await socker("alice", ["run", IMAGE, "true"]), /socker\.conf:2: unknown setting 'mount_prefix'/);
  });
  await withSettings("mount_prefixes = /\n", async () => {
    assertRefused(await socker("alice", ["run", IMAGE, "true"]), /would allow mounting the whole host/);
  });
  Deno.writeTextFileSync(SETTINGS, "require_job = no\n", { mode: 0o666 });
  Deno.chmodSync(SETTINGS, 0o666);
  try {
    assertRefused(await socker("alice", ["run", IMAGE, "true"]), /refusing to trust .*socker\.conf is writable/);
  } finally {
    Deno.removeSync(SETTINGS);
  }
});

Deno.test("a user's mount may replace the default home mount; two at one destination are refused", async () => {
  const replaced = await socker("alice", [
    "run",
    "-v",
    "/home/alice/data:/home/alice",
    IMAGE,
    "cat",
    "/home/alice/whose",
  ]);
  assert.equal(replaced.stdout, "alice's", replaced.stderr);
  assertRefused(
    await socker("alice", ["run", "-v", "/home/alice/data:/d", "-v", "/home/alice:/d", IMAGE, "true"]),
    /two mounts at \/d/,
  );
});
