// Mounts: what a user may bind into a container, judged by the kernel with the user's own credentials, and
// mounted race-free. Real engine, real launcher and sudo; alice (2001, group proj 3001) and bob (2002).
import assert from "node:assert/strict";
import { assertRefused, folder, IMAGE, sh, socker, stagingLeft, userShell, withSettings } from "./helpers.ts";

function setUp(): void {
  folder("/home/alice/data", 2001, 2001, 0o755, "alice's");
  folder("/home/bob/private", 2002, 2002, 0o700, "bob's secret");
  Deno.chmodSync("/home/bob", 0o700);
}

Deno.test("mounts: the user's own files are visible with the right owner; home and folder are mounted", async () => {
  setUp();
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

Deno.test("mounts: writes land as the user; ro mounts are read-only", async () => {
  setUp();
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

Deno.test("mounts: another user's 0700 home is refused: directly, through a symlink, through .., one message", async () => {
  setUp();
  try {
    Deno.removeSync("/home/alice/to-bob");
  } catch { /* not there */ }
  Deno.symlinkSync("/home/bob/private", "/home/alice/to-bob");
  try {
    for (const source of ["/home/bob/private", "/home/bob", "/home/alice/to-bob", "/home/alice/../bob/private"]) {
      const result = await socker("alice", ["run", "-v", `${source}:/x`, IMAGE, "cat", "/x/whose"]);
      assertRefused(result, /does not exist or you cannot reach it|not readable by you/);
      assert.ok(result.stderr.includes(source), result.stderr);
    }
  } finally {
    Deno.removeSync("/home/alice/to-bob");
  }
  const bob = await socker("bob", ["run", "-v", "/home/bob/private:/x", IMAGE, "cat", "/x/whose"]);
  assert.equal(bob.stdout, "bob's secret", "bob himself may");
});

Deno.test("mounts: /etc can be neither mounted over nor mounted from; nor the image's root", async () => {
  setUp();
  const cases: [string, RegExp][] = [
    ["/home/alice/data:/etc", /forbidden destination \/etc/],
    ["/home/alice/data:/etc/ssl", /forbidden destination \/etc/],
    ["/home/alice/data:/usr/bin", /forbidden destination \/usr/],
    ["/home/alice/data:/proc/x", /forbidden destination \/proc/],
    ["/home/alice/data:/var/spool/x", /forbidden destination \/var/],
    ["/home/alice/data:/", /image's own root|clean absolute/],
    ["/etc:/x", /real path \/etc\) is not under a folder users may mount/],
    ["/:/host", /not under a folder users may mount/],
    ["/var/run/docker.sock:/s", /not under a folder users may mount/],
    ["/home/alice/data:/x,source=/etc", /DST may hold only/],
    ["/home/alice/data:/x:z", /is not a mode \(ro or rw\)/],
  ];
  for (const [spec, pattern] of cases) {
    assertRefused(await socker("alice", ["run", "-v", spec, IMAGE, "true"]), pattern);
  }
});

Deno.test("mounts: prefixes match by whole path components: /scratch does not admit /scratch2", async () => {
  folder("/scratch/alice", 2001, 2001, 0o700, "scratch");
  folder("/scratch2/alice", 2001, 2001, 0o700, "scratch2");
  await withSettings("mount_prefixes = /home /scratch\n", async () => {
    const ok = await socker("alice", ["run", "-v", "/scratch/alice:/s", IMAGE, "cat", "/s/whose"]);
    assert.equal(ok.stdout, "scratch", ok.stderr);
    assertRefused(await socker("alice", ["run", "-v", "/scratch2/alice:/s", IMAGE, "true"]), /not under a folder/);
  });
});

Deno.test("mounts: a project folder shared through a supplementary group is readable; others are refused", async () => {
  folder("/projects/p1", 0, 3001, 0o2770, "project data");
  Deno.chownSync("/projects/p1/whose", 0, 3001);
  await withSettings("mount_prefixes = /home /projects\n", async () => {
    const alice = await socker("alice", ["run", "-v", "/projects/p1:/p", IMAGE, "cat", "/p/whose"]);
    assert.equal(alice.stdout, "project data", alice.stderr);
    assertRefused(
      await socker("bob", ["run", "-v", "/projects/p1:/p", IMAGE, "true"]),
      /cannot reach it|not readable by you/,
    );
  });
});

Deno.test("mounts: a folder swapped for a symlink between check and run never exposes another user's data", async () => {
  setUp();
  const swap = "/home/alice/swap";
  folder(`${swap}.real`, 2001, 2001, 0o755, "alice's");
  // alice flips `swap` between her folder and a symlink to bob's, and renames the real folder, as fast as she
  // can, until every run is done (a stop file; 10 minutes at most, so nothing outlives a crashed test); each
  // loop counts its turns in a file, so the test knows the swapping really happened.
  const stop = "/tmp/swap.stop";
  await sh("/bin/rm", ["-f", stop]);
  const flip = (body: string, counter: string) =>
    userShell(
      "alice",
      `cd /home/alice; n=0; end=$(($(date +%s) + 600)); while [ ! -e ${stop} ] && [ $(date +%s) -lt $end ]; do ${body}; n=$((n+1)); echo $n > ${counter}; done`,
      "null",
    ).spawn();
  const flipper = flip(
    `ln -sfn swap.real swap.tmp && mv -T swap.tmp swap; ln -sfn /home/bob/private swap.tmp && mv -T swap.tmp swap`,
    "/tmp/flips",
  );
  const renamer = flip(
    `mv -T swap.real swap2 2>/dev/null; ln -sfn /home/bob/private swap.real; rm -f swap.real; mv -T swap2 swap.real 2>/dev/null`,
    "/tmp/renames",
  );
  const outcomes = new Map<string, number>();
  try {
    for (let i = 0; i < 25; i++) {
      for (const source of [swap, `${swap}.real`]) {
        const result = await socker("alice", ["run", "-v", `${source}:/s`, IMAGE, "cat", "/s/whose"]);
        assert.ok(!result.stdout.includes("bob"), `run ${i}: bob's data leaked: ${result.stdout}`);
        const key = result.stdout === "alice's"
          ? "mounted alice's"
          : result.code === 125
          ? "refused"
          : `exit ${result.code}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
    }
  } finally {
    Deno.writeTextFileSync(stop, "");
    await flipper.status;
    await renamer.status;
    Deno.removeSync(stop);
    await sh("/bin/sh", ["-c", `rm -rf ${swap} ${swap}.tmp ${swap}2 ${swap}.real`]);
  }
  const flips = Number(Deno.readTextFileSync("/tmp/flips").trim());
  const renames = Number(Deno.readTextFileSync("/tmp/renames").trim());
  console.log(
    `swap race: ${flips} flips and ${renames} renames by alice; outcomes ${
      JSON.stringify(Object.fromEntries(outcomes))
    }`,
  );
  assert.ok(flips > 100 && renames > 100, "the swappers really ran during the runs");
  assert.ok((outcomes.get("refused") ?? 0) > 0, "some runs met a swapped path and were refused");
  assert.equal(await stagingLeft(), "");
});

Deno.test("mounts: a user's mount may replace the default home mount; two at one destination are refused", async () => {
  setUp();
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

Deno.test("mounts: a default mount the user cannot use is left out, never refused", async () => {
  folder("/home/alice/closed", 0, 0, 0o700);
  const result = await socker("alice", ["run", IMAGE, "pwd"], { cwd: "/tmp" });
  assert.equal(result.code, 0, result.stderr);
  await withSettings("default_mounts = home workdir /home/alice/closed\n", async () => {
    const closed = await socker("alice", ["run", IMAGE, "ls", "/home/alice/closed"]);
    assert.notEqual(closed.code, 125, closed.stderr);
    assert.match(closed.stderr, /No such file|Permission denied/);
  });
  Deno.removeSync("/home/alice/closed");
});
