// Unit tests of locks: the bounded wait for a lock.
import assert from "node:assert/strict";
import { lockWaitStep } from "../../socker.ts";

Deno.test("locks: a wait for a lock is taken, goes on, or gives up at its bound", () => {
  assert.equal(lockWaitStep(true, 0, 10_000_000, 300_000), "taken");
  assert.equal(lockWaitStep(false, 1000, 1000 + 299_999, 300_000), "wait");
  assert.equal(lockWaitStep(false, 1000, 1000 + 300_000, 300_000), "give up");
});
