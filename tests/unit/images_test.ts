// Unit tests of images: references normalised as Docker does, the allowlist and the trust it needs, what
// `socker images` shows, what `socker pull` pulls, and the site's registry login.
import assert from "node:assert/strict";
import {
  allowedImage,
  canonicalImage,
  imageDigest,
  type ImageRef,
  matchImage,
  parseAllowlist,
  parseImageRef,
  pathChain,
  planImages,
  planPull,
  pullProgressLine,
  registryAuth,
  trustedText,
  untrustedReason,
} from "../../socker.ts";
import { ALLOWLIST, engineDown, IMAGE, planTests, refusal, rootFile, run, runFacts, settingsFile } from "./facts.ts";

function canonical(text: string): string {
  const ref = parseImageRef(text);
  assert.equal(typeof ref, "object", `${text}: ${ref}`);
  return canonicalImage(ref as ImageRef);
}

Deno.test("references normalise as Docker does", () => {
  const digest = "sha256:" + "a".repeat(64);
  const cases: [string, string][] = [
    ["centos", "docker.io/library/centos:latest"],
    ["centos:latest", "docker.io/library/centos:latest"],
    ["library/centos", "docker.io/library/centos:latest"],
    ["docker.io/library/centos:latest", "docker.io/library/centos:latest"],
    ["index.docker.io/library/centos", "docker.io/library/centos:latest"],
    ["docker.io/centos:7", "docker.io/library/centos:7"],
    ["user/app:1.0", "docker.io/user/app:1.0"],
    ["localhost/app", "localhost/app:latest"],
    ["localhost:5000/a/b:v2", "localhost:5000/a/b:v2"],
    ["127.0.0.1:5000/socker-test/pullme:1", "127.0.0.1:5000/socker-test/pullme:1"],
    ["registry.example.org/hpc/openfoam:11", "registry.example.org/hpc/openfoam:11"],
    [`centos@${digest}`, `docker.io/library/centos@${digest}`],
    [`centos:7@${digest}`, `docker.io/library/centos@${digest}`],
    ["a__b/c-d.e--f", "docker.io/a__b/c-d.e--f:latest"],
  ];
  for (const [input, expected] of cases) assert.equal(canonical(input), expected, input);
});

Deno.test("malformed and look-alike references are not references", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["CentOS", /lowercase/],
    ["centos ", /printable ASCII without spaces/],
    ["cent\u043es", /printable ASCII/],
    ["centos\u200b", /printable ASCII/],
    ["centos:", /invalid tag/],
    ["centos:-x", /invalid tag/],
    ["centos:" + "x".repeat(129), /invalid tag/],
    ["centos@sha256:abc", /digest/],
    ["centos@sha256:" + "A".repeat(64), /digest/],
    ["a".repeat(64), /image id/],
    ["-centos", /invalid repository/],
    ["centos/", /invalid repository/],
    ["a//b", /invalid repository/],
    ["x".repeat(256), /longer than/],
    ["reg.example.org:port/x", /invalid registry|invalid tag/],
    ["reg.example.org:99999/x", /invalid registry port/],
    ["reg.example.org:0/x", /invalid registry port/],
  ];
  for (const [input, pattern] of cases) {
    const ref = parseImageRef(input);
    assert.equal(typeof ref, "string", `${JSON.stringify(input)} should be refused`);
    assert.match(ref as string, pattern, input);
  }
});

Deno.test("a match is exact after normalisation: case, whitespace and look-alikes do not widen it", () => {
  const digest = "sha256:" + "b".repeat(64);
  const allowlist = parseAllowlist(`# site images\n  centos   # the default\n\nubuntu:22.04\npinned@${digest}\n`, "f");
  const match = (text: string) => {
    const ref = parseImageRef(text);
    return typeof ref === "string" ? undefined : matchImage(allowlist, ref)?.line;
  };
  assert.equal(match("centos"), 2);
  assert.equal(match("docker.io/library/centos:latest"), 2);
  assert.equal(match("centos:7"), undefined, "another tag is another image");
  assert.equal(match("ubuntu"), undefined);
  assert.equal(match("evil/centos"), undefined);
  assert.equal(match("Docker.io/library/centos"), undefined, "registry names are not case-folded");
  assert.equal(match(`pinned@${digest}`), 5);
  assert.equal(match("pinned"), undefined, "a digest-pinned entry matches only that digest");
  refusal(() => allowedImage(allowlist, "centos:7"), /image 'centos:7' is not allowed on this cluster/);
  refusal(
    () => allowedImage(allowlist, "CENTOS"),
    /'CENTOS' is not a valid image reference: repository name must be lowercase/,
  );
});

Deno.test("an invalid allowlist line fails the whole file, naming file and line", () => {
  refusal(() => parseAllowlist("centos\nCentOS\n", "/etc/socker/socker-images"), /socker-images:2: 'CentOS'/);
  refusal(() => parseAllowlist("centos ubuntu\n", "f"), /f:1: 'centos ubuntu'/);
  assert.deepEqual(parseAllowlist("# only comments\n\n   \n", "f"), []);
  assert.equal(parseAllowlist("centos\r\n", "f")[0].canonical, "docker.io/library/centos:latest");
});

Deno.test("trust: file and every folder above must be root-owned and not group/other-writable", () => {
  const ok = pathChain("/etc/socker/socker-images").map((path, i) => ({
    path,
    uid: 0,
    mode: i === 0 ? 0o100644 : 0o40755,
    kind: (i === 0 ? "file" : "dir") as "file" | "dir",
  }));
  assert.equal(untrustedReason(ok), undefined);
  const variant = (index: number, change: object) => ok.map((item, i) => i === index ? { ...item, ...change } : item);
  assert.match(untrustedReason(variant(0, { mode: 0o100666 }))!, /socker-images is writable by its group/);
  assert.match(untrustedReason(variant(0, { mode: 0o100646 }))!, /writable by others \(mode 0646\)/);
  assert.match(untrustedReason(variant(0, { uid: 1000 }))!, /not owned by root \(owner uid 1000\)/);
  assert.match(untrustedReason(variant(1, { mode: 0o41777 }))!, /\/etc\/socker is writable/);
  assert.match(untrustedReason(variant(2, { uid: 5 }))!, /\/etc is not owned by root/);
  assert.match(untrustedReason(variant(0, { kind: "dir" }))!, /not a regular file/);
});

Deno.test("trusted text: missing, untrusted along either path, too large, or not text are refused", () => {
  assert.equal(trustedText(rootFile(ALLOWLIST, "centos\n"), true), "centos\n");
  assert.equal(trustedText({ path: ALLOWLIST, missing: true }, false), undefined);
  refusal(() => trustedText({ path: ALLOWLIST, missing: true }, true), /is missing; socker is not fully installed/);
  const symlinked = rootFile(ALLOWLIST, "centos\n");
  if ("bytes" in symlinked) {
    symlinked.real = pathChain("/home/alice/mine").map((path, i) => ({
      path,
      uid: i < 2 ? 2001 : 0,
      mode: 0o40755,
      kind: i === 0 ? "file" : "dir",
    }));
    refusal(() => trustedText(symlinked, true), /refusing to trust .* not owned by root \(owner uid 2001\)/);
  }
  refusal(() => trustedText(rootFile(ALLOWLIST, "x".repeat((1 << 20) + 1)), true), /larger than 1048576 bytes/);
  const binary = rootFile(ALLOWLIST, "");
  if ("bytes" in binary) binary.bytes = new Uint8Array([0, 255, 1]);
  refusal(() => trustedText(binary, true), /is not a text file/);
});

Deno.test("socker images: present or missing, with the repository digest or the image id labelled so", () => {
  const digest = `sha256:${"d".repeat(64)}`;
  const rows = planImages({
    allowlist: rootFile(ALLOWLIST, "centos:7\nsocker-test/busybox:2\n127.0.0.1:5000/a/b:1\n"),
    images: new Map<string, { Id?: string; RepoDigests?: string[] } | undefined>([
      ["docker.io/library/centos:7", { Id: "sha256:1", RepoDigests: [`centos@${digest}`] }],
      ["docker.io/socker-test/busybox:2", { Id: "sha256:2", RepoDigests: [] }],
    ]),
  });
  assert.deepEqual(rows, [
    ["IMAGE", "NORMALISED", "ON THIS NODE", "DIGEST"],
    ["centos:7", "docker.io/library/centos:7", "present", digest],
    ["socker-test/busybox:2", "docker.io/socker-test/busybox:2", "present", "image id sha256:2"],
    ["127.0.0.1:5000/a/b:1", "127.0.0.1:5000/a/b:1", "missing", "-"],
  ]);
  const entry = parseAllowlist("127.0.0.1:5000/a/b:1", "f")[0];
  assert.equal(
    imageDigest(entry, { Id: "x", RepoDigests: [`127.0.0.1:5000/other@${digest}`, `127.0.0.1:5000/a/b@${digest}`] }),
    digest,
  );
});

Deno.test("socker pull: root only, and only allowlisted references", () => {
  const allowlist = parseAllowlist("centos:7\nubuntu:22.04\n", "f");
  assert.deepEqual(planPull(undefined, allowlist, true).map((e) => e.text), ["centos:7", "ubuntu:22.04"]);
  assert.deepEqual(planPull("docker.io/library/centos:7", allowlist, true).map((e) => e.text), ["centos:7"]);
  refusal(() => planPull("evil/centos:7", allowlist, true), /is not allowed on this cluster/);
  refusal(() => planPull("centos:7", allowlist, false), /'pull' is for root/);
});

Deno.test("registry logins come from the site's config.json, never the user's, by registry", () => {
  const config = JSON.stringify({
    auths: {
      "registry.example.org": { auth: btoa("robot:s3cret") },
      "https://index.docker.io/v1/": { auth: btoa("hub:pw:with:colons") },
      "token.example.org": { identitytoken: "tok" },
    },
  });
  const decode = (header: string | undefined) => JSON.parse(atob(header!.replaceAll("-", "+").replaceAll("_", "/")));
  assert.deepEqual(decode(registryAuth(config, "registry.example.org")), {
    serveraddress: "registry.example.org",
    username: "robot",
    password: "s3cret",
  });
  assert.equal(decode(registryAuth(config, "docker.io")).password, "pw:with:colons");
  assert.equal(decode(registryAuth(config, "token.example.org")).identitytoken, "tok");
  assert.equal(registryAuth(config, "other.example.org"), undefined);
  assert.equal(registryAuth(undefined, "registry.example.org"), undefined);
  refusal(() => registryAuth("{not json", "x"), /is not valid JSON/);
});

Deno.test("pull progress: one printable line per new status, bounded however many layers a registry sends", () => {
  const shown = new Map<string, string>();
  assert.equal(pullProgressLine({ id: "l1", status: "Downloading" }, shown), "socker: l1: Downloading\n");
  assert.equal(pullProgressLine({ id: "l1", status: "Downloading" }, shown), undefined);
  assert.equal(pullProgressLine({ status: "Digest: x\u001b[2J" }, shown)?.includes("\u001b"), false);
  for (let i = 0; i < 5000; i++) pullProgressLine({ id: `x${i}`, status: "Waiting" }, shown);
  assert.ok(shown.size <= 1024);
});

// planRun's rules on which image: one table row each, a refusal (a pattern of its one-line reason) or a check
// of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  [
    "an image not in the allowlist is refused",
    run("socker-test/other:1", "id"),
    runFacts(),
    /is not allowed on this cluster/,
  ],
  [
    "an uppercase image is not a reference",
    run("socker-test/BUSYBOX:2", "id"),
    runFacts(),
    /not a valid image reference/,
  ],
  [
    "the same image under Docker's normalisation matches",
    run("docker.io/socker-test/busybox:2", "id"),
    runFacts(),
    (plan) => {
      assert.equal(plan.entry.canonical, "docker.io/socker-test/busybox:2");
    },
  ],
  [
    "a world-writable allowlist is refused",
    run(IMAGE, "id"),
    runFacts({ allowlist: rootFile("/etc/socker/socker-images", IMAGE, { mode: 0o100666 }) }),
    /refusing to trust .* writable by/,
  ],
  [
    "a missing allowlist is refused",
    run(IMAGE, "id"),
    runFacts({ allowlist: { path: "/etc/socker/socker-images", missing: true } }),
    /is missing; socker is not fully installed/,
  ],
  [
    "a broken allowlist line names the line",
    run(IMAGE, "id"),
    runFacts({ allowlist: rootFile("/etc/socker/socker-images", `${IMAGE}\nNot A Ref\n`) }),
    /socker-images:2: 'Not A Ref'/,
  ],
  [
    "an allowed image missing on the node is refused when pull = never",
    run(IMAGE, "id"),
    runFacts({ image: undefined }),
    /allowed but not present on node n1.*pull = missing/,
  ],
  [
    "an allowed image missing on the node is pulled when pull = missing",
    run(IMAGE, "id"),
    runFacts({ image: undefined, settings: settingsFile("pull = missing\n") }),
    (plan) => {
      assert.equal(plan.imageId, undefined);
    },
  ],
  [
    "the engine down is a clear refusal",
    run(IMAGE, "id"),
    runFacts({ image: engineDown }),
    /Docker engine is not reachable/,
  ],
]);
