// Unit tests of running a container: the command line (what each command takes, what is refused, the
// container's command left untouched), who the caller is (sudo's word checked against the user database),
// the start command, and what comes back from the engine (HTTP heads, chunked bodies, the attach stream).
import assert from "node:assert/strict";
import {
  boundedInt,
  boundedNumber,
  checkCaller,
  chunkDecoder,
  containerSpec,
  engineMessage,
  engineRequestBytes,
  isRootItself,
  parseCommandLine,
  parseResponseHead,
  parseSudoIdentity,
  planProbes,
  planRun,
  planUserLookup,
  printable,
  Refusal,
  refusalLine,
  startCommand,
  streamDemuxer,
} from "../../socker.ts";
import { ALLOWLIST, IMAGE, IMAGE_ID, planTests, refusal, rootFile, run, runFacts, SAFE_HOST_CONFIG } from "./facts.ts";

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

Deno.test("start: no COMMAND runs the image's CMD; --entrypoint replaces entrypoint and CMD, '' removes it", () => {
  const image = { Config: { Entrypoint: ["/entry"], Cmd: ["serve"] } };
  assert.deepEqual(startCommand(image, undefined, [], "i"), { entrypoint: ["/entry"], cmd: ["serve"] });
  assert.deepEqual(startCommand(image, undefined, ["x"], "i"), { entrypoint: ["/entry"], cmd: ["x"] });
  assert.deepEqual(startCommand(image, "", ["x"], "i"), { entrypoint: [], cmd: ["x"] });
  assert.deepEqual(startCommand(image, "/bin/prog", [], "i"), { entrypoint: ["/bin/prog"], cmd: [] });
  refusal(() => startCommand(image, "", [], "img"), /image img has no CMD or ENTRYPOINT of its own: give a COMMAND/);
  refusal(() => startCommand({}, undefined, [], "img"), /give a COMMAND/);
});

Deno.test("the caller comes from sudo's variables, strictly parsed", () => {
  assert.deepEqual(parseSudoIdentity({ SUDO_UID: "2001", SUDO_GID: "2001", SUDO_USER: "alice" }, 0), {
    uid: 2001,
    gid: 2001,
    user: "alice",
  });
  assert.deepEqual(parseSudoIdentity({}, 0), { uid: 0, gid: 0, user: "root" });
  for (const uid of ["-1", "1e3", " 2001", "2001 ", "0x10", "02001", "99999999999"]) {
    refusal(() => parseSudoIdentity({ SUDO_UID: uid, SUDO_GID: "1", SUDO_USER: "a" }, 0), /not numbers/);
  }
  refusal(() => parseSudoIdentity({ SUDO_UID: "1", SUDO_GID: "1", SUDO_USER: "a b" }, 0), /not a valid user name/);
  refusal(() => parseSudoIdentity({ SUDO_UID: "1", SUDO_GID: "1", SUDO_USER: "-x" }, 0), /not a valid user name/);
  assert.equal(isRootItself({ uid: 0, gid: 0, user: "root" }, 0), true);
  assert.equal(isRootItself({ uid: 2001, gid: 2001, user: "alice" }, 0), false);
  assert.equal(isRootItself({ uid: 0, gid: 0, user: "root" }, 2001), false);
});

Deno.test("checkCaller takes groups from the database and refuses root", () => {
  const sudo = { uid: 2001, gid: 2001, user: "alice" };
  assert.deepEqual(
    checkCaller(sudo, { uid: 2001, gid: 2001, home: "/home/alice", groups: [3001, 2001, 3001, 100] }),
    {
      ...sudo,
      groups: [100, 3001],
      home: "/home/alice",
    },
  );
  refusal(() => checkCaller({ uid: 0, gid: 0, user: "root" }, { uid: 0, gid: 0, groups: [] }), /as root/);
  refusal(() => checkCaller(sudo, { uid: 2002, gid: 2001, groups: [] }), /user database says/);
  refusal(() => checkCaller({ ...sudo, gid: 0 }, { uid: 2001, gid: 2001, groups: [] }), /root group/);
  refusal(() => checkCaller(sudo, { uid: 2001, gid: 2001, groups: [0] }), /root group/);
});

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

Deno.test("socker's requests to the engine: one head, a JSON body with its length, upgrades asked for", () => {
  const get = text(engineRequestBytes("GET", "/containers/json?all=1", {}));
  assert.match(get, /^GET \/v1\.\d+\/containers\/json\?all=1 HTTP\/1\.1\r\nHost: docker\r\nConnection: close\r\n\r\n$/);
  const post = text(engineRequestBytes("POST", "/exec/abc/start", { body: { Detach: false, Tty: true } }));
  const [head, body] = post.split("\r\n\r\n");
  assert.equal(body, '{"Detach":false,"Tty":true}');
  assert.match(head, new RegExp(`Content-Type: application/json\r\nContent-Length: ${body.length}$`));
  const upgrade = text(engineRequestBytes("POST", "/x", { headers: { Connection: "Upgrade", Upgrade: "tcp" } }));
  assert.match(upgrade, /\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n$/);
  assert.doesNotMatch(upgrade, /Connection: close/);
});

Deno.test("the engine's response heads parse; anything else does not", () => {
  const raw = bytes("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nxyz");
  const head = parseResponseHead(raw);
  assert.equal(head?.status, 101);
  assert.equal(head?.headers.get("content-type"), "application/vnd.docker.raw-stream");
  assert.equal(text(raw.subarray(head?.length)), "xyz", "the stream starts after the blank line");
  assert.equal(parseResponseHead(bytes("HTTP/1.1 200 OK\r\nA: b\r\n")), undefined, "not complete yet");
  assert.equal(parseResponseHead(bytes("garbage\r\n\r\n")), undefined);
  assert.equal(parseResponseHead(bytes("HTTP/1.1 999 X\r\n\r\n")), undefined);
  assert.equal(engineMessage('{"message":"No such image: x"}'), "No such image: x");
  assert.equal(engineMessage("plain\ntext"), "plain\\x0atext");
});

Deno.test("chunked bodies decode across any split, and malformed ones throw", () => {
  const body = "4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
  for (let split = 1; split < body.length; split++) {
    const decoder = chunkDecoder();
    const out = text(decoder.push(bytes(body.slice(0, split)))) + text(decoder.push(bytes(body.slice(split))));
    assert.equal(out, "Wikipedia in \r\n\r\nchunks.", `split at ${split}`);
    assert.ok(decoder.done());
  }
  assert.throws(() => chunkDecoder().push(bytes("zz\r\n")), /chunk size/);
  assert.throws(() => chunkDecoder().push(bytes("fffffffffff\r\n")), /chunk size/);
});

/** One frame of the engine's multiplexed stream. */
function frame(stream: number, payload: string): Uint8Array {
  const data = bytes(payload);
  const out = new Uint8Array(8 + data.length);
  out[0] = stream;
  new DataView(out.buffer).setUint32(4, data.length);
  out.set(data, 8);
  return out;
}

Deno.test("stdout and stderr come apart from the multiplexed stream, whatever the split", () => {
  const all = new Uint8Array([
    ...frame(1, "out\n"),
    ...frame(2, "err\n"),
    ...frame(1, ""),
    ...frame(1, "x".repeat(70000)),
  ]);
  for (const split of [1, 7, 8, 9, 12, 20, 100, 70000]) {
    const demux = streamDemuxer();
    const pieces = [...demux(all.slice(0, split)), ...demux(all.slice(split))];
    assert.deepEqual(
      pieces.map((p) => [p.stream, p.payload.length]),
      [[1, 4], [2, 4], [1, 0], [1, 70000]],
      `split ${split}`,
    );
    assert.equal(text(pieces[1].payload), "err\n");
  }
  const reused = new Uint8Array(frame(1, "abcdef"));
  const demux = streamDemuxer();
  assert.deepEqual(demux(reused.subarray(0, 10)), []);
  reused.fill(0); // the reader's buffer is reused: what was kept must have been copied
  assert.deepEqual(demux(frame(1, "abcdef").subarray(10)).map((p) => text(p.payload)), ["abcdef"]);
});

Deno.test("the container's specification holds only socker's decisions", () => {
  const plan = planRun(
    run("-v", "/home/alice/work:/data:ro", "-e", "X=1", IMAGE, "sh", "-c", "--privileged"),
    runFacts(),
  );
  const spec = containerSpec(plan, ["/home/alice", "/run/socker/s/1"]) as Record<string, unknown> & {
    HostConfig: Record<string, unknown>;
  };
  assert.equal(spec.Image, "docker.io/socker-test/busybox:2");
  assert.deepEqual(spec.Cmd, ["sh", "-c", "--privileged"]);
  assert.equal(spec.User, "2001:2001");
  assert.deepEqual(spec.HostConfig.GroupAdd, ["3001"]);
  for (
    const [key, value] of Object.entries({
      ...SAFE_HOST_CONFIG,
      NetworkMode: "bridge",
      IpcMode: "private",
      PidMode: "",
      UTSMode: "",
      CgroupParent: "",
      Devices: [],
    })
  ) assert.deepEqual(spec.HostConfig[key], value, key);
  assert.deepEqual(spec.HostConfig.Mounts, [
    { Type: "bind", Source: "/home/alice", Target: "/home/alice", ReadOnly: false },
    { Type: "bind", Source: "/run/socker/s/1", Target: "/data", ReadOnly: true },
  ]);
  const keys = Object.keys(spec.HostConfig).sort();
  assert.deepEqual(keys, [
    "AutoRemove",
    "CapDrop",
    "CgroupParent",
    "Devices",
    "GroupAdd",
    "Init",
    "IpcMode",
    "LogConfig",
    "Mounts",
    "NetworkMode",
    "PidMode",
    "Privileged",
    "SecurityOpt",
    "ShmSize",
    "UTSMode",
    "Ulimits",
  ]);
  assert.equal(spec.HostConfig.ShmSize, 64 << 20, "Docker's 64 MiB outside a job");
  assert.ok((spec.Env as string[]).includes("X=1"));
  assert.equal(IMAGE_ID.length, 71);
});

// planRun's rules on who calls, and the terminal: one table row each, a refusal (a pattern of its
// one-line reason) or a check of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  // who
  [
    "root is refused: containers never run as root",
    run(IMAGE, "id"),
    runFacts({ sudo: {} }),
    /refusing to run a container as root/,
  ],
  [
    "a user with gid 0 is refused",
    run(IMAGE, "id"),
    runFacts({ sudo: { SUDO_UID: "2001", SUDO_GID: "0", SUDO_USER: "alice" } }),
    /root group/,
  ],
  [
    "a user in the root group is refused",
    run(IMAGE, "id"),
    runFacts({ user: { uid: 2001, gid: 2001, groups: [0] } }),
    /root group/,
  ],
  [
    "sudo and the user database disagree",
    run(IMAGE, "id"),
    runFacts({ user: { uid: 9, gid: 9, groups: [] } }),
    /user database says/,
  ],
  [
    "an unknown user is refused",
    run(IMAGE, "id"),
    runFacts({ user: "user 'alice' is not in the user database; refusing" }),
    /not in the user database/,
  ],
  [
    "the privileged program run without root refuses",
    run(IMAGE, "id"),
    runFacts({ processUid: 2001 }),
    /must be started through sudo/,
  ],
  [
    "forged SUDO_UID text is refused",
    run(IMAGE, "id"),
    runFacts({ sudo: { SUDO_UID: "2001 ", SUDO_GID: "1", SUDO_USER: "a" } }),
    /not numbers/,
  ],
  ["the caller's uid and groups are the container's", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.deepEqual([plan.caller.uid, plan.caller.gid, plan.caller.groups], [2001, 2001, [3001]]);
  }],
  // terminal
  [
    "a terminal is attached only when stdin and stdout are terminals",
    run(IMAGE, "id"),
    runFacts({ stdinIsTerminal: true, stdoutIsTerminal: true }),
    (plan) => assert.equal(plan.tty, true),
  ],
  [
    "no terminal when stdout is a file",
    run(IMAGE, "id"),
    runFacts({ stdinIsTerminal: true }),
    (plan) => assert.equal(plan.tty, false),
  ],
  [
    "--no-tty and --no-stdin win on a terminal",
    run("--no-tty", "--no-stdin", IMAGE, "id"),
    runFacts({ stdinIsTerminal: true, stdoutIsTerminal: true }),
    (plan) => {
      assert.deepEqual([plan.tty, plan.stdin], [false, false]);
    },
  ],
]);

Deno.test("read: planProbes names what to look at with planRun's own first rules, and refuses as planRun does", () => {
  const probes = planProbes(run("-v", "/data/in:/in:ro", IMAGE, "true"), runFacts());
  assert.equal(probes.caller.uid, 2001);
  assert.equal(probes.entry.text, IMAGE);
  assert.ok(probes.paths.includes("/home/alice/work"));
  assert.ok(probes.paths.includes("/data/in"));
  assert.equal(probes.gpus, false);
  const facts = runFacts({ allowlist: rootFile(ALLOWLIST, "centos:7\n") });
  refusal(() => planProbes(run(IMAGE, "true"), facts), /not allowed|allowlist/);
  refusal(() => planRun(run(IMAGE, "true"), facts), /not allowed|allowlist/);
  assert.equal(planUserLookup({ SUDO_UID: "2001", SUDO_GID: "2001", SUDO_USER: "alice" }, 0), "alice");
  assert.equal(planUserLookup({}, 0), undefined);
});
