// Unit tests of the working folder: as asked (never under /proc, /sys, /dev), the caller's when mounted, the
// image's otherwise; a folder missing in the image is refused as pyxis does.
import assert from "node:assert/strict";
import { chooseWorkdir, type Mount, workdirProblem } from "../../socker.ts";
import { refusal } from "./facts.ts";

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
