// The container's environment: the caller's own variables asked for with -e, the administrator's env_set,
// env_deny and env_pass, and HOME, USER and LOGNAME always the caller's. Real engine, launcher and sudo.
import assert from "node:assert/strict";
import { assertRefused, IMAGE, socker, withSettings } from "./helpers.ts";

Deno.test("env: variables arrive; HOME works in an image without the user in /etc/passwd", async () => {
  const result = await socker("alice", [
    "run",
    "-e",
    "FOO=bar baz",
    "-e",
    "FROM_CALLER",
    IMAGE,
    "sh",
    "-c",
    'echo "$FOO|$FROM_CALLER|$HOME|$USER|$LOGNAME"; cd && pwd; grep -c alice /etc/passwd',
  ], { env: { FROM_CALLER: "caller's value" } });
  assert.equal(result.stdout, "bar baz|caller's value|/home/alice|alice|alice\n/home/alice\n0\n", result.stderr);
});

Deno.test("env: with env_inherit = no only what is asked for passes; LD_* never, even by default", async () => {
  const env = { SECRET_TOKEN: "x", LD_PRELOAD: "/x.so", OMP_NUM_THREADS: "4" };
  await withSettings("env_inherit = no\n", async () => {
    const result = await socker("alice", ["run", IMAGE, "env"], { env });
    assert.equal(result.code, 0, result.stderr);
    for (const name of ["SECRET_TOKEN", "LD_PRELOAD", "OMP_NUM_THREADS"]) {
      assert.ok(!result.stdout.includes(`${name}=`), name);
    }
  });
  const inherited = await socker("alice", ["run", IMAGE, "env"], { env });
  assert.match(inherited.stdout, /^OMP_NUM_THREADS=4$/m);
  assert.ok(!inherited.stdout.includes("LD_PRELOAD="), inherited.stdout);
});

Deno.test("env: a bad name, env_deny and the caller's own names are refused; env_set wins", async () => {
  assertRefused(await socker("alice", ["run", "-e", "1BAD=x", IMAGE, "true"]), /not a variable name/);
  for (const spec of ["HOME=/tmp", "USER=root", "LOGNAME", "HOME"]) {
    assertRefused(await socker("alice", ["run", "-e", spec, IMAGE, "true"]), /is always yours in the container/);
  }
  await withSettings("env_deny = LD_PRELOAD\nenv_set = SITE=hpc\n", async () => {
    assertRefused(await socker("alice", ["run", "-e", "LD_PRELOAD=/x.so", IMAGE, "true"]), /never lets LD_PRELOAD/);
    const site = await socker("alice", ["run", "-e", "SITE=mine", IMAGE, "sh", "-c", "echo $SITE"]);
    assert.equal(site.stdout, "hpc\n");
  });
});

Deno.test("env: env_pass passes the administrator's patterns from the caller's environment, env_deny wins", async () => {
  const conf = "env_inherit = no\nenv_pass = OMP_* CUDA_VISIBLE_DEVICES PATH LD_*\nenv_deny = OMP_SECRET\n";
  await withSettings(conf, async () => {
    const result = await socker("alice", ["run", IMAGE, "env"], {
      env: { OMP_NUM_THREADS: "4", OMP_SECRET: "x", CUDA_VISIBLE_DEVICES: "0", LD_LIBRARY_PATH: "/evil", OTHER: "y" },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^OMP_NUM_THREADS=4$/m);
    assert.match(result.stdout, /^CUDA_VISIBLE_DEVICES=0$/m);
    for (const absent of ["OMP_SECRET=", "LD_LIBRARY_PATH=", "OTHER=", "PATH=/usr/local/bin"]) {
      assert.ok(!result.stdout.includes(absent), absent);
    }
  });
});

Deno.test("env: outside a job no SLURM variable of the caller passes by itself", async () => {
  const result = await socker("alice", ["run", IMAGE, "env"], { env: { SLURM_JOB_ID: "1", PMIX_RANK: "0" } });
  assert.ok(!/SLURM_|PMIX_/.test(result.stdout), result.stdout);
});
