// The working directory: as asked, the caller's folder when it is mounted, the image's otherwise; never in
// the kernel's views; created as the caller (never as root) inside a mounted folder.
import assert from "node:assert/strict";
import { assertRefused, folder, IMAGE, rootOwnedUnder, socker, userShell } from "./helpers.ts";

Deno.test("workdir: as asked, the caller's when mounted, the image's otherwise", async () => {
  const asked = await socker("alice", ["run", "-w", "/tmp", IMAGE, "pwd"]);
  assert.equal(asked.stdout, "/tmp\n");
  folder("/home/alice/wd", 2001, 2001, 0o755);
  const mine = await socker("alice", ["run", IMAGE, "pwd"], { cwd: "/home/alice/wd" });
  assert.equal(mine.stdout, "/home/alice/wd\n");
  const outside = await socker("alice", ["run", IMAGE, "pwd"], { cwd: "/tmp" });
  assert.equal(outside.stdout, "/\n");
});

Deno.test("workdir: never under /proc, /sys or /dev (runc CVE-2024-21626), never relative", async () => {
  for (const dir of ["/proc/self/fd/7", "/proc/1/cwd", "/dev/fd/100", "/dev/shm", "/sys/fs/cgroup", "/proc"]) {
    assertRefused(
      await socker("alice", ["run", "-w", dir, IMAGE, "pwd"]),
      /never a working directory under \/(proc|sys|dev)\n/,
    );
  }
  assertRefused(await socker("alice", ["run", "-w", "rel", IMAGE, "pwd"]), /clean absolute path/);
  assertRefused(await socker("alice", ["run", "-w", "/home/alice/../bob", IMAGE, "pwd"]), /clean absolute path/);
});

Deno.test("workdir: a new folder inside a mounted folder is created as the caller, never as root", async () => {
  const target = "/home/alice/made/by/w";
  try {
    const result = await socker("alice", ["run", "-w", target, IMAGE, "sh", "-c", "pwd; touch x"]);
    assert.equal(result.stdout, `${target}\n`, result.stderr);
    for (const path of ["/home/alice/made", "/home/alice/made/by", target, `${target}/x`]) {
      assert.equal(Deno.statSync(path).uid, 2001, path);
    }
    assert.deepEqual(await rootOwnedUnder("/home/alice"), []);
  } finally {
    Deno.removeSync("/home/alice/made", { recursive: true });
  }
});

Deno.test("workdir: inside a mount, the command is untouched: words the shell's exec would take as options are not found, as without -w", async () => {
  folder("/home/alice/wdx", 2001, 2001, 0o755);
  try {
    for (const command of [["-a", "fake", "sh", "-c", "echo ran"], ["--", "echo", "ran"], ["-c", "echo ran"], [""]]) {
      const plain = await socker("alice", ["run", IMAGE, ...command]);
      const entered = await socker("alice", ["run", "-w", "/home/alice/wdx", IMAGE, ...command]);
      assert.equal(entered.code, plain.code, `${JSON.stringify(command)}: ${entered.stderr}`);
      assert.equal(entered.code, 127, JSON.stringify(command));
      assert.equal(entered.stdout, "", JSON.stringify(command));
    }
    const normal = await socker("alice", ["run", "-w", "/home/alice/wdx", IMAGE, "sh", "-c", "pwd; exit 3"]);
    assert.deepEqual([normal.code, normal.stdout], [3, "/home/alice/wdx\n"]);
  } finally {
    Deno.removeSync("/home/alice/wdx", { recursive: true });
  }
});

Deno.test("workdir: a folder the caller cannot create is refused, and nothing is created", async () => {
  folder("/home/alice/locked", 0, 0, 0o755);
  try {
    assertRefused(
      await socker("alice", ["run", "-w", "/home/alice/locked/new", IMAGE, "pwd"]),
      /-w \/home\/alice\/locked\/new: cannot create \/home\/alice\/locked\/new as you: you may not create it/,
    );
    assert.throws(() => Deno.statSync("/home/alice/locked/new"));
  } finally {
    Deno.removeSync("/home/alice/locked");
  }
});

Deno.test("workdir: a folder the caller can no longer enter: the container runs in the image's", async () => {
  const dir = "/home/alice/closed";
  folder(dir, 2001, 2001, 0o755);
  const child = userShell("alice", `cd ${dir} && sleep 1 && exec socker run ${IMAGE} pwd`).spawn();
  await new Promise((resolve) => setTimeout(resolve, 300));
  Deno.chmodSync(dir, 0o000);
  try {
    const output = await child.output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    assert.equal(new TextDecoder().decode(output.stdout), "/\n");
  } finally {
    Deno.chmodSync(dir, 0o755);
    Deno.removeSync(dir);
  }
  Deno.mkdirSync(dir);
  Deno.chownSync(dir, 2001, 2001);
  const gone = await userShell("alice", `cd ${dir} && rmdir ${dir} && exec socker run ${IMAGE} pwd`).output();
  assert.equal(gone.code, 0, new TextDecoder().decode(gone.stderr));
  assert.equal(new TextDecoder().decode(gone.stdout), "/\n");
});
