#!/usr/bin/env bash
# tests/setup.sh - prepare this machine (Debian 12, root, no systemd, cgroup v1) for socker's
# integration tests: packages, a Docker engine (cgroupfs driver), test users alice/bob, the local
# test images socker-test/busybox:2 and socker-test/openmpi:1 (tests/setup-mpi.sh), munge, and a
# two-node Slurm cluster (n1, n2; mpi/pmix, two fake GPUs each) on this host, then a self-check.
# Idempotent: what is already in place is left alone; a second run only checks and changes nothing.
# Usage: tests/setup.sh [--rebuild-images]
set -euo pipefail

DOCKER=/usr/bin/docker # not /usr/local/bin/docker, an unrelated client
IMAGE=socker-test/busybox:2
SLURM_LOG=/var/log/slurm
SLURM_CONF=/etc/slurm/slurm.conf
CGROUP_CONF=/etc/slurm/cgroup.conf
GRES_CONF=/etc/slurm/gres.conf
EPILOG=/usr/local/libexec/socker/slurm-epilog
FAKE_GPUS=/var/lib/socker-tests/fake-gpus # where earlier versions kept regular files for gres.conf: removed
NODES=(n1 n2)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

rebuild_images=0
for arg in "$@"; do
  case "$arg" in
    --rebuild-images) rebuild_images=1 ;;
    -h | --help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--rebuild-images]" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib.sh
. "$here/lib.sh"
# Daemons start from /: one started in a folder that is later removed (a CI checkout, re-cloned for
# the next run) makes slurmstepd warn on every srun.
cd /
tail_logs() { # print the end of each given log file that exists
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    printf -- '--- tail %s\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
}
slurm_logs() { # the daemons' logs; their stdout/stderr (*.out) only for fatal start-up errors
  tail_logs "$SLURM_LOG/slurmctld.log" "$SLURM_LOG"/slurmd-n?.log
  grep -H fatal "$SLURM_LOG"/*.out 2>/dev/null | tail -n 5 >&2 || true
}
slurm_fail() { slurm_logs; die "$*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
start=$SECONDS
work=$(mktemp -d) # scratch space, removed on exit
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT

# 1. Packages ------------------------------------------------------------------------------
pkgs=(docker.io slurm-wlm munge sudo busybox-static iptables procps util-linux bsdutils passwd tmux rsyslog gcc libc6-dev
  bindfs fuse3 shellcheck)
install_missing "$work/apt.log" "${pkgs[@]}"
# A FUSE filesystem users can mount for others, as sites with user_allow_other allow (the user-filesystem
# tests mount bindfs as alice): /dev/fuse open to users, user_allow_other in /etc/fuse.conf.
[ -e /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
chmod 0666 /dev/fuse
grep -qx 'user_allow_other' /etc/fuse.conf 2>/dev/null || echo 'user_allow_other' >>/etc/fuse.conf

# 2. Docker engine ---------------------------------------------------------------------------
if "$DOCKER" info >/dev/null 2>&1; then
  docker_state="already running"
else
  setsid /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 120); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
  "$DOCKER" info >/dev/null 2>&1 || { tail_logs /var/log/dockerd.log; die "dockerd did not answer within 60 s"; }
  docker_state="started (log /var/log/dockerd.log)"
fi
read -r d_version d_driver d_cgroup < <("$DOCKER" info --format '{{.ServerVersion}} {{.CgroupDriver}} {{.CgroupVersion}}')
say "docker $d_version, cgroup driver $d_driver, cgroup v$d_cgroup: $docker_state"
[ "$d_driver" = cgroupfs ] || die "dockerd uses the '$d_driver' cgroup driver; the tests need cgroupfs"

# 3. Test users and groups ---------------------------------------------------------------------
ensure_group() { # name gid
  local name=$1 gid=$2 cur other
  other=$(getent group "$gid" | cut -d: -f1) || true
  if cur=$(getent group "$name"); then
    [ "$(cut -d: -f3 <<<"$cur")" = "$gid" ] || die "group $name exists with gid $(cut -d: -f3 <<<"$cur"), want $gid"
  else
    [ -z "$other" ] || die "gid $gid is taken by group $other (want $name)"
    groupadd -g "$gid" "$name"
    say "created group $name ($gid)"
  fi
}
ensure_user() { # name uid gid supplementary-groups (comma list, may be empty)
  local name=$1 uid=$2 gid=$3 supp=$4 home="/home/$1" cur other groups
  other=$(getent passwd "$uid" | cut -d: -f1) || true
  if cur=$(getent passwd "$name"); then
    [ "$(cut -d: -f3 <<<"$cur")" = "$uid" ] || die "user $name exists with uid $(cut -d: -f3 <<<"$cur"), want $uid"
    [ "$(cut -d: -f4 <<<"$cur")" = "$gid" ] || die "user $name has primary gid $(cut -d: -f4 <<<"$cur"), want $gid"
    [ "$(cut -d: -f6 <<<"$cur")" = "$home" ] || die "user $name has home $(cut -d: -f6 <<<"$cur"), want $home"
    if [ "$(cut -d: -f7 <<<"$cur")" != /bin/bash ]; then usermod -s /bin/bash "$name"; say "set shell of $name"; fi
  else
    [ -z "$other" ] || die "uid $uid is taken by user $other (want $name)"
    useradd -u "$uid" -g "$gid" ${supp:+-G "$supp"} -d "$home" -m -s /bin/bash "$name"
    say "created user $name ($uid)"
  fi
  # Exactly the wanted supplementary groups (so never docker).
  groups=$(id -Gn "$name" | tr ' ' '\n' | grep -vxF "$name" | sort | paste -sd, -) || true
  if [ "$groups" != "$supp" ]; then
    usermod -G "$supp" "$name"
    say "set supplementary groups of $name to '${supp}' (were '${groups}')"
  fi
  mkdir -p "$home"
  if [ "$(stat -c '%u:%g %a' "$home")" != "$uid:$gid 700" ]; then
    chown "$uid:$gid" "$home"
    chmod 0700 "$home"
    say "fixed owner/mode of $home"
  fi
}
ensure_group proj 3001
ensure_group alice 2001
ensure_group bob 2002
ensure_user alice 2001 2001 proj
ensure_user bob 2002 2002 ""
say "users: $(id alice); $(id bob)"

# 4. Test image ----------------------------------------------------------------------------------
applets=(sh cat id sleep echo ls ps true false env dd head tail wc md5sum sha256sum seq yes kill
  mkdir touch stat grep awk sed tr nproc printf test "[" "[[" rm rmdir cp mv ln chmod cut sort uniq
  date timeout pwd hostname whoami basename dirname readlink realpath uname xargs find tee mktemp
  expr od pidof setpriv groups)
build_image() {
  local root="$work/rootfs" old new a ls_out
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  cp /bin/busybox "$root/bin/busybox"
  # The list is read whole first: `busybox --list | grep -q` fails under pipefail whenever grep quits
  # before busybox has written the rest (SIGPIPE), which happens now and then.
  local have
  have=$(/bin/busybox --list)
  for a in "${applets[@]}"; do
    grep -qxF -- "$a" <<<"$have" || die "busybox has no applet '$a'"
    ln -s busybox "$root/bin/$a"
  done
  # A setuid-root busybox, with /suid/id running its id applet: tests show it cannot give root inside
  # a socker container.
  mkdir -p "$root/suid"
  cp /bin/busybox "$root/suid/busybox"
  chown 0:0 "$root/suid/busybox"
  chmod 4755 "$root/suid/busybox"
  ln -s busybox "$root/suid/id"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null) || true
  tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    "$DOCKER" import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
  new=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then "$DOCKER" image rm "$old" >/dev/null 2>&1 || true; fi
  ls_out=$("$DOCKER" run --rm "$IMAGE" ls -ln /suid/busybox)
  [[ "$ls_out" =~ ^-rwsr-xr-x\ +1\ +0\ +0\  ]] || die "setuid bit lost in $IMAGE: $ls_out"
  say "built $IMAGE (${new:7:12}); /suid/busybox: $ls_out"
}
if [ "$rebuild_images" = 1 ] || ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  build_image
else
  say "image $IMAGE: present"
fi

# socker-test/links:1: busybox with symlinks of the image's own outside the system folders (/data -> work,
# /scratch -> /home/alice): tests show socker will not let the engine follow them into another mount.
LINKS_IMAGE=socker-test/links:1
if [ "$rebuild_images" = 1 ] || ! "$DOCKER" image inspect "$LINKS_IMAGE" >/dev/null 2>&1; then
  links_root="$work/links-rootfs"
  mkdir -p "$links_root/bin" "$links_root/work" "$links_root/tmp"
  cp /bin/busybox "$links_root/bin/busybox"
  for a in sh ls cat true id pwd echo; do ln -s busybox "$links_root/bin/$a"; done
  ln -s work "$links_root/data"
  ln -s /home/alice "$links_root/scratch"
  chmod 1777 "$links_root/tmp"
  tar --numeric-owner --owner=0 --group=0 -C "$links_root" -cf - . |
    "$DOCKER" import -c 'ENV PATH=/bin' - "$LINKS_IMAGE" >/dev/null
  say "built $LINKS_IMAGE"
else
  say "image $LINKS_IMAGE: present"
fi

# socker-test/batch:2: busybox with an ENV, an ENTRYPOINT that prints a banner (as vendor images do) and a
# CMD of its own: tests/batch_test.ts shows the image's ENV winning over the caller's, the default CMD,
# and --entrypoint "".
BATCH_IMAGE=socker-test/batch:2
if [ "$rebuild_images" = 1 ] || ! "$DOCKER" image inspect "$BATCH_IMAGE" >/dev/null 2>&1; then
  batch_container=$("$DOCKER" create "$IMAGE" true)
  "$DOCKER" commit \
    --change 'ENV IMAGE_VAR=from-image' \
    --change 'ENTRYPOINT ["/bin/sh", "-c", "echo banner from the entrypoint; exec \"$@\"", "entrypoint"]' \
    --change 'CMD ["echo", "the image default command"]' \
    "$batch_container" "$BATCH_IMAGE" >/dev/null
  "$DOCKER" rm "$batch_container" >/dev/null
  say "built $BATCH_IMAGE"
else
  say "image $BATCH_IMAGE: present"
fi

# 4b. System log: socker's audit records go to syslog (authpriv -> /var/log/auth.log). No systemd
# here, so start rsyslogd by hand; it creates /dev/log.
if ! pgrep -x rsyslogd >/dev/null; then
  rm -f /run/rsyslogd.pid
  rsyslogd
  for _ in $(seq 1 40); do [ -S /dev/log ] && break; sleep 0.25; done
fi
[ -S /dev/log ] || die "rsyslogd did not create /dev/log"
say "syslog: rsyslogd running, /dev/log present"

# 5. munge ------------------------------------------------------------------------------------
mkdir -p /run/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  say "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 0600 /etc/munge/munge.key
if pgrep -x munged >/dev/null; then
  munge_state="already running"
else
  runuser -u munge -- /usr/sbin/munged --force
  munge_state="started"
fi
for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null || { tail_logs /var/log/munge/munged.log; die "munge does not work"; }
say "munged: $munge_state"

# 5b. MPI and GPUs (tests/setup-mpi.sh): OpenMPI and PMIx on the host, the MPI test programs, the
# image socker-test/openmpi:1. Before Slurm starts: slurmd needs libpmix2 when it starts.
mpi_args=(prepare)
[ "$rebuild_images" = 0 ] || mpi_args+=(--rebuild-images)
bash "$here/setup-mpi.sh" "${mpi_args[@]}"

# 6. Slurm: two nodes, n1 and n2, each with its own slurmd on this host ---------------------------
host=$(hostname -s)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_mem=$((mem_mb < 4000 ? mem_mb : 4000)) # a node whose RealMemory exceeds the host's is drained
if [ -e "$EPILOG" ]; then epilog_line="Epilog=$EPILOG"; else epilog_line="#Epilog=$EPILOG"; fi
slurm_conf="# Written by socker's tests/setup.sh: a two-node test cluster on one host.
ClusterName=socker
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd-%n.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=5
MinJobAge=30
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
# Each node its own TmpFS (%n: the node name): both slurmd share this host's /tmp, and mpi/pmix puts
# each step's client folder spmix_appdir_<uid>_<job>.<step> under TmpFS, so with a shared /tmp the
# second node's step fails (Cannot create directory ...: File exists). MpiDefault stays none:
# MPI users pass srun --mpi=pmix.
TmpFS=/tmp/slurm-%n
# Two fake GPUs per node, character devices (see gres.conf below).
GresTypes=gpu
# socker's Epilog: runs as root on each node after every job and removes containers the job left.
# socker's install.sh installs it. Slurm 22.05 drains the node when the Epilog file is missing
# (slurmd: epilog: Unable to create list of paths), so tests/setup.sh enables the line only once the
# file exists: run tests/setup.sh again after install.sh.
${epilog_line}
# One core each, and not the same one: CPUs=2 with the other core reserved (CpuSpecList) puts n1's
# jobs on core 0 and n2's on core 1 (with CPUs=1 both used core 0, and two MPI ranks on two
# nodes shared it: 4 ms ping-pong latency, the scheduler's tick).
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=6818 CPUs=2 CpuSpecList=1 RealMemory=$real_mem Gres=gpu:2 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=6819 CPUs=2 CpuSpecList=0 RealMemory=$real_mem Gres=gpu:2 State=UNKNOWN
# OverSubscribe=YES: jobs that ask (sbatch --oversubscribe) may share a node's core, e.g. two jobs each
# with one of a node's two GPUs (tests/gpus_test.ts); jobs that do not ask keep their cores to themselves.
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
cgroup_conf="# Written by socker's tests/setup.sh.
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=yes"
# Fake GPUs: character devices of NVIDIA's major (c 195:0 and 195:1, and the control device 195:255), no
# driver behind them (opening one that is allowed fails with ENXIO). Slurm allocates them by index and,
# with ConstrainDevices=yes, denies each step the GPUs it did not get ('c 195:N rwm' in the step's
# devices.deny on cgroup v1): every test runs under real device rules. On cgroup v1 the engine's runc
# cannot create a container under such a step (runc issue 1618); socker's containers use the runtime
# socker-runc, which install.sh registers with the engine.
gres_conf="# Written by socker's tests/setup.sh: fake GPUs (no driver), the same two on each node.
NodeName=n[1-2] Name=gpu File=/dev/nvidia[0-1]"

write_if_changed() { # file content: replace the file if its content differs; true if it did
  [ "$(cat "$1" 2>/dev/null)" != "$2" ] || return 1
  printf '%s\n' "$2" >"$1.new"
  chmod 0644 "$1.new"
  mv "$1.new" "$1"
  say "wrote $1"
}
no_epilog() { grep -v '^#\{0,1\}Epilog=' || true; }
mkdir -p /etc/slurm /var/spool/slurmctld "$SLURM_LOG"
for n in "${NODES[@]}"; do
  mkdir -p "/var/spool/slurmd/$n"
  # The node's TmpFS, like /tmp: mode 1777, root's.
  install -d -o root -g root -m 1777 "/tmp/slurm-$n"
done
# The fake GPUs: character devices of NVIDIA's major (195), the GPUs 0 and 1 and the control device 255.
for i in 0 1 255; do
  dev=/dev/nvidia$i
  [ "$i" != 255 ] || dev=/dev/nvidiactl
  if [ ! -e "$dev" ]; then
    mknod -m 0666 "$dev" c 195 "$i"
    say "created fake GPU device $dev (c 195 $i)"
  fi
  if [ ! -c "$dev" ] || [ "$(stat -c '%t:%T' "$dev")" != "$(printf 'c3:%x' "$i")" ]; then
    die "$dev exists but is not the character device 195:$i"
  fi
done
# Earlier versions named regular files in gres.conf (Slurm could count them but not deny them).
if [ -d "$FAKE_GPUS" ]; then
  rm -rf -- "$FAKE_GPUS"
  say "removed $FAKE_GPUS (gres.conf names the character devices now)"
fi
old_conf=$(cat "$SLURM_CONF" 2>/dev/null || true)
restart=0 reconfigure=0
if write_if_changed "$SLURM_CONF" "$slurm_conf"; then
  # Only the Epilog line changed (install.sh installed it): scontrol reconfigure is enough.
  if [ "$(no_epilog <<<"$old_conf")" = "$(no_epilog <<<"$slurm_conf")" ]; then reconfigure=1; else restart=1; fi
fi
if write_if_changed "$CGROUP_CONF" "$cgroup_conf"; then restart=1; fi
if write_if_changed "$GRES_CONF" "$gres_conf"; then restart=1; fi

alive() { local st; st=$(ps -o stat= -p "$1") && [[ "$st" != Z* ]]; } # zombies do not count
daemon_pid() { # pidfile comm: print the pid if that daemon runs
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && alive "$pid" && echo "$pid"
}
stop_daemon() { # pidfile comm
  local pid
  pid=$(daemon_pid "$1" "$2") || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 60); do alive "$pid" || break; sleep 0.25; done
  alive "$pid" && die "$2 ($pid) did not stop"
  say "stopped $2 ($pid)"
}
# slurmd loads the PMIx library when it starts: one started before libpmix2 was installed (by
# tests/setup-mpi.sh above) has no working mpi/pmix until it is restarted.
pmix_installed=$(stat -c %Y "/var/lib/dpkg/info/libpmix2:$(dpkg --print-architecture).list" 2>/dev/null || echo 0)
for n in "${NODES[@]}"; do
  pid=$(daemon_pid "/run/slurmd-$n.pid" slurmd) || continue
  age=$(ps -o etimes= -p "$pid") || continue
  if [ $(($(date +%s) - age)) -le "$pmix_installed" ]; then
    say "slurmd -N $n started before libpmix2 was installed: restarting Slurm"
    restart=1
  fi
done
for pid in $(daemon_pid /run/slurmctld.pid slurmctld || true) \
  $(for n in "${NODES[@]}"; do daemon_pid "/run/slurmd-$n.pid" slurmd || true; done); do
  if [[ "$(readlink "/proc/$pid/cwd" || true)" == *" (deleted)" ]]; then
    say "a Slurm daemon ($pid) runs in a removed folder (an earlier checkout): restarting Slurm"
    restart=1
  fi
done
if [ "$restart" = 1 ]; then
  for n in "${NODES[@]}"; do stop_daemon "/run/slurmd-$n.pid" slurmd; done
  stop_daemon /run/slurmctld.pid slurmctld
fi
# Slurm daemons this script did not start (e.g. a one-node recipe) would hold the ports.
ours=" $(daemon_pid /run/slurmctld.pid slurmctld || true) "
for n in "${NODES[@]}"; do ours+="$(daemon_pid "/run/slurmd-$n.pid" slurmd || true) "; done
for pid in $(pgrep -x slurmctld || true) $(pgrep -x slurmd || true); do
  [[ "$ours" == *" $pid "* ]] || ! alive "$pid" || die "a foreign Slurm daemon runs: $(ps -o pid=,args= -p "$pid"); stop it first"
done

if ! daemon_pid /run/slurmctld.pid slurmctld >/dev/null; then
  setsid /usr/sbin/slurmctld -D >>"$SLURM_LOG/slurmctld.out" 2>&1 </dev/null &
  for _ in $(seq 1 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
  scontrol ping 2>/dev/null | grep -q UP || slurm_fail "slurmctld did not come up"
  say "started slurmctld"
fi
for n in "${NODES[@]}"; do
  if ! daemon_pid "/run/slurmd-$n.pid" slurmd >/dev/null; then
    setsid /usr/sbin/slurmd -D -N "$n" >>"$SLURM_LOG/slurmd-$n.out" 2>&1 </dev/null &
    say "started slurmd -N $n"
  fi
done
if [ "$reconfigure" = 1 ] && [ "$restart" = 0 ]; then
  scontrol reconfigure
  say "scontrol reconfigure (Epilog line changed)"
fi

# Wait until both nodes are idle; resume nodes left down/drained (e.g. by a failed test run).
node_states() { sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true; }
last_resume=-100
ready=0
for i in $(seq 1 120); do
  states=$(node_states)
  if [ "$(grep -cE '^n[12] idle$' <<<"$states")" = 2 ]; then ready=1; break; fi
  bad=$(awk '$2 ~ /^(down|drain|drng|drained|fail|failg)$/ {print $1}' <<<"$states" | paste -sd, -)
  if [ -n "$bad" ] && [ $((i - last_resume)) -ge 10 ]; then
    say "resuming $bad: $(sinfo -h -R -o '%N: %E' | paste -sd';' -)"
    scontrol update nodename="$bad" state=resume || true
    last_resume=$i
  fi
  sleep 0.5
done
[ "$ready" = 1 ] || { sinfo -N >&2; squeue >&2 || true; slurm_fail "nodes not idle after 60 s"; }
[ -e "$EPILOG" ] || say "note: $EPILOG does not exist yet (socker's install.sh installs it)"
sinfo -N -o '%N %P %t %c %m'

# 7. Self-check ---------------------------------------------------------------------------------
as_alice() { (cd /tmp && timeout 60 runuser -u alice -- "$@"); }

out=$(as_alice srun -N2 -n2 --chdir=/tmp printenv SLURMD_NODENAME 2>&1 | sort | paste -sd' ' -) ||
  slurm_fail "srun -N2 -n2 failed: $out"
[ "$out" = "n1 n2" ] || slurm_fail "srun -N2 -n2 ran on '$out', want 'n1 n2'"
say "OK: srun -N2 -n2 as alice ran on $out"

out=$(as_alice srun -w n1 -n1 --chdir=/tmp cat /proc/self/cgroup 2>&1) || slurm_fail "srun -n1 failed: $out"
mem_line=$(grep -E '^[0-9]+:memory:/slurm_n1/uid_2001/job_[0-9]+/step_0(/|$)' <<<"$out") ||
  slurm_fail "srun step not in a slurm_n1/uid_2001/job_ memory cgroup: $out"
say "OK: srun step cgroup on n1: $mem_line"

tmp="$work/batch"
mkdir "$tmp"
chown alice: "$tmp"
out=$(as_alice sbatch --wait -w n2 -Q --chdir="$tmp" -o "$tmp/out" --wrap 'cat /proc/self/cgroup' 2>&1) ||
  { cat "$tmp/out" >&2 2>/dev/null || true; slurm_fail "sbatch --wait as alice failed: $out"; }
mem_line=$(grep -E '^[0-9]+:memory:/slurm_n2/uid_2001/job_[0-9]+/step_batch(/|$)' "$tmp/out") ||
  { cat "$tmp/out" >&2; slurm_fail "batch step not in a slurm_n2/uid_2001/job_ memory cgroup"; }
say "OK: sbatch --wait as alice completed; batch step cgroup on n2: $mem_line"

out=$("$DOCKER" run --rm "$IMAGE" id -u 2>&1) || { tail_logs /var/log/dockerd.log; die "docker run failed: $out"; }
[ "$out" = 0 ] || die "docker run $IMAGE id -u printed '$out', want 0"
say "OK: docker run $IMAGE id -u -> 0"
bash "$here/setup-mpi.sh" check
say "done in $((SECONDS - start)) s"
