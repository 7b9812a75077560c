// Unit tests of MPI and distributed jobs: the step's PMIx folder, PyTorch's rendezvous variables from
// Slurm's, and the hint for PMIx ranks in private namespaces.
import assert from "node:assert/strict";
import {
  DEFAULT_SETTINGS,
  expandTasksPerNode,
  jobStepFromCgroup,
  mpiNamespaceHint,
  parseSlurmConf,
  pmixFolder,
  rendezvousVariables,
  type Settings,
  slurmNodeName,
} from "../../socker.ts";
import {
  fixture,
  IMAGE,
  inJob,
  planTests,
  pmixTmpDir,
  probe,
  probeMap,
  run,
  runFacts,
  settingsFile,
  SLURM_CONF,
} from "./facts.ts";

const settings = (over: Partial<Settings> = {}): Settings => ({ ...DEFAULT_SETTINGS, ...over });

Deno.test("rendezvous: RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from Slurm's", () => {
  const step = {
    SLURM_PROCID: "3",
    SLURM_LOCALID: "1",
    SLURM_STEP_NUM_TASKS: "4",
    SLURM_NTASKS: "8",
    SLURM_STEP_TASKS_PER_NODE: "1,3",
    SLURM_NODEID: "1",
    SLURM_STEP_NODELIST: "gpu[07-08]",
    SLURM_JOB_ID: "20000",
  };
  assert.deepEqual(rendezvousVariables(step), {
    RANK: "3",
    LOCAL_RANK: "1",
    WORLD_SIZE: "4",
    LOCAL_WORLD_SIZE: "3",
    MASTER_ADDR: "gpu07",
    MASTER_PORT: String(49152 + 20000 % 16384),
  });
  assert.deepEqual(rendezvousVariables({ SLURM_JOB_ID: "1" }), {}, "not in a step");
  assert.deepEqual(rendezvousVariables({ SLURM_PROCID: "-1" }), {});
  assert.deepEqual(rendezvousVariables({ SLURM_PROCID: "0", SLURM_STEP_NODELIST: "n[1-" }), { RANK: "0" });
  assert.deepEqual(expandTasksPerNode("2(x3),1"), [2, 2, 2, 1]);
  assert.equal(expandTasksPerNode("2(x99999999)"), undefined);
  assert.equal(expandTasksPerNode("x"), undefined);
});

Deno.test("MPI hint: a PMIx step with several ranks here and private namespaces names the settings needed", () => {
  const step = { PMIX_RANK: "0", SLURM_STEP_TASKS_PER_NODE: "2", SLURM_NODEID: "0" };
  assert.match(mpiNamespaceHint(step, settings())!, /2 MPI ranks .* network = host, ipc = host, pid = host/);
  assert.match(mpiNamespaceHint(step, settings({ network: "host" }))!, /for ipc = host, pid = host in/);
  assert.equal(mpiNamespaceHint(step, settings({ network: "host", ipc: "host", pid: "host" })), undefined);
  assert.equal(mpiNamespaceHint({ ...step, SLURM_STEP_TASKS_PER_NODE: "1,2" }, settings()), undefined);
  assert.equal(mpiNamespaceHint({ SLURM_STEP_TASKS_PER_NODE: "2", SLURM_MPI_TYPE: "pmi2" }, settings()), undefined);
  assert.ok(mpiNamespaceHint({ SLURM_STEP_TASKS_PER_NODE: "4", SLURM_MPI_TYPE: "pmix_v3" }, settings()));
});

const cgroup = (name: string) => fixture(`proc/${name}`);

Deno.test("the step's PMIx folder comes from slurm.conf and the cgroup, with %n and %h expanded", () => {
  const conf = parseSlurmConf(SLURM_CONF);
  const step = jobStepFromCgroup(cgroup("v1-srun-step.cgroup").replaceAll("slurm_vm", "slurm_n2"), 2001)!;
  assert.equal(slurmNodeName(step, conf, "vm"), "n2", "the cgroup root names the node");
  assert.equal(pmixFolder(step, conf, "n2", "vm"), "/var/spool/slurmd/n2/pmix.1.0");
  const plain = jobStepFromCgroup(cgroup("v1-plain-root-systemd.cgroup"), 2001)!;
  assert.equal(slurmNodeName(plain, conf, "gpu01.cluster"), "gpu01", "NodeName of this host");
  assert.equal(slurmNodeName(plain, conf, "vm"), "vm", "two nodes on this host: the host name");
  assert.equal(
    pmixFolder(plain, parseSlurmConf("SlurmdSpoolDir=/var/spool/%h/%n\n"), "gpu01", "gpu01.cluster"),
    "/var/spool/gpu01/gpu01/pmix.77.extern",
  );
  assert.equal(pmixFolder(plain, parseSlurmConf(""), "x", "x"), "/var/spool/slurmd/pmix.77.extern");
  assert.equal(pmixFolder(plain, parseSlurmConf("SlurmdSpoolDir=/var/spool/%x\n"), "x", "x"), undefined);
  assert.equal(pmixFolder(plain, parseSlurmConf("SlurmdSpoolDir=relative\n"), "x", "x"), undefined);
});

// planRun's rules on namespaces and the step's PMIx folder: one table row each, a refusal (a pattern of its
// one-line reason) or a check of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  // namespaces
  [
    "network = host with a fixed containerd",
    run(IMAGE, "id"),
    runFacts({
      settings: settingsFile("network = host\nipc = host\npid = host\nuts = host\n"),
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
      settings: settingsFile("network = host"),
      engineVersion: { Components: [{ Name: "containerd", Version: "1.4.2" }] },
    }),
    /CVE-2020-15257/,
  ],
  [
    "network = host with an unknown containerd is refused",
    run(IMAGE, "id"),
    runFacts({ settings: settingsFile("network = host"), engineVersion: {} }),
    /CVE-2020-15257/,
  ],
  ["the namespaces are private by default", run(IMAGE, "id"), runFacts(), (plan) => {
    assert.deepEqual([plan.network, plan.ipc, plan.pid, plan.uts], ["bridge", "private", "private", "private"]);
  }],
  // PMIx
  [
    "the step's PMIx folder, the caller's, is mounted at its own path",
    run(IMAGE, "id"),
    inJob({ probes: probeMap([["/home/alice", probe("/home/alice")], [pmixTmpDir, probe(pmixTmpDir)]]) }),
    (plan) => {
      assert.ok(plan.mounts.some((m) => m.source === pmixTmpDir && m.destination === pmixTmpDir && !m.readOnly));
    },
  ],
  [
    "a PMIx folder that is not the caller's is never mounted",
    run(IMAGE, "id"),
    inJob({ probes: probeMap([["/home/alice", probe("/home/alice")], [pmixTmpDir, probe(pmixTmpDir, { owner: 0 })]]) }),
    (plan) => {
      assert.ok(!plan.mounts.some((m) => m.source === pmixTmpDir));
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
]);
