// Unit tests of the device rules on cgroup v1 (GPUs under ConstrainDevices=yes): which runtime a container
// gets, what a step's devices.list allows, which of the job's GPUs a step may not use.
import assert from "node:assert/strict";
import {
  constrainsDevices,
  containerRuntime,
  DEVICE_RUNTIME,
  DEVICE_RUNTIME_PATH,
  devicesCgroupAllows,
  type JobStep,
  stepDeniedGpus,
} from "../../socker.ts";
import { refusal } from "./facts.ts";

const V1: JobStep = { version: 1, jobId: "7", stepId: "0", parent: "/slurm_n1/uid_2001/job_7/step_0" };
const V2: JobStep = { version: 2, jobId: "7", stepId: "0", parent: "/system.slice/slurmstepd.scope/job_7/step_0/user" };
const REGISTERED = { runc: { path: "runc" }, [DEVICE_RUNTIME]: { path: DEVICE_RUNTIME_PATH } };

Deno.test("ConstrainDevices=yes is read from cgroup.conf, case and spaces as Slurm takes them; default no", () => {
  assert.equal(constrainsDevices("CgroupPlugin=autodetect\nConstrainDevices=yes\n"), true);
  assert.equal(constrainsDevices("constraindevices = YES # GPUs\n"), true);
  assert.equal(constrainsDevices("#ConstrainDevices=yes\nConstrainCores=yes\n"), false);
  assert.equal(constrainsDevices("ConstrainDevices=no\n"), false);
  assert.equal(constrainsDevices(undefined), false);
});

Deno.test("socker-runc only in a v1 job with constrained devices; every other container keeps the default", () => {
  assert.equal(containerRuntime(V1, true, REGISTERED, true), DEVICE_RUNTIME);
  assert.equal(containerRuntime(V1, false, REGISTERED, true), undefined);
  assert.equal(containerRuntime(V2, true, REGISTERED, true), undefined);
  assert.equal(containerRuntime(undefined, true, REGISTERED, true), undefined);
  // Not needed: nothing is checked.
  assert.equal(containerRuntime(V1, false, undefined, false), undefined);
});

Deno.test("socker-runc missing, elsewhere or not installed where it is needed: one clear refusal", () => {
  const needed = /ConstrainDevices=yes\) and .*: ask your administrator to run socker's install\.sh on this node/;
  refusal(() => containerRuntime(V1, true, { runc: { path: "runc" } }, true), needed);
  refusal(() => containerRuntime(V1, true, undefined, true), needed);
  refusal(() => containerRuntime(V1, true, { [DEVICE_RUNTIME]: { path: "/tmp/socker-runc" } }, true), needed);
  refusal(() => containerRuntime(V1, true, REGISTERED, false), /socker-runc is missing/);
});

Deno.test("a deny-by-default devices.list allows exactly its rules; allow-by-default says a *:* rwm", () => {
  const list = "c 1:3 rwm\nc 195:0 rwm\nc 195:255 rw\nc 136:* rwm\nb 195:1 rwm\nc 195:2 r\n";
  assert.equal(devicesCgroupAllows(list, 195, 0), true);
  assert.equal(devicesCgroupAllows(list, 195, 255), true);
  assert.equal(devicesCgroupAllows(list, 195, 1), false, "a block rule does not allow a character device");
  assert.equal(devicesCgroupAllows(list, 195, 2), false, "read only is not enough");
  assert.equal(devicesCgroupAllows(list, 195, 3), false);
  assert.equal(devicesCgroupAllows("a *:* rwm\n", 195, 1), true);
  assert.equal(devicesCgroupAllows("c 195:* rwm\n", 195, 7), true);
  assert.equal(devicesCgroupAllows("", 195, 0), false);
  assert.equal(devicesCgroupAllows("c 195:0 rwm junk\nc x:0 rwm\n", 195, 0), false);
});

Deno.test("the GPUs a step may not use: those its list denies and those the kernel refused socker", () => {
  assert.deepEqual(stepDeniedGpus([0, 1], undefined, []), []);
  assert.deepEqual(stepDeniedGpus([0, 1], undefined, [1]), [1]);
  assert.deepEqual(stepDeniedGpus([0, 1], "c 195:1 rwm\n", []), [0]);
  assert.deepEqual(stepDeniedGpus([0, 1], "a *:* rwm\n", [0]), [0]);
  assert.deepEqual(stepDeniedGpus([0, 1, 2], "c 195:0 rwm\n", [2]), [1, 2]);
});
