// Unit tests of signals and exit codes: what each signal to socker does to the container, and the exit code
// socker gives back.
import assert from "node:assert/strict";
import { exitCodeFor, isSignalRepeat, signalAction } from "../../socker.ts";

Deno.test("signals: TERM/INT/HUP end the container, USR1/USR2/QUIT are passed on once", () => {
  assert.deepEqual(signalAction("SIGTERM"), { kind: "terminate", number: 15 });
  assert.deepEqual(signalAction("SIGINT"), { kind: "terminate", number: 2 });
  assert.deepEqual(signalAction("SIGHUP"), { kind: "terminate", number: 1 });
  assert.deepEqual(signalAction("SIGUSR1"), { kind: "forward", number: 10 });
  assert.deepEqual(signalAction("SIGQUIT"), { kind: "forward", number: 3 });
  assert.equal(signalAction("SIGTSTP"), undefined);
  assert.equal(isSignalRepeat(undefined, 5), false);
  assert.equal(isSignalRepeat(1000, 1050), true);
  assert.equal(isSignalRepeat(1000, 1100), false);
});

Deno.test("exit codes: the container's, or 128+N after socker was told to stop by signal N", () => {
  assert.equal(exitCodeFor(3, undefined), 3);
  assert.equal(exitCodeFor(137, undefined), 137);
  assert.equal(exitCodeFor(137, 15), 143);
  assert.equal(exitCodeFor(0, 2), 130);
});
