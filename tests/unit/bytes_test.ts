// Unit tests of exact bytes (issue 17.5): socker's arguments from /proc/self/cmdline, the caller's
// environment, and what is not UTF-8 text is refused by name, never decoded into another value.
import assert from "node:assert/strict";
import {
  containerEnvironment,
  DEFAULT_SETTINGS,
  exactArguments,
  exactText,
  notTextProblem,
  parseVolume,
  planProbes,
  planRun,
  showBytes,
} from "../../socker.ts";
import { IMAGE, refusal, run, runFacts } from "./facts.ts";

const bytes = (...parts: (string | number[])[]) =>
  new Uint8Array(parts.flatMap((part) => typeof part === "string" ? [...new TextEncoder().encode(part)] : part));

Deno.test("text that is UTF-8 is text; any stray byte makes it NotText, with its exact bytes kept", () => {
  assert.equal(exactText(bytes("é日😀")), "é日😀");
  const stray = exactText(bytes("a", [0xff, 0xfe], "b"));
  assert.deepEqual(stray, { notText: bytes("a", [0xff, 0xfe], "b") });
  for (const bad of [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0x80]]) {
    assert.equal(typeof exactText(new Uint8Array(bad)), "object", String(bad));
  }
  assert.equal(showBytes(bytes("/home/a/d", [0xff], "\n")), "/home/a/d\\xff\\x0a");
});

Deno.test("socker's own arguments are the last ones of /proc/self/cmdline, as bytes", () => {
  const cmdline = bytes("/usr/local/lib/socker/deno\0run\0--quiet\0socker.ts\0run\0img\0echo\0a", [0xff, 0xfe], "b\0");
  const args = exactArguments(cmdline, 4)!;
  assert.deepEqual(args.slice(0, 3), ["run", "img", "echo"]);
  assert.deepEqual(args[3], { notText: bytes("a", [0xff, 0xfe], "b") });
  assert.deepEqual(exactArguments(bytes("socker-bin\0run\0\0"), 2), ["run", ""], "an empty argument stays");
  assert.deepEqual(exactArguments(bytes("socker-bin\0"), 0), []);
  assert.equal(exactArguments(bytes("socker-bin\0run\0"), 3), undefined);
});

Deno.test("an argument that is not text is refused by its position and its bytes", () => {
  assert.equal(notTextProblem(["run", "img", "echo", "é"]), undefined);
  const problem = notTextProblem(["run", "-v", { notText: bytes("/home/alice/d", [0xff], ":/data") }, "img"]);
  assert.match(problem!, /^argument 3 \('\/home\/alice\/d\\xff:\/data'\) is not UTF-8 text/);
  assert.doesNotMatch(problem!, /\ufffd/);
});

Deno.test("a variable that is not text is refused when it would pass into the container, dropped otherwise", () => {
  const closed = { ...DEFAULT_SETTINGS, envInherit: false };
  const settings = { ...closed, envPass: ["OMP_*"] };
  const notText = { notText: bytes("x", [0xff]) };
  const callerEnv = { OMP_X: notText, OTHER: notText, OK: "fine" };
  refusal(
    () => containerEnvironment([], callerEnv, { user: "a" }, settings, false),
    /your variable OMP_X \(it passes into containers\) holds bytes that are not UTF-8 text \('x\\xff'\)/,
  );
  refusal(
    () => containerEnvironment(["OTHER"], callerEnv, { user: "a" }, closed, false),
    /your variable OTHER \(-e OTHER\) holds bytes that are not UTF-8 text/,
  );
  assert.deepEqual(
    containerEnvironment(["OK"], callerEnv, { user: "a" }, closed, false),
    ["HOME=/", "USER=a", "LOGNAME=a", "OK=fine"],
  );
  // Inherited by default (env_inherit = yes): refused, unless -e NAME=VALUE replaces it.
  refusal(
    () => containerEnvironment([], { OTHER: notText }, { user: "a" }, DEFAULT_SETTINGS, false),
    /your variable OTHER \(it passes into containers\) holds bytes that are not UTF-8 text/,
  );
  assert.deepEqual(
    containerEnvironment(["OTHER=text"], { OTHER: notText }, { user: "a" }, DEFAULT_SETTINGS, false),
    ["HOME=/", "USER=a", "LOGNAME=a", "OTHER=text"],
  );
});

Deno.test("a ':' in a -v source gets the syntax, not a word about modes", () => {
  refusal(
    () => parseVolume("/home/a/x:y:/data"),
    /is not a mode \(ro or rw\): the syntax is -v SRC:DST\[:ro\|rw\], with no ':' in SRC or DST/,
  );
  refusal(() => parseVolume("/home/a/x:y:/data:ro"), /the syntax is -v SRC:DST\[:ro\|rw\], with no ':' in SRC or DST/);
});

Deno.test("a current folder whose name is not text is refused first, before the read asks for anything else", () => {
  // Not even the caller is checked first: sudo's word is bad here too, and the folder is what is refused.
  const facts = runFacts({ cwd: { notText: new Uint8Array([0x2f, 0x61, 0xff]) }, sudo: {}, processUid: 1000 });
  refusal(() => planProbes(run(IMAGE, "true"), facts), /your current folder's name \('\/a\\xff'\) is not UTF-8 text/);
  refusal(() => planRun(run(IMAGE, "true"), facts), /your current folder's name .* is not UTF-8 text/);
});
