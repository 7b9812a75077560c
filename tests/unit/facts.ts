// Plain-data facts for the unit tests: what the read phase of a run would have gathered on a node, built
// from copies of what real nodes showed (tests/fixtures). Each test changes only what its case is about.
import assert from "node:assert/strict";
import {
  type ConfigFile,
  DOCKER_CONFIG_DIR,
  LIMIT_ROWS,
  type Limits,
  type ListedContainer,
  type Ownership,
  parseCommandLine,
  pathChain,
  type PathProbe,
  planRun,
  Refusal,
  type RunFacts,
  type RunPlan,
} from "../../socker.ts";

export const fixture = (name: string) => Deno.readTextFileSync(new URL(`../fixtures/${name}`, import.meta.url));

/** A root-owned configuration file holding `text`, as readConfigFile would report it. */
export function rootFile(path: string, text: string, change: Partial<Ownership> = {}): ConfigFile {
  const chain = pathChain(path).map((item, index): Ownership => ({
    path: item,
    uid: 0,
    mode: index === 0 ? 0o100644 : 0o40755,
    kind: index === 0 ? "file" : "dir",
    ...(index === 0 ? change : {}),
  }));
  return { path, bytes: new TextEncoder().encode(text), written: chain, real: chain };
}

export const ALLOWLIST = "/etc/socker/socker-images";
export const SETTINGS = "/etc/socker/socker.conf";

/** What the kernel says, as the caller, of a folder or file they own. */
export function probe(realPath: string, change: Partial<PathProbe> = {}): PathProbe {
  return {
    realPath,
    kind: "dir",
    owner: 2001,
    device: 2049,
    inode: realPath.length,
    readable: true,
    writable: true,
    searchable: true,
    handle: 100 + realPath.length,
    ...change,
  };
}

/** A caller's limits: everything unlimited but the usual soft ones. */
export function limits(change: Record<string, { soft: number; hard: number }> = {}): Limits {
  const all: Limits = {};
  for (const row of LIMIT_ROWS) all[row.name] = { soft: Infinity, hard: Infinity };
  return {
    ...all,
    nofile: { soft: 1024, hard: 524288 },
    stack: { soft: 8 << 20, hard: Infinity },
    core: { soft: 0, hard: 0 },
    ...change,
  };
}

export const IMAGE_ID = `sha256:${"4".repeat(64)}`;

/** The facts of a healthy node, outside any job: alice (2001, group proj 3001) runs from ~/work. */
export function runFacts(change: Partial<RunFacts> = {}): RunFacts {
  return {
    processUid: 0,
    sudo: { SUDO_UID: "2001", SUDO_GID: "2001", SUDO_USER: "alice" },
    allowlist: rootFile(ALLOWLIST, "socker-test/busybox:2\ncentos:7\n"),
    settings: { path: SETTINGS, missing: true },
    procSelfCgroup: fixture("proc/v1-outside-job.cgroup"),
    user: { uid: 2001, gid: 2001, home: "/home/alice", groups: [2001, 3001] },
    cwd: "/home/alice/work",
    callerEnv: { PATH: "/usr/bin", HOME: "/home/alice", FOO: "bar" },
    callerLimits: limits(),
    stdinIsTerminal: false,
    stdoutIsTerminal: false,
    hostName: "n1",
    random: new Uint8Array([1, 2, 3, 4, 5, 6]),
    supervisor: "4242:123456",
    image: {
      Id: IMAGE_ID,
      RepoDigests: [],
      GraphDriver: { Name: "overlay2", Data: { UpperDir: "/var/lib/docker/overlay2/4/diff" } },
    },
    probes: new Map<string, PathProbe | string>([
      ["/home/alice", probe("/home/alice")],
      ["/home/alice/work", probe("/home/alice/work")],
    ]),
    fixed: new Map([["/home/alice", true], ["/home/alice/work", false]]),
    ownContainers: [],
    staging: [],
    gpuControlDevices: [],
    ...change,
  };
}

/** A run invocation from a command line. */
export function run(...args: string[]) {
  const invocation = parseCommandLine(["run", ...args]);
  if (invocation.command !== "run") throw new Error("not a run");
  return invocation;
}

/** The facts of a job step on node n1: alice's srun step 0 of job 1 (cgroup v1, as observed). */
export function inJob(change: Partial<RunFacts> = {}): RunFacts {
  return runFacts({
    procSelfCgroup: fixture("proc/v1-srun-step.cgroup").replaceAll("slurm_vm", "slurm_n1"),
    engineInfo: { CgroupDriver: "cgroupfs", CgroupVersion: "1" },
    slurmConf: rootFile("/etc/slurm/slurm.conf", "SlurmdSpoolDir=/var/spool/slurmd/%n\nNodeName=n1 NodeHostname=vm\n"),
    ...change,
  });
}

export const engineDown = new Refusal("engine", "the Docker engine is not reachable at /var/run/docker.sock: refused");
export { DOCKER_CONFIG_DIR };

/** What the kernel said of each path, by the path as given. */
export function probeMap(entries: [string, PathProbe | string][]): Map<string, PathProbe | string> {
  return new Map(entries);
}

/** Asserts that `fn` refuses: a Refusal whose one-line reason matches `pattern`. */
export function refusal(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof Refusal, `expected a Refusal, got ${error}`);
    assert.match(error.reason, pattern);
    assert.ok(!error.reason.includes("\n"), "one line");
    return true;
  });
}

/** What every container's HostConfig holds, whatever the run (asserted by the plan and fuzz tests). */
export const SAFE_HOST_CONFIG = {
  AutoRemove: true,
  Init: true,
  Privileged: false,
  CapDrop: ["ALL"],
  SecurityOpt: ["no-new-privileges"],
  LogConfig: { Type: "none", Config: {} },
};

/**
 * A row of planRun's table (one rule each, kept in the file of the feature it decides): its name, the command
 * line, the facts, and either the refusal (a pattern of its one-line reason) or a check of the plan.
 */
export type Row = [string, ReturnType<typeof run>, RunFacts, RegExp | ((plan: RunPlan) => void)];

/** One test per row, named `run: NAME`. */
export function planTests(rows: Row[]): void {
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
}

export const IMAGE = "socker-test/busybox:2";
/** A root-owned socker.conf holding `text`. */
export const settingsFile = (text: string) => rootFile(SETTINGS, text);
export const V1_ENGINE = { CgroupDriver: "cgroupfs", CgroupVersion: "1" };
/** The plan's environment as a record. */
export const env = (plan: RunPlan) =>
  Object.fromEntries(plan.env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
/** Slurm's record of job 1 (`squeue --json`) with these GPUs on these nodes. */
export const jobRecord = (gres: string[], nodes = "n1", user = 2001) => ({
  jobs: [{ job_id: 1, user_id: user, nodes, gres_detail: gres }],
});
/** The PMIx folder (PMIX_SERVER_TMPDIR) of alice's step 1.0 on n1. */
export const pmixTmpDir = "/var/spool/slurmd/n1/pmix.1.0";

/** A /proc/PID/stat line of a process started at START (clock ticks since boot). */
export const stat = (pid: number, start: number) =>
  `${pid} (deno) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 ${start} 0 0`;
/** A container as the engine lists it, with socker's labels. */
export const container = (
  id: string,
  labels: Record<string, string>,
  name = `/socker-${labels["socker.uid"]}-${id.slice(0, 4)}`,
): ListedContainer => ({
  Id: id,
  Names: [name],
  Image: "docker.io/socker-test/busybox:2",
  Command: "/sbin/docker-init -- sleep 1000",
  Created: 1000,
  Labels: { "socker.managed": "true", ...labels },
});

/** The test cluster's slurm.conf, as the unit tests of Slurm and PMIx read it. */
export const SLURM_CONF = `# the test cluster
SlurmdSpoolDir=/var/spool/slurmd/%n
ProctrackType=proctrack/cgroup
TaskPlugin=task/affinity,task/cgroup
Epilog=/usr/local/libexec/socker/slurm-epilog
NodeName=n1 NodeHostname=vm NodeAddr=127.0.0.1 Port=6818 CPUs=1
NodeName=n2 NodeHostname=vm NodeAddr=127.0.0.1 Port=6819 CPUs=1
NodeName=gpu01 CPUs=8
`;
