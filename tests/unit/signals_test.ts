// Unit tests of talking to the engine and supervising: HTTP heads and chunked bodies, the multiplexed
// attach stream, signals, exit codes, containerd's CVE check, staging names and supervisor ids.
import assert from "node:assert/strict";
import {
  chunkDecoder,
  containerdFixed,
  containerdVersion,
  containerName,
  engineMessage,
  exitCodeFor,
  isSignalRepeat,
  parseResponseHead,
  parseStagingName,
  signalAction,
  stagingName,
  streamDemuxer,
  supervisorAlive,
  supervisorId,
} from "../../socker.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

Deno.test("the engine's response heads parse; anything else does not", () => {
  const raw = bytes("HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nxyz");
  const head = parseResponseHead(raw);
  assert.equal(head?.status, 101);
  assert.equal(head?.headers.get("content-type"), "application/vnd.docker.raw-stream");
  assert.equal(text(raw.subarray(head?.length)), "xyz", "the stream starts after the blank line");
  assert.equal(parseResponseHead(bytes("HTTP/1.1 200 OK\r\nA: b\r\n")), undefined, "not complete yet");
  assert.equal(parseResponseHead(bytes("garbage\r\n\r\n")), undefined);
  assert.equal(parseResponseHead(bytes("HTTP/1.1 999 X\r\n\r\n")), undefined);
  assert.equal(engineMessage('{"message":"No such image: x"}'), "No such image: x");
  assert.equal(engineMessage("plain\ntext"), "plain\\x0atext");
});

Deno.test("chunked bodies decode across any split, and malformed ones throw", () => {
  const body = "4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";
  for (let split = 1; split < body.length; split++) {
    const decoder = chunkDecoder();
    const out = text(decoder.push(bytes(body.slice(0, split)))) + text(decoder.push(bytes(body.slice(split))));
    assert.equal(out, "Wikipedia in \r\n\r\nchunks.", `split at ${split}`);
    assert.ok(decoder.done());
  }
  assert.throws(() => chunkDecoder().push(bytes("zz\r\n")), /chunk size/);
  assert.throws(() => chunkDecoder().push(bytes("fffffffffff\r\n")), /chunk size/);
});

/** One frame of the engine's multiplexed stream. */
function frame(stream: number, payload: string): Uint8Array {
  const data = bytes(payload);
  const out = new Uint8Array(8 + data.length);
  out[0] = stream;
  new DataView(out.buffer).setUint32(4, data.length);
  out.set(data, 8);
  return out;
}

Deno.test("stdout and stderr come apart from the multiplexed stream, whatever the split", () => {
  const all = new Uint8Array([
    ...frame(1, "out\n"),
    ...frame(2, "err\n"),
    ...frame(1, ""),
    ...frame(1, "x".repeat(70000)),
  ]);
  for (const split of [1, 7, 8, 9, 12, 20, 100, 70000]) {
    const demux = streamDemuxer();
    const pieces = [...demux(all.slice(0, split)), ...demux(all.slice(split))];
    assert.deepEqual(
      pieces.map((p) => [p.stream, p.payload.length]),
      [[1, 4], [2, 4], [1, 0], [1, 70000]],
      `split ${split}`,
    );
    assert.equal(text(pieces[1].payload), "err\n");
  }
  const reused = new Uint8Array(frame(1, "abcdef"));
  const demux = streamDemuxer();
  assert.deepEqual(demux(reused.subarray(0, 10)), []);
  reused.fill(0); // the reader's buffer is reused: what was kept must have been copied
  assert.deepEqual(demux(frame(1, "abcdef").subarray(10)).map((p) => text(p.payload)), ["abcdef"]);
});

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

Deno.test("containerd before the CVE-2020-15257 fix is recognised", () => {
  for (const fixed of ["1.3.9", "1.4.3", "1.4.12", "1.5.0", "1.6.20~ds1", "v1.7.2", "2.0.0"]) {
    assert.equal(containerdFixed(fixed), true, fixed);
  }
  for (const vulnerable of ["1.3.8", "1.4.2", "1.4.0", "1.2.13", "0.9.0"]) {
    assert.equal(containerdFixed(vulnerable), false, vulnerable);
  }
  assert.equal(containerdFixed("abcdef"), undefined);
  assert.equal(
    containerdVersion({
      Components: [{ Name: "Engine", Version: "20.10" }, { Name: "containerd", Version: "1.6.20~ds1" }],
    }),
    "1.6.20~ds1",
  );
  assert.equal(containerdVersion({}), undefined);
});

Deno.test("container and staging names carry the caller, the job and the supervisor", () => {
  const name = containerName(2001, new Uint8Array([0, 1, 255, 16, 32, 48]));
  assert.equal(name, "socker-2001-0001ff102030");
  assert.equal(stagingName(name, "42", "77:1234"), "job_42.socker-2001-0001ff102030@77-1234");
  assert.equal(stagingName(name, undefined, "77:1234"), "socker-2001-0001ff102030@77-1234");
  assert.deepEqual(parseStagingName("job_42.socker-2001-ab@77-1234"), {
    jobId: "42",
    container: "socker-2001-ab",
    supervisor: "77:1234",
  });
  assert.deepEqual(parseStagingName("socker-2001-ab"), {
    container: "socker-2001-ab",
    jobId: undefined,
    supervisor: undefined,
  });
  assert.deepEqual(parseStagingName("pull-abc.lock"), { container: "pull-abc.lock" });
});

Deno.test("a supervisor is alive only when its pid runs with the same start time", () => {
  const stat = (pid: number, start: number, comm = "deno") =>
    `${pid} (${comm}) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 4 0 ${start} 0 0`;
  assert.equal(supervisorId(77, stat(77, 1234)), "77:1234");
  assert.equal(supervisorId(77, stat(77, 1234, "a) b ) c")), "77:1234", "a process may put ')' in its name");
  assert.equal(supervisorAlive("77:1234", stat(77, 1234)), true);
  assert.equal(supervisorAlive("77:1234", stat(77, 9999)), false, "a reused pid is another process");
  assert.equal(supervisorAlive("77:1234", undefined), false);
  assert.equal(supervisorAlive("garbage", stat(77, 1234)), false);
  assert.equal(supervisorAlive(undefined, stat(77, 1234)), false);
});
