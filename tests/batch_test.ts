// Moving a working batch script into socker (issue 22, from pyxis's own tests translated to socker): the
// job's environment, /dev/shm sized for the job, PyTorch's rendezvous variables, the MPI hint, TERM, the
// image's own CMD and --entrypoint, relative -v and --tmpfs, the job's GPUs by default, and a missing -w.
// Each case checks what the user sees inside the container and what the audit file records. Real engine,
// launcher, sudo and Slurm (tests/setup.sh builds socker-test/batch:2: ENV IMAGE_VAR, a banner, a CMD).
import assert from "node:assert/strict";
import { assertRefused, auditRecords, BATCH_IMAGE, folder, IMAGE, marker, socker, withSettings } from "./helpers.ts";
import { HOME, jobOutput, jobTest, sbatch, waitJobEnd } from "./slurm.ts";

const batchTest = (name: string, body: () => Promise<void>) => jobTest("batch", name, body);

/** The job's output without slurmstepd's own complaints (the fake GPUs have no device files). */
const lines = (job: string) => jobOutput(job).split("\n").filter((line) => !line.startsWith("slurmstepd"));

batchTest(
  "export FOO=bar; srun socker run IMG sh -c 'echo $FOO' prints bar; the audit names FOO, never bar",
  async () => {
    const m = marker("inherit");
    const value = `bar-${crypto.randomUUID().slice(0, 8)}`;
    const job = await sbatch(
      `export FOO=${value} OMP_NUM_THREADS=3 LD_LIBRARY_PATH=/evil\n` +
        `srun -n1 socker run ${IMAGE} sh -c 'echo "FOO=$FOO OMP=$OMP_NUM_THREADS LD=$LD_LIBRARY_PATH PATH=$PATH" # ${m}'`,
    );
    await waitJobEnd(job);
    assert.deepEqual(lines(job), [`FOO=${value} OMP=3 LD= PATH=/bin`, ""], jobOutput(job));
    const [start] = await auditRecords(m);
    assert.ok(Array.isArray(start.env), JSON.stringify(start));
    const names = start.env as string[];
    for (const name of ["FOO", "OMP_NUM_THREADS", "SLURM_JOB_ID", "HOME"]) assert.ok(names.includes(name), name);
    for (const name of ["LD_LIBRARY_PATH", "PATH", "SUDO_USER"]) assert.ok(!names.includes(name), name);
    const text = await Deno.readTextFile("/var/log/socker/audit.log");
    assert.ok(!text.includes(value), "the value never reaches the audit file");
  },
);

batchTest("the image's own ENV wins over an exported variable, and -e wins over both", async () => {
  const show = `sh -c 'echo "IMAGE_VAR=$IMAGE_VAR"'`;
  const inherited = await socker("alice", ["run", "--entrypoint", "", BATCH_IMAGE, "sh", "-c", "echo $IMAGE_VAR"], {
    env: { IMAGE_VAR: "from-host" },
  });
  assert.equal(inherited.stdout, "from-image\n", inherited.stderr);
  const job = await sbatch(
    `export IMAGE_VAR=from-host\nsrun -n1 socker run --entrypoint '' ${BATCH_IMAGE} ${show}\n` +
      `srun -n1 socker run -e IMAGE_VAR=from-e --entrypoint '' ${BATCH_IMAGE} ${show}`,
  );
  await waitJobEnd(job);
  assert.deepEqual(lines(job), ["IMAGE_VAR=from-image", "IMAGE_VAR=from-e", ""], jobOutput(job));
});

batchTest(
  "env_inherit = no keeps only what is asked for; past the bounds a run is refused naming the bound",
  async () => {
    await withSettings("env_inherit = no\n", async () => {
      const result = await socker("alice", ["run", IMAGE, "sh", "-c", 'echo "[$FOO]"'], { env: { FOO: "bar" } });
      assert.equal(result.stdout, "[]\n", result.stderr);
    });
    // (A value over 128 KiB cannot even reach socker: the kernel's own bound per string is the same.)
    const big = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`BIG${i}`, "x".repeat(120_000)]));
    assertRefused(await socker("alice", ["run", IMAGE, "true"], { env: big }), /at most 1048576 bytes in all/);
    const many = Object.fromEntries(Array.from({ length: 1100 }, (_, i) => [`V${i}`, "1"]));
    assertRefused(await socker("alice", ["run", IMAGE, "true"], { env: many }), /bound of 1024 variables/);
  },
);

batchTest("TERM passes from the caller", async () => {
  const result = await socker("alice", ["run", IMAGE, "sh", "-c", 'echo "$TERM"'], { env: { TERM: "vt220" } });
  assert.equal(result.stdout, "vt220\n", result.stderr);
});

batchTest(
  "200 MB to /dev/shm works in a job with --mem=1G; the job's memory limit still kills an overfull one",
  async () => {
    const job = await sbatch(
      [
        `srun -n1 socker run ${IMAGE} sh -c 'df -m /dev/shm | tail -1 | awk "{print \\"shm_mb=\\" \\$2}"; ` +
        `head -c 200000000 /dev/zero >/dev/shm/x && echo wrote=$(stat -c %s /dev/shm/x)'; echo "rc=$?"`,
        // 600 MB in /dev/shm plus a 600 MB buffer exceed 1 GB: the job's limit holds (the buffer alone fits).
        `srun -n1 socker run ${IMAGE} sh -c 'dd if=/dev/zero of=/dev/null bs=600M count=1 2>/dev/null && echo alone=ok'`,
        `srun -n1 socker run ${IMAGE} sh -c 'head -c 500000000 /dev/zero >/dev/shm/x && ` +
        `dd if=/dev/zero of=/dev/null bs=600M count=1 2>/dev/null; echo "dd=$?"'; echo "rc=$?"`,
      ].join("\n"),
      ["--mem=1G", "-w", "n1"],
    );
    await waitJobEnd(job, 120_000);
    const output = jobOutput(job);
    assert.match(output, /^shm_mb=512$/m, output);
    assert.match(output, /^wrote=200000000$/m, output);
    assert.match(output, /^rc=0$/m, output);
    assert.match(output, /^alone=ok$/m, output);
    assert.match(output, /^dd=137$/m, "the buffer on top of /dev/shm's pages is killed by the job's limit");
  },
);

batchTest(
  "RANK, LOCAL_RANK and MASTER_ADDR are set in a 4-task step on two nodes, unless the caller set them",
  async () => {
    const show =
      `sh -c 'echo "r=$RANK lr=$LOCAL_RANK ws=$WORLD_SIZE lws=$LOCAL_WORLD_SIZE ma=$MASTER_ADDR mp=$MASTER_PORT"'`;
    const job = await sbatch(
      `srun -N2 -n4 --overcommit socker run ${IMAGE} ${show} | sort\nRANK=99 srun -N1 -n1 socker run ${IMAGE} ${show}`,
      ["-N2", "-n4", "--overcommit"],
    );
    await waitJobEnd(job, 120_000);
    const port = 49152 + Number(job) % 16384;
    const master = /^r=0 .* ma=(\S+)/m.exec(jobOutput(job))?.[1];
    assert.equal(master, "n1", jobOutput(job));
    assert.deepEqual(lines(job), [
      `r=0 lr=0 ws=4 lws=2 ma=n1 mp=${port}`,
      `r=1 lr=1 ws=4 lws=2 ma=n1 mp=${port}`,
      `r=2 lr=0 ws=4 lws=2 ma=n1 mp=${port}`,
      `r=3 lr=1 ws=4 lws=2 ma=n1 mp=${port}`,
      `r=99 lr=0 ws=1 lws=1 ma=n1 mp=${port}`,
      "",
    ], jobOutput(job));
  },
);

batchTest(
  "two PMIx ranks on one node with private namespaces get one hint naming the settings, sharing a container or not",
  async () => {
    for (const share of ["step", "none"]) {
      await withSettings(`share = ${share}\n`, async () => {
        const job = await sbatch(
          `srun --mpi=pmix -N1 -n2 --overcommit socker run ${IMAGE} true; echo "rc=$?"\n` +
            `srun --mpi=pmix -N1 -n1 socker run ${IMAGE} true`,
          ["-w", "n1", "-n2", "--overcommit"],
        );
        await waitJobEnd(job, 120_000);
        const hints = lines(job).filter((line) => line.includes("hint:"));
        assert.equal(hints.length, 2, jobOutput(job));
        for (const hint of hints) {
          assert.match(
            hint,
            /^socker: hint: 2 MPI ranks share this node .* network = host, ipc = host, pid = host in socker\.conf$/,
          );
        }
        assert.match(jobOutput(job), /^rc=0$/m);
      });
    }
  },
);

batchTest("socker run IMAGE with no command runs the image's CMD; --entrypoint '' drops the banner", async () => {
  const m = marker("cmd");
  const plain = await socker("alice", ["run", BATCH_IMAGE], { env: { MARK: m } });
  assert.equal(plain.stdout, "banner from the entrypoint\nthe image default command\n", plain.stderr);
  const bare = await socker("alice", ["run", "--entrypoint", "", BATCH_IMAGE, "echo", m]);
  assert.equal(bare.stdout, `${m}\n`, bare.stderr);
  const other = await socker("alice", ["run", "--entrypoint", "echo", BATCH_IMAGE, "via", "echo"]);
  assert.equal(other.stdout, "via echo\n", other.stderr);
  const [start] = await auditRecords(m);
  assert.deepEqual([start.command, start.entrypoint], [["echo", m], []]);
  assertRefused(await socker("alice", ["run", "--entrypoint", "", BATCH_IMAGE]), /has no CMD or ENTRYPOINT/);
});

batchTest(
  "-v ./data:/data mounts the folder here; a bare name is refused; --tmpfs gives a private bounded folder",
  async () => {
    folder(`${HOME}/reldata`, 2001, 2001, 0o755, "alice's");
    try {
      const m = marker("rel");
      const rel = await socker("alice", ["run", "-v", "./reldata:/data", IMAGE, "sh", "-c", `cat /data/whose # ${m}`]);
      assert.equal(rel.stdout, "alice's", rel.stderr);
      const [start] = await auditRecords(m);
      assert.deepEqual(start.mounts, [`${HOME}:${HOME}`, `${HOME}/reldata:/data`]);
      assertRefused(
        await socker("alice", ["run", "-v", "reldata:/data", IMAGE, "true"]),
        /named volume .* \.\/reldata/,
      );
    } finally {
      Deno.removeSync(`${HOME}/reldata`, { recursive: true });
    }
    const tmpfs = await socker("alice", [
      "run",
      "--tmpfs",
      "/scratch:size=10m",
      IMAGE,
      "sh",
      "-c",
      'stat -c "%a %U" /scratch; head -c 20000000 /dev/zero >/scratch/x; echo "rc=$?"; stat -c %s /scratch/x',
    ]);
    assert.equal(tmpfs.code, 0, tmpfs.stderr);
    const [mode, rc, size] = tmpfs.stdout.split("\n");
    assert.deepEqual([mode, rc], ["1777 root", "rc=1"], tmpfs.stdout);
    assert.ok(Number(size) > 9_000_000 && Number(size) <= 10 << 20, `filled to ${size} bytes of 10 MiB`);
    assert.match(tmpfs.stderr, /No space left on device|I\/O error/, "the write past size= fails");
    assertRefused(await socker("alice", ["run", "--tmpfs", "/scratch:exec", IMAGE, "true"]), /only size=N/);
    assertRefused(await socker("alice", ["run", "--tmpfs", "/home/alice/t", IMAGE, "true"]), /overlaps the mount/);
    assertRefused(await socker("alice", ["run", "--tmpfs", "/etc", IMAGE, "true"]), /forbidden destination/);
  },
);

batchTest("with default_gpus = yes a job that asked for a GPU gets it without --gpus; a job without none", async () => {
  await withSettings("default_gpus = yes\n", async () => {
    const list = `srun -n1 socker run ${IMAGE} sh -c 'ls /dev | grep nvidia | tr "\\n" " "; echo "rc=$?"'`;
    const withGpu = await sbatch(list, ["--gres=gpu:1", "-w", "n1"]);
    const without = await sbatch(list, ["-w", "n2"]);
    await waitJobEnd(withGpu);
    await waitJobEnd(without);
    assert.deepEqual(lines(withGpu), ["nvidia0 nvidiactl rc=0", ""], jobOutput(withGpu));
    assert.deepEqual(lines(without), ["rc=0", ""], jobOutput(without)); // no GPU: no control device either
  });
});

batchTest("-w to a folder that is in no mount and not in the image is refused: No such file or directory", async () => {
  const m = marker("wd");
  assertRefused(
    await socker("alice", ["run", "-w", `/nowhere-${m}`, IMAGE, "pwd"]),
    new RegExp(`-w /nowhere-${m}: No such file or directory in image`),
  );
  const [refused] = await auditRecords(m);
  assert.equal(refused.event, "refused");
  assert.match(String(refused.rule), /No such file or directory/);
  const existing = await socker("alice", ["run", "-w", "/tmp", IMAGE, "pwd"]);
  assert.equal(existing.stdout, "/tmp\n", existing.stderr);
  const inTmpfs = await socker("alice", ["run", "--tmpfs", "/scratch", "-w", "/scratch/new", IMAGE, "pwd"]);
  assert.equal(inTmpfs.stdout, "/scratch/new\n", inTmpfs.stderr);
});
