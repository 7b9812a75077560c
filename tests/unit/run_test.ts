// Unit tests of the command line: what each command takes, what is refused, and the container's command
// left untouched.
import assert from "node:assert/strict";
import { boundedInt, boundedNumber, parseCommandLine, printable, Refusal, refusalLine } from "../../socker.ts";

function usageError(args: string[], pattern: RegExp): void {
  assert.throws(() => parseCommandLine(args), (error: unknown) => {
    assert.ok(error instanceof Refusal, `${JSON.stringify(args)}: expected a Refusal, got ${error}`);
    assert.equal(error.kind, "usage");
    assert.match(error.reason, pattern);
    assert.match(refusalLine(error), /^socker: .*; see 'socker --help'$/);
    return true;
  });
}

Deno.test("run: everything after IMAGE is the container's command, options included", () => {
  assert.deepEqual(parseCommandLine(["run", "img", "sh", "-c", "echo $HOME; exit 3"]), {
    command: "run",
    verbose: false,
    image: "img",
    argv: ["sh", "-c", "echo $HOME; exit 3"],
    options: { volumes: [], env: [], noTty: false, noStdin: false, gpus: false },
  });
  const run = parseCommandLine(["run", "img", "--help", "-v", "--privileged"]);
  assert.ok(run.command === "run" && run.verbose === false && run.argv.join(" ") === "--help -v --privileged");
});

Deno.test("run options: -v, -w, -e, --no-tty, --no-stdin, --gpus before IMAGE; -v after run is a volume", () => {
  const parsed = parseCommandLine([
    "run",
    "-v",
    "/a:/b",
    "--volume=/c:/d:ro",
    "-w",
    "/b",
    "-e",
    "X=1",
    "--env",
    "Y",
    "--no-tty",
    "--no-stdin",
    "--gpus",
    "img",
    "-v",
    "/x:/y",
  ]);
  assert.ok(parsed.command === "run");
  assert.deepEqual(parsed.options, {
    volumes: ["/a:/b", "/c:/d:ro"],
    workdir: "/b",
    env: ["X=1", "Y"],
    noTty: true,
    noStdin: true,
    gpus: true,
  });
  assert.deepEqual(parsed.argv, ["-v", "/x:/y"]);
});

Deno.test("verbose is accepted before and after the command; help and version win before IMAGE", () => {
  for (const args of [["-v", "run", "i", "c"], ["--verbose", "run", "i", "c"], ["run", "--verbose", "i", "c"]]) {
    const parsed = parseCommandLine(args);
    assert.ok(parsed.command === "run" && parsed.verbose, args.join(" "));
  }
  assert.deepEqual(parseCommandLine(["--help"]), { command: "help" });
  assert.deepEqual(parseCommandLine(["-h", "run"]), { command: "help" });
  assert.deepEqual(parseCommandLine(["run", "--help"]), { command: "help" });
  assert.deepEqual(parseCommandLine(["--version"]), { command: "version" });
});

Deno.test("images, ps, doctor take nothing; stop takes a name; pull an image or --all; cleanup --job or --orphans", () => {
  assert.deepEqual(parseCommandLine(["images"]), { command: "images" });
  assert.deepEqual(parseCommandLine(["-v", "ps"]), { command: "ps" });
  assert.deepEqual(parseCommandLine(["doctor"]), { command: "doctor" });
  assert.deepEqual(parseCommandLine(["stop", "socker-2001-0011aabbccdd"]), {
    command: "stop",
    target: "socker-2001-0011aabbccdd",
  });
  assert.deepEqual(parseCommandLine(["stop", "9c1e"]), { command: "stop", target: "9c1e" });
  assert.deepEqual(parseCommandLine(["pull", "centos:7"]), { command: "pull", image: "centos:7" });
  assert.deepEqual(parseCommandLine(["pull", "--all"]), { command: "pull" });
  assert.deepEqual(parseCommandLine(["cleanup", "--job", "42"]), {
    command: "cleanup",
    verbose: false,
    scope: { job: "42" },
  });
  assert.deepEqual(parseCommandLine(["cleanup", "--job=7", "-v"]), {
    command: "cleanup",
    verbose: true,
    scope: { job: "7" },
  });
  assert.deepEqual(parseCommandLine(["cleanup", "--orphans"]), {
    command: "cleanup",
    verbose: false,
    scope: { orphans: true },
  });
});

const usageErrors: [string[], RegExp][] = [
  [[], /no command given/],
  [["--privileged", "run", "i", "c"], /unknown option '--privileged'/],
  [["run", "--privileged", "i", "c"], /unknown option '--privileged' for 'run'/],
  [["run", "-u", "0", "i", "c"], /unknown option '-u' for 'run'/],
  [["run", "--user=0", "i", "c"], /unknown option '--user=0'/],
  [["run", "--network=host", "i", "c"], /unknown option '--network=host'/],
  [["start", "i"], /unknown command 'start'/],
  [["run"], /needs an IMAGE/],
  [["run", "--", "-img", "c"], /IMAGE must not start with '-'/],
  [["run", "-v"], /-v needs a value/],
  [["run", ...Array(33).fill(["-v", "/a:/b"]).flat(), "i", "c"], /at most 32 volumes/],
  [["run", ...Array(257).fill(["-e", "A=1"]).flat(), "i", "c"], /at most 256 environment variables/],
  [["run", "i", ...Array(5000).fill("x")], /at most 4096 arguments/],
  [["run", "i", "x".repeat(1 << 21)], /at most 4096 arguments of 1048576 bytes/],
  [["images", "extra"], /takes no arguments/],
  [["ps", "-a"], /unknown option '-a' for 'ps'/],
  [["stop"], /needs one container NAME or ID/],
  [["stop", "a", "b"], /needs one container NAME or ID/],
  [["stop", "../x"], /is not a container name or id/],
  [["stop", "--", "x"], /unknown option '--' for 'stop'/],
  [["pull"], /needs one IMAGE or --all/],
  [["pull", "--all", "centos"], /needs one IMAGE or --all/],
  [["cleanup"], /needs --job ID or --orphans/],
  [["cleanup", "--job", "1", "--orphans"], /needs --job ID or --orphans/],
  [["cleanup", "--job", "12; rm -rf /"], /numeric Slurm job id/],
  [["cleanup", "--job"], /--job needs a value/],
  [["cleanup", "--job=0"], /numeric Slurm job id/],
  [["cleanup", "--job=007"], /numeric Slurm job id/],
  [["cleanup", "--job=99999999999"], /numeric Slurm job id/],
];

for (const [args, pattern] of usageErrors) {
  Deno.test(`usage error: socker ${printable(args.join(" "), 60)}`, () => usageError(args, pattern));
}

Deno.test("'--' ends run's options; the image after it is still checked", () => {
  const parsed = parseCommandLine(["run", "--", "img", "--", "x"]);
  assert.ok(parsed.command === "run" && parsed.image === "img" && parsed.argv.join(" ") === "-- x");
});

Deno.test("printable escapes control characters and cuts long text", () => {
  assert.equal(printable("a\nb\x1b[2J"), "a\\x0ab\\x1b[2J");
  assert.equal(printable("x".repeat(300)).length, 203);
});

Deno.test("every integer read is bounded: no signs, spaces, leading zeros or huge values", () => {
  assert.equal(boundedInt("42", 0, 100), 42);
  assert.equal(boundedInt("0", 0, 100), 0);
  for (const bad of ["-1", "+1", " 1", "1 ", "01", "1e3", "0x10", "101", "99999999999999999999", "", undefined]) {
    assert.equal(boundedInt(bad, 0, 100), undefined, String(bad));
  }
  assert.equal(boundedNumber(3, 0, 5), 3);
  for (const bad of [-1, 6, 1.5, NaN, Infinity, "3", null, undefined]) {
    assert.equal(boundedNumber(bad, 0, 5), undefined, String(bad));
  }
});
