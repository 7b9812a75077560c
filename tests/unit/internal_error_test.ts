// Unit tests of the one convention for "no, because": a failure to read the system becomes a refusal for
// the decide phase to judge; a bug in socker (a TypeError, a RangeError, a failed assertion...) is thrown
// on, to be reported as "socker: internal error: ..." with its stack in the audit record, never blamed on
// the installation.
import assert from "node:assert/strict";
import { AssertionError } from "node:assert";
import {
  attempt,
  attemptSweep,
  internalErrorLine,
  internalErrorRule,
  isBug,
  main,
  type NotText,
  Refusal,
} from "../../socker.ts";

const bugs: [string, () => Error][] = [
  ["a TypeError", () => new TypeError("Cannot read properties of undefined (reading 'Id')")],
  ["a RangeError", () => new RangeError("Invalid array length")],
  ["a ReferenceError", () => new ReferenceError("x is not defined")],
  ["a failed assertion", () => new AssertionError({ message: "expected a number" })],
];

const faults: [string, () => unknown][] = [
  ["a file that is not there", () => new Deno.errors.NotFound("No such file or directory (os error 2)")],
  ["no permission", () => new Deno.errors.PermissionDenied("Permission denied (os error 13)")],
  ["an engine that is down", () => new Deno.errors.ConnectionRefused("Connection refused (os error 111)")],
  ["a malformed answer", () => new SyntaxError("Unexpected token < in JSON at position 0")],
  ["socker's own Error", () => new Error("cannot look at /etc/socker: Permission denied")],
  ["a refusal", () => new Refusal("engine", "the Docker engine is not reachable")],
  ["something thrown that is not an Error", () => "a string"],
];

Deno.test("isBug: JavaScript's own errors and failed assertions are bugs; what the system said is not", () => {
  for (const [name, make] of bugs) assert.equal(isBug(make()), true, name);
  for (const [name, make] of faults) assert.equal(isBug(make()), false, name);
});

Deno.test("attempt: a fault becomes a refusal, a bug is thrown on", async () => {
  for (const [name, make] of faults) {
    const result = await attempt(() => {
      throw make();
    });
    assert.ok(result instanceof Refusal, name);
  }
  const kept = await attempt(() => {
    throw new Refusal("engine", "down");
  });
  assert.ok(kept instanceof Refusal && kept.kind === "engine" && kept.reason === "down");
  const fault = await attempt(() => Promise.reject(new Deno.errors.NotFound("gone")));
  assert.ok(fault instanceof Refusal && fault.kind === "installation" && fault.reason === "gone");
  for (const [name, make] of bugs) {
    const bug = make();
    await assert.rejects(attempt(() => Promise.reject(bug)), (thrown) => thrown === bug, name);
    await assert.rejects(
      attempt(() => {
        throw bug;
      }),
      (thrown) => thrown === bug,
      name,
    );
  }
  assert.equal(await attempt(() => 42), 42);
});

Deno.test("a bug is one line for the caller and its stack, on one line, for the audit record", () => {
  for (const [name, make] of bugs) {
    const bug = make();
    const line = internalErrorLine(bug);
    assert.ok(line.startsWith("socker: internal error: "), name);
    assert.ok(!line.includes("\n"), name);
    assert.ok(!line.includes("installation"), name);
    const rule = internalErrorRule(bug);
    assert.ok(rule.startsWith(`internal error: ${bug.name}`), `${name}: ${rule}`);
    assert.ok(!rule.includes("\n"), name);
    assert.ok(rule.includes("internal_error_test.ts"), `${name}: the stack says where`);
  }
  const deep = new TypeError("deep");
  deep.stack = `TypeError: deep\n${"    at somewhere (file:///socker.ts:1:1)\n".repeat(1000)}`;
  assert.ok(internalErrorRule(deep).length <= 4003, "bounded");
  assert.equal(internalErrorRule("thrown text"), "internal error: thrown text");
});

/** Runs main as a caller who is not root (nothing is written to the audit log), with stderr captured. */
async function mainAsUser(args: string[], exact?: (string | NotText)[]): Promise<{ code: number; stderr: string[] }> {
  const uid = Object.getOwnPropertyDescriptor(Deno, "uid")!;
  const error = console.error;
  const stderr: string[] = [];
  Object.defineProperty(Deno, "uid", { ...uid, value: () => 1000 });
  console.error = (...parts: unknown[]) => stderr.push(parts.join(" "));
  try {
    return { code: await main(args, exact), stderr };
  } finally {
    console.error = error;
    Object.defineProperty(Deno, "uid", uid);
  }
}

Deno.test("main: a bug is exit 125 and one 'internal error' line; a refusal is still a refusal", async () => {
  // An argument that claims not to be text but holds no bytes: showBytes meets a TypeError, a bug.
  const bug = await mainAsUser(["version"], [{ notText: undefined as unknown as Uint8Array }]);
  assert.equal(bug.code, 125);
  assert.equal(bug.stderr.length, 1);
  assert.match(bug.stderr[0], /^socker: internal error: \S/);
  assert.ok(!bug.stderr[0].includes("\n"));
  assert.ok(!bug.stderr[0].includes("administrator"), "never blamed on the installation");
  const refused = await mainAsUser(["--no-such-option"]);
  assert.equal(refused.code, 125);
  assert.equal(refused.stderr.length, 1);
  assert.ok(refused.stderr[0].startsWith("socker: ") && !refused.stderr[0].includes("internal error"));
});

Deno.test("attemptSweep: cleanup's sweeps go on after a bug too, which becomes their problem", async () => {
  for (const [name, make] of [...bugs, ...faults]) {
    const result = await attemptSweep(() => {
      throw make();
    });
    assert.ok(result instanceof Refusal, name);
  }
  const bug = await attemptSweep(() => {
    throw new TypeError("Cannot read properties of undefined (reading 'Labels')");
  });
  assert.match((bug as Refusal).reason, /^internal error: .*reading 'Labels'/);
  assert.deepEqual(await attemptSweep(() => Promise.resolve([1])), [1]);
});
