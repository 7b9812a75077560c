// Unit tests of the kernel layer: the one decoder of statx(2)'s buffer (struct statx, linux/stat.h).
import assert from "node:assert/strict";
import { decodeStatx, type Statx } from "../../socker.ts";

/** A statx buffer as the kernel would fill it: each field at its offset in struct statx, little-endian. */
function statxBuffer(fields: {
  mask?: number;
  nlink?: number;
  uid?: number;
  mode: number;
  inode?: bigint;
  size?: bigint;
  rdev?: [number, number];
  dev?: [number, number];
  mountId?: bigint;
}): Uint8Array {
  const buffer = new Uint8Array(256);
  const view = new DataView(buffer.buffer);
  view.setUint32(0, fields.mask ?? 0x7ff, true);
  view.setUint32(16, fields.nlink ?? 1, true);
  view.setUint32(20, fields.uid ?? 0, true);
  view.setUint16(28, fields.mode, true);
  view.setBigUint64(32, fields.inode ?? 2n, true);
  view.setBigUint64(40, fields.size ?? 0n, true);
  view.setUint32(128, fields.rdev?.[0] ?? 0, true);
  view.setUint32(132, fields.rdev?.[1] ?? 0, true);
  view.setUint32(136, fields.dev?.[0] ?? 0, true);
  view.setUint32(140, fields.dev?.[1] ?? 0, true);
  view.setBigUint64(144, fields.mountId ?? 0n, true);
  return buffer;
}

Deno.test("statx: every field is read at its offset in struct statx", () => {
  const cases: { name: string; buffer: Uint8Array; want: Partial<Statx> }[] = [
    {
      name: "a regular file",
      buffer: statxBuffer({ mode: 0o100644, uid: 1000, nlink: 2, inode: 123456789n, size: 4096n, dev: [8, 1] }),
      want: {
        kind: "file",
        mode: 0o100644,
        uid: 1000,
        nlink: 2,
        inode: 123456789,
        size: 4096,
        device: 8 * 2 ** 20 + 1,
      },
    },
    {
      name: "a folder owned by root",
      buffer: statxBuffer({ mode: 0o40755, nlink: 5 }),
      want: { kind: "dir", mode: 0o40755, uid: 0, nlink: 5 },
    },
    {
      name: "a symlink is other",
      buffer: statxBuffer({ mode: 0o120777 }),
      want: { kind: "other", mode: 0o120777 },
    },
    {
      name: "an overlay whiteout: a character device 0:0",
      buffer: statxBuffer({ mode: 0o20000, rdev: [0, 0] }),
      want: { kind: "other", rdev: { major: 0, minor: 0 } },
    },
    {
      name: "a GPU device file keeps its device numbers",
      buffer: statxBuffer({ mode: 0o20666, rdev: [195, 255] }),
      want: { kind: "other", rdev: { major: 195, minor: 255 } },
    },
    {
      name: "the mount id is read only when the kernel says it filled it",
      buffer: statxBuffer({ mode: 0o40755, mask: 0x7ff | 0x1000, mountId: 42n }),
      want: { mount: 42n },
    },
    {
      name: "no STATX_MNT_ID in the mask: no mount id",
      buffer: statxBuffer({ mode: 0o40755, mask: 0x7ff, mountId: 42n }),
      want: { mount: undefined },
    },
    {
      name: "a uid and a size above 2^31 are unsigned",
      buffer: statxBuffer({ mode: 0o100600, uid: 0xfffffffe, size: 2n ** 40n, inode: 2n ** 50n }),
      want: { uid: 0xfffffffe, size: 2 ** 40, inode: 2 ** 50 },
    },
  ];
  for (const { name, buffer, want } of cases) {
    const got = decodeStatx(buffer);
    for (const [key, value] of Object.entries(want)) {
      assert.deepEqual(got[key as keyof Statx], value, `${name}: ${key}`);
    }
  }
});

Deno.test("statx: a buffer that is a view into a larger one is decoded from its own start", () => {
  const larger = new Uint8Array(300);
  larger.set(statxBuffer({ mode: 0o100644, uid: 7 }), 16);
  const got = decodeStatx(larger.subarray(16, 16 + 256));
  assert.equal(got.kind, "file");
  assert.equal(got.uid, 7);
});
