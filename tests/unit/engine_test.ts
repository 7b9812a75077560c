// Unit tests of the engine's choice and of Podman's differences: socker.conf's engine and socket, the
// socket's judgement, image names, cgroup folder names, limits the service may set, the exit status from
// Podman's record, the service's command line, and what doctor says of the socket and service.
import assert from "node:assert/strict";
import {
  containerIdOfFolder,
  DOCKER_SOCKET,
  engineChoice,
  engineImageNames,
  engineServiceProblem,
  engineSocketProblem,
  imageLayers,
  isEngineFolder,
  isPodmanService,
  jobLeftovers,
  type Limits,
  type Ownership,
  parseSettings,
  planJobCleanup,
  PODMAN_SOCKET,
  podmanExitStatus,
  Refusal,
  stepSharing,
  ulimitsWithin,
} from "../../socker.ts";

const parse = (text: string) => parseSettings(text, "/etc/socker/socker.conf");
const ID = "a".repeat(64);

Deno.test("settings: engine is docker unless socker.conf says podman; socket is one clean absolute path", () => {
  assert.equal(parse("").engine, "docker");
  assert.equal(parse("").socket, undefined);
  assert.equal(parse("engine = podman").engine, "podman");
  assert.equal(parse("engine = docker").engine, "docker");
  assert.equal(parse("socket = /run/x/podman.sock").socket, "/run/x/podman.sock");
  for (
    const [text, pattern] of [
      ["engine = containerd", /engine must be docker or podman, not 'containerd'/],
      ["engine = Podman", /engine must be docker or podman/],
      ["socket = run/podman.sock", /socket must be one clean absolute path/],
      ["socket = /run/../tmp/s", /socket must be one clean absolute path/],
      ["socket = /a /b", /socket must be one clean absolute path/],
      ["socket = /", /socket must be one clean absolute path/],
    ] as const
  ) {
    assert.throws(() => parse(text), (error: unknown) => {
      assert.ok(error instanceof Refusal && error.kind === "installation", text);
      assert.match(error.reason, /^\/etc\/socker\/socker\.conf:1: /);
      assert.match(error.reason, pattern, text);
      return true;
    });
  }
});

Deno.test("engine choice: each engine's default socket, or socker.conf's socket", () => {
  assert.deepEqual(engineChoice({ engine: "docker" }), { kind: "docker", socket: DOCKER_SOCKET });
  assert.deepEqual(engineChoice({ engine: "podman" }), { kind: "podman", socket: PODMAN_SOCKET });
  assert.equal(PODMAN_SOCKET, "/run/socker-engine/podman.sock", "not in /run/socker, whose entries cleanup sweeps");
  assert.deepEqual(engineChoice({ engine: "podman", socket: "/srv/p.sock" }), {
    kind: "podman",
    socket: "/srv/p.sock",
  });
});

const rootDir = (path: string, mode = 0o755): Ownership => ({ path, uid: 0, mode: 0o040000 | mode, kind: "dir" });
const socketFacts = (
  mode: number,
  uid = 0,
  folders = [rootDir("/run/socker-engine", 0o700), rootDir("/run"), rootDir("/")],
) => ({
  path: "/run/socker-engine/podman.sock",
  socket: { uid, mode: 0o140000 | mode },
  folders,
});

Deno.test("engine socket: root's, never anyone's; Podman's root's alone; in folders only root can change", () => {
  assert.equal(engineSocketProblem("podman", socketFacts(0o600)), undefined);
  assert.equal(engineSocketProblem("docker", socketFacts(0o660)), undefined, "Docker's group (docker) is root's equal");
  assert.match(engineSocketProblem("podman", socketFacts(0o660))!, /may be used by its group \(mode 0660\)/);
  assert.match(engineSocketProblem("docker", socketFacts(0o666))!, /may be used by anyone \(mode 0666\)/);
  assert.match(engineSocketProblem("podman", socketFacts(0o602))!, /may be used by anyone/);
  assert.match(engineSocketProblem("podman", socketFacts(0o600, 2001))!, /not owned by root \(owner uid 2001\)/);
  assert.match(
    engineSocketProblem("podman", { ...socketFacts(0o600), socket: { uid: 0, mode: 0o100600 } })!,
    /is not a socket/,
  );
  const userFolder = [{ ...rootDir("/run/socker-engine", 0o700), uid: 2001 }, rootDir("/run"), rootDir("/")];
  assert.match(
    engineSocketProblem("podman", socketFacts(0o600, 0, userFolder))!,
    /not owned by root \(owner uid 2001\)/,
  );
  const openFolder = [rootDir("/run/socker-engine", 0o777), rootDir("/run"), rootDir("/")];
  assert.match(
    engineSocketProblem("docker", socketFacts(0o600, 0, openFolder))!,
    /\/run\/socker-engine is writable by its group/,
  );
  assert.equal(
    engineSocketProblem("podman", { ...socketFacts(0o600), socket: "No such file or directory" }),
    undefined,
    "a socket that is not there is the connection's to report, with the engine's name",
  );
});

Deno.test("images: on Podman a Docker Hub name is asked as it is, then as Podman names a loaded image", () => {
  assert.deepEqual(engineImageNames("docker.io/socker-test/busybox:2", "docker"), ["docker.io/socker-test/busybox:2"]);
  assert.deepEqual(engineImageNames("docker.io/socker-test/busybox:2", "podman"), [
    "docker.io/socker-test/busybox:2",
    "localhost/socker-test/busybox:2",
  ]);
  assert.deepEqual(engineImageNames("docker.io/library/centos:7", "podman"), [
    "docker.io/library/centos:7",
    "localhost/centos:7",
  ]);
  const pinned = `docker.io/library/centos@sha256:${"1".repeat(64)}`;
  assert.deepEqual(engineImageNames(pinned, "podman"), [pinned, `localhost/centos@sha256:${"1".repeat(64)}`]);
  // No other registry ever maps to localhost/: an entry never matches another registry's image.
  for (
    const other of ["quay.io/a/b:1", "127.0.0.1:5000/socker-test/busybox:2", "localhost/x:1", "docker.io.evil/a:1"]
  ) {
    assert.deepEqual(engineImageNames(other, "podman"), [other]);
  }
});

Deno.test("cgroups: Docker's <id> and Podman's libpod-<id> and conmon folders are the engine's, nothing else", () => {
  assert.equal(containerIdOfFolder(ID), ID);
  assert.equal(containerIdOfFolder(`libpod-${ID}`), ID);
  for (const name of ["libpod-" + "a".repeat(63), "libpod-", `libpod-${ID}x`, "step_0", "job_5", "conmon", `x${ID}`]) {
    assert.equal(containerIdOfFolder(name), undefined, name);
  }
  assert.ok(isEngineFolder("conmon") && isEngineFolder(`libpod-${ID}`) && isEngineFolder(ID));
  assert.ok(!isEngineFolder("task_0") && !isEngineFolder("conmon2"));
  const tree: Record<string, string[]> = {
    "/cg": ["slurm_n1"],
    "/cg/slurm_n1": ["uid_2001"],
    "/cg/slurm_n1/uid_2001": ["job_5"],
    "/cg/slurm_n1/uid_2001/job_5": ["step_0"],
    "/cg/slurm_n1/uid_2001/job_5/step_0": [`libpod-${ID}`, "conmon", "task_0"],
  };
  const left = jobLeftovers({ path: "/cg", version: 1, controllers: ["memory"] }, "5", (p) => tree[p] ?? [], false);
  const step = "/cg/slurm_n1/uid_2001/job_5/step_0";
  assert.deepEqual(left.containers, [`${step}/libpod-${ID}`, `${step}/conmon`]);
  assert.deepEqual(left.slurmFolders, [`${step}/task_0`, step, "/cg/slurm_n1/uid_2001/job_5"]);
  const plan = planJobCleanup({
    jobId: "5",
    leftovers: [{ mount: { path: "/cg", version: 1, controllers: ["memory"] }, ...left }],
    labelled: [],
    staging: [],
  });
  assert.deepEqual(plan.containers, [ID], "the container behind libpod-<id> is removed; conmon is no container");
  assert.ok(plan.folders.includes(`${step}/conmon`), "Podman's conmon folder is removed with the containers'");
});

const limits = (entries: Record<string, [number, number]>): Limits =>
  Object.fromEntries(Object.entries(entries).map(([name, [soft, hard]]) => [name, { soft, hard }]));

Deno.test("limits: within the Podman service's own hard limits, lowered and never raised", () => {
  const service = limits({ nproc: [32768, 32768], nofile: [20000, 20000], cpu: [Infinity, Infinity] });
  assert.deepEqual(
    ulimitsWithin([
      { Name: "nproc", Soft: 96367, Hard: 96367 },
      { Name: "nofile", Soft: 1024, Hard: 4096 },
      { Name: "cpu", Soft: -1, Hard: -1 },
      { Name: "fsize", Soft: -1, Hard: -1 },
    ], { ...service, fsize: { soft: 1000, hard: 5000 } }),
    [
      { Name: "nproc", Soft: 32768, Hard: 32768 },
      { Name: "nofile", Soft: 1024, Hard: 4096 },
      { Name: "cpu", Soft: -1, Hard: -1 },
      { Name: "fsize", Soft: 5000, Hard: 5000 },
    ],
  );
});

Deno.test("wait on Podman: the exit code once the container no longer runs; nothing while it runs", () => {
  assert.equal(podmanExitStatus({ State: { Running: false, Status: "exited", ExitCode: 3 } }), 3);
  assert.equal(podmanExitStatus({ State: { Running: false, Status: "exited", ExitCode: 137 } }), 137);
  assert.equal(podmanExitStatus({ State: { Running: true, Status: "running", ExitCode: 0 } }), undefined);
  assert.equal(podmanExitStatus({ State: { Running: false, Status: "paused" } }), undefined);
  assert.equal(podmanExitStatus({ State: { Running: false, Status: "created" } }), undefined);
  assert.match(String(podmanExitStatus(undefined)), /removed before its exit code was read/);
  assert.match(String(podmanExitStatus({ State: { Status: "exited", ExitCode: 300 } })), /exit status 300/);
});

Deno.test("the Podman service: root's on this socket, with the cgroupfs manager", () => {
  const line = (...args: string[]) => args.join("\0");
  const good = line(
    "/usr/bin/podman",
    "--cgroup-manager=cgroupfs",
    "--runtime",
    "socker-runc",
    "system",
    "service",
    "--time=0",
    `unix://${PODMAN_SOCKET}`,
  );
  assert.ok(isPodmanService(good, PODMAN_SOCKET));
  assert.ok(!isPodmanService(line("/usr/bin/podman", "system", "service", "unix:///tmp/other.sock"), PODMAN_SOCKET));
  assert.ok(!isPodmanService(line("/tmp/podman-fake", "system", "service", `unix://${PODMAN_SOCKET}`), PODMAN_SOCKET));
  assert.ok(!isPodmanService(line("/usr/bin/podman", "run", "system", `unix://${PODMAN_SOCKET}`), PODMAN_SOCKET));
  const podman = engineChoice({ engine: "podman" });
  assert.equal(engineServiceProblem(podman, socketFacts(0o600), good), undefined);
  assert.match(engineServiceProblem(podman, socketFacts(0o600), undefined)!, /no Podman service of root's runs/);
  const systemd = line("/usr/bin/podman", "system", "service", `unix://${PODMAN_SOCKET}`);
  assert.match(engineServiceProblem(podman, socketFacts(0o600), systemd)!, /without --cgroup-manager=cgroupfs/);
  assert.match(engineServiceProblem(podman, socketFacts(0o666), good)!, /may be used by anyone/);
  assert.equal(
    engineServiceProblem(podman, { ...socketFacts(0o600), socket: "No such file or directory" }, good),
    undefined,
    "a missing socket is the engine row's one FIX line, not a second one",
  );
  assert.equal(engineServiceProblem(engineChoice({ engine: "docker" }), socketFacts(0o660), undefined), undefined);
});

Deno.test("step containers are off on Podman whatever share says; Podman's overlay layers are read", () => {
  assert.equal(stepSharing({ engine: "podman", share: "step" }), "none");
  assert.equal(stepSharing({ engine: "docker", share: "step" }), "step");
  assert.equal(stepSharing({ engine: "docker", share: "none" }), "none");
  const record = (name: string) => ({
    GraphDriver: { Name: name, Data: { UpperDir: "/l/u/diff", LowerDir: "/l/a/diff:/l/b/diff" } },
  });
  assert.deepEqual(imageLayers(record("overlay")), ["/l/u/diff", "/l/a/diff", "/l/b/diff"]);
  assert.deepEqual(imageLayers(record("overlay2")), ["/l/u/diff", "/l/a/diff", "/l/b/diff"]);
  assert.match(String(imageLayers(record("vfs"))), /only on the overlay2 storage driver; this engine uses vfs/);
});
