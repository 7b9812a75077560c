// Fuzz: random command lines go through the parser and the whole run plan (planRun, every rule socker has)
// into the container's specification; they are refused with a Refusal, or only validated values reach the
// engine. Deterministic, so that a failing vector can be reproduced.
import assert from "node:assert/strict";
import {
  BUILTIN_FORBIDDEN_DESTINATIONS,
  containerSpec,
  FORBIDDEN_WORKDIRS,
  isCleanAbsolute,
  isUnder,
  parseCommandLine,
  planRun,
  Refusal,
} from "../../socker.ts";
import { inJob, probe, probeMap, runFacts, SAFE_HOST_CONFIG } from "./facts.ts";

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const tokens = [
  "run",
  "images",
  "ps",
  "stop",
  "pull",
  "cleanup",
  "doctor",
  "-v",
  "--verbose",
  "-h",
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
  "--orphans",
  "--all",
  "--privileged",
  "--user=0",
  "-u",
  "0",
  "--network=host",
  "--pid=host",
  "-H",
  "tcp://x",
  "socker-test/busybox:2",
  "centos:7",
  "CentOS",
  "docker.io/library/centos:7",
  "a@sha256:" + "f".repeat(64),
  "/home/alice:/data",
  "/home/alice/work:/home/alice",
  "/etc:/etc",
  "/a:/b:ro",
  "/a:/b:z",
  "/:/host",
  "/home/alice/data:/x,source=/etc",
  "X=1",
  "HOME=/root",
  "USER",
  "LD_PRELOAD=/x.so",
  "1BAD=x",
  "/proc/self/fd/7",
  "/dev/fd/100",
  "/sys/x",
  "/tmp",
  "/home/alice/new",
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
  "--mount",
  "type=bind,source=/,target=/h",
];

const probes = probeMap([
  ["/home/alice", probe("/home/alice")],
  ["/home/alice/work", probe("/home/alice/work")],
  ["/home/alice/data", probe("/home/alice/data")],
  ["/etc", probe("/etc", { owner: 0 })],
  ["/a", probe("/a", { owner: 0 })],
  ["/", probe("/", { owner: 0 })],
]);

Deno.test("fuzz: 2000 random command lines are refused, or only validated values reach the engine", () => {
  const random = prng(20261201);
  let planned = 0;
  let refused = 0;
  for (let round = 0; round < 2000; round++) {
    const pick = () => tokens[Math.floor(random() * tokens.length)];
    const some = (most: number) => Array.from({ length: Math.floor(random() * most) }, pick);
    // Half fully random, half shaped like a run (options, an allowed image, a command) to reach the plan.
    const argv = round % 2 === 0
      ? some(8)
      : ["run", ...some(6), ["socker-test/busybox:2", "centos:7"][round % 2], "sh", ...some(4)];
    const facts = (round % 4 === 1 ? inJob : runFacts)({
      probes,
      callerEnv: { FOO: "1", SLURM_PROCID: "0", PATH: "/evil" },
    });
    try {
      const invocation = parseCommandLine(argv);
      if (invocation.command !== "run") continue;
      const plan = planRun(invocation, facts);
      const spec = containerSpec(
        plan,
        plan.mounts.map((m, i) =>
          plan.mountRoutes[i] === "inside"
            ? undefined
            : plan.mountRoutes[i] === "staged"
            ? `/run/socker/${plan.staging}/${i}`
            : m.source
        ),
      ) as {
        Image: string;
        Cmd: string[];
        User: string;
        Env: string[];
        WorkingDir: string;
        HostConfig: Record<string, unknown> & { Mounts: { Source: string; Target: string }[] };
      };
      planned++;
      const context = JSON.stringify(argv);
      assert.ok(["docker.io/socker-test/busybox:2", "docker.io/library/centos:7"].includes(spec.Image), context);
      assert.deepEqual(spec.Cmd, invocation.argv, context);
      assert.equal(spec.User, "2001:2001", context);
      for (const [key, value] of Object.entries(SAFE_HOST_CONFIG)) {
        assert.deepEqual(spec.HostConfig[key], value, `${context} ${key}`);
      }
      assert.deepEqual([spec.HostConfig.NetworkMode, spec.HostConfig.PidMode, spec.HostConfig.IpcMode], [
        "bridge",
        "",
        "private",
      ], context);
      assert.ok(
        spec.WorkingDir === "" ||
          (isCleanAbsolute(spec.WorkingDir) && !FORBIDDEN_WORKDIRS.some((f) => isUnder(spec.WorkingDir, f))),
        context,
      );
      for (const mount of spec.HostConfig.Mounts) {
        assert.ok(
          isCleanAbsolute(mount.Target) && !BUILTIN_FORBIDDEN_DESTINATIONS.some((f) => isUnder(mount.Target, f)),
          `${context} ${mount.Target}`,
        );
        assert.ok(
          mount.Source.startsWith("/home/alice") || mount.Source.startsWith("/run/socker/"),
          `${context} ${mount.Source}`,
        );
      }
      const env = new Map(spec.Env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
      assert.deepEqual(
        [env.get("HOME"), env.get("USER"), env.get("LOGNAME")],
        ["/home/alice", "alice", "alice"],
        context,
      );
      assert.ok(!env.has("PATH") || invocation.options.env.some((e) => e.startsWith("PATH")), context);
      for (const name of env.keys()) assert.match(name, /^[A-Za-z_][A-Za-z0-9_]*$/, context);
      assert.ok(!JSON.stringify(spec.HostConfig).includes('privileged":true'), context);
    } catch (error) {
      assert.ok(error instanceof Refusal, `${JSON.stringify(argv)} threw ${error}`);
      assert.ok(!error.reason.includes("\n"), `one line: ${error.reason}`);
      refused++;
    }
  }
  assert.ok(planned > 100, `only ${planned} vectors reached the container's specification`);
  assert.ok(refused > 500, `only ${refused} vectors were refused`);
});
