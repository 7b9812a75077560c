// The container's environment: the caller's own variables asked for with -e, the administrator's env_set,
// env_deny and env_pass, and HOME, USER and LOGNAME always the caller's. Real engine, launcher and sudo.
import assert from "node:assert/strict";
import { assertRefused, IMAGE, sh, socker, withSettings } from "./helpers.ts";

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

// ---- attacks (older classes): the caller's environment never runs code as root

Deno.test("attack: a fake docker, sudo, env, deno or sh first in PATH is never run", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socker-evil-" });
  const ran = `${dir}/ran`;
  Deno.writeTextFileSync(`${dir}/docker`, `#!/bin/sh\ntouch ${ran}\nexit 0\n`, { mode: 0o755 });
  for (const name of ["id", "sudo", "env", "deno", "sh", "mount", "setpriv", "find", "scontrol", "squeue"]) {
    Deno.copyFileSync(`${dir}/docker`, `${dir}/${name}`);
  }
  Deno.chmodSync(dir, 0o755);
  try {
    const result = await socker("alice", ["run", IMAGE, "id", "-u"], {
      env: { PATH: `${dir}:/usr/local/bin:/usr/bin:/bin` },
    });
    assert.equal(result.stdout.trim(), "2001", result.stderr);
    assert.throws(() => Deno.statSync(ran));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("attack: DOCKER_*, HOME, proxies, LD_PRELOAD, DENO_* and NODE_* from the caller never run code as root", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socker-evil-" });
  Deno.chmodSync(dir, 0o777);
  const marker = `${dir}/ran-as-root`;
  const payload = `${dir}/payload.js`;
  Deno.writeTextFileSync(payload, `Deno.writeTextFileSync("${marker}", "pwned");\n`, { mode: 0o644 });
  Deno.writeTextFileSync(
    `${dir}/preload.c`,
    `#include <stdio.h>\n__attribute__((constructor)) static void pwn(void) { FILE *f = fopen("${marker}", "w"); if (f) fclose(f); }\n`,
  );
  assert.equal((await sh("/usr/bin/cc", ["-shared", "-fPIC", "-o", `${dir}/preload.so`, `${dir}/preload.c`])).code, 0);
  Deno.chmodSync(`${dir}/preload.so`, 0o755);
  try {
    const result = await socker("alice", ["run", IMAGE, "id", "-u"], {
      env: {
        DOCKER_HOST: "tcp://127.0.0.1:1",
        DOCKER_CONFIG: dir,
        DOCKER_CONTEXT: "evil",
        HOME: dir,
        HTTP_PROXY: "http://127.0.0.1:1",
        LD_PRELOAD: `${dir}/preload.so`,
        LD_LIBRARY_PATH: dir,
        DENO_DIR: dir,
        DENO_V8_FLAGS: "--allow-natives-syntax",
        DENO_INTERNAL_CHILD_ENTRYPOINT: payload,
        NODE_CHANNEL_FD: "3",
        NODE_OPTIONS: `--require ${payload}`,
        SOCKER_LIMITS: "Max open files 1 1 files",
      },
    });
    assert.equal(result.stdout.trim(), "2001", result.stderr);
    const info = await sh("/usr/bin/stat", ["-c", "%u", marker]);
    assert.ok(info.code !== 0 || info.stdout.trim() !== "0", "payload ran as root");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
