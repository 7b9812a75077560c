// Unit tests of filesystems users mount (issue 17.3): the mount table as the kernel writes it, and the rule
// that a FUSE filesystem root did not mount is never looked into unless socker.conf allows it.
import assert from "node:assert/strict";
import { DEFAULT_SETTINGS, parseMountTable, parseSettings, userFilesystemProblem } from "../../socker.ts";

// Lines as this machine's kernel wrote them, with alice's bindfs, root's sshfs and a space in a name.
const MOUNTINFO = `21 26 0:20 / /proc rw,relatime - proc proc rw
26 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 26 0:35 / /home rw,relatime shared:1 - ext4 /dev/sdb1 rw
812 40 0:77 / /home/alice/fuse\\040mnt rw,nosuid,nodev,relatime - fuse /home/alice/src rw,user_id=2001,group_id=2001,allow_other
813 40 0:78 / /home/alice/b rw,nosuid,nodev - fuse.bindfs /home/alice/src rw,user_id=2001,group_id=2001
814 26 0:79 / /srv/shared rw,nosuid,nodev - fuse.sshfs admin@nas:/ rw,user_id=0,group_id=0,allow_other
815 26 8:17 / /mnt/usb rw - fuseblk /dev/sdc1 rw,user_id=2002,group_id=2002
garbage line
`;

Deno.test("the mount table: ids, mount points unescaped, types and filesystem options", () => {
  const table = parseMountTable(MOUNTINFO);
  assert.deepEqual([...table.keys()], [21, 26, 40, 812, 813, 814, 815]);
  assert.deepEqual(table.get(812), {
    id: 812,
    mountPoint: "/home/alice/fuse mnt",
    fsType: "fuse",
    source: "/home/alice/src",
    superOptions: ["rw", "user_id=2001", "group_id=2001", "allow_other"],
  });
  assert.equal(parseMountTable("").size, 0);
});

Deno.test("a FUSE filesystem a user mounted is refused, root's and the node's own are not", () => {
  const table = parseMountTable(MOUNTINFO);
  for (const id of [812, 813, 815]) {
    assert.match(
      userFilesystemProblem(table.get(id), false)!,
      /^is on a filesystem a user mounted \(fuse.*, by uid 200[12]\): socker does not use filesystems users mount/,
      String(id),
    );
  }
  assert.match(userFilesystemProblem(table.get(813), false)!, /fuse\.bindfs at \/home\/alice\/b, by uid 2001/);
  assert.match(userFilesystemProblem(table.get(812), false)!, /ask your administrator \(user_filesystems\)/);
  for (const id of [21, 26, 40, 814]) assert.equal(userFilesystemProblem(table.get(id), false), undefined, String(id));
});

Deno.test("a mount made after socker read the table is judged a user's", () => {
  assert.match(userFilesystemProblem(undefined, false)!, /mounted just now/);
});

Deno.test("user_filesystems = allow lets them through; refuse is the default; other values are refused", () => {
  const table = parseMountTable(MOUNTINFO);
  assert.equal(DEFAULT_SETTINGS.userFilesystems, "refuse");
  assert.equal(parseSettings("user_filesystems = allow\n", "socker.conf").userFilesystems, "allow");
  assert.equal(parseSettings("user_filesystems = refuse\n", "socker.conf").userFilesystems, "refuse");
  assert.throws(() => parseSettings("user_filesystems = yes\n", "socker.conf"), /user_filesystems must be/);
  assert.equal(userFilesystemProblem(table.get(813), true), undefined);
  assert.equal(userFilesystemProblem(undefined, true), undefined);
});
