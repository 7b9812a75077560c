// Unit tests of mounts: -v specs (relative ones too), destinations, mount decisions from what the kernel said
// as the caller, default mounts, mount points walked to inside a mount and through the image's layers,
// and --tmpfs.
import assert from "node:assert/strict";
import {
  decideMount,
  DEFAULT_SETTINGS,
  defaultMountRequests,
  destinationProblem,
  imageEntryAt,
  imageLayers,
  type ImageRecord,
  imageSymlinkOn,
  isCleanAbsolute,
  isRelativeSource,
  isUnder,
  type LayerEntry,
  type Mount,
  mountPoints,
  mountRequests,
  mountRoutes,
  parseTmpfs,
  parseVolume,
  resolveRelative,
  type Settings,
  tmpfsMounts,
  UNREACHABLE,
  withCallerFolder,
} from "../../socker.ts";
import { IMAGE, IMAGE_ID, planTests, probe, probeMap, refusal, run, runFacts, settingsFile } from "./facts.ts";

const settings = (over: Partial<Settings> = {}): Settings => ({ ...DEFAULT_SETTINGS, ...over });

Deno.test("--tmpfs: DST[:size=N] only, bounded, never at or around a mount or a forbidden destination", () => {
  assert.deepEqual(parseTmpfs("/scratch", settings(), undefined), { destination: "/scratch", bytes: 64 << 20 });
  assert.deepEqual(parseTmpfs("/scratch:size=1g", settings(), undefined), { destination: "/scratch", bytes: 1 << 30 });
  refusal(() => parseTmpfs("/scratch:size=2g", settings(), 1 << 30), /exceed the job's memory limit/);
  refusal(() => parseTmpfs("/scratch:exec", settings(), undefined), /only size=N/);
  refusal(() => parseTmpfs("/scratch:size=1g,mode=4777", settings(), undefined), /only size=N/);
  refusal(() => parseTmpfs("scratch", settings(), undefined), /clean absolute path/);
  refusal(() => parseTmpfs("/etc/x", settings(), undefined), /forbidden destination \/etc/);
  refusal(() => tmpfsMounts(["/home/a/t"], settings(), undefined, [{ destination: "/home/a" }]), /overlaps the mount/);
  refusal(() => tmpfsMounts(["/data"], settings(), undefined, [{ destination: "/data/x" }]), /overlaps the mount/);
  refusal(() => tmpfsMounts(["/t", "/t"], settings(), undefined, []), /overlaps the mount at \/t/);
});

Deno.test("-v: ./ and ../ resolve against the caller's folder; a bare name is Docker's named volume, refused", () => {
  assert.deepEqual(["./d", "../d", ".", "..", "d", "/d", ".d"].map(isRelativeSource), [
    true,
    true,
    true,
    true,
    false,
    false,
    false,
  ]);
  assert.equal(resolveRelative("./data/../x/./y", "/home/alice/w"), "/home/alice/w/x/y");
  assert.equal(resolveRelative("../../../..", "/home/a"), "/");
  assert.equal(withCallerFolder(parseVolume("./d:/d:ro"), "/home/a").source, "/home/a/d");
  refusal(() => withCallerFolder(parseVolume("./d:/d"), undefined), /current folder is gone/);
  refusal(() => parseVolume("data:/data"), /named volume .* \.\/data/);
});

Deno.test("-v specs: absolute SRC, clean DST of plain characters, ro or rw only", () => {
  assert.deepEqual(parseVolume("/home/a/d:/data:ro"), {
    source: "/home/a/d",
    destination: "/data",
    readOnly: true,
    origin: "-v /home/a/d:/data:ro",
    by: "user",
  });
  const cases: [string, RegExp][] = [
    ["/a", /the syntax is -v SRC:DST\[:ro\|rw\], with no .:. in SRC or DST/],
    ["/a:/b:ro:x", /the syntax is -v SRC:DST\[:ro\|rw\], with no .:. in SRC or DST/],
    ["rel:/b", /is a name, which Docker reads as a named volume/],
    ["/a:rel", /clean absolute/],
    ["/a:/b/../etc", /clean absolute/],
    ["/a:/b/", /clean absolute/],
    ["/a:/b:z", /is not a mode \(ro or rw\)/],
    ["/a:/b:Z", /is not a mode \(ro or rw\)/],
    ["/a:/x,source=/etc", /DST may hold only/],
    ["/a:/x y", /DST may hold only/],
  ];
  for (const [spec, pattern] of cases) refusal(() => parseVolume(spec), pattern);
});

Deno.test("paths: clean absolute, and prefixes by whole components", () => {
  for (const good of ["/", "/a", "/a/b.c", "/a/.b"]) assert.ok(isCleanAbsolute(good), good);
  for (const bad of ["", "a", "/a/", "/a//b", "/a/./b", "/a/../b", "/.."]) assert.ok(!isCleanAbsolute(bad), bad);
  assert.ok(isUnder("/scratch/x", "/scratch"));
  assert.ok(isUnder("/scratch", "/scratch"));
  assert.ok(!isUnder("/scratch2/x", "/scratch"));
});

Deno.test("destinations: never / or under the system folders, nor the administrator's", () => {
  assert.equal(destinationProblem("/data", []), undefined);
  assert.match(destinationProblem("/", [])!, /image's own root/);
  for (const bad of ["/etc", "/etc/passwd", "/usr/bin", "/proc/1", "/sys", "/dev/shm", "/var/run", "/bin"]) {
    assert.ok(destinationProblem(bad, []), bad);
  }
  assert.equal(destinationProblem("/etcetera", []), undefined);
  assert.match(destinationProblem("/opt/site/x", ["/opt/site"])!, /forbidden destination \/opt\/site/);
});

Deno.test("decideMount: the caller's real path, under a prefix, readable, read-only when not writable", () => {
  const request = parseVolume("/home/alice/link:/data");
  assert.deepEqual(decideMount(request, probe("/home/alice/data"), DEFAULT_SETTINGS, false), {
    source: "/home/alice/data",
    destination: "/data",
    readOnly: false,
    kind: "dir",
    handle: 116,
    fixedByRoot: false,
  });
  const readOnly = decideMount(
    request,
    probe("/home/alice/data", { writable: false }),
    DEFAULT_SETTINGS,
    true,
  ) as Mount;
  assert.deepEqual([readOnly.readOnly, readOnly.fixedByRoot], [true, true]);
  assert.match(
    decideMount(request, UNREACHABLE, DEFAULT_SETTINGS, false) as string,
    /does not exist or you cannot reach it/,
  );
  assert.match(
    decideMount(request, probe("/etc"), DEFAULT_SETTINGS, false) as string,
    /real path \/etc\) is not under a folder users may mount \(\/home\)/,
  );
  assert.match(
    decideMount(request, probe("/home2/x"), DEFAULT_SETTINGS, false) as string,
    /not under a folder users may mount/,
  );
  assert.match(
    decideMount(request, probe("/home/a", { readable: false }), DEFAULT_SETTINGS, false) as string,
    /not readable by you/,
  );
  assert.match(
    decideMount(request, probe("/home/a", { searchable: false }), DEFAULT_SETTINGS, false) as string,
    /not readable by you/,
  );
  assert.match(
    decideMount(request, probe("/home/a", { kind: "other" }), DEFAULT_SETTINGS, false) as string,
    /neither a folder/,
  );
  assert.match(
    decideMount(parseVolume("/home/alice/data:/etc"), probe("/home/alice/data"), DEFAULT_SETTINGS, false) as string,
    /forbidden destination \/etc/,
  );
  const site = { ...parseVolume("/scratch:/scratch"), by: "site" as const };
  assert.equal(
    typeof decideMount(site, probe("/scratch"), DEFAULT_SETTINGS, true),
    "object",
    "an administrator's path need not be under mount_prefixes",
  );
  const pmix = { ...parseVolume("/var/spool/slurmd/pmix.1.0:/var/spool/slurmd/pmix.1.0"), by: "socker" as const };
  assert.equal(
    typeof decideMount(pmix, probe("/var/spool/slurmd/pmix.1.0"), DEFAULT_SETTINGS, true),
    "object",
    "socker's own mount may go under /var",
  );
});

Deno.test("default mounts: home and the caller's folder, once; the administrator's paths", () => {
  const requests = defaultMountRequests(
    { ...DEFAULT_SETTINGS, defaultMounts: ["home", "workdir", "/scratch"] },
    "/home/alice",
    "/home/alice/run",
  );
  assert.deepEqual(requests.map((r) => [r.source, r.destination, r.by]), [
    ["/home/alice", "/home/alice", "default"],
    ["/scratch", "/scratch", "site"],
  ]);
  assert.equal(defaultMountRequests(DEFAULT_SETTINGS, undefined, "/tmp").length, 1);
});

Deno.test("a user's mount replaces a default one at the same destination; two of the user's at one are refused", () => {
  const home = defaultMountRequests(DEFAULT_SETTINGS, "/home/alice", undefined);
  const mine = [parseVolume("/home/alice/other:/home/alice"), parseVolume("/home/alice/d:/data")];
  assert.deepEqual(mountRequests(home, mine).map((r) => r.source), ["/home/alice/other", "/home/alice/d"]);
  refusal(() => mountRequests(home, [parseVolume("/a:/data"), parseVolume("/b:/data:ro")]), /two mounts at \/data/);
});

const mount = (source: string, destination = source, kind: "dir" | "file" = "dir"): Mount => ({
  source,
  destination,
  readOnly: false,
  kind,
  handle: 3,
  fixedByRoot: false,
});

Deno.test("mount points and the working folder inside a mount are walked to from that mount, by the deepest one", () => {
  const home = mount("/home/alice");
  assert.deepEqual(mountPoints([home], "/home/alice/new"), [
    {
      destination: "/home/alice",
      kind: "dir",
      why: "mount point /home/alice",
      holder: undefined,
      below: ["home", "alice"],
      checkImage: false,
    },
    {
      destination: "/home/alice/new",
      kind: "dir",
      why: "-w /home/alice/new",
      holder: 0,
      below: ["new"],
      checkImage: false,
    },
  ]);
  assert.deepEqual(
    mountPoints([home], "/data")[1],
    { destination: "/data", kind: "dir", why: "-w /data", holder: undefined, below: ["data"], checkImage: true },
    "outside every mount: in the image, where a symlink could lead into the mount",
  );
  assert.deepEqual(mountPoints([home], "/home/alice")[1].below, [], "the mount itself: nothing to walk");
  const nested = [mount("/home/proj", "/home/proj"), mount("/home/alice/f", "/home/proj/bobdata/planted.txt", "file")];
  assert.deepEqual(
    mountPoints(nested, "/home/proj/bobdata/wdir").map((
      p,
    ) => [p.destination, p.holder, p.below.join("/"), p.checkImage]),
    [
      ["/home/proj", undefined, "home/proj", true],
      ["/home/proj/bobdata/planted.txt", 0, "bobdata/planted.txt", false],
      ["/home/proj/bobdata/wdir", 0, "bobdata/wdir", false],
    ],
  );
  const deeper = [
    mount("/home/alice"),
    mount("/home/alice/data", "/home/alice/in"),
    mount("/scratch/x", "/home/alice/in/x"),
  ];
  assert.deepEqual(
    mountPoints(deeper, undefined).map((p) => [p.holder, p.below.join("/")]),
    [[undefined, "home/alice"], [0, "in"], [1, "x"]],
    "the deepest holder",
  );
  assert.deepEqual(
    mountPoints([mount("/home/alice/f", "/data/f", "file")], "/data/f/x")[1].holder,
    undefined,
    "a file holds nothing",
  );
});

Deno.test("a mount inside another is made by socker inside the holder's staged copy; the engine never walks to it", () => {
  const fixed = (source: string, destination = source, kind: "dir" | "file" = "dir") => ({
    ...mount(source, destination, kind),
    fixedByRoot: true,
  });
  const mounts = [
    fixed("/home/alice"),
    fixed("/home/alice/f", "/home/alice/in/f", "file"),
    mount("/scratch/x", "/data"),
  ];
  assert.deepEqual(mountRoutes(mounts, mountPoints(mounts, "/home/alice/work")), ["staged", "inside", "staged"]);
  assert.deepEqual(
    mountRoutes([fixed("/home/alice")], mountPoints([fixed("/home/alice")], "/home/alice/work")),
    ["path"],
    "a lone mount only root can redirect goes by its path",
  );
  const deep = [
    fixed("/home/alice"),
    fixed("/home/alice/a", "/home/alice/in"),
    fixed("/scratch/x", "/home/alice/in/x"),
  ];
  assert.deepEqual(mountRoutes(deep, mountPoints(deep, undefined)), ["staged", "inside", "inside"]);
});

/** An image's layers as a map from "layer:path" to what that layer holds there. */
const layers = (entries: Record<string, LayerEntry>) => (layer: number, path: string) =>
  entries[`${layer}:${path}`] ?? "missing";

Deno.test("a symlink in the image on the way to a mount point is found, through the layers as overlayfs merges them", () => {
  const parts = (path: string) => path.split("/").filter(Boolean);
  assert.equal(imageSymlinkOn(parts("/lib/x/a"), 1, layers({ "0:/lib": "symlink" })), "/lib");
  assert.equal(imageSymlinkOn(parts("/data/planted"), 2, layers({ "1:/data": "symlink" })), "/data", "a lower layer");
  assert.equal(
    imageSymlinkOn(parts("/data/planted"), 2, layers({ "0:/data": "dir", "1:/data": "symlink" })),
    undefined,
    "an upper folder hides a lower symlink",
  );
  assert.equal(
    imageSymlinkOn(parts("/data/x/y"), 2, layers({ "0:/data": "dir", "1:/data": "dir", "1:/data/x": "symlink" })),
    "/data/x",
    "folders merge: the lower layer's symlink shows through",
  );
  assert.equal(
    imageSymlinkOn(parts("/data/x/y"), 2, layers({ "0:/data": "opaque", "1:/data": "dir", "1:/data/x": "symlink" })),
    undefined,
    "an opaque folder hides the layers below",
  );
  assert.equal(
    imageSymlinkOn(parts("/data/x"), 2, layers({ "0:/data": "whiteout", "1:/data": "symlink" })),
    undefined,
    "a whiteout removes the lower symlink",
  );
  assert.equal(
    imageSymlinkOn(parts("/work/out"), 1, layers({ "0:/work": "dir", "0:/work/out": "symlink" })),
    "/work/out",
    "the last part too",
  );
  assert.equal(
    imageSymlinkOn(parts("/srv/new/dir"), 1, layers({})),
    undefined,
    "missing parts are created in the container",
  );
});

Deno.test("what an image holds at a path: the top layer's entry, through real folders only", () => {
  const parts = (path: string) => path.split("/").filter(Boolean);
  assert.equal(imageEntryAt(parts("/bin/sh"), 1, layers({ "0:/bin": "dir", "0:/bin/sh": "symlink" })), "symlink");
  assert.equal(imageEntryAt(parts("/bin/sh"), 1, layers({ "0:/bin": "symlink" })), "missing", "/bin -> usr/bin");
  assert.equal(
    imageEntryAt(
      parts("/usr/bin/sh"),
      2,
      layers({ "0:/usr": "dir", "1:/usr": "dir", "1:/usr/bin": "dir", "1:/usr/bin/sh": "other" }),
    ),
    "other",
  );
  assert.equal(
    imageEntryAt(
      parts("/bin/sh"),
      2,
      layers({ "0:/bin": "dir", "0:/bin/sh": "whiteout", "1:/bin": "dir", "1:/bin/sh": "other" }),
    ),
    "whiteout",
  );
});

Deno.test("the image's layers come from the engine's overlay2 record, top first; other drivers are named", () => {
  const record = (name: string, data: Record<string, unknown>): ImageRecord => ({
    GraphDriver: { Name: name, Data: data },
  });
  assert.deepEqual(imageLayers(record("overlay2", { UpperDir: "/v/3/diff", LowerDir: "/v/2/diff:/v/1/diff" })), [
    "/v/3/diff",
    "/v/2/diff",
    "/v/1/diff",
  ]);
  assert.deepEqual(imageLayers(record("overlay2", { UpperDir: "/v/1/diff" })), ["/v/1/diff"]);
  assert.match(
    imageLayers(record("btrfs", {})) as string,
    /only on the overlay2 storage driver; this engine uses btrfs/,
  );
  assert.match(imageLayers(record("overlay2", { UpperDir: "v/../x" })) as string, /names no layer folders/);
  assert.match(imageLayers({}) as string, /uses an unknown one/);
});

// planRun's rules on mounts, and what the engine would create as root: one table row each, a refusal (a pattern of its
// one-line reason) or a check of the plan; planTests (facts.ts) runs each as `run: NAME`.
planTests([
  // mounts
  [
    "home and the current folder are mounted at their own paths",
    run(IMAGE, "id"),
    runFacts({
      cwd: "/tmp",
      probes: probeMap([["/home/alice", probe("/home/alice")], ["/tmp", probe("/tmp", { owner: 0 })]]),
    }),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => [m.source, m.destination, m.readOnly]), [[
        "/home/alice",
        "/home/alice",
        false,
      ]]);
      assert.equal(
        plan.workdir,
        undefined,
        "/tmp is not under a folder users may mount: the image's working directory",
      );
    },
  ],
  [
    "a user's mount outside mount_prefixes is refused",
    run("-v", "/etc:/x", IMAGE, "id"),
    runFacts({ probes: probeMap([["/home/alice", probe("/home/alice")], ["/etc", probe("/etc", { owner: 0 })]]) }),
    /-v \/etc:\/x: '\/etc' \(real path \/etc\) is not under a folder users may mount \(\/home\)/,
  ],
  [
    "a user's mount the caller cannot reach gets one message whatever the reason",
    run("-v", "/home/bob/private:/x", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], [
        "/home/bob/private",
        "does not exist or you cannot reach it",
      ]]),
    }),
    /'\/home\/bob\/private' does not exist or you cannot reach it$/,
  ],
  [
    "a default mount the caller cannot read is left out, not refused",
    run(IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice", { readable: false })], [
        "/home/alice/work",
        probe("/home/alice/work"),
      ]]),
    }),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => m.destination), []);
    },
  ],
  [
    "a mount the caller cannot write is read-only",
    run("-v", "/home/alice/ro:/ro", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], [
        "/home/alice/ro",
        probe("/home/alice/ro", { writable: false }),
      ]]),
    }),
    (plan) => {
      assert.equal(plan.mounts.find((m) => m.destination === "/ro")?.readOnly, true);
    },
  ],
  [
    "a symlinked source is mounted from its real path",
    run("-v", "/home/alice/link:/d", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], ["/home/alice/link", probe("/home/alice/real")]]),
    }),
    (plan) => {
      assert.equal(plan.mounts.find((m) => m.destination === "/d")?.source, "/home/alice/real");
    },
  ],
  [
    "a user's mount over /etc is refused",
    run("-v", "/home/alice:/etc/ssl", IMAGE, "id"),
    runFacts(),
    /forbidden destination \/etc/,
  ],
  [
    "the administrator's forbidden destinations hold",
    run("-v", "/home/alice:/opt/site/x", IMAGE, "id"),
    runFacts({ settings: settingsFile("forbidden_destinations = /opt/site") }),
    /forbidden destination \/opt\/site/,
  ],
  [
    "a user's mount replaces the default home mount",
    run("-v", "/home/alice/work:/home/alice", IMAGE, "id"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => [m.source, m.destination]), [["/home/alice/work", "/home/alice"]]);
    },
  ],
  [
    "two mounts at one destination are refused",
    run("-v", "/home/alice:/d", "-v", "/home/alice/work:/d", IMAGE, "id"),
    runFacts(),
    /two mounts at \/d/,
  ],
  [
    "only folders whose parents a user could change are staged",
    run(IMAGE, "id"),
    runFacts({ cwd: "/home/alice/work" }),
    (plan) => {
      assert.deepEqual(plan.mounts.map((m) => [m.destination, m.fixedByRoot]), [["/home/alice", true]]);
    },
  ],
  // what the engine would create as root
  [
    "with two mounts, a mount point in the image is checked for symlinks in the image's own layers",
    run("-v", "/home/alice/work:/data", IMAGE, "id"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mountPoints.filter((p) => p.checkImage).map((p) => p.destination), [
        "/home/alice",
        "/data",
      ]);
      assert.deepEqual(plan.imageLayers, ["/var/lib/docker/overlay2/4/diff"]);
    },
  ],
  [
    "with one mount nothing in the image is checked: a symlink there can lead nowhere but the image",
    run(IMAGE, "id"),
    runFacts(),
    (plan) => {
      assert.deepEqual(plan.mountPoints.map((p) => [p.destination, p.checkImage]), [
        ["/home/alice", false],
        ["/home/alice/work", false],
      ]);
      assert.deepEqual(plan.imageLayers, ["/var/lib/docker/overlay2/4/diff"], "read only to find the image's shell");
    },
  ],
  [
    "mount points in an image the engine keeps on another storage driver are refused: socker cannot check them",
    run("-v", "/home/alice/work:/data", IMAGE, "id"),
    runFacts({ image: { Id: IMAGE_ID, GraphDriver: { Name: "vfs", Data: {} } } }),
    /cannot check the mount points in the image: .*only on the overlay2 storage driver; this engine uses vfs/,
  ],
  [
    "a mount point inside another mount is created as the caller",
    run("-v", "/home/alice/f:/home/alice/sub/f", IMAGE, "id"),
    runFacts({
      probes: probeMap([["/home/alice", probe("/home/alice")], [
        "/home/alice/f",
        probe("/home/alice/f", { kind: "file" }),
      ]]),
    }),
    (plan) => {
      assert.deepEqual(plan.mountPoints.map((p) => [p.destination, p.holder, p.below.join("/"), p.kind]), [
        ["/home/alice", undefined, "home/alice", "dir"],
        ["/home/alice/sub/f", 0, "sub/f", "file"],
      ]);
    },
  ],
]);
