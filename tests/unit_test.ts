// Unit tests: every decision socker makes, called as a plain function with plain data. Fast, no root, no
// Docker, no Slurm: `deno task test:unit`.
import assert from "node:assert/strict";
import {
  auditLine,
  callerFromSudo,
  canonicalImage,
  cgroupMountPoints,
  chooseWorkdir,
  containerEnvironment,
  containerName,
  decideMount,
  DEFAULT_SETTINGS,
  defaultMountRequests,
  destinationProblem,
  dockerEnv,
  dockerRunArgv,
  doctorReport,
  engineCgroupProblem,
  exitCodeFor,
  gpuDeviceNodes,
  gpusFromDeviceRules,
  gpusFromSlurmJob,
  type ImageRef,
  isCleanAbsolute,
  isSignalRepeat,
  isUnder,
  jobCgroup,
  jobFolders,
  matchImage,
  mountRequests,
  parseAllowlist,
  parseCommandLine,
  parseHttpResponse,
  parseImageRef,
  parsePathChecks,
  parseSettings,
  parseStagingName,
  parseVolume,
  passwdEntry,
  pathChain,
  type PathCheck,
  printable,
  resolveCaller,
  runcFixed,
  type RunPlan,
  shellQuote,
  signalAction,
  slurmConfProblems,
  SockerError,
  stagingName,
  syslogDatagram,
  untrustedReason,
} from "../socker.ts";

function refusal(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SockerError, `expected a SockerError, got ${error}`);
    assert.equal(error.exitCode, 125);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("\n"), "refusals are one line");
    return true;
  });
}

// ---- arguments

Deno.test("run: everything after IMAGE is the container's command, options included", () => {
  assert.deepEqual(parseCommandLine(["run", "img", "sh", "-c", "echo $HOME; exit 3"]), {
    command: "run",
    verbose: false,
    image: "img",
    argv: ["sh", "-c", "echo $HOME; exit 3"],
    options: { volumes: [], env: [], noTty: false, noStdin: false, gpus: false },
  });
  assert.deepEqual(parseCommandLine(["run", "img", "--privileged", "-v", "/:/host"]).command, "run");
  const run = parseCommandLine(["run", "img", "--help", "-v"]);
  assert.ok(run.command === "run" && run.verbose === false && run.argv.join(" ") === "--help -v");
});

Deno.test("verbose is accepted before and after the command", () => {
  for (const args of [["-v", "run", "i", "c"], ["--verbose", "run", "i", "c"], ["run", "--verbose", "i", "c"]]) {
    const parsed = parseCommandLine(args);
    assert.ok(parsed.command === "run" && parsed.verbose, args.join(" "));
  }
  assert.deepEqual(parseCommandLine(["-v", "images"]), { command: "images", verbose: true });
});

Deno.test("help and version win wherever they stand before IMAGE", () => {
  assert.deepEqual(parseCommandLine(["--help"]), { command: "help" });
  assert.deepEqual(parseCommandLine(["-h", "run"]), { command: "help" });
  assert.deepEqual(parseCommandLine(["run", "--help"]), { command: "help" });
  assert.deepEqual(parseCommandLine(["--version"]), { command: "version" });
});

Deno.test("usage errors name the problem and how to get help", () => {
  const cases: [string[], RegExp][] = [
    [[], /no command given/],
    [["--privileged", "run", "i", "c"], /unknown option '--privileged'/],
    [["run", "--privileged", "i", "c"], /unknown option '--privileged' for 'run'/],
    [["run", "-u", "0", "i", "c"], /unknown option '-u' for 'run'/],
    [["run", "--user=0", "i", "c"], /unknown option '--user=0'/],
    [["start", "i"], /unknown command 'start'/],
    [["run"], /needs an IMAGE and a COMMAND/],
    [["run", "img"], /needs a COMMAND to run in 'img'/],
    [["run", "--", "-img", "c"], /IMAGE must not start with '-'/],
    [["images", "extra"], /takes no arguments/],
    [["cleanup"], /needs --job ID/],
    [["cleanup", "--job", "12; rm -rf /"], /numeric Slurm job id/],
    [["cleanup", "--job"], /--job needs a value/],
    [["cleanup", "--job=0"], /numeric Slurm job id/],
  ];
  for (const [args, pattern] of cases) {
    refusal(() => parseCommandLine(args), pattern);
    refusal(() => parseCommandLine(args), /see 'socker --help'/);
  }
});

Deno.test("'--' ends run's options; the image after it is still checked", () => {
  const parsed = parseCommandLine(["run", "--", "img", "--", "x"]);
  assert.ok(parsed.command === "run" && parsed.image === "img" && parsed.argv.join(" ") === "-- x");
});

Deno.test("cleanup takes a job id", () => {
  assert.deepEqual(parseCommandLine(["cleanup", "--job", "42"]), { command: "cleanup", verbose: false, jobId: "42" });
  assert.deepEqual(parseCommandLine(["cleanup", "--job=7"]), { command: "cleanup", verbose: false, jobId: "7" });
});

Deno.test("printable escapes control characters and cuts long text", () => {
  assert.equal(printable("a\nb\x1b[2J"), "a\\x0ab\\x1b[2J");
  assert.equal(printable("x".repeat(300)).length, 203);
});

// ---- allowlist and image references

function canonical(text: string): string {
  const ref = parseImageRef(text);
  assert.equal(typeof ref, "object", `${text}: ${ref}`);
  return canonicalImage(ref as ImageRef);
}

Deno.test("references normalise as Docker does", () => {
  const digest = "sha256:" + "a".repeat(64);
  const cases: [string, string][] = [
    ["centos", "docker.io/library/centos:latest"],
    ["centos:latest", "docker.io/library/centos:latest"],
    ["library/centos", "docker.io/library/centos:latest"],
    ["docker.io/library/centos:latest", "docker.io/library/centos:latest"],
    ["index.docker.io/library/centos", "docker.io/library/centos:latest"],
    ["docker.io/centos:7", "docker.io/library/centos:7"],
    ["user/app:1.0", "docker.io/user/app:1.0"],
    ["localhost/app", "localhost/app:latest"],
    ["localhost:5000/a/b:v2", "localhost:5000/a/b:v2"],
    ["registry.example.org/hpc/openfoam:11", "registry.example.org/hpc/openfoam:11"],
    [`centos@${digest}`, `docker.io/library/centos@${digest}`],
    [`centos:7@${digest}`, `docker.io/library/centos@${digest}`],
    ["a__b/c-d.e--f", "docker.io/a__b/c-d.e--f:latest"],
  ];
  for (const [input, expected] of cases) assert.equal(canonical(input), expected, input);
});

Deno.test("malformed and look-alike references are not references", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["CentOS", /lowercase/],
    ["centos ", /printable ASCII without spaces/],
    [" centos", /printable ASCII/],
    ["cent\u043es", /printable ASCII/], // Cyrillic o
    ["centos\u200b", /printable ASCII/], // zero-width space
    ["centos\t", /printable ASCII/],
    ["centos:", /invalid tag/],
    ["centos:-x", /invalid tag/],
    ["centos:" + "x".repeat(129), /invalid tag/],
    ["centos@sha256:abc", /digest/],
    ["centos@sha256:" + "A".repeat(64), /digest/],
    ["centos@md5:" + "a".repeat(64), /digest/],
    ["a".repeat(64), /image id/],
    ["-centos", /invalid repository/],
    ["centos/", /invalid repository/],
    ["../centos", /invalid registry|invalid repository/],
    ["a//b", /invalid repository/],
    ["a_-b", /invalid repository/],
    ["x".repeat(256), /longer than/],
    ["reg.example.org:port/x", /invalid registry|invalid tag/],
  ];
  for (const [input, pattern] of cases) {
    const ref = parseImageRef(input);
    assert.equal(typeof ref, "string", `${JSON.stringify(input)} should be refused`);
    assert.match(ref as string, pattern, input);
  }
});

Deno.test("a match is exact after normalisation: case, whitespace and look-alikes do not widen it", () => {
  const digest = "sha256:" + "b".repeat(64);
  const allowlist = parseAllowlist(`# site images\n  centos   # the default\n\nubuntu:22.04\npinned@${digest}\n`, "f");
  const match = (text: string) => {
    const ref = parseImageRef(text);
    return typeof ref === "string" ? undefined : matchImage(allowlist, ref)?.line;
  };
  assert.equal(match("centos"), 2);
  assert.equal(match("centos:latest"), 2);
  assert.equal(match("docker.io/library/centos:latest"), 2);
  assert.equal(match("centos:7"), undefined, "another tag is another image");
  assert.equal(match("ubuntu"), undefined, "ubuntu:latest is not ubuntu:22.04");
  assert.equal(match("ubuntu:22.04"), 4);
  assert.equal(match("evil/centos"), undefined);
  assert.equal(match("registry.evil.org/library/centos"), undefined);
  assert.equal(match("Docker.io/library/centos"), undefined, "registry names are not case-folded");
  assert.equal(match("CENTOS"), undefined);
  assert.equal(match("centos@" + "sha256:" + "c".repeat(64)), undefined, "a digest is not its tag");
  assert.equal(match(`pinned@${digest}`), 5);
  assert.equal(match(`pinned:latest@${digest}`), 5);
  assert.equal(match("pinned"), undefined, "a digest-pinned entry matches only that digest");
  assert.equal(match("pinned@sha256:" + "c".repeat(64)), undefined);
});

Deno.test("an invalid allowlist line fails the whole file, naming file and line", () => {
  refusal(() => parseAllowlist("centos\nCentOS\n", "/etc/socker/socker-images"), /socker-images:2: 'CentOS'/);
  refusal(() => parseAllowlist("centos ubuntu\n", "f"), /f:1: 'centos ubuntu'/);
  assert.deepEqual(parseAllowlist("# only comments\n\n   \n", "f"), []);
  assert.equal(parseAllowlist("centos\r\n", "f")[0].canonical, "docker.io/library/centos:latest");
});

Deno.test("trust: file and every folder above must be root-owned and not group/other-writable", () => {
  const ok = [
    { path: "/etc/socker/socker-images", uid: 0, mode: 0o100644, kind: "file" as const },
    { path: "/etc/socker", uid: 0, mode: 0o40755, kind: "dir" as const },
    { path: "/etc", uid: 0, mode: 0o40755, kind: "dir" as const },
    { path: "/", uid: 0, mode: 0o40755, kind: "dir" as const },
  ];
  assert.equal(untrustedReason(ok), undefined);
  const variant = (index: number, change: object) => ok.map((item, i) => i === index ? { ...item, ...change } : item);
  assert.match(untrustedReason(variant(0, { mode: 0o100666 }))!, /socker-images is writable by its group/);
  assert.match(untrustedReason(variant(0, { mode: 0o100646 }))!, /writable by others \(mode 0646\)/);
  assert.match(untrustedReason(variant(0, { uid: 1000 }))!, /not owned by root \(owner uid 1000\)/);
  assert.match(untrustedReason(variant(1, { mode: 0o40777 }))!, /\/etc\/socker is writable by its group/);
  assert.match(untrustedReason(variant(1, { mode: 0o41777 }))!, /\/etc\/socker is writable/);
  assert.match(untrustedReason(variant(2, { uid: 5 }))!, /\/etc is not owned by root/);
  assert.match(untrustedReason(variant(0, { kind: "dir" }))!, /not a regular file/);
  assert.match(untrustedReason(variant(1, { kind: "other" }))!, /not a regular folder/);
});

Deno.test("pathChain lists the path and every folder above it", () => {
  assert.deepEqual(pathChain("/etc/socker/socker-images"), ["/etc/socker/socker-images", "/etc/socker", "/etc", "/"]);
  assert.deepEqual(pathChain("/x"), ["/x", "/"]);
});

// ---- identity

Deno.test("the caller comes from sudo's variables, strictly parsed", () => {
  assert.deepEqual(callerFromSudo({ SUDO_UID: "2001", SUDO_GID: "2001", SUDO_USER: "alice" }, 0), {
    uid: 2001,
    gid: 2001,
    user: "alice",
  });
  assert.deepEqual(callerFromSudo({}, 0), { uid: 0, gid: 0, user: "root" });
  assert.deepEqual(callerFromSudo({ SUDO_UID: "", SUDO_GID: "", SUDO_USER: "" }, 0).uid, 0);
  for (const uid of ["-1", "1e3", " 2001", "2001 ", "0x10", "02001", "99999999999"]) {
    refusal(() => callerFromSudo({ SUDO_UID: uid, SUDO_GID: "1", SUDO_USER: "a" }, 0), /not numbers/);
  }
  refusal(() => callerFromSudo({ SUDO_UID: "1", SUDO_GID: "1", SUDO_USER: "a b" }, 0), /not a valid user name/);
  refusal(() => callerFromSudo({ SUDO_UID: "1", SUDO_GID: "1", SUDO_USER: "-x" }, 0), /not a valid user name/);
});

Deno.test("resolveCaller takes groups from the database and refuses root", () => {
  const sudo = { uid: 2001, gid: 2001, user: "alice" };
  assert.deepEqual(resolveCaller(sudo, { uid: 2001, gid: 2001, groups: [3001, 2001, 3001, 100] }), {
    ...sudo,
    groups: [100, 3001],
  });
  refusal(() => resolveCaller({ uid: 0, gid: 0, user: "root" }, { uid: 0, gid: 0, groups: [] }), /as root/);
  refusal(() => resolveCaller(sudo, { uid: 2002, gid: 2001, groups: [] }), /user database says/);
  refusal(() => resolveCaller({ ...sudo, gid: 0 }, { uid: 2001, gid: 2001, groups: [] }), /root group/);
  refusal(() => resolveCaller(sudo, { uid: 2001, gid: 2001, groups: [0] }), /root group/);
});

Deno.test("passwdEntry finds local accounts", () => {
  const passwd = "root:x:0:0:root:/root:/bin/bash\ndockerroot:x:998:106::/nonexistent:/usr/sbin/nologin\n";
  assert.deepEqual(passwdEntry(passwd, "dockerroot"), { uid: 998, gid: 106 });
  assert.equal(passwdEntry(passwd, "docker"), undefined);
  assert.equal(passwdEntry("dockerroot:x:abc:1::/:/bin/sh", "dockerroot"), undefined);
});

// ---- docker command line

const plan: RunPlan = {
  caller: { uid: 2001, gid: 2001, user: "alice", groups: [3001] },
  image: "docker.io/library/centos:latest",
  argv: ["sh", "-c", "echo $HOME; exit 3"],
  containerName: "socker-2001-0011aabbccdd",
  tty: false,
  stdin: true,
  labels: { "socker.managed": "true", "socker.uid": "2001" },
  mounts: [],
  env: ["HOME=/home/alice"],
  network: "bridge",
  devices: [],
};

Deno.test("docker argv: fixed safety options, the caller's ids, image then command last", () => {
  const args = dockerRunArgv(plan);
  assert.deepEqual(args.slice(0, 3), ["run", "--rm", "--interactive"]);
  const pairs = args.join(" ");
  for (
    const required of [
      "--init",
      "--pull=never",
      "--name socker-2001-0011aabbccdd",
      "--user 2001:2001",
      "--group-add 3001",
      "--cap-drop ALL",
      "--security-opt no-new-privileges",
      "--label socker.managed=true",
      "--label socker.uid=2001",
      "--log-driver none",
    ]
  ) assert.ok(pairs.includes(required), required);
  const separator = args.indexOf("--");
  assert.deepEqual(args.slice(separator + 1), ["docker.io/library/centos:latest", "sh", "-c", "echo $HOME; exit 3"]);
  assert.ok(!args.includes("--tty"));
  assert.ok(dockerRunArgv({ ...plan, tty: true }).includes("--tty"));
  assert.ok(!args.includes("--cgroup-parent"));
  const withCgroup = dockerRunArgv({ ...plan, cgroupParent: "/slurm_n1/uid_2001/job_5/step_0" });
  assert.equal(withCgroup[withCgroup.indexOf("--cgroup-parent") + 1], "/slurm_n1/uid_2001/job_5/step_0");
});

Deno.test("docker argv never carries dangerous options, whatever the command says", () => {
  const hostile = { ...plan, argv: ["--privileged", "-v", "/:/host", "--user", "0", "--network=host"] };
  const args = dockerRunArgv(hostile);
  const options = args.slice(0, args.indexOf("--"));
  assert.equal(options[options.indexOf("--network") + 1], "bridge");
  for (const bad of ["--privileged", "-v", "--volume", "--mount", "--pid", "--cap-add", "--device", "-H"]) {
    assert.ok(!options.some((o) => o === bad || o.startsWith(`${bad}=`)), bad);
  }
  assert.equal(options.filter((o) => o === "--user").length, 1);
});

Deno.test("the docker CLI's environment is fixed and holds nothing of the caller's", () => {
  const env = dockerEnv();
  assert.deepEqual(Object.keys(env).sort(), [
    "DOCKER_CLI_HINTS",
    "DOCKER_CONFIG",
    "DOCKER_HOST",
    "HOME",
    "LANG",
    "PATH",
  ]);
  assert.equal(env.DOCKER_HOST, "unix:///var/run/docker.sock");
  assert.equal(env.PATH, "/usr/sbin:/usr/bin:/sbin:/bin");
  assert.ok(env.DOCKER_CONFIG.startsWith("/"));
});

Deno.test("container names are valid docker names and unique per random value", () => {
  const name = containerName(2001, new Uint8Array([0, 1, 255, 16, 32, 48]));
  assert.equal(name, "socker-2001-0001ff102030");
  assert.match(name, /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/);
});

Deno.test("shellQuote shows arguments as a shell would need them", () => {
  assert.equal(
    shellQuote(["docker", "run", "sh", "-c", "echo $HOME; it's"]),
    `docker run sh -c 'echo $HOME; it'\\''s'`,
  );
});

// ---- the engine's API and supervision

Deno.test("HTTP responses from the engine parse", () => {
  assert.deepEqual(parseHttpResponse('HTTP/1.0 404 Not Found\r\nA: b\r\n\r\n{"message":"x"}'), {
    status: 404,
    body: '{"message":"x"}',
  });
  assert.equal(parseHttpResponse("garbage"), undefined);
});

Deno.test("signals: TERM/INT/HUP end the container, USR1/USR2/QUIT are passed on", () => {
  assert.deepEqual(signalAction("SIGTERM"), { kind: "terminate", number: 15 });
  assert.deepEqual(signalAction("SIGINT"), { kind: "terminate", number: 2 });
  assert.deepEqual(signalAction("SIGHUP"), { kind: "terminate", number: 1 });
  assert.deepEqual(signalAction("SIGUSR1"), { kind: "forward", number: 10 });
  assert.deepEqual(signalAction("SIGUSR2"), { kind: "forward", number: 12 });
  assert.deepEqual(signalAction("SIGQUIT"), { kind: "forward", number: 3 });
  assert.equal(signalAction("SIGWINCH"), undefined);
});

Deno.test("exit codes: the container's, or 128+N after a signal", () => {
  assert.equal(exitCodeFor({ code: 3, signal: null }, undefined), 3);
  assert.equal(exitCodeFor({ code: 137, signal: null }, undefined), 137);
  assert.equal(exitCodeFor({ code: 137, signal: null }, 15), 143);
  assert.equal(exitCodeFor({ code: 0, signal: null }, 2), 130);
  assert.equal(exitCodeFor({ code: 1, signal: "SIGKILL" }, undefined), 137);
});

// ---- cgroup: fixture copies of /proc/self/cgroup from real Slurm jobs, and hostile ones

const fixture = (name: string) => Deno.readTextFileSync(new URL(`./fixtures/proc/${name}`, import.meta.url));

Deno.test("cgroup v1: srun and batch steps resolve to the step's folder, whatever the root is called", () => {
  assert.deepEqual(jobCgroup(fixture("v1-srun-step.cgroup"), 2001), {
    version: 1,
    jobId: "1",
    stepId: "0",
    parent: "/slurm_vm/uid_2001/job_1/step_0",
  });
  assert.deepEqual(jobCgroup(fixture("v1-batch-step.cgroup"), 2001)?.parent, "/slurm_vm/uid_2001/job_1/step_batch");
  assert.deepEqual(jobCgroup(fixture("v1-plain-root-systemd.cgroup"), 2001), {
    version: 1,
    jobId: "77",
    stepId: "extern",
    parent: "/slurm/uid_2001/job_77/step_extern",
  });
});

Deno.test("cgroup v2: the step's user folder, also with several slurmd per host", () => {
  assert.deepEqual(jobCgroup(fixture("v2-batch.cgroup"), 2001), {
    version: 2,
    jobId: "2",
    stepId: "batch",
    parent: "/system.slice/slurmstepd.scope/job_2/step_batch/user",
  });
  assert.deepEqual(
    jobCgroup(fixture("v2-multi-slurmd.cgroup"), 2001)?.parent,
    "/system.slice/n2_slurmstepd.scope/job_9/step_3/user",
  );
});

Deno.test("outside a job there is no cgroup parent", () => {
  assert.equal(jobCgroup(fixture("v1-outside-job.cgroup"), 2001), undefined);
  assert.equal(jobCgroup(fixture("v2-outside-job.cgroup"), 2001), undefined);
});

Deno.test("hostile cgroup paths fail closed, naming why", () => {
  const cases: [string, RegExp][] = [
    ["hostile-dotdot.cgroup", /not normalised/],
    ["hostile-other-user.cgroup", /belongs to uid 2002, not to you \(2001\)/],
    ["hostile-disagree.cgroup", /controllers disagree/],
    ["hostile-job-without-step.cgroup", /is not a Slurm step cgroup/],
    ["hostile-v2-dotdot.cgroup", /not normalised/],
    ["hostile-v2-stepd.cgroup", /is not a Slurm task cgroup/],
    ["hostile-garbage.cgroup", /cannot read \/proc\/self\/cgroup/],
  ];
  for (const [name, pattern] of cases) {
    refusal(() => jobCgroup(fixture(name), 2001), pattern);
    refusal(() => jobCgroup(fixture(name), 2001), /refusing|cannot read/);
  }
});

Deno.test("the engine must use the cgroupfs driver and the job's cgroup version", () => {
  const job = jobCgroup(fixture("v1-srun-step.cgroup"), 2001)!;
  assert.equal(engineCgroupProblem({ CgroupDriver: "cgroupfs", CgroupVersion: "1" }, job), undefined);
  assert.match(
    engineCgroupProblem({ CgroupDriver: "systemd", CgroupVersion: "1" }, job)!,
    /native\.cgroupdriver=cgroupfs/,
  );
  assert.match(engineCgroupProblem({ CgroupDriver: "cgroupfs", CgroupVersion: "2" }, job)!, /cgroup v2 but this job/);
});

Deno.test("cgroup mount points come from mountinfo", () => {
  assert.deepEqual(cgroupMountPoints(fixture("v1-mountinfo")), [
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpuacct",
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/systemd",
    "/sys/fs/cgroup/unified",
  ]);
});

Deno.test("a finished job's folders are listed deepest first, in v1 and v2 layouts, and only that job's", () => {
  const tree: Record<string, string[]> = {
    "/cg": ["slurm_n1", "slurm_n2", "system.slice", "docker"],
    "/cg/slurm_n1": ["uid_2001"],
    "/cg/slurm_n1/uid_2001": ["job_5", "job_6"],
    "/cg/slurm_n1/uid_2001/job_5": ["step_0"],
    "/cg/slurm_n1/uid_2001/job_5/step_0": ["a".repeat(64)],
    "/cg/slurm_n2": ["uid_2001"],
    "/cg/slurm_n2/uid_2001": ["job_5"],
    "/cg/system.slice": ["slurmstepd.scope"],
    "/cg/system.slice/slurmstepd.scope": ["job_5", "job_50"],
    "/cg/docker": ["job_5"],
  };
  assert.deepEqual(jobFolders("/cg", "5", (path) => tree[path] ?? []), [
    `/cg/slurm_n1/uid_2001/job_5/step_0/${"a".repeat(64)}`,
    "/cg/slurm_n1/uid_2001/job_5/step_0",
    "/cg/slurm_n1/uid_2001/job_5",
    "/cg/slurm_n2/uid_2001/job_5",
    "/cg/system.slice/slurmstepd.scope/job_5",
  ]);
});

// ---- settings

Deno.test("socker.conf: known keys only, yes/no values, errors name file and line", () => {
  assert.equal(parseSettings("# comment\n\nrequire_job = yes\n", "f").requireJob, true);
  assert.equal(parseSettings("require_job=no", "f").requireJob, false);
  assert.deepEqual(parseSettings("", "f"), DEFAULT_SETTINGS);
  refusal(() => parseSettings("require_jobs = yes", "/etc/socker/socker.conf"), /socker\.conf:1: unknown setting/);
  refusal(() => parseSettings("\nrequire_job = maybe", "f"), /f:2: require_job must be yes or no/);
  refusal(() => parseSettings("require_job", "f"), /expected 'key = value'/);
});

Deno.test("a signal that arrives twice at once (directly and through sudo) is passed on once", () => {
  assert.equal(isSignalRepeat(undefined, 5), false);
  assert.equal(isSignalRepeat(1000, 1050), true);
  assert.equal(isSignalRepeat(1000, 1100), false);
  assert.equal(isSignalRepeat(1000, 5000), false);
});

// ---- data and devices

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
  refusal(() => parseCommandLine(["run", "-v"]), /-v needs a value/);
  refusal(() => parseCommandLine(["run", ...Array(33).fill(["-v", "/a:/b"]).flat(), "i", "c"]), /at most 32 volumes/);
});

Deno.test("-v specs: absolute SRC, clean DST of plain characters, ro or rw only", () => {
  assert.deepEqual(parseVolume("/home/a/d:/data:ro"), {
    source: "/home/a/d",
    destination: "/data",
    readOnly: true,
    origin: "-v /home/a/d:/data:ro",
    adminPath: false,
  });
  const cases: [string, RegExp][] = [
    ["/a", /expected SRC:DST/],
    ["/a:/b:ro:x", /expected SRC:DST/],
    ["rel:/b", /SRC must be an absolute path/],
    ["/a:rel", /clean absolute/],
    ["/a:/b/../etc", /clean absolute/],
    ["/a:/b/", /clean absolute/],
    ["/a:/b:z", /mode must be ro or rw/],
    ["/a:/b:Z", /mode must be ro or rw/],
    ["/a:/x,source=/etc", /DST may hold only/],
    ["/a:/x y", /DST may hold only/],
  ];
  for (const [spec, pattern] of cases) refusal(() => parseVolume(spec), pattern);
});

Deno.test("paths: clean absolute, and prefixes by whole components", () => {
  for (const good of ["/", "/a", "/a/b.c", "/a/.b"]) assert.ok(isCleanAbsolute(good), good);
  for (const bad of ["", "a", "/a/", "/a//b", "/a/./b", "/a/../b", "/.."]) assert.ok(!isCleanAbsolute(bad), bad);
  assert.ok(isUnder("/scratch/x", "/scratch"));
  assert.ok(isUnder("/scratch", "/scratch"));
  assert.ok(!isUnder("/scratch2/x", "/scratch"));
  assert.ok(!isUnder("/scratc", "/scratch"));
});

Deno.test("destinations: never / or under the system folders, nor the administrator's", () => {
  assert.equal(destinationProblem("/data", []), undefined);
  assert.equal(destinationProblem("/home/alice", []), undefined);
  assert.match(destinationProblem("/", [])!, /image's own root/);
  for (const bad of ["/etc", "/etc/passwd", "/usr/bin", "/proc/1", "/sys", "/dev/shm", "/var/run", "/bin"]) {
    assert.ok(destinationProblem(bad, []), bad);
  }
  assert.equal(destinationProblem("/etcetera", []), undefined);
  assert.match(destinationProblem("/opt/site/x", ["/opt/site"])!, /forbidden destination \/opt\/site/);
});

const check = (overrides: Partial<PathCheck> = {}): PathCheck => ({
  realPath: "/home/alice/data",
  device: 2049,
  inode: 77,
  kind: "dir",
  readable: true,
  writable: true,
  searchable: true,
  ...overrides,
});

Deno.test("decideMount: the checked real path, under a prefix, readable, read-only when not writable", () => {
  const request = parseVolume("/home/alice/link:/data");
  assert.deepEqual(decideMount(request, check(), DEFAULT_SETTINGS), {
    source: "/home/alice/data",
    destination: "/data",
    readOnly: false,
    device: 2049,
    inode: 77,
    kind: "dir",
  });
  assert.equal(
    (decideMount(request, check({ writable: false }), DEFAULT_SETTINGS) as { readOnly: boolean }).readOnly,
    true,
  );
  assert.match(decideMount(request, "permission denied", DEFAULT_SETTINGS) as string, /permission denied/);
  assert.match(
    decideMount(request, check({ realPath: "/etc" }), DEFAULT_SETTINGS) as string,
    /real path \/etc\) is not under a folder users may mount \(\/home\)/,
  );
  assert.match(
    decideMount(request, check({ realPath: "/home2/x" }), DEFAULT_SETTINGS) as string,
    /not under a folder users may mount/,
  );
  assert.match(decideMount(request, check({ readable: false }), DEFAULT_SETTINGS) as string, /not readable by you/);
  assert.match(decideMount(request, check({ searchable: false }), DEFAULT_SETTINGS) as string, /not readable by you/);
  assert.match(decideMount(request, check({ kind: "other" }), DEFAULT_SETTINGS) as string, /neither a folder/);
  assert.match(
    decideMount(parseVolume("/home/alice/data:/etc"), check(), DEFAULT_SETTINGS) as string,
    /forbidden destination \/etc/,
  );
  const admin = { ...parseVolume("/scratch:/scratch"), adminPath: true };
  assert.equal(typeof decideMount(admin, check({ realPath: "/scratch" }), DEFAULT_SETTINGS), "object");
});

Deno.test("default mounts: home and the caller's folder, once", () => {
  const requests = defaultMountRequests(
    { ...DEFAULT_SETTINGS, defaultMounts: ["home", "workdir", "/scratch"] },
    "/home/alice",
    "/home/alice/run",
  );
  assert.deepEqual(requests.map((r) => [r.source, r.destination, r.adminPath]), [
    ["/home/alice", "/home/alice", false],
    ["/scratch", "/scratch", true],
  ]);
  assert.equal(defaultMountRequests(DEFAULT_SETTINGS, undefined, "/tmp").length, 1);
});

Deno.test("workdir: as asked (never /proc), else the caller's folder when mounted, else the image's", () => {
  const mounts = [{
    source: "/home/alice",
    destination: "/home/alice",
    readOnly: false,
    device: 1,
    inode: 2,
    kind: "dir" as const,
  }];
  assert.equal(chooseWorkdir("/data", "/home/alice/x", mounts), "/data");
  assert.equal(chooseWorkdir(undefined, "/home/alice/x", mounts), "/home/alice/x");
  assert.equal(chooseWorkdir(undefined, "/tmp", mounts), undefined);
  assert.equal(chooseWorkdir(undefined, undefined, mounts), undefined);
  refusal(() => chooseWorkdir("/proc/self/fd/7", undefined, []), /never a \/proc path/);
  refusal(() => chooseWorkdir("/proc", undefined, []), /never a \/proc path/);
  refusal(() => chooseWorkdir("data", undefined, []), /clean absolute/);
});

Deno.test("environment: caller's HOME/USER/LOGNAME, -e values, env_deny refused, env_set wins", () => {
  const settings = { ...DEFAULT_SETTINGS, envSet: { SITE: "x", FOO: "admin" }, envDeny: ["LD_PRELOAD"] };
  const env = containerEnvironment(["FOO=1", "BAR", "GONE", "A=b=c"], { BAR: "from-caller" }, {
    user: "alice",
    home: "/home/alice",
  }, settings);
  assert.deepEqual(env, [
    "HOME=/home/alice",
    "USER=alice",
    "LOGNAME=alice",
    "FOO=admin",
    "BAR=from-caller",
    "A=b=c",
    "SITE=x",
  ]);
  refusal(() => containerEnvironment(["LD_PRELOAD=/x.so"], {}, { user: "a" }, settings), /never lets LD_PRELOAD/);
  refusal(() => containerEnvironment(["1X=2"], {}, { user: "a" }, settings), /not a variable name/);
  refusal(() => containerEnvironment(["A B=1"], {}, { user: "a" }, settings), /not a variable name/);
  refusal(() => containerEnvironment(["BAR"], undefined, { user: "a" }, settings), /give -e BAR=VALUE/);
  assert.deepEqual(containerEnvironment([], {}, { user: "a" }, DEFAULT_SETTINGS)[0], "HOME=/");
});

Deno.test("path checks made as the user parse, one record per path, errors by path", () => {
  const checks = parsePathChecks(
    "2049 131 d rwx/home/alice\u00002049 5 f r/home/alice/in put\nx\u0000",
    "/usr/bin/find: '/home/bob/private': Permission denied\nfind: '/nope': No such file or directory\n",
  );
  assert.deepEqual(checks.get("/home/alice"), check({ realPath: "/home/alice", inode: 131 }));
  assert.deepEqual(
    checks.get("/home/alice/in put\nx"),
    check({ realPath: "/home/alice/in put\nx", inode: 5, kind: "file", writable: false, searchable: false }),
  );
  assert.equal(checks.get("/home/bob/private"), "permission denied");
  assert.equal(checks.get("/nope"), "no such file or directory");
  assert.equal(parsePathChecks("garbage", "").size, 0);
});

Deno.test("GPUs come from the job's device rules or Slurm's record, never from the environment", () => {
  const rules = "c 1:3 rwm\nc 195:255 rwm\nc 195:0 rwm\nc 195:2 rw\nb 8:0 r\n";
  assert.deepEqual(gpusFromDeviceRules(rules), [0, 2]);
  assert.deepEqual(gpusFromDeviceRules("c 1:3 rwm\n"), []);
  assert.equal(gpusFromDeviceRules("a *:* rwm\n"), undefined, "unconstrained proves nothing");
  const record = "JobId=5 ...\n     Nodes=n1 CPU_IDs=0-3 Mem=1000 GRES=gpu:a100:3(IDX:0-1,3)\n";
  assert.deepEqual(gpusFromSlurmJob(record), [0, 1, 3]);
  assert.deepEqual(gpusFromSlurmJob("JobId=5 TresPerNode=gres:gpu:2 CUDA_VISIBLE_DEVICES=0,1"), []);
  assert.deepEqual(gpuDeviceNodes([0, 3], (p) => p === "/dev/nvidiactl"), [
    "/dev/nvidia0",
    "/dev/nvidia3",
    "/dev/nvidiactl",
  ]);
});

Deno.test("docker argv carries mounts, workdir, env, network and devices after socker's own options", () => {
  const args = dockerRunArgv({
    ...plan,
    mounts: [{ source: "/run/socker/n/0", destination: "/data", readOnly: true }],
    workdir: "/data",
    env: ["HOME=/home/alice", "X=a b"],
    network: "none",
    devices: ["/dev/nvidia0"],
    stdin: false,
  });
  const options = args.slice(0, args.indexOf("--"));
  assert.ok(!options.includes("--interactive"));
  assert.equal(options[options.indexOf("--mount") + 1], "type=bind,source=/run/socker/n/0,target=/data,readonly");
  assert.equal(options[options.indexOf("--workdir") + 1], "/data");
  assert.equal(options[options.indexOf("--network") + 1], "none");
  assert.equal(options[options.indexOf("--device") + 1], "/dev/nvidia0");
  assert.ok(options.includes("X=a b"));
});

// ---- operations

Deno.test("runc: 1.1.12 or later, or a distribution build known to carry the CVE-2024-21626 fix", () => {
  assert.equal(runcFixed("1.1.12"), true);
  assert.equal(runcFixed("v1.1.14-0-g2c9f560"), true);
  assert.equal(runcFixed("1.2.0"), true);
  assert.equal(runcFixed("1.1.11"), false);
  assert.equal(runcFixed("v1.1.5-0-gf19387a"), false);
  assert.equal(runcFixed("1.0.3"), false);
  assert.equal(runcFixed("1.1.5+ds1-1+deb12u1"), true);
  assert.equal(runcFixed("1.1.5+ds1-1"), false);
  assert.equal(runcFixed("f19387a6"), undefined);
  assert.equal(runcFixed(""), undefined);
});

Deno.test("slurm.conf: cgroup tracking, task/cgroup and socker's Epilog are required", () => {
  const good =
    "ProctrackType=proctrack/cgroup\nTaskPlugin=task/affinity,task/cgroup\nEpilog=/usr/local/libexec/socker/slurm-epilog\n";
  assert.deepEqual(slurmConfProblems(good, "/usr/local/libexec/socker/slurm-epilog"), []);
  const bad =
    "ProctrackType=proctrack/linuxproc\n#Epilog=/usr/local/libexec/socker/slurm-epilog\nTaskPlugin=task/affinity\n";
  assert.deepEqual(slurmConfProblems(bad, "/usr/local/libexec/socker/slurm-epilog"), [
    "set ProctrackType=proctrack/cgroup",
    "add task/cgroup to TaskPlugin",
    "add Epilog=/usr/local/libexec/socker/slurm-epilog (install.sh --epilog installs it)",
  ]);
});

Deno.test("doctor's report: one line per check, exit 0 only when all pass", () => {
  assert.deepEqual(doctorReport([{ name: "a", ok: true, detail: "fine" }]), {
    lines: ["ok   a: fine", "all 1 checks passed"],
    exitCode: 0,
  });
  const report = doctorReport([{ name: "a", ok: true, detail: "" }, { name: "b", ok: false, detail: "do x" }]);
  assert.deepEqual(report, { lines: ["ok   a", "FIX  b: do x", "1 of 2 checks need a fix"], exitCode: 1 });
});

Deno.test("audit lines are one line of JSON, long fields cut, undefined fields left out", () => {
  const line = auditLine({
    event: "run",
    user: "alice",
    job: undefined,
    command: ["sh", "-c", "x\ny"],
    long: "z".repeat(3000),
  });
  assert.ok(!line.includes("\n"));
  const parsed = JSON.parse(line);
  assert.deepEqual(Object.keys(parsed), ["event", "user", "command", "long"]);
  assert.deepEqual(parsed.command, ["sh", "-c", "x\ny"]);
  assert.equal(parsed.long.length, 2003);
});

// ---- fuzz: random argument vectors never crash the parser and never reach docker unvalidated

/** A small deterministic PRNG (mulberry32), so that a failing vector can be reproduced. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("fuzz: 1000 random argument vectors are parsed or refused, and only validated values reach docker", () => {
  const tokens = [
    "run",
    "images",
    "cleanup",
    "doctor",
    "-v",
    "--verbose",
    "-h",
    "--help",
    "--version",
    "--",
    "-",
    "-e",
    "--env",
    "-w",
    "--workdir",
    "--volume",
    "--no-tty",
    "--no-stdin",
    "--gpus",
    "--job",
    "--job=5",
    "--privileged",
    "--user=0",
    "-u",
    "0",
    "--network=host",
    "--pid=host",
    "-H",
    "tcp://x",
    "centos",
    "CentOS",
    "centos:7",
    "docker.io/library/centos:latest",
    "a@sha256:" + "f".repeat(64),
    "/home/alice:/data",
    "/etc:/etc",
    "/a:/b:ro",
    "/a:/b:z",
    "X=1",
    "LD_PRELOAD=/x.so",
    "1BAD=x",
    "/proc/self/fd/7",
    "/tmp",
    "rel",
    "sh",
    "-c",
    "echo $HOME",
    "$(id)",
    "`id`",
    ";",
    "\n",
    "\u0000",
    "\u001b[2J",
    "é",
    "x".repeat(300),
    "",
    " ",
    "/:/host",
    "/home/alice/data:/x,source=/etc",
    "--mount",
    "type=bind,source=/,target=/h",
  ];
  const random = prng(20261129);
  const safeOption =
    /^(--?[a-z][a-z-]*(=[a-z]+)?|[0-9]+:[0-9]+|[0-9]+|ALL|no-new-privileges|none|bridge|socker-[0-9]+-[0-9a-f]+|socker\.[a-z]+=.*|type=bind,source=\/[A-Za-z0-9._+@/-]+,target=\/[A-Za-z0-9._+@/-]+(,readonly)?)$/;
  let runs = 0;
  for (let round = 0; round < 1000; round++) {
    const pick = () => tokens[Math.floor(random() * tokens.length)];
    const some = (most: number) => Array.from({ length: Math.floor(random() * most) }, pick);
    // Half fully random, half shaped like a run (options, a valid image, a command) to reach docker's argv.
    const argv = round % 2 === 0
      ? some(8)
      : ["run", ...some(5), ["centos", "centos:7", "a/b:1"][round % 3], "sh", ...some(4)];
    let invocation;
    try {
      invocation = parseCommandLine(argv);
    } catch (error) {
      assert.ok(error instanceof SockerError, `${JSON.stringify(argv)} threw ${error}`);
      continue;
    }
    if (invocation.command !== "run") continue;
    try {
      const image = parseImageRef(invocation.image);
      if (typeof image === "string") continue;
      const mounts = invocation.options.volumes.map(parseVolume).map((request) =>
        decideMount(request, {
          realPath: request.source,
          device: 1,
          inode: 1,
          kind: "dir",
          readable: true,
          writable: true,
          searchable: true,
        }, DEFAULT_SETTINGS)
      ).filter((mount) => typeof mount !== "string");
      const env = containerEnvironment(
        invocation.options.env,
        {},
        { user: "alice", home: "/home/alice" },
        DEFAULT_SETTINGS,
      );
      const workdir = chooseWorkdir(invocation.options.workdir, undefined, []);
      const args = dockerRunArgv({
        ...plan,
        image: canonicalImage(image),
        argv: invocation.argv,
        mounts: mounts.map((m) => ({
          source: `/run/socker/n/${m.destination.length}`,
          destination: m.destination,
          readOnly: m.readOnly,
        })),
        env,
        workdir,
      });
      runs++;
      assert.equal(args[0], "run");
      const options = args.slice(1, args.indexOf("--"));
      for (const [index, option] of options.entries()) {
        const previous = options[index - 1];
        if (previous === "--env") assert.match(option, /^[A-Za-z_][A-Za-z0-9_]*=/s);
        else if (previous === "--workdir") assert.ok(isCleanAbsolute(option) && !isUnder(option, "/proc"), option);
        else {assert.match(
            option,
            safeOption,
            `${JSON.stringify(argv)}: unexpected docker option ${JSON.stringify(option)}`,
          );}
      }
      assert.ok(!options.some((option) => /privileged|=host|^-H$|^-u$/.test(option)), JSON.stringify(options));
    } catch (error) {
      assert.ok(error instanceof SockerError, `${JSON.stringify(argv)} threw ${error}`);
    }
  }
  assert.ok(runs > 20, `only ${runs} vectors reached the docker command line`);
});

Deno.test("syslog datagrams carry facility, time, tag and pid in the traditional local format", () => {
  const date = new Date(2026, 10, 9, 3, 4, 5);
  assert.equal(syslogDatagram("authpriv", 42, date, "{}"), "<86>Nov  9 03:04:05 socker[42]: {}");
  assert.equal(syslogDatagram("local3", 1, date, "x"), "<158>Nov  9 03:04:05 socker[1]: x");
  assert.equal(syslogDatagram("daemon", 1, date, "x").slice(0, 4), "<30>");
});

Deno.test("a user's mount replaces a default one at the same destination; two of the user's at one are refused", () => {
  const home = defaultMountRequests(DEFAULT_SETTINGS, "/home/alice", undefined);
  const mine = [parseVolume("/home/alice/other:/home/alice"), parseVolume("/home/alice/d:/data")];
  assert.deepEqual(mountRequests(home, mine).map((r) => r.source), ["/home/alice/other", "/home/alice/d"]);
  assert.deepEqual(mountRequests(home, [parseVolume("/x:/data")]).map((r) => r.destination), ["/home/alice", "/data"]);
  refusal(() => mountRequests(home, [parseVolume("/a:/data"), parseVolume("/b:/data:ro")]), /two mounts at \/data/);
});

Deno.test("staging folders carry the job, so the job's Epilog finds what a killed socker left", () => {
  assert.equal(stagingName("socker-2001-ab", "42"), "job_42.socker-2001-ab");
  assert.equal(stagingName("socker-2001-ab", undefined), "socker-2001-ab");
  assert.deepEqual(parseStagingName("job_42.socker-2001-ab"), { jobId: "42", container: "socker-2001-ab" });
  assert.deepEqual(parseStagingName("socker-2001-ab"), { container: "socker-2001-ab" });
});
