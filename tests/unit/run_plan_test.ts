// Unit tests of planRun, the one decision of `socker run`: every rule, one table row each, from plain facts.
// A row's expectation is either the refusal (a pattern of its one-line reason) or a check of the plan.
import assert from "node:assert/strict";
import {
  containerSpec,
  DEVICE_RUNTIME_PATH,
  ENTER_WORKDIR,
  LABEL,
  planRun,
  Refusal,
  type RunFacts,
  type RunPlan,
} from "../../socker.ts";
import {
  engineDown,
  fixture,
  IMAGE_ID,
  inJob,
  limits,
  probe,
  probeMap,
  rootFile,
  run,
  runFacts,
  SAFE_HOST_CONFIG,
  SETTINGS,
} from "./facts.ts";

type Row = [string, ReturnType<typeof run>, RunFacts, RegExp | ((plan: RunPlan) => void)];

const IMAGE = "socker-test/busybox:2";
const settings = (text: string) => rootFile(SETTINGS, text);
const V1_ENGINE = { CgroupDriver: "cgroupfs", CgroupVersion: "1" };
const env = (plan: RunPlan) =>
  Object.fromEntries(plan.env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
const jobRecord = (gres: string[], nodes = "n1", user = 2001) => ({
  jobs: [{ job_id: 1, user_id: user, nodes, gres_detail: gres }],
});
const pmixFolder = "/var/spool/slurmd/n1/pmix.1.0";

const rows: Row[] = [
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
  // which image
  [
    "an image not in the allowlist is refused",
    run("socker-test/other:1", "id"),
    runFacts(),
    /is not allowed on this cluster/,
  ],
  [
    "an uppercase image is not a reference",
    run("socker-test/BUSYBOX:2", "id"),
    runFacts(),
    /not a valid image reference/,
  ],
  [
    "the same image under Docker's normalisation matches",
    run("docker.io/socker-test/busybox:2", "id"),
    runFacts(),
    (plan) => {
      assert.equal(plan.entry.canonical, "docker.io/socker-test/busybox:2");
    },
  ],
  [
    "a world-writable allowlist is refused",
    run(IMAGE, "id"),
    runFacts({ allowlist: rootFile("/etc/socker/socker-images", IMAGE, { mode: 0o100666 }) }),
    /refusing to trust .* writable by/,
  ],
  [
    "a missing allowlist is refused",
    run(IMAGE, "id"),
    runFacts({ allowlist: { path: "/etc/socker/socker-images", missing: true } }),
    /is missing; socker is not fully installed/,
  ],
  [
    "a broken allowlist line names the line",
    run(IMAGE, "id"),
    runFacts({ allowlist: rootFile("/etc/socker/socker-images", `${IMAGE}\nNot A Ref\n`) }),
    /socker-images:2: 'Not A Ref'/,
  ],
  [
    "an allowed image missing on the node is refused when pull = never",
    run(IMAGE, "id"),
    runFacts({ image: undefined }),
    /allowed but not present on node n1.*pull = missing/,
  ],
  [
    "an allowed image missing on the node is pulled when pull = missing",
    run(IMAGE, "id"),
    runFacts({ image: undefined, settings: settings("pull = missing\n") }),
    (plan) => {
      assert.equal(plan.imageId, undefined);
    },
  ],
  [
    "the engine down is a clear refusal",
    run(IMAGE, "id"),
    runFacts({ image: engineDown }),
    /Docker engine is not reachable/,
  ],
  // settings and job
  [
    "a broken socker.conf names the line",
    run(IMAGE, "id"),
    runFacts({ settings: settings("require_job = yes\nmount_prefix = /\n") }),
    /socker\.conf:2: unknown setting 'mount_prefix'/,
  ],
  [
    "a group-writable socker.conf is refused",
    run(IMAGE, "id"),
    runFacts({ settings: rootFile(SETTINGS, "", { mode: 0o100664 }) }),
    /refusing to trust .*socker\.conf is writable by its group/,
  ],
  [
    "require_job refuses outside a job",
    run(IMAGE, "id"),
    runFacts({ settings: settings("require_job = yes") }),
    /only inside Slurm jobs/,
  ],
  [
    "require_job runs inside a job",
    run(IMAGE, "id"),
    inJob({ settings: settings("require_job = yes") }),
    (plan) => assert.equal(plan.job?.jobId, "1"),
  ],
  ["outside a job there is no cgroup parent and no job labels", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.equal(plan.cgroupParent, undefined);
    assert.equal(plan.labels[LABEL.job], undefined);
  }],
  [
    "inside a job the container goes into the step's cgroup, labelled with job and step",
    run(IMAGE, "id"),
    inJob(),
    (plan) => {
      assert.equal(plan.cgroupParent, "/slurm_n1/uid_2001/job_1/step_0");
      assert.deepEqual([plan.labels[LABEL.job], plan.labels[LABEL.step]], ["1", "0"]);
    },
  ],
  [
    "a forged SLURM_JOB_ID changes nothing socker decides",
    run(IMAGE, "id"),
    inJob({ callerEnv: { SLURM_JOB_ID: "999", SLURM_STEP_ID: "7" } }),
    (plan) => {
      assert.equal(plan.cgroupParent, "/slurm_n1/uid_2001/job_1/step_0");
      assert.equal(env(plan).SLURM_JOB_ID, "999", "it reaches the container, which is the caller's own business");
    },
  ],
  [
    "another user's job cgroup is refused",
    run(IMAGE, "id"),
    runFacts({ procSelfCgroup: fixture("proc/hostile-other-user.cgroup") }),
    /belongs to uid 2002/,
  ],
  [
    "the systemd cgroup driver cannot place containers in a job",
    run(IMAGE, "id"),
    inJob({ engineInfo: { CgroupDriver: "systemd", CgroupVersion: "1" } }),
    /native\.cgroupdriver=cgroupfs/,
  ],
  [
    "a v2 job on a v1 engine is refused",
    run(IMAGE, "id"),
    inJob({
      procSelfCgroup: fixture("proc/v2-batch.cgroup"),
      engineInfo: { CgroupDriver: "cgroupfs", CgroupVersion: "1" },
    }),
    /engine sees cgroup v1 but this job is on cgroup v2/,
  ],
  // namespaces
  [
    "network = host with a fixed containerd",
    run(IMAGE, "id"),
    runFacts({
      settings: settings("network = host\nipc = host\npid = host\nuts = host\n"),
      engineVersion: { Components: [{ Name: "containerd", Version: "1.6.20~ds1" }] },
    }),
    (plan) => {
      assert.deepEqual([plan.network, plan.ipc, plan.pid, plan.uts], ["host", "host", "host", "host"]);
    },
  ],
  [
    "network = host with a containerd before the CVE-2020-15257 fix is refused",
    run(IMAGE, "id"),
    runFacts({
      settings: settings("network = host"),
      engineVersion: { Components: [{ Name: "containerd", Version: "1.4.2" }] },
    }),
    /CVE-2020-15257/,
  ],
  [
    "network = host with an unknown containerd is refused",
    run(IMAGE, "id"),
    runFacts({ settings: settings("network = host"), engineVersion: {} }),
    /CVE-2020-15257/,
  ],
  ["the namespaces are private by default", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.deepEqual([plan.network, plan.ipc, plan.pid, plan.uts], ["bridge", "private", "private", "private"]);
  }],
  // mounts
  [
    "home and the current folder are mounted at their own paths",
    run(IMAGE, "id"),
    runFacts({
      cwd: "/tmp",
      probes: probeMap([["/home/alice", probe("/home/alice")], ["/tmp", probe("/tmp", { owner: 0 })]]),
    }),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => [m.source, m.destination, m.readOnly]), [[
        "/home/alice",
        "/home/alice",
        false,
      ]]);
      assert.equal(
        plan.workdir,
        undefined,
        "/tmp is not under a folder users may mount: the image's working directory",
      );
    },
  ],
  [
    "a user's mount outside mount_prefixes is refused",
    run("-v", "/etc:/x", IMAGE, "id"),
    runFacts({ probes: probeMap([["/home/alice", probe("/home/alice")], ["/etc", probe("/etc", { owner: 0 })]]) }),
    /-v \/etc:\/x: '\/etc' \(real path \/etc\) is not under a folder users may mount \(\/home\)/,
  ],
  [
    "a user's mount the caller cannot reach gets one message whatever the reason",
    run("-v", "/home/bob/private:/x", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], [
        "/home/bob/private",
        "does not exist or you cannot reach it",
      ]]),
    }),
    /'\/home\/bob\/private' does not exist or you cannot reach it$/,
  ],
  [
    "a default mount the caller cannot read is left out, not refused",
    run(IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice", { readable: false })], [
        "/home/alice/work",
        probe("/home/alice/work"),
      ]]),
    }),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => m.destination), []);
    },
  ],
  [
    "a mount the caller cannot write is read-only",
    run("-v", "/home/alice/ro:/ro", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], [
        "/home/alice/ro",
        probe("/home/alice/ro", { writable: false }),
      ]]),
    }),
    (plan) => {
      assert.equal(plan.mounts.find((m) => m.destination === "/ro")?.readOnly, true);
    },
  ],
  [
    "a symlinked source is mounted from its real path",
    run("-v", "/home/alice/link:/d", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], ["/home/alice/link", probe("/home/alice/real")]]),
    }),
    (plan) => {
      assert.equal(plan.mounts.find((m) => m.destination === "/d")?.source, "/home/alice/real");
    },
  ],
  [
    "a user's mount over /etc is refused",
    run("-v", "/home/alice:/etc/ssl", IMAGE, "id"),
    runFacts(),
    /forbidden destination \/etc/,
  ],
  [
    "the administrator's forbidden destinations hold",
    run("-v", "/home/alice:/opt/site/x", IMAGE, "id"),
    runFacts({ settings: settings("forbidden_destinations = /opt/site") }),
    /forbidden destination \/opt\/site/,
  ],
  [
    "a user's mount replaces the default home mount",
    run("-v", "/home/alice/work:/home/alice", IMAGE, "id"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => [m.source, m.destination]), [["/home/alice/work", "/home/alice"]]);
    },
  ],
  [
    "two mounts at one destination are refused",
    run("-v", "/home/alice:/d", "-v", "/home/alice/work:/d", IMAGE, "id"),
    runFacts(),
    /two mounts at \/d/,
  ],
  [
    "only folders whose parents a user could change are staged",
    run(IMAGE, "id"),
    runFacts({ cwd: "/home/alice/work" }),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => [m.destination, m.fixedByRoot]), [["/home/alice", true]]);
    },
  ],
  // working directory and what the engine would create as root
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
    "with two mounts, a mount point in the image is checked for symlinks in the image's own layers",
    run("-v", "/home/alice/work:/data", IMAGE, "id"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mountPoints.filter((p) => p.checkImage).map((p) => p.destination), [
        "/home/alice",
        "/data",
      ]);
      assert.deepEqual(plan.imageLayers, ["/var/lib/docker/overlay2/4/diff"]);
    },
  ],
  [
    "with one mount nothing in the image is checked: a symlink there can lead nowhere but the image",
    run(IMAGE, "id"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mountPoints.map((p) => [p.destination, p.checkImage]), [
        ["/home/alice", false],
        ["/home/alice/work", false],
      ]);
      assert.deepEqual(plan.imageLayers, ["/var/lib/docker/overlay2/4/diff"], "read only to find the image's shell");
    },
  ],
  [
    "mount points in an image the engine keeps on another storage driver are refused: socker cannot check them",
    run("-v", "/home/alice/work:/data", IMAGE, "id"),
    runFacts({ image: { Id: IMAGE_ID, GraphDriver: { Name: "vfs", Data: {} } } }),
    /cannot check the mount points in the image: .*only on the overlay2 storage driver; this engine uses vfs/,
  ],
  [
    "where socker cannot keep the OOM killer off itself, the container's processes are the OOM killer's first choice",
    run(IMAGE, "id"),
    runFacts({ oomProtected: false }),
    (plan) => {
      assert.equal(plan.oomScoreAdj, 1000);
      assert.equal(
        (containerSpec(plan, plan.mounts.map((m) => m.source)).HostConfig as Record<string, unknown>).OomScoreAdj,
        1000,
      );
    },
  ],
  [
    "where socker keeps the OOM killer off itself, the container keeps the engine's default",
    run(IMAGE, "id"),
    runFacts({ oomProtected: true }),
    (plan) => {
      assert.equal(plan.oomScoreAdj, undefined);
      assert.equal(
        "OomScoreAdj" in (containerSpec(plan, plan.mounts.map((m) => m.source)).HostConfig as object),
        false,
      );
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
  [
    "a mount point inside another mount is created as the caller",
    run("-v", "/home/alice/f:/home/alice/sub/f", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], [
        "/home/alice/f",
        probe("/home/alice/f", { kind: "file" }),
      ]]),
    }),
    (plan) => {
      assert.deepEqual(plan.mountPoints.map((p) => [p.destination, p.holder, p.below.join("/"), p.kind]), [
        ["/home/alice", undefined, "home/alice", "dir"],
        ["/home/alice/sub/f", 0, "sub/f", "file"],
      ]);
    },
  ],
  // environment
  [
    "-e HOME, USER or LOGNAME is refused: they are always the caller's",
    run("-e", "HOME=/tmp", IMAGE, "id"),
    runFacts(),
    /-e HOME: HOME is always yours/,
  ],
  [
    "-e LOGNAME without a value is refused too",
    run("-e", "LOGNAME", IMAGE, "id"),
    runFacts(),
    /-e LOGNAME: LOGNAME is always yours/,
  ],
  [
    "env_deny refuses -e",
    run("-e", "LD_PRELOAD=/x.so", IMAGE, "id"),
    runFacts({ settings: settings("env_deny = LD_PRELOAD") }),
    /never lets LD_PRELOAD/,
  ],
  [
    "-e NAME takes the caller's value, env_set wins",
    run("-e", "FOO", "-e", "SITE=mine", IMAGE, "id"),
    runFacts({ settings: settings("env_set = SITE=hpc") }),
    (plan) => {
      assert.deepEqual([env(plan).FOO, env(plan).SITE, env(plan).HOME, env(plan).USER], [
        "bar",
        "hpc",
        "/home/alice",
        "alice",
      ]);
    },
  ],
  [
    "inside a job the step's SLURM, PMI and PMIx variables reach the container",
    run(IMAGE, "id"),
    inJob({
      settings: settings("env_inherit = no"),
      callerEnv: { SLURM_PROCID: "1", PMIX_RANK: "1", PMI_SIZE: "2", OMP_NUM_THREADS: "4", PATH: "/evil" },
    }),
    (plan) => {
      assert.deepEqual([env(plan).SLURM_PROCID, env(plan).PMIX_RANK, env(plan).PMI_SIZE], ["1", "1", "2"]);
      assert.equal(env(plan).OMP_NUM_THREADS, undefined, "not passed unless the administrator says so");
      assert.equal(env(plan).PATH, undefined);
    },
  ],
  [
    "outside a job no SLURM variable passes",
    run(IMAGE, "id"),
    runFacts({ callerEnv: { SLURM_PROCID: "1" } }),
    (plan) => assert.equal(env(plan).SLURM_PROCID, undefined),
  ],
  [
    "env_pass passes the administrator's patterns, never PATH, LD_* or the caller's names",
    run(IMAGE, "id"),
    runFacts({
      settings: settings("env_pass = OMP_* NCCL_? * \n"),
      callerEnv: { OMP_NUM_THREADS: "4", NCCL_X: "1", LD_LIBRARY_PATH: "/x", PATH: "/x", HOME: "/evil", USER: "root" },
    }),
    (plan) => {
      assert.deepEqual([env(plan).OMP_NUM_THREADS, env(plan).NCCL_X], ["4", "1"]);
      assert.deepEqual([env(plan).LD_LIBRARY_PATH, env(plan).PATH, env(plan).HOME, env(plan).USER], [
        undefined,
        undefined,
        "/home/alice",
        "alice",
      ]);
    },
  ],
  [
    "env_deny wins over the job's variables",
    run(IMAGE, "id"),
    inJob({ settings: settings("env_deny = SLURM_PROCID"), callerEnv: { SLURM_PROCID: "1", SLURM_NTASKS: "2" } }),
    (plan) => {
      assert.deepEqual([env(plan).SLURM_PROCID, env(plan).SLURM_NTASKS], [undefined, "2"]);
    },
  ],
  [
    "a caller environment beyond the bounds is refused",
    run(IMAGE, "id"),
    inJob({ callerEnv: Object.fromEntries(Array.from({ length: 1100 }, (_, i) => [`SLURM_X${i}`, "1"])) }),
    /more than 1024 of your variables/,
  ],
  // PMIx
  [
    "the step's PMIx folder, the caller's, is mounted at its own path",
    run(IMAGE, "id"),
    inJob({ probes: probeMap([["/home/alice", probe("/home/alice")], [pmixFolder, probe(pmixFolder)]]) }),
    (plan) => {
      assert.ok(plan.mounts.some((m) => m.source === pmixFolder && m.destination === pmixFolder && !m.readOnly));
    },
  ],
  [
    "a PMIx folder that is not the caller's is never mounted",
    run(IMAGE, "id"),
    inJob({ probes: probeMap([["/home/alice", probe("/home/alice")], [pmixFolder, probe(pmixFolder, { owner: 0 })]]) }),
    (plan) => {
      assert.ok(!plan.mounts.some((m) => m.source === pmixFolder));
    },
  ],
  [
    "a forged PMIX_SERVER_TMPDIR decides nothing",
    run(IMAGE, "id"),
    inJob({
      callerEnv: { PMIX_SERVER_TMPDIR: "/home/bob" },
      probes: probeMap([["/home/alice", probe("/home/alice")], ["/home/bob", probe("/home/bob", { owner: 2002 })]]),
    }),
    (plan) => {
      assert.ok(!plan.mounts.some((m) => m.source === "/home/bob"));
    },
  ],
  [
    "a PMI2 step without PMIx gets a hint, and nothing else changes",
    run(IMAGE, "id"),
    inJob({ callerEnv: { PMI_FD: "5" } }),
    (plan) => {
      assert.match(plan.hints[0], /srun --mpi=pmix/);
    },
  ],
  // devices
  ["--gpus outside a job is refused", run("--gpus", IMAGE, "id"), runFacts(), /only inside a Slurm job/],
  [
    "--gpus gives exactly the GPUs Slurm allocated on this node",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:a100:2(IDX:1,3)"]), gpuControlDevices: ["/dev/nvidiactl"] }),
    (plan) => {
      assert.deepEqual(plan.devices, ["/dev/nvidia1", "/dev/nvidia3", "/dev/nvidiactl"]);
    },
  ],
  [
    "--gpus gives only the GPUs the step may use (the kernel refused socker the others)",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:2(IDX:0-1)"]), gpusRefused: [0], gpuControlDevices: ["/dev/nvidiactl"] }),
    (plan) => {
      assert.deepEqual(plan.devices, ["/dev/nvidia1", "/dev/nvidiactl"]);
    },
  ],
  [
    "--gpus in a step that may use none of the job's GPUs is refused",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:2(IDX:0-1)"]), stepDevicesList: "c 1:3 rwm\nc 195:255 rwm\n" }),
    /may use none of the job's GPUs on node n1 \(0,1\)/,
  ],
  [
    "in a v1 job with ConstrainDevices=yes the container gets the runtime socker-runc",
    run(IMAGE, "id"),
    inJob({
      cgroupConf: rootFile("/etc/slurm/cgroup.conf", "ConstrainDevices=yes\n"),
      deviceRuntimeInstalled: true,
      engineInfo: { ...V1_ENGINE, Runtimes: { runc: { path: "runc" }, "socker-runc": { path: DEVICE_RUNTIME_PATH } } },
    }),
    (plan) => {
      assert.equal(plan.runtime, "socker-runc");
      assert.equal((containerSpec(plan, []).HostConfig as Record<string, unknown>).Runtime, "socker-runc");
    },
  ],
  [
    "in a v1 job without ConstrainDevices the engine's default runtime is kept",
    run(IMAGE, "id"),
    inJob({ cgroupConf: rootFile("/etc/slurm/cgroup.conf", "ConstrainCores=yes\n"), deviceRuntimeInstalled: true }),
    (plan) => {
      assert.equal(plan.runtime, undefined);
      assert.ok(!("Runtime" in (containerSpec(plan, []).HostConfig as object)));
    },
  ],
  [
    "in a v1 job with ConstrainDevices=yes and no socker-runc in the engine, the run is refused",
    run(IMAGE, "id"),
    inJob({ cgroupConf: rootFile("/etc/slurm/cgroup.conf", "ConstrainDevices=yes\n"), deviceRuntimeInstalled: true }),
    /ConstrainDevices=yes\) and the Docker engine has no runtime socker-runc .*run socker's install\.sh/,
  ],
  [
    "--gpus in a job without GPUs is refused",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord([""]) }),
    /no GPU is allocated to job 1 on node n1/,
  ],
  [
    "--gpus never reads another user's job record",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:1(IDX:0)"], "n1", 2002) }),
    /the job is not yours/,
  ],
  [
    "--gpus with an index out of range is refused, not looped over",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:1(IDX:0-99999999999)"]) }),
    /unreadable GPU index/,
  ],
  [
    "--gpus takes this node's entry of a two-node job",
    run("--gpus", IMAGE, "id"),
    inJob({ jobRecord: jobRecord(["gpu:1(IDX:0)", "gpu:1(IDX:1)"], "n[0-1]") }),
    (plan) => {
      assert.deepEqual(plan.devices, ["/dev/nvidia1"]);
    },
  ],
  // limits, terminal, labels, orphans
  [
    "the caller's limits go to the container, never raised",
    run(IMAGE, "id"),
    runFacts({ callerLimits: limits({ nproc: { soft: 64, hard: 64 }, cpu: { soft: 30, hard: 60 } }) }),
    (plan) => {
      assert.deepEqual(plan.ulimits.find((u) => u.Name === "nproc"), { Name: "nproc", Soft: 64, Hard: 64 });
      assert.deepEqual(plan.ulimits.find((u) => u.Name === "cpu"), { Name: "cpu", Soft: 30, Hard: 60 });
      assert.deepEqual(plan.ulimits.find((u) => u.Name === "fsize"), { Name: "fsize", Soft: -1, Hard: -1 });
      assert.equal(plan.ulimits.find((u) => u.Name === "as"), undefined, "docker has no address-space limit");
    },
  ],
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
  ["the container carries the supervisor, uid, user and node", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.equal(plan.containerName, "socker-2001-010203040506");
    assert.deepEqual(plan.labels, {
      "socker.managed": "true",
      "socker.uid": "2001",
      "socker.user": "alice",
      "socker.node": "n1",
      "socker.supervisor": "4242:123456",
    });
    assert.equal(plan.staging, "socker-2001-010203040506@4242-123456");
  }],
  [
    "the caller's containers whose socker died are removed first, the living are not",
    run(IMAGE, "id"),
    runFacts({
      ownContainers: [
        {
          container: { Id: "a".repeat(64), Names: ["/socker-2001-aa"], Labels: { "socker.supervisor": "10:5" } },
          supervisorStat: undefined,
        },
        {
          container: { Id: "b".repeat(64), Names: ["/socker-2001-bb"], Labels: { "socker.supervisor": "11:7" } },
          supervisorStat: "11 (deno) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 0",
        },
        {
          container: { Id: "c".repeat(64), Names: ["/socker-2001-cc"], Labels: { "socker.supervisor": "12:9" } },
          supervisorStat: "12 (deno) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0",
        },
      ],
      staging: [{ name: "socker-2001-dd@13-1" }, { name: "socker-2002-ee@14-1" }],
    }),
    (plan) => {
      assert.deepEqual(plan.orphans.map((o) => o.container ?? o.staging), [
        "a".repeat(64),
        "c".repeat(64),
        "socker-2001-dd@13-1",
      ]);
    },
  ],
  [
    "an engine that cannot list the caller's containers is a refusal",
    run(IMAGE, "id"),
    runFacts({ ownContainers: engineDown }),
    /Docker engine is not reachable/,
  ],
];

for (const [name, invocation, facts, expected] of rows) {
  Deno.test(`run: ${name}`, () => {
    if (expected instanceof RegExp) {
      assert.throws(() => planRun(invocation, facts), (error: unknown) => {
        assert.ok(error instanceof Refusal, `expected a Refusal, got ${error}`);
        assert.match(error.reason, expected);
        assert.ok(!error.reason.includes("\n"), "one line");
        return true;
      });
    } else expected(planRun(invocation, facts));
  });
}

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
