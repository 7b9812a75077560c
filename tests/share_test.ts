// Integration tests of step containers: the tasks of one Slurm step on one node share one container (the
// first creates it, every task runs its command in it through the engine's exec API, the last removes it).
// Real Slurm (n1, n2), real engine, real sudo, alice and bob.
import assert from "node:assert/strict";
import { asUser, auditRecords, DOCKER, IMAGE, marker, MPI_IMAGE, sh, waitFor, withSettings } from "./helpers.ts";
import { jobTest, USER } from "./slurm.ts";

const shareTest = (name: string, body: () => Promise<void>) => jobTest("share", name, body);

/** Runs a bash line as alice inside `salloc ARGS` (the line's sruns are steps of that allocation). */
function allocation(args: string[], line: string, user = USER) {
  return asUser(user, ["/usr/bin/salloc", "--quiet", ...args, "/bin/bash", "-c", line]);
}

/** socker's step containers of a user on this host, as the engine lists them now. */
async function stepContainers(user = USER): Promise<string[]> {
  const result = await sh(DOCKER, [
    "ps",
    "-a",
    "--filter",
    `label=socker.user=${user}`,
    "--filter",
    "label=socker.share",
    "--format",
    "{{.Names}}",
  ]);
  return result.stdout.split("\n").filter((line) => line !== "");
}

/** Runs `work` while counting the user's step containers; returns its result and the most seen at once. */
async function counting<T>(work: Promise<T>, user = USER): Promise<{ result: T; most: number }> {
  let done = false;
  let most = 0;
  const watch = (async () => {
    while (!done) {
      most = Math.max(most, (await stepContainers(user)).length);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  const result = await work.finally(() => done = true);
  await watch;
  return { result, most };
}

/** Waits until each of the first `ranks` ranks has made its file `${started}.<rank>`. */
async function everyRankStarted(started: string, ranks: number): Promise<void> {
  const exists = (name: string) => Deno.stat(name).then(() => true, () => false);
  const ready = await waitFor(
    async () =>
      (await Promise.all([...Array(ranks).keys()].map((rank) => exists(`${started}.${rank}`)))).every(Boolean),
    30_000,
    100,
  );
  assert.ok(ready >= 0, "every rank started");
}

/** Lines `KEY value...` of an output, by key. */
const linesOf = (output: string, key: string) => output.split("\n").filter((line) => line.startsWith(`${key} `));

shareTest("16 ranks on two nodes: each its own rank and ids, as alice, one container per node", async () => {
  const tag = marker("ranks");
  const { result, most } = await counting(allocation(
    ["-N2", "-n16", "--overcommit"],
    `srun socker run ${IMAGE} sh -c 'echo rank $SLURM_PROCID $SLURM_LOCALID $SLURMD_NODENAME $(id -u) ` +
      `$(id -G | tr " " ,) $(hostname) ${tag}; sleep 2'`,
  ));
  assert.equal(result.code, 0, result.stderr);
  const ranks = linesOf(result.stdout, "rank").map((line) => line.split(" "));
  assert.equal(ranks.length, 16, result.stdout);
  assert.deepEqual(ranks.map((r) => Number(r[1])).sort((a, b) => a - b), [...Array(16).keys()]);
  const groups = (await sh("/usr/bin/id", ["-G", USER])).stdout.trim().split(" ").sort().join(",");
  for (const node of ["n1", "n2"]) {
    const here = ranks.filter((r) => r[3] === node);
    assert.deepEqual(here.map((r) => Number(r[2])).sort((a, b) => a - b), [...Array(here.length).keys()]);
    assert.equal(new Set(here.map((r) => r[6])).size, 1, `one container on ${node}: ${result.stdout}`);
  }
  for (const r of ranks) {
    assert.equal(r[4], "2001");
    assert.equal(r[5].split(",").sort().join(","), groups);
  }
  assert.equal(new Set(ranks.map((r) => r[6])).size, 2);
  assert.equal(most, 2, "the engine held one step container per node");
  const records = await auditRecords(tag, 32);
  const starts = records.filter((r) => r.event === "start");
  assert.equal(starts.filter((r) => r.share === "created").length, 2);
  assert.equal(starts.filter((r) => r.share === "joined").length, 14);
  assert.deepEqual(await stepContainers(), []);
});

shareTest("one rank's exit 9 fails the step with 9; a rank killed by a signal gives 128+N", async () => {
  const failed = await allocation(
    ["-N2", "-n8", "--overcommit"],
    `srun socker run ${IMAGE} sh -c '[ $SLURM_PROCID = 5 ] && exit 9; echo ok $SLURM_PROCID'`,
  );
  assert.equal(failed.code, 9, failed.stderr);
  assert.match(failed.stderr, /task 5: Exited with exit code 9/);
  assert.equal(linesOf(failed.stdout, "ok").length, 7);
  const killed = await allocation(
    ["-N2", "-n4", "--overcommit"],
    `srun -K0 sh -c 'socker run ${IMAGE} sh -c "[ \\$SLURM_PROCID = 2 ] && kill -USR1 \\$\\$; echo ok"; ` +
      `echo code $SLURM_PROCID $?'`,
  );
  const codes = linesOf(killed.stdout, "code").map((line) => line.split(" ").slice(1).join(" ")).sort();
  assert.deepEqual(codes, ["0 0", "1 0", "2 138", "3 0"], killed.stdout + killed.stderr);
});

shareTest("SIGTERM to one task's socker ends that rank only; the others finish", async () => {
  const started = `/home/${USER}/share-started-${marker()}`;
  const run = allocation(
    ["-N2", "-n4", "--overcommit"],
    `srun -K0 sh -c 'socker run ${IMAGE} sh -c "touch ${started}.\\$SLURM_PROCID; sleep 4; echo done" & ` +
      `echo $! > ${started}.pid.$SLURM_PROCID; wait $!; echo code $SLURM_PROCID $?'`,
  );
  await everyRankStarted(started, 4);
  const pid = Number(Deno.readTextFileSync(`${started}.pid.1`).trim());
  await sh("/bin/kill", ["-TERM", String(pid)]);
  const result = await run;
  const codes = linesOf(result.stdout, "code").map((line) => line.split(" ").slice(1).join(" ")).sort();
  assert.deepEqual(codes, ["0 0", "1 143", "2 0", "3 0"], result.stdout + result.stderr);
  assert.equal(result.stdout.split("\n").filter((line) => line === "done").length, 3);
  await sh("/bin/sh", ["-c", `rm -f ${started}.*`]);
});

shareTest("kill -9 of one task's socker: its process is ended with the container, nothing is left", async () => {
  const started = `/home/${USER}/share-killed-${marker()}`;
  const run = allocation(
    ["-N1", "-n4", "--overcommit"],
    `srun -K0 sh -c 'socker run ${IMAGE} sh -c "touch ${started}.\\$SLURM_PROCID; sleep 6" & ` +
      `echo $! > ${started}.pid.$SLURM_PROCID; wait $!; echo code $SLURM_PROCID $?'`,
  );
  await everyRankStarted(started, 4);
  const sudo = Deno.readTextFileSync(`${started}.pid.1`).trim();
  const child = await sh("/usr/bin/pgrep", ["-P", sudo]);
  assert.equal(child.code, 0, "socker runs under sudo");
  await sh("/bin/kill", ["-KILL", child.stdout.trim().split("\n")[0]]);
  const result = await run;
  const codes = linesOf(result.stdout, "code").map((line) => line.split(" ").slice(1).join(" ")).sort();
  assert.deepEqual(codes, ["0 0", "1 137", "2 0", "3 0"], result.stdout + result.stderr);
  const clean = await waitFor(
    async () => {
      const procs = await sh("/usr/bin/pgrep", ["-u", USER, "-f", "^sleep 6$"]);
      return procs.code !== 0 && (await stepContainers()).length === 0;
    },
    10_000,
    100,
  );
  assert.ok(clean >= 0, `left: ${await stepContainers()}`);
  assert.deepEqual(Array.from(Deno.readDirSync("/run/socker-share")).map((e) => e.name), []);
  await sh("/bin/sh", ["-c", `rm -f ${started}.*`]);
});

for (const pid of ["private", "host"] as const) {
  shareTest(`scancel of a 16-rank step leaves no container and no process on either node (pid = ${pid})`, async () => {
    const tag = marker("cancel");
    await withSettings(pid === "host" ? "pid = host\n" : "", async () => {
      const run = allocation(
        ["-N2", "-n16", "--overcommit", `--job-name=${tag}`],
        `srun socker run ${IMAGE} sh -c 'sleep 300; echo ${tag}'`,
      );
      const up = await waitFor(
        async () => {
          const procs = await sh("/usr/bin/pgrep", ["-u", USER, "-c", "-f", "^sleep 300$"]);
          return Number(procs.stdout.trim()) === 16;
        },
        60_000,
        200,
      );
      assert.ok(up >= 0, "16 ranks running");
      assert.equal((await stepContainers()).length, 2);
      await sh("/usr/bin/scancel", ["--name", tag]);
      const clean = await waitFor(
        async () => {
          const procs = await sh("/usr/bin/pgrep", ["-u", USER, "-f", "^sleep 300$"]);
          return procs.code !== 0 && (await stepContainers()).length === 0;
        },
        5_000 + 5_000,
        100,
      );
      await run;
      assert.ok(clean >= 0, `left: ${await stepContainers()}`);
    });
  });
}

shareTest("two steps at once never share; two images in one step get two containers", async () => {
  const steps = await allocation(
    ["-N1", "-n4", "--overcommit"],
    `srun -n2 --overlap socker run ${IMAGE} sh -c 'echo host a $(hostname); sleep 2' & ` +
      `srun -n2 --overlap socker run ${IMAGE} sh -c 'echo host b $(hostname); sleep 2'; wait`,
  );
  assert.equal(steps.code, 0, steps.stderr);
  const hosts = linesOf(steps.stdout, "host");
  assert.equal(hosts.length, 4, steps.stdout);
  const byStep = (step: string) => new Set(hosts.filter((l) => l.includes(` ${step} `)).map((l) => l.split(" ")[2]));
  assert.equal(byStep("a").size, 1);
  assert.equal(byStep("b").size, 1);
  assert.notDeepEqual([...byStep("a")], [...byStep("b")]);
  const images = await allocation(
    ["-N1", "-n4", "--overcommit"],
    `srun sh -c 'img=${IMAGE}; [ $((SLURM_PROCID % 2)) = 0 ] || img=${MPI_IMAGE}; ` +
      `socker run $img sh -c "echo host \\$(hostname) $img; sleep 2"'`,
  );
  assert.equal(images.code, 0, images.stderr);
  const seen = linesOf(images.stdout, "host");
  assert.equal(seen.length, 4, images.stdout);
  assert.equal(new Set(seen.map((line) => line.split(" ")[1])).size, 2);
  for (const line of seen) {
    const sameHost = seen.filter((other) => other.split(" ")[1] === line.split(" ")[1]);
    assert.ok(sameHost.every((other) => other.split(" ")[2] === line.split(" ")[2]), images.stdout);
  }
});

shareTest("alice's and bob's steps never share, and forged Slurm variables change nothing", async () => {
  const [alice, bob] = await Promise.all(
    ["alice", "bob"].map((user) =>
      allocation(
        ["-N1", "-n2", "--overcommit"],
        `srun socker run ${IMAGE} sh -c 'echo host $(hostname) $(id -un 2>/dev/null || id -u); sleep 1'`,
        user,
      )
    ),
  );
  assert.equal(alice.code, 0, alice.stderr);
  assert.equal(bob.code, 0, bob.stderr);
  const hostsOf = (output: string) => new Set(linesOf(output, "host").map((line) => line.split(" ")[1]));
  assert.equal(hostsOf(alice.stdout).size, 1);
  assert.equal(hostsOf(bob.stdout).size, 1);
  assert.notDeepEqual([...hostsOf(alice.stdout)], [...hostsOf(bob.stdout)]);
  const forged = await allocation(
    ["-N1", "-n4", "--overcommit"],
    `srun sh -c 'SLURM_STEP_ID=$((SLURM_PROCID + 7)) SLURM_JOB_ID=$((SLURM_PROCID + 1)) SLURM_LOCALID=0 ` +
      `SLURM_STEP_TASKS_PER_NODE=4 socker run ${IMAGE} sh -c "echo host \\$(hostname) \\$SLURM_LOCALID; sleep 2"'`,
  );
  assert.equal(forged.code, 0, forged.stderr);
  assert.equal(hostsOf(forged.stdout).size, 1, forged.stdout);
});

shareTest("a task that comes after the container was removed starts a fresh one", async () => {
  const result = await allocation(
    ["-N1", "-n2", "--overcommit"],
    `srun sh -c '[ $SLURM_PROCID = 1 ] && sleep 5; socker run ${IMAGE} sh -c "echo host \\$(hostname)"'`,
  );
  assert.equal(result.code, 0, result.stderr);
  const hosts = linesOf(result.stdout, "host");
  assert.equal(hosts.length, 2, result.stdout);
  assert.notEqual(hosts[0], hosts[1]);
});

shareTest("stdin goes to rank 0 only (--input=0); every rank's 1 MiB of output arrives intact", async () => {
  const input = await asUser(USER, [
    "/usr/bin/salloc",
    "--quiet",
    "-N1",
    "-n4",
    "--overcommit",
    "/usr/bin/srun",
    "--input=0",
    "socker",
    "run",
    IMAGE,
    "sh",
    "-c",
    'echo "in $SLURM_PROCID $(cat | wc -c)"',
  ], { stdin: "hello rank zero\n" });
  assert.equal(input.code, 0, input.stderr);
  assert.deepEqual(linesOf(input.stdout, "in").sort(), ["in 0 16", "in 1 0", "in 2 0", "in 3 0"]);
  const folder = `/home/${USER}/share-out-${marker()}`;
  await asUser(USER, ["/bin/mkdir", folder]);
  const big = await allocation(
    ["-N2", "-n8", "--overcommit"],
    `srun --output=${folder}/%t socker run ${IMAGE} sh -c 'head -c 1048576 /dev/zero | tr "\\\\0" "$SLURM_PROCID"'`,
  );
  assert.equal(big.code, 0, big.stderr);
  for (let rank = 0; rank < 8; rank++) {
    const bytes = Deno.readFileSync(`${folder}/${rank}`);
    assert.equal(bytes.length, 1 << 20);
    assert.ok(bytes.every((b) => b === 48 + rank), `rank ${rank}'s output is its own`);
  }
  await sh("/bin/rm", ["-rf", folder]);
});

shareTest("srun --pty: the rank with the terminal sees one; sharing can be turned off (share = none)", async () => {
  const pty = await sh("/usr/bin/setpriv", [
    "--reuid=alice",
    "--regid=alice",
    "--init-groups",
    "/usr/bin/script",
    "-qec",
    `cd; salloc --quiet -N1 -n2 --overcommit srun --pty -n1 socker run ${IMAGE} sh -c 'tty; echo rows $(stty size)'`,
    "/dev/null",
  ], { env: { PATH: "/usr/local/bin:/usr/bin:/bin", TERM: "xterm", HOME: "/home/alice" } });
  assert.equal(pty.code, 0, pty.stderr + pty.stdout);
  assert.match(pty.stdout, /\/dev\/pts\/\d+/);
  await withSettings("share = none\n", async () => {
    const { result, most } = await counting(allocation(
      ["-N1", "-n4", "--overcommit"],
      `srun socker run ${IMAGE} sh -c 'echo host $(hostname); sleep 1'`,
    ));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(new Set(linesOf(result.stdout, "host")).size, 4);
    assert.equal(most, 0, "no step container");
  });
});
