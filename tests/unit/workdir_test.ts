// Unit tests of the working folder: as asked (never under /proc, /sys, /dev), the caller's when mounted, the
// image's otherwise; a folder missing in the image is refused as pyxis does.
import assert from "node:assert/strict";
import { chooseWorkdir, containerSpec, ENTER_WORKDIR, type Mount, workdirProblem } from "../../socker.ts";
import { IMAGE, IMAGE_ID, planTests, refusal, run, runFacts } from "./facts.ts";

Deno.test("-w: a folder missing in the image is refused as pyxis does; a folder or the image's symlink is fine", () => {
  assert.match(workdirProblem("/x", "missing", "img")!, /^-w \/x: No such file or directory in image img/);
  assert.match(workdirProblem("/x", "whiteout", "img")!, /No such file or directory/);
  assert.match(workdirProblem("/x", "other", "img")!, /Not a directory/);
  for (const found of ["dir", "opaque", "symlink"] as const) {
    assert.equal(workdirProblem("/x", found, "img"), undefined);
  }
});

const mount = (source: string, destination = source, kind: "dir" | "file" = "dir"): Mount => ({
  source,
  destination,
  readOnly: false,
  kind,
  handle: 3,
  fixedByRoot: false,
});

Deno.test("workdir: as asked (never under /proc, /sys, /dev), else the caller's folder when mounted, else the image's", () => {
  const mounts = [mount("/home/alice")];
  assert.equal(chooseWorkdir("/data", "/home/alice/x", mounts), "/data");
  assert.equal(chooseWorkdir(undefined, "/home/alice/x", mounts), "/home/alice/x");
  assert.equal(chooseWorkdir(undefined, "/home/alice/x", [mount("/home/alice/x", "/work")]), "/work");
  assert.equal(chooseWorkdir(undefined, "/tmp", mounts), undefined);
  for (const bad of ["/proc/self/fd/7", "/proc", "/dev/fd/100", "/dev", "/sys/fs/cgroup"]) {
    refusal(() => chooseWorkdir(bad, undefined, []), /never a working directory under \/(proc|dev|sys)$/);
  }
  refusal(() => chooseWorkdir("data", undefined, []), /clean absolute/);
  assert.equal(chooseWorkdir("/procx", undefined, []), "/procx");
});

// planRun's rules on the working folder: one table row each, a refusal (a pattern of its one-line reason) or a check
// of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  [
    "the working folder under /proc is refused",
    run("-w", "/proc/self/fd/7", IMAGE, "pwd"),
    runFacts(),
    /never a working directory under \/proc/,
  ],
  [
    "the working folder under /dev is refused",
    run("-w", "/dev/fd/100", IMAGE, "pwd"),
    runFacts(),
    /never a working directory under \/dev/,
  ],
  [
    "the working folder under /sys is refused",
    run("-w", "/sys/kernel", IMAGE, "pwd"),
    runFacts(),
    /never a working directory under \/sys/,
  ],
  ["a relative working folder is a usage error", run("-w", "data", IMAGE, "pwd"), runFacts(), /clean absolute path/],
  [
    "the current folder is the working folder when mounted",
    run(IMAGE, "pwd"),
    runFacts({ cwd: "/home/alice/work" }),
    (plan) => {
      assert.equal(plan.workdir, "/home/alice/work");
    },
  ],
  [
    "a new working folder inside a mounted folder is created as the caller",
    run("-w", "/home/alice/new/dir", IMAGE, "pwd"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mountPoints.at(-1), {
        destination: "/home/alice/new/dir",
        kind: "dir",
        why: "-w /home/alice/new/dir",
        holder: 0,
        below: ["new", "dir"],
        checkImage: false,
      });
    },
  ],
  [
    "a working folder inside a mount is entered by the image's shell, as the caller: the engine starts in /",
    run(IMAGE, "pwd"),
    runFacts({
      image: {
        Id: IMAGE_ID,
        Config: { Entrypoint: ["/entry", "x"] },
        GraphDriver: { Name: "overlay2", Data: { UpperDir: "/l/diff" } },
      },
    }),
    (plan) => {
      assert.equal(plan.workdirInMount, true);
      const spec = containerSpec(plan, plan.mounts.map((m) => m.source), { shell: "/bin/sh" });
      assert.deepEqual(spec.Entrypoint, [
        "/bin/sh",
        "-c",
        ENTER_WORKDIR,
        "socker-workdir",
        "/home/alice/work",
        "/entry",
        "x",
      ]);
      assert.deepEqual([spec.WorkingDir, spec.Cmd], ["/", ["pwd"]]);
      const noShell = containerSpec(plan, plan.mounts.map((m) => m.source), {});
      assert.deepEqual(
        [noShell.WorkingDir, "Entrypoint" in noShell],
        ["/home/alice/work", false],
        "no shell in the image",
      );
    },
  ],
  [
    "a working folder that is a mount's own root, or in the image, is the engine's to enter",
    run("-w", "/home/alice", IMAGE, "pwd"),
    runFacts(),
    (plan) => {
      assert.equal(plan.workdirInMount, false);
      assert.equal(
        containerSpec(plan, plan.mounts.map((m) => m.source), { shell: "/bin/sh" }).WorkingDir,
        "/home/alice",
      );
    },
  ],
]);
