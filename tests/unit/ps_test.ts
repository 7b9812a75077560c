// Unit tests of socker ps and socker stop: the caller's own containers only; root sees everyone's.
import assert from "node:assert/strict";
import { ageText, planPs, planStop } from "../../socker.ts";
import { container, stat } from "./facts.ts";

const A = "a".repeat(64), B = "b".repeat(64);

const facts = (callerUid: number) => ({
  caller: { uid: callerUid, gid: callerUid, user: callerUid === 0 ? "root" : "alice" },
  rootCaller: callerUid === 0,
  now: 1000 + 3725,
  containers: [
    {
      container: container(A, {
        "socker.uid": "2001",
        "socker.user": "alice",
        "socker.job": "42",
        "socker.supervisor": "10:5",
      }),
      supervisorStat: stat(10, 5),
    },
    {
      container: container(B, { "socker.uid": "2002", "socker.user": "bob", "socker.supervisor": "11:7" }),
      supervisorStat: undefined,
    },
  ],
});

Deno.test("socker ps shows the caller's own containers only; root sees everyone's", () => {
  assert.deepEqual(planPs(facts(2001)), [
    ["NAME", "IMAGE", "COMMAND", "AGE", "JOB"],
    ["socker-2001-aaaa", "docker.io/socker-test/busybox:2", "sleep 1000", "1h", "42"],
  ]);
  assert.deepEqual(planPs(facts(0)).map((r) => r.at(-1)), ["USER", "alice", "bob"]);
  assert.deepEqual([ageText(5), ageText(65), ageText(7200), ageText(200000)], ["5s", "1m", "2h", "2d"]);
});

Deno.test("socker stop: only the caller's own, by name or id prefix; another's is as if it did not exist", () => {
  assert.deepEqual(planStop("socker-2001-aaaa", facts(2001)), { id: A, name: "socker-2001-aaaa", supervisorPid: 10 });
  assert.deepEqual(planStop("aaaa", facts(2001)).id, A);
  for (const target of ["socker-2002-bbbb", "bbbb", B]) {
    assert.throws(() => planStop(target, facts(2001)), /no container of yours named/);
  }
  assert.throws(() => planStop("aaa", facts(2001)), /no container of yours/, "an id prefix needs four digits");
  assert.deepEqual(
    planStop("bbbb", facts(0)),
    { id: B, name: "socker-2002-bbbb", supervisorPid: undefined },
    "root may stop an orphan",
  );
});
