// MPI across nodes through socker: `srun --mpi=pmix` steps whose ranks each run in a container, as ordinary
// tasks of the job (the step's Slurm and PMIx variables, its PMIx folder, the node's network, shared memory
// and process ids as the site allows). Real Slurm (two nodes), real OpenMPI in a locally built image
// (tests/setup-mpi.sh: socker-test/openmpi:1, programs in /opt/socker-tests/mpi).
import assert from "node:assert/strict";
import { IMAGE, MPI_IMAGE, SETTINGS, waitFor } from "./helpers.ts";
import {
  cancelSubmitted,
  jobCgroupFolders,
  jobContainers,
  jobOutput,
  jobTest,
  sbatch,
  waitJobEnd,
  waitJobRuns,
} from "./slurm.ts";

const PROGRAMS = "/opt/socker-tests/mpi";
/** What a site sets for MPI (README, "MPI and multi-node jobs"). */
const MPI_SETTINGS = `network = host
ipc = host
pid = host
env_set = OMPI_MCA_btl_tcp_if_exclude=127.0.0.1/8,docker0
env_set = OMPI_MCA_btl_vader_single_copy_mechanism=none
`;

const mpiTest = (name: string, body: () => Promise<void>) =>
  jobTest("mpi", name, body, {
    before: () => Deno.writeTextFileSync(SETTINGS, MPI_SETTINGS, { mode: 0o644 }),
    after: () => Deno.removeSync(SETTINGS),
  });

/** The `hello` lines of a job's output, by rank. */
function hellos(output: string): Record<string, string>[] {
  return output.split("\n").filter((line) => line.startsWith("hello ")).map((line) =>
    Object.fromEntries(line.slice(6).split(" ").map((field) => field.split("=")))
  ).sort((a, b) => Number(a.rank) - Number(b.rank));
}

mpiTest("srun --mpi=pmix -N2 -n2: one world across two nodes, with no socker option", async () => {
  const job = await sbatch(`srun --mpi=pmix -N2 -n2 socker run ${MPI_IMAGE} ${PROGRAMS}/hello; echo "rc=$?"`, [
    "-N2",
    "-n2",
  ]);
  await waitJobEnd(job);
  const output = jobOutput(job);
  const ranks = hellos(output);
  assert.deepEqual(ranks.map((r) => [r.rank, r.size, r.node, r.sum, r.want]), [["0", "2", "n1", "1", "1"], [
    "1",
    "2",
    "n2",
    "1",
    "1",
  ]], output);
  assert.match(output, /^rc=0$/m);
  assert.doesNotMatch(output, /PMIX ERROR|OPAL ERROR/, "the step's PMIx folder was there");
});

mpiTest("a 1 MiB message crosses the nodes byte for byte; latency and bandwidth are measured", async () => {
  const job = await sbatch(`srun --mpi=pmix -N2 -n2 socker run ${MPI_IMAGE} ${PROGRAMS}/pingpong 200; echo "rc=$?"`, [
    "-N2",
    "-n2",
  ]);
  await waitJobEnd(job, 120_000);
  const output = jobOutput(job);
  assert.match(
    output,
    /^pingpong ranks=2 nodes=n1,n2 iters=200 lat_8B_us=[\d.]+ bw_1MiB_MBps=[\d.]+ check_1MiB=ok$/m,
    output,
  );
  assert.match(output, /^rc=0$/m);
});

mpiTest("two ranks on one node share memory and process ids: one world, 1 MiB checked", async () => {
  const job = await sbatch(
    `srun --mpi=pmix -N1 -n2 --overcommit socker run ${MPI_IMAGE} ${PROGRAMS}/hello\n` +
      `OMPI_MCA_mpi_yield_when_idle=1 srun --mpi=pmix -N1 -n2 --overcommit socker run -e OMPI_MCA_mpi_yield_when_idle ${MPI_IMAGE} ${PROGRAMS}/pingpong 50; echo "rc=$?"`,
    ["-w", "n1", "-n2", "--overcommit"],
  );
  await waitJobEnd(job, 120_000);
  const output = jobOutput(job);
  assert.deepEqual(hellos(output).map((r) => [r.rank, r.size, r.node]), [["0", "2", "n1"], ["1", "2", "n1"]], output);
  assert.match(output, /^pingpong ranks=2 nodes=n1,n1 .* check_1MiB=ok$/m, output);
  assert.match(output, /^rc=0$/m);
});

mpiTest("a forged PMIX_SERVER_TMPDIR pointing at another user's or root's folder is never mounted", async () => {
  const job = await sbatch(
    [
      `PMIX_SERVER_TMPDIR=/home/bob srun --mpi=pmix -n1 socker -v run ${IMAGE} true 2>&1 | grep -o '"Mounts":[^]]*]'`,
      `srun --mpi=pmix -n1 env PMIX_SERVER_TMPDIR=/root socker -v run ${IMAGE} true 2>&1 | grep -o '"Mounts":[^]]*]'`,
    ].join("\n"),
  );
  await waitJobEnd(job);
  const mounts = jobOutput(job).split("\n").filter((line) => line.startsWith('"Mounts"'));
  assert.equal(mounts.length, 2, jobOutput(job));
  for (const line of mounts) {
    assert.doesNotMatch(line, /\/home\/bob|"\/root/, line);
    assert.match(
      line,
      new RegExp(`"Target":"/var/spool/slurmd/n\\d/pmix\\.${job}\\.\\d"`),
      "the step's own PMIx folder is",
    );
  }
});

mpiTest("a PMI2 step gets a one-line hint to use --mpi=pmix, and runs", async () => {
  const job = await sbatch(`srun --mpi=pmi2 -n1 socker run ${IMAGE} echo ran; echo "rc=$?"`);
  await waitJobEnd(job);
  assert.match(
    jobOutput(job),
    /socker: hint: this step has no PMIx server; for MPI inside containers start it with srun --mpi=pmix/,
  );
  assert.match(jobOutput(job), /^ran$/m);
});

mpiTest("scancel of a running two-node MPI job leaves no container and no cgroup folder on either node", async () => {
  const job = await sbatch(`srun --mpi=pmix -N2 -n2 socker run ${MPI_IMAGE} sleep 1000`, ["-N2", "-n2"]);
  await waitJobRuns(job);
  assert.ok(await waitFor(async () => (await jobContainers(job)).length === 2, 30_000) >= 0, "two containers");
  await cancelSubmitted();
  await waitJobEnd(job);
  assert.deepEqual(await jobContainers(job), []);
  assert.deepEqual(await jobCgroupFolders(job), []);
});
