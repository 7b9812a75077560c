// Locks a user could hold: the node's per-image pull lock is never held across the caller's terminal, so a
// caller who stops their terminal (Ctrl-S) while their run pulls holds up no one else's run of that image,
// nor root's `socker pull`. Real users in a real terminal (script(1)), a real registry on 127.0.0.1:5000.
import assert from "node:assert/strict";
import { asUser, asUserArgv, IMAGE, PRIVILEGED_SOCKER, sh, SOCKER, withAllowlist, withSettings } from "./helpers.ts";

const TAGGED = "127.0.0.1:5000/socker-test/pullme:1";

async function forgetPulled(): Promise<void> {
  const reset = await sh("/bin/bash", ["tests/setup-registry.sh"]);
  assert.equal(reset.code, 0, reset.stderr);
}

const seconds = (since: number) => (performance.now() - since) / 1000;

Deno.test("locks: a run that pulls into a stopped terminal (Ctrl-S) holds up neither another user's run nor root's pull", async () => {
  await forgetPulled();
  const restore = withAllowlist(`${IMAGE}\n${TAGGED}\n`);
  try {
    await withSettings("pull = missing\n", async () => {
      // bob's terminal: output stopped with Ctrl-S (IXON) before his run starts pulling; any write to it
      // blocks until Ctrl-Q (or until socker puts the terminal in raw mode for the container, after the pull).
      const env = { PATH: "/usr/local/bin:/usr/bin:/bin", TERM: "xterm", HOME: "/home/bob" };
      const bob = new Deno.Command("/usr/bin/setpriv", {
        args: asUserArgv("bob", env, [
          "/usr/bin/script",
          "-qec",
          `stty ixon; sleep 1.5; ${SOCKER} run ${TAGGED} echo bob-ran; echo "bob-rc=$?"`,
          "/dev/null",
        ]),
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        cwd: "/tmp",
      }).spawn();
      const keys = bob.stdin.getWriter();
      await new Promise((resolve) => setTimeout(resolve, 700));
      await keys.write(new Uint8Array([0x13])); // Ctrl-S
      // bob's socker is now pulling (its progress due to his stopped terminal).
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const started = performance.now();
      // Where the lock is held across bob's terminal (before the fix), his Ctrl-Q after 30 s is what lets
      // the others go on: the test then fails on the time they waited, rather than hanging.
      const unstick = setTimeout(() => keys.write(new Uint8Array([0x11])).catch(() => {}), 30_000);
      const [alice, root] = await Promise.all([
        asUser("alice", ["/usr/bin/timeout", "40", SOCKER, "run", TAGGED, "echo", "alice-ran"]),
        sh("/usr/bin/timeout", ["40", PRIVILEGED_SOCKER, "pull", TAGGED]),
      ]);
      const took = seconds(started);
      clearTimeout(unstick);
      console.log(`with bob's terminal stopped: alice's run and root's pull ended after ${took.toFixed(1)} s`);
      await keys.write(new Uint8Array([0x11])).catch(() => {}); // Ctrl-Q: bob's terminal goes on
      const bobEnd = await Promise.race([
        bob.output().then((output) => new TextDecoder().decode(output.stdout)),
        new Promise<string>((resolve) => setTimeout(() => resolve("timeout"), 30_000)),
      ]);
      await keys.close().catch(() => {});
      console.log(`bob's terminal: ${JSON.stringify(bobEnd)}`);
      assert.equal(alice.code, 0, alice.stderr);
      assert.match(alice.stdout, /alice-ran/);
      assert.equal(root.code, 0, root.stderr);
      assert.match(root.stdout, /present|pulled/);
      assert.ok(took < 15, `alice and root waited ${took.toFixed(1)} s`);
      assert.match(bobEnd, /bob-ran/);
      assert.match(bobEnd, /bob-rc=0/);
    });
  } finally {
    restore();
  }
});
