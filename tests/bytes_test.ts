// Exact bytes (issue 17.5): what a user gives socker as bytes that are not UTF-8 (an argument, a folder's
// name, their current folder, a variable) is refused with one line naming it, exit 125; it never reaches
// the container decoded (U+FFFD for each stray byte), and never names, mounts or creates another folder.
// Each case runs as alice from bash, which passes the bytes exactly ($'\xff').
import assert from "node:assert/strict";
import { AUDIT_LOG, IMAGE, marker, sockerContainers, stagingLeft, userLine, withSettings } from "./helpers.ts";

/** The refusal as alice sees it: exit 125, one line on stderr, nothing on stdout. */
function assertRefusedLine(result: { code: number; stdout: string; stderr: string }, pattern: RegExp): void {
  assert.equal(
    result.code,
    125,
    `expected 125, got ${result.code}; stdout: ${result.stdout}; stderr: ${result.stderr}`,
  );
  assert.equal(result.stdout, "");
  assert.equal(result.stderr.trimEnd().split("\n").length, 1, `one line: ${result.stderr}`);
  assert.match(result.stderr, pattern);
  assert.doesNotMatch(result.stderr, /\ufffd/, "never shown decoded");
}

/** Runs `line` as alice and checks that socker started no container and left nothing staged. */
async function aliceRefused(line: string, pattern: RegExp): Promise<void> {
  const before = await sockerContainers();
  assertRefusedLine(await userLine("alice", line), pattern);
  assert.deepEqual(await sockerContainers(), before, "no container was made");
  assert.equal(await stagingLeft(), "");
}

// U+FFFD in UTF-8 is EF BF BD: the folder a decoded name would name instead.
const REPLACED = "\\xef\\xbf\\xbd";

Deno.test("bytes: an argument with stray bytes is refused by position, not passed on as U+FFFD", async () => {
  const tag = marker("bytes");
  await aliceRefused(
    `socker run ${IMAGE} echo ${tag} $'a\\xff\\xfeb'`,
    /^socker: argument 5 \('a\\xff\\xfeb'\) is not UTF-8 text/,
  );
  // The refusal is recorded; the run never started.
  const lines = (await Deno.readTextFile(AUDIT_LOG)).split("\n").filter((line) => line.includes(tag));
  assert.deepEqual(lines.map((line) => JSON.parse(line).event), ["refused"]);
});

Deno.test("bytes: -v with a folder named with a stray byte is refused; the folder named with U+FFFD is never mounted", async () => {
  const setup = await userLine(
    "alice",
    `mkdir -p ~/bytes-d$'\\xff' ~/bytes-d$'${REPLACED}' && echo other > ~/bytes-d$'${REPLACED}'/whose`,
  );
  assert.equal(setup.code, 0, setup.stderr);
  try {
    await aliceRefused(
      `socker run -v ~/bytes-d$'\\xff':/data ${IMAGE} cat /data/whose`,
      /argument 3 .*xff.*is not UTF-8/,
    );
  } finally {
    await userLine("alice", `rm -rf ~/bytes-d$'\\xff' ~/bytes-d$'${REPLACED}'`);
  }
});

Deno.test("bytes: -w with a stray byte is refused and creates nothing, neither that folder nor the U+FFFD one", async () => {
  await aliceRefused(`socker run -w /home/alice/bytes-w$'\\xff' ${IMAGE} pwd`, /argument 3 .*is not UTF-8 text/);
  const left = await userLine("alice", `ls -d ~/bytes-w* 2>/dev/null || true`);
  assert.equal(left.stdout, "", "nothing was created");
});

Deno.test("bytes: a current folder whose name has a stray byte is refused, not silently left unmounted", async () => {
  assert.equal((await userLine("alice", `mkdir -p ~/bytes-cwd$'\\xff'`)).code, 0);
  try {
    await aliceRefused(
      `cd ~/bytes-cwd$'\\xff' && socker run ${IMAGE} pwd`,
      /your current folder's name \('\/home\/alice\/bytes-cwd\\xff'\) is not UTF-8 text/,
    );
  } finally {
    await userLine("alice", `rm -rf ~/bytes-cwd$'\\xff'`);
  }
});

Deno.test("bytes: a variable with stray bytes is refused when it would pass into the container, ignored otherwise", async () => {
  // Inherited by default (env_inherit = yes): refused, unless -e NAME=VALUE replaces it.
  await aliceRefused(
    `export ODD=$'x\\xff'; socker run ${IMAGE} env`,
    /your variable ODD \(it passes into containers\) holds bytes that are not UTF-8 text \('x\\xff'\)/,
  );
  const replaced = await userLine("alice", `export ODD=$'x\\xff'; socker run -e ODD=text ${IMAGE} sh -c 'echo "$ODD"'`);
  assert.equal(replaced.code, 0, replaced.stderr);
  assert.equal(replaced.stdout, "text\n", replaced.stderr);
  await withSettings("env_inherit = no\n", async () => {
    await aliceRefused(
      `export ODD=$'x\\xff'; socker run -e ODD ${IMAGE} env`,
      /your variable ODD \(-e ODD\) holds bytes that are not UTF-8 text \('x\\xff'\)/,
    );
    const ignored = await userLine("alice", `export ODD=$'x\\xff'; socker run ${IMAGE} sh -c 'echo "\${ODD-unset}"'`);
    assert.equal(ignored.code, 0, ignored.stderr);
    assert.equal(ignored.stdout, "unset\n", ignored.stderr);
  });
  const fine = await userLine("alice", `export ODD=é; socker run -e ODD ${IMAGE} sh -c 'echo "$ODD"'`);
  assert.equal(fine.code, 0, fine.stderr);
  assert.equal(fine.stdout, "é\n");
});

Deno.test("bytes: text that is UTF-8 (accents, CJK, emoji) passes through exactly", async () => {
  const result = await userLine("alice", `socker run ${IMAGE} printf '%s|' é 日本 😀 $'\\xc3\\xa9'`);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, "é|日本|😀|é|");
});

Deno.test("bytes: a ':' in a -v source says what the syntax allows", async () => {
  await aliceRefused(
    `socker run -v /home/alice/a:b:/data ${IMAGE} true`,
    /the syntax is -v SRC:DST\[:ro\|rw\], with no ':' in SRC or DST/,
  );
});
