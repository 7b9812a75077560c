#!/usr/bin/env bash
# tests/cgroup-v2.sh - socker on a real node, for real: boots a Debian 12 guest under QEMU (emulated: no
# KVM needed) with Docker (cgroupfs driver), munge and a one-node Slurm (proctrack/cgroup, task/cgroup),
# installs socker there with this checkout's own install.sh --epilog, and runs tests/cgroup-v2-guest.sh
# in it as real users (real sudo, real Slurm, real Docker). The guest's root has every capability (the
# CI host's root lacks CAP_SYS_RESOURCE), so socker takes the path it takes on real nodes.
#   --cgroup v2 (default): the kernel has cgroup v2 only, Slurm's cgroup/v2;
#                          prints "cgroup-v2: N passed, M failed".
#   --cgroup v1:           systemd.unified_cgroup_hierarchy=0, v1 controllers (hybrid, as most clusters
#                          run), Slurm's cgroup/v1; prints "cgroup-v1-root: N passed, M failed".
# Exits non-zero on any failure.
#
# The guest image is built once (debootstrap, ~4 min) and cached under CACHE, keyed by a hash of what
# defines it (mirror, packages, the customisation below); each run boots it on a throwaway qcow2
# overlay, with two 9p shares: the checkout (read-only) and a run folder (deno, results, logs).
# The guest has no network card. The whole boot is killed after --timeout seconds.
#
# Usage: sudo tests/cgroup-v2.sh [OPTIONS]
#   --cgroup v1|v2     the guest's cgroup hierarchy (default v2), and the cases run in it
#   --rebuild          build the guest image again even when the cached one is current
#   --build-only       build (or check) the cached image, do not boot it
#   --keep             keep the run folder (console log, suite log, results, overlay disk) and print it
#   --filter TEXT      run only the test cases whose name contains TEXT (setup always runs)
#   --timeout SECONDS  hard limit for boot + suite + power-off (default 2400); qemu is killed then
#   --cache DIR        where the image is cached (default /var/cache/socker-tests/cgroup-v2)
#   --fixtures DIR     copy the /proc and cgroup texts the guest recorded into DIR
#                      (e.g. tests/fixtures/proc)
#   -h, --help         show this help
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly repo
readonly SUITE=bookworm
readonly PACKAGES=linux-image-amd64,systemd-sysv,udev,docker.io,slurm-wlm,munge,iproute2,procps,util-linux,busybox-static,kmod,iptables,dbus,sudo
readonly IMAGE_SIZE=3G
readonly IMAGE_VERSION=1 # bump to force a rebuild everywhere

cache=/var/cache/socker-tests/cgroup-v2
rebuild=0 build_only=0 keep=0 filter="" timeout_s=2400 fixtures="" mode=v2
name=cgroup-v2 # the summary line's name: cgroup-v2, or cgroup-v1-root with --cgroup v1

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "$0"; }
say() { printf '%s: %s\n' "$name" "$*"; }
die() { printf '%s: ERROR: %s\n' "$name" "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --cgroup)
      case "${2-}" in
        v1) mode=v1 name=cgroup-v1-root ;;
        v2) mode=v2 name=cgroup-v2 ;;
        *) die "--cgroup needs v1 or v2" ;;
      esac
      shift ;;
    --rebuild) rebuild=1 ;;
    --build-only) build_only=1 ;;
    --keep) keep=1 ;;
    --filter) [ $# -ge 2 ] || die "--filter needs TEXT"; filter=$2; shift ;;
    --timeout) [[ "${2-}" =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"; timeout_s=$2; shift ;;
    --cache) [ $# -ge 2 ] || die "--cache needs DIR"; cache=$2; shift ;;
    --fixtures) [ $# -ge 2 ] || die "--fixtures needs DIR"; fixtures=$(realpath -m -- "$2"); shift ;;
    -h | --help) usage; exit 0 ;;
    *) printf '%s: unknown option %s (see --help)\n' "$name" "$1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): debootstrap, mkfs and the 9p share need it"
[[ "$cache" == /* ]] || cache=$(realpath -m -- "$cache")
t0=$SECONDS

# ---------------------------------------------------------------- host tools

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"; } >/tmp/cgroup-v2-apt.log 2>&1 ||
    { tail -n 20 /tmp/cgroup-v2-apt.log >&2; die "apt-get install ${need[*]} failed"; }
fi
deno_bin=$(command -v deno || true)
[ -n "$deno_bin" ] || die "no deno on PATH (npm install -g deno@2.9.6, as .ci/run does): the guest gets the host's"
deno_bin=$(readlink -f -- "$deno_bin")

# The Debian mirror apt uses on this host (the guest is built from it; nothing else is reached).
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
      tolower($1) == "uris:" { u = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) s = 1 }
      END { if (u != "" && s) print u }' "$f" | head -n 1)
    [ -z "$uri" ] || { printf '%s\n' "${uri%/}"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }
      $1 == "deb" && $2 ~ /^\[/ { for (i = 3; i < NF; i++) if ($i ~ /^[a-z]+:\/\// && $(i + 1) == suite) { print $i; exit } }' "$f")
    [ -z "$uri" ] || { printf '%s\n' "${uri%/}"; return 0; }
  done
  return 1
}
mirror=$(apt_mirror) || die "cannot find a $SUITE mirror in /etc/apt/sources.list(.d)"

# ---------------------------------------------------------------- the guest image

# Written into the image: mounts the two shares and runs the suite from the checkout; the unit powers
# the guest off whatever the result.
boot_script() {
  cat <<'EOF'
#!/bin/bash
# socker-v2-boot: runs socker's cgroup v2 suite from the 9p share (tests/cgroup-v2.sh boots this guest).
set -u
modprobe -a 9p 9pnet_virtio 2>/dev/null
mkdir -p /mnt/src /mnt/io
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro src /mnt/src || exit 90
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 io /mnt/io || exit 91
echo "socker-v2-boot: shares mounted at $(cut -d' ' -f1 /proc/uptime) s of uptime"
bash /mnt/src/tests/cgroup-v2-guest.sh /mnt/io 2>&1 | tee /mnt/io/suite.log
rc=${PIPESTATUS[0]}
echo "$rc" >/mnt/io/exit
sync
exit 0
EOF
}
boot_unit() {
  cat <<'EOF'
[Unit]
Description=socker cgroup v2 suite from the 9p share, then power off
After=basic.target systemd-udev-settle.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/socker-v2-boot
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
}
# The guest starts these itself once it has written their configuration.
readonly QUIET_UNITS=(docker.service docker.socket containerd.service munge.service slurmctld.service slurmd.service
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer)
customize_root() { # ROOT
  local root=$1 kernel
  # The initramfs needs only the virtio disk and ext4 to find the root file system.
  printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/socker-v2.conf"
  printf '%s\n' virtio_pci virtio_blk ext4 >>"$root/etc/initramfs-tools/modules"
  kernel=$(basename "$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)")
  mount -t proc proc "$root/proc"
  local rc=0
  chroot "$root" update-initramfs -c -k "$kernel" || rc=$?
  umount "$root/proc"
  [ "$rc" = 0 ] || return "$rc"
  echo v2node >"$root/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
  boot_script >"$root/usr/local/sbin/socker-v2-boot"
  chmod 0755 "$root/usr/local/sbin/socker-v2-boot"
  boot_unit >"$root/etc/systemd/system/socker-v2-suite.service"
  chroot "$root" systemctl enable socker-v2-suite.service >/dev/null 2>&1
  chroot "$root" systemctl disable "${QUIET_UNITS[@]}" >/dev/null 2>&1 || true
  chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
  rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
}

# Unmounts whatever a killed debootstrap left mounted under DIR (its /proc, /sys, /dev binds).
umount_under() {
  local dir=$1 m
  while read -r m; do umount -l -- "$m" 2>/dev/null || true; done < <(findmnt -rn -o TARGET | grep -F -- "$dir/" | sort -r)
  local left
  left=$(findmnt -rn -o TARGET) # read whole: an early grep -q would SIGPIPE findmnt under pipefail
  ! grep -qF -- "$dir/" <<<"$left"
}
remove_tree() { # a build folder: never into anything still mounted in it
  umount_under "$1" || die "cannot unmount everything under $1: remove it by hand"
  rm -rf --one-file-system -- "$1"
}

build_image() {
  local tmp=$cache/build.$$ root start=$SECONDS v
  root=$tmp/root
  for v in "$cache"/build.*; do [ -e "$v" ] && remove_tree "$v"; done
  mkdir -p "$root"
  say "building the guest image $key from $mirror (debootstrap, a few minutes; log $tmp/build.log)"
  # --foreign, then a policy-rc.d, then the second stage: no package may start a daemon (dockerd,
  # munged, slurmd) in the chroot, on this host's kernel.
  if ! timeout -k 10 1200 debootstrap --foreign --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$root" "$mirror" >"$tmp/build.log" 2>&1; then
    tail -n 20 "$tmp/build.log" >&2
    remove_tree "$tmp"
    die "debootstrap (first stage) failed"
  fi
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  # INITRD=No: no initramfs while packages are configured (Debian would build a large one twice);
  # customize_root builds one small initramfs at the end.
  if ! timeout -k 10 1200 chroot "$root" /usr/bin/env INITRD=No /debootstrap/debootstrap --second-stage \
    >>"$tmp/build.log" 2>&1; then
    tail -n 20 "$tmp/build.log" >&2
    remove_tree "$tmp"
    die "debootstrap (second stage) failed"
  fi
  umount_under "$root" || die "debootstrap left mounts under $root"
  rm -f "$root/usr/sbin/policy-rc.d"
  customize_root "$root" >>"$tmp/build.log" 2>&1 || { tail -n 20 "$tmp/build.log" >&2; die "customising the image failed"; }
  local kernels=("$root"/boot/vmlinuz-*) initrds=("$root"/boot/initrd.img-*)
  { [ -f "${kernels[-1]}" ] && [ -f "${initrds[-1]}" ]; } || die "no kernel or initrd in $root/boot"
  cp -- "${kernels[-1]}" "$tmp/vmlinuz"
  cp -- "${initrds[-1]}" "$tmp/initrd.img"
  say "debootstrap done in $((SECONDS - start)) s ($(du -sh --one-file-system "$root" | cut -f1)); mkfs.ext4 -d"
  mkfs.ext4 -q -F -L socker-v2 -d "$root" "$tmp/root.img" "$IMAGE_SIZE" >>"$tmp/build.log" 2>&1 ||
    { tail -n 5 "$tmp/build.log" >&2; remove_tree "$tmp"; die "mkfs.ext4 -d failed"; }
  remove_tree "$root"
  printf 'key %s\nsuite %s\nmirror %s\npackages %s\nbuilt %s in %s s\n' "$key" "$SUITE" "$mirror" "$PACKAGES" \
    "$(date -u +%FT%TZ)" "$((SECONDS - start))" >"$tmp/image.txt"
  rm -rf -- "$image"
  mv -- "$tmp" "$image"
  for v in "$cache"/*; do # older images: another key, not needed any more
    [ -d "$v" ] && [ "$v" != "$image" ] && [ -f "$v/image.txt" ] && rm -rf --one-file-system -- "$v"
  done
  say "built the guest image in $((SECONDS - start)) s: $image"
}

# The key: everything that defines the image.
key=$({
  printf '%s\n' "$IMAGE_VERSION" "$SUITE" "$mirror" "$PACKAGES" "$IMAGE_SIZE" "${QUIET_UNITS[*]}"
  boot_script
  boot_unit
  declare -f customize_root build_image
} | sha256sum | cut -c1-16)
image=$cache/$key

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 3600 9 || die "another cgroup-v2 run holds $cache/.lock"
if [ "$rebuild" = 1 ] || [ ! -f "$image/image.txt" ]; then
  build_image
else
  say "guest image $key: cached ($(sed -n 's/^built //p' "$image/image.txt"))"
fi
[ "$build_only" = 0 ] || exit 0

# ---------------------------------------------------------------- boot

# Run folders of earlier runs that were killed (those of --keep runs carry KEPT and stay).
for v in "$cache"/run.*; do
  [ -d "$v" ] && [ ! -e "$v/KEPT" ] && rm -rf --one-file-system -- "$v"
done
run=$(mktemp -d "$cache/run.XXXXXX")
chmod 0755 "$run"
io=$run/io
qemu_pid=""
# Stops the guest if it still runs: TERM to timeout(1), which passes it to qemu; KILL after 10 s.
stop_guest() {
  local child
  [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null || return 0
  child=$(pgrep -P "$qemu_pid" || true)
  kill -TERM "$qemu_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$qemu_pid" 2>/dev/null; then
    kill -KILL "$qemu_pid" ${child:+"$child"} 2>/dev/null || true
  fi
}
finish() {
  stop_guest
  if [ "$keep" = 1 ]; then
    rm -f -- "$io/deno"
    touch "$run/KEPT"
    say "kept $run (console.log, io/suite.log, io/results, overlay.qcow2): remove it by hand"
  else
    rm -rf --one-file-system -- "$run"
  fi
}
trap finish EXIT
trap 'exit 130' INT TERM

mkdir -p "$io/results" "$io/fixtures"
chmod 0755 "$io"
install -m 0755 -o root -g root -- "$deno_bin" "$io/deno"
printf '%s\n' "$filter" >"$io/filter"
printf '%s\n' "$mode" >"$io/mode" # the guest script's mode (the image's boot script passes only the folder)
qemu-img create -q -f qcow2 -F raw -b "$image/root.img" "$run/overlay.qcow2"

# v2: the unified hierarchy only. v1: systemd mounts each v1 controller (and the unified tree beside, a
# hybrid node, as on most clusters).
case "$mode" in
  v2) cgroup_args="systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" ;;
  v1) cgroup_args="systemd.unified_cgroup_hierarchy=0" ;;
esac
say "booting the guest (TCG, -smp 2, -m 4096, no network card, $cgroup_args; killed after ${timeout_s} s)"
boot_start=$SECONDS
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
  -name "socker-$name" -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 4096 \
  -nic none -display none -monitor none -no-reboot \
  -serial "file:$run/console.log" \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 $cgroup_args apparmor=0" \
  -drive "file=$run/overlay.qcow2,format=qcow2,if=virtio,cache=unsafe" \
  -virtfs "local,path=$repo,mount_tag=src,security_model=passthrough,readonly=on" \
  -virtfs "local,path=$io,mount_tag=io,security_model=mapped-xattr" \
  -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny &
qemu_pid=$!
# Follow the suite's log while the guest runs.
tail --pid="$qemu_pid" -n +1 -F "$io/suite.log" 2>/dev/null &
tail_pid=$!
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
boot_s=$((SECONDS - boot_start))

console_tail() {
  printf -- '--- last 60 lines of the guest console (%s)\n' "$run/console.log" >&2
  tail -n 60 "$run/console.log" >&2 || true
}
if [ -n "$fixtures" ] && [ -n "$(ls -A "$io/fixtures")" ]; then
  mkdir -p "$fixtures"
  cp -- "$io/fixtures"/* "$fixtures/"
  say "copied the recorded files to $fixtures: $(cd "$io/fixtures" && echo *)"
fi
summary=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed\$" "$io/suite.log" 2>/dev/null | tail -n 1 || true)
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  console_tail
  say "the guest did not finish within ${timeout_s} s: qemu killed"
  echo "$name: 0 passed, 1 failed"
  exit 1
fi
if [ ! -f "$io/exit" ] || [ -z "$summary" ]; then
  console_tail
  say "the suite did not complete (qemu exit $qemu_rc after ${boot_s} s)"
  echo "$name: 0 passed, 1 failed"
  exit 1
fi
guest_rc=$(cat "$io/exit")
say "guest: qemu ran ${boot_s} s; whole run $((SECONDS - t0)) s"
if [ "$guest_rc" != 0 ]; then console_tail; fi
# The summary line is the last line: N passed, M failed.
echo "$summary"
[ "$guest_rc" = 0 ]
