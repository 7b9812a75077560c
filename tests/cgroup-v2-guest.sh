#!/usr/bin/env bash
# tests/cgroup-v2-guest.sh - socker's suite for a node where root has every capability, run INSIDE the
# throwaway guest that tests/cgroup-v2.sh boots (as root, by the guest's socker-v2-suite.service). It
# makes the guest a Slurm node: users alice and bob, dockerd (cgroupfs driver, no bridge, no iptables),
# munge, slurmctld and one slurmd (proctrack/cgroup, task/cgroup, ConstrainRAMSpace/Cores/Devices), a
# local busybox image, socker from the shared checkout with install.sh --epilog; then runs each case as
# a real user (runuser, /usr/local/bin/socker, sudo, srun/sbatch/salloc/scancel).
# MODE v2: the guest booted cgroup v2 only (Slurm's cgroup/v2); ends with "cgroup-v2: N passed, M failed".
# MODE v1: the guest booted with systemd.unified_cgroup_hierarchy=0 (v1 controllers, a hybrid node as most
# clusters run; Slurm's cgroup/v1); ends with "cgroup-v1-root: N passed, M failed".
# In both, root has CAP_SYS_RESOURCE (unlike the CI host's), so socker takes the real node's path: it
# raises its own hard limits instead of refusing, and sets its OOM score to -1000 instead of leaving the
# step's memory cgroup; the limits, OOM and signal cases test that path.
# Writes what the kernel showed into IO/fixtures.
# Usage (guest only): cgroup-v2-guest.sh IO-FOLDER [v1|v2]   (default: the content of IO/mode, else v2)
set -euo pipefail
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

io=${1:?usage: cgroup-v2-guest.sh IO-FOLDER [v1|v2]}
# The image's boot script passes the folder only (a second argument would change the cached image):
# tests/cgroup-v2.sh writes the mode into IO/mode.
mode=${2:-$(cat "$io/mode" 2>/dev/null || echo v2)}
case "$mode" in
  v1) NAME=cgroup-v1-root ;;
  v2) NAME=cgroup-v2 ;;
  *) echo "cgroup-v2-guest.sh: unknown mode '$mode' (v1 or v2)" >&2; exit 2 ;;
esac
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly io src mode NAME
readonly IMAGE=socker-v2/busybox:1
readonly NODE=v2node # the image's host name, in both modes
readonly SLURM_LOG=/var/log/slurm
readonly ENTRY=/usr/local/libexec/socker/socker
filter=$(cat "$io/filter" 2>/dev/null || true)
fixtures=$io/fixtures
work=$(mktemp -d)

uptime_s() { cut -d' ' -f1 /proc/uptime; }
log() { printf '[%7.1f] %s\n' "$(uptime_s)" "$*"; }
die() {
  log "SETUP FAILED: $*"
  exit 1
}

# This script reconfigures the machine it runs on: only ever in the guest image.
if [ ! -x /usr/local/sbin/socker-v2-boot ] || [ "$(hostname)" != "$NODE" ] || [ "$(id -u)" != 0 ]; then
  echo "cgroup-v2-guest.sh runs only inside the guest that tests/cgroup-v2.sh boots" >&2
  exit 2
fi

passed=0 failed=0 setup_done=0
failed_names=()
on_exit() {
  local rc=$?
  if [ "$setup_done" = 0 ]; then
    failed=$((failed + 1))
    debug_dump
  fi
  [ "$failed" = 0 ] || log "failed: ${failed_names[*]:-setup}"
  echo "$NAME: $passed passed, $failed failed"
  rm -rf "$work"
  if [ "$rc" = 0 ] && [ "$failed" != 0 ]; then rc=1; fi
  exit "$rc"
}
trap on_exit EXIT

debug_dump() {
  local f
  for f in "$SLURM_LOG/slurmctld.log" "$SLURM_LOG/slurmd.log"; do
    [ -f "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }
  done
  # Two queries: journalctl ANDs matches on different fields (-t socker -u slurmd would show only
  # socker's records from inside jobs).
  echo "--- journal (socker, socker-epilog)"
  journalctl --no-pager -q -n 25 -t socker -t socker-epilog 2>/dev/null | cut -c1-400 || true
  echo "--- journal (docker, slurmd)"
  journalctl --no-pager -q -n 15 -u docker -u slurmd 2>/dev/null || true
}

# ---------------------------------------------------------------- helpers for the cases

# as USER CMD...: runs CMD as USER from their home, with a login-like environment.
as() {
  local user=$1
  shift
  (cd "/home/$user" && runuser -u "$user" -- env -i HOME="/home/$user" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C "$@")
}
# sbatch_as USER SCRIPT [sbatch options...]: submits SCRIPT (sh) as USER, prints the job id.
sbatch_as() {
  local user=$1 script=$2 out
  shift 2
  out=$(printf '#!/bin/sh\n%s\n' "$script" |
    as "$user" sbatch --parsable --output="/home/$user/slurm-%j.out" "$@") || return 1
  printf '%s\n' "${out%%;*}"
}
job_state() {
  local s
  s=$(scontrol show job -o "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  printf '%s\n' "${s:-GONE}"
}
# wait_for SECONDS CMD...: polls CMD until it succeeds; false after SECONDS.
wait_for() {
  local limit=$1 start=$SECONDS
  shift
  until "$@"; do
    [ $((SECONDS - start)) -lt "$limit" ] || return 1
    sleep 0.2
  done
}
job_ended() { case "$(job_state "$1")" in PENDING | RUNNING | COMPLETING | CONFIGURING | SUSPENDED) return 1 ;; esac; }
job_running() { [ "$(job_state "$1")" = RUNNING ]; }
wait_job_end() { wait_for "${2:-120}" job_ended "$1" || fail "job $1 did not end: $(job_state "$1")"; }
job_containers() { docker ps -aq --no-trunc --filter "label=socker.job=$1"; }
has_container() { [ -n "$(job_containers "$1")" ]; }
no_container() { [ -z "$(job_containers "$1")" ]; }
# Every cgroup folder named job_J, wherever it is.
job_folders() { find /sys/fs/cgroup -type d -name "job_$1" 2>/dev/null; }
no_job_folder() { [ -z "$(job_folders "$1")" ]; }
job_output() { cat "/home/alice/slurm-$1.out" 2>/dev/null || true; }
now_ms() { date +%s%3N; }

# fail MESSAGE: the case fails (the caller's set -e ends it).
fail() {
  echo "    FAIL: $*"
  return 1
}
# expect_match TEXT REGEX WHAT
expect_match() {
  if [[ "$1" =~ $2 ]]; then
    echo "    ok: $3: ${BASH_REMATCH[0]}"
  else
    fail "$3: '$1' does not match /$2/"
  fi
}
expect_eq() { # ACTUAL WANT WHAT
  if [ "$1" = "$2" ]; then echo "    ok: $3: $1"; else fail "$3: got '$1', want '$2'"; fi
}
indent() { sed "s/^/    $1/"; } # PREFIX: stdin, indented under the case
record() { # NAME: stdin saved as IO/fixtures/NAME
  cat >"$fixtures/$1"
  echo "    recorded $1: $(head -c 300 "$fixtures/$1" | tr '\n' ' ')"
}

# case NAME FUNCTION: runs one case in a subshell with set -e (so any failing command fails it).
case_() {
  local name=$1 fn=$2 start rc=0
  if [ -n "$filter" ] && [[ "$name" != *"$filter"* ]]; then return 0; fi
  start=$SECONDS
  log "--- $name"
  (
    set -e
    "$fn"
  ) &
  wait $! || rc=$?
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    log "ok   $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    failed_names+=("'$name'")
    log "FAIL $name ($((SECONDS - start)) s)"
  fi
}

# The step's scope in the unified tree: /system.slice/<node>_slurmstepd.scope or /system.slice/slurmstepd.scope.
readonly SCOPE_RE='/system\.slice/([A-Za-z0-9._-]+_)?slurmstepd\.scope'

# The container's main process, and the cgroup of every process of the container, as the guest sees them.
container_pid() { docker inspect -f '{{.State.Pid}}' "$1"; }
container_cgroups() { # ID: one line per process: PID CGROUP-LINE (a process that ended meanwhile, such
  local pid line        # as the container's short sleeps, is left out)
  for pid in $(docker top "$1" -eo pid | tail -n +2); do
    line=$(cat "/proc/$pid/cgroup" 2>/dev/null) || continue
    [ -n "$line" ] && printf '%s %s\n' "$pid" "$line"
  done
}

# ---------------------------------------------------------------- node set-up

setup_start=$(uptime_s)
log "guest up: kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
log "mode $mode; cgroup: /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup); v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || echo none)"
log "cgroup v1 mounts: $(awk '$3 == "cgroup" {print $2}' /proc/mounts | paste -sd' ' -)"
log "root's capabilities: $(grep CapEff /proc/self/status)"

# Slurm needs a non-loopback address (getaddrinfo with AI_ADDRCONFIG skips 127.0.0.1): one in the
# loopback range on a dummy interface, which nothing outside the guest can see (there is no NIC).
ip link set lo up
ip link add dummy0 type dummy
ip addr add 127.0.1.1/32 dev dummy0
ip link set dummy0 up
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$NODE" >/etc/hosts

for spec in alice:2001 bob:2002; do
  user=${spec%:*} uid=${spec#*:}
  groupadd -g "$uid" "$user"
  useradd -u "$uid" -g "$uid" -m -d "/home/$user" -s /bin/bash "$user"
  chmod 0700 "/home/$user"
done
log "users: $(id alice); $(id bob)"

# socker, from the shared checkout, the way a site installs it. In the background: its deno compile
# (which cannot succeed offline) takes a minute under emulation, while Docker starts.
install_start=$SECONDS
bash "$src/install.sh" --epilog --deno "$io/deno" >"$work/install.log" 2>&1 &
install_pid=$!

mkdir -p /etc/docker
cat >/etc/docker/daemon.json <<'EOF'
{
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "iptables": false,
  "bridge": "none"
}
EOF
systemctl start docker
wait_for 120 docker info >/dev/null 2>&1 || die "dockerd did not answer: $(journalctl -u docker -n 20 --no-pager)"
log "docker: $(docker info --format '{{.ServerVersion}}, cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}')"

# The test image, from busybox-static (as tests/setup.sh builds the host's).
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh cat dd echo env id kill ls sleep test true false; do ln -s busybox "$rootfs/bin/$applet"; done
chmod 1777 "$rootfs/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf - . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
log "image $IMAGE: $(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c8-19)"

[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
chmod 0600 /etc/munge/munge.key
systemctl start munge
wait_for 30 sh -c 'munge -n | unmunge >/dev/null 2>&1' || die "munge does not work"

wait "$install_pid" || { cat "$work/install.log"; die "install.sh --epilog failed"; }
indent 'install.sh: ' <"$work/install.log"
log "installed socker in $((SECONDS - install_start)) s"
printf '%s\n' "# cgroup $mode suite: the engine has no bridge network" "network = none" >/etc/socker/socker.conf
printf '%s\n' "# cgroup $mode suite" "$IMAGE" >/etc/socker/socker-images
chmod 0644 /etc/socker/socker.conf /etc/socker/socker-images

mem_mb=$(awk '/MemTotal/ {print int($2 / 1024) - 600}' /proc/meminfo)
mkdir -p /etc/slurm "$SLURM_LOG" /var/spool/slurmctld /var/spool/slurmd
cat >/etc/slurm/slurm.conf <<EOF
# Written by socker's tests/cgroup-v2-guest.sh: a one-node cgroup $mode cluster.
ClusterName=v2
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Between scancel's SIGTERM and SIGKILL. Under emulation socker needs 4-19 s to remove its container
# (0.15 s on real hardware), more on a busy host; 60 s so that its own SIGTERM path is what is tested.
KillWait=60
MinJobAge=60
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
Epilog=/usr/local/libexec/socker/slurm-epilog
GresTypes=gpu
NodeName=$NODE CPUs=$(nproc) RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat >/etc/slurm/cgroup.conf <<EOF
CgroupPlugin=cgroup/$mode
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=yes
EOF
# Two fake GPUs, as on the host's test cluster (tests/setup.sh): character devices of NVIDIA's major
# without a driver, named in gres.conf, so that Slurm denies each step the GPUs it did not get.
for i in 0 1 255; do
  dev=/dev/nvidia$i
  [ "$i" != 255 ] || dev=/dev/nvidiactl
  [ -c "$dev" ] || mknod -m 0666 "$dev" c 195 "$i"
done
printf '%s\n' "NodeName=$NODE Name=gpu File=/dev/nvidia[0-1]" >/etc/slurm/gres.conf
systemctl start slurmctld slurmd
# shellcheck disable=SC2016 # sh code
wait_for 120 sh -c '[ "$(sinfo -h -n '"$NODE"' -o %t 2>/dev/null)" = idle ]' ||
  die "node not idle: $(sinfo -N 2>&1)"
log "slurm: $(sinfo -h -N -o '%N %t %c CPUs %m MB'); $(scontrol show config | grep -E '^(ProctrackType|TaskPlugin) ' | tr -s ' ' | paste -sd';' -)"
setup_done=1
log "ready: set-up took $(awk -v a="$setup_start" -v b="$(uptime_s)" 'BEGIN {printf "%.0f", b - a}') s; node ready $(uptime_s) s after the kernel started"
uptime_s >"$io/results/ready-uptime"

# ---------------------------------------------------------------- the cases

t_v2_only() {
  expect_eq "$(stat -fc %T /sys/fs/cgroup)" cgroup2fs "/sys/fs/cgroup file system"
  expect_eq "$(awk '$3 == "cgroup" || $3 == "cgroup2"' /proc/mounts | wc -l)" 1 "cgroup mounts"
  expect_eq "$(docker info --format '{{.CgroupDriver}} v{{.CgroupVersion}}')" "cgroupfs v2" "Docker's cgroups"
  expect_match "$(cat /proc/self/cgroup)" '^0::/[^[:space:]]*$' "/proc/self/cgroup of the suite"
}

t_placement() {
  rm -f /home/alice/release
  # The container waits for a file in alice's home (mounted by default) so that it can be looked at.
  # shellcheck disable=SC2016 # sh code for the container
  local wait_loop='cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status; while [ ! -e $HOME/release ]; do sleep 0.2; done; echo released'
  local job
  job=$(sbatch_as alice "cat /proc/self/cgroup >\$HOME/batch-step.cgroup
srun -n1 sh -c 'cat /proc/self/cgroup >\$HOME/srun-step.cgroup; grep Cpus_allowed_list /proc/self/status >\$HOME/srun-step.cpus; exec socker run $IMAGE sh -c \"$wait_loop\"'
echo \"rc=\$?\"" --mem=200M)
  echo "    job $job"
  wait_for 120 has_container "$job" || fail "no container of job $job appeared: $(job_output "$job")"
  local id pid scope
  id=$(job_containers "$job")
  pid=$(container_pid "$id")
  # What the guest shows for the container's processes.
  container_cgroups "$id" >"$work/procs"
  sed 's/^/    container process: /' "$work/procs"
  cut -d' ' -f2- "$work/procs" | sort -u >"$work/lines"
  expect_eq "$(wc -l <"$work/lines")" 1 "distinct cgroups of the container's processes"
  expect_match "$(cat "$work/lines")" "^0::$SCOPE_RE/job_$job/step_0/user/$id\$" "cgroup of every container process"
  record v2-real-container.cgroup <"/proc/$pid/cgroup"
  scope=$(sed -E "s|^0::(.*)/job_$job/.*|\1|" "$work/lines")
  expect_match "$(docker inspect -f '{{.HostConfig.CgroupParent}}' "$id")" "^$scope/job_$job/step_0/user\$" "docker's --cgroup-parent"
  expect_match "$(cat /home/alice/srun-step.cgroup)" "^0::$scope/job_$job/step_0/user/task_0\$" "the srun step's /proc/self/cgroup"
  record v2-real-srun-step.cgroup </home/alice/srun-step.cgroup
  wait_for 10 test -s /home/alice/batch-step.cgroup
  expect_match "$(cat /home/alice/batch-step.cgroup)" "^0::$scope/job_$job/step_batch/user/task_0\$" "the batch step's /proc/self/cgroup"
  record v2-real-batch-step.cgroup </home/alice/batch-step.cgroup
  # The job's folder while the container runs.
  (cd "/sys/fs/cgroup$scope" && ls -R "job_$job") | record v2-real-job-ls-R.txt
  (cd "/sys/fs/cgroup$scope" && find "job_$job" -type d | sort) | record v2-real-job-dirs.txt
  (cd "/sys/fs/cgroup$scope" && for d in $(find "job_$job" -type d | sort); do
    printf '%s memory.max=%s memory.swap.max=%s cpuset.cpus.effective=%s cgroup.subtree_control=%s cgroup.procs=%s\n' \
      "$d" "$(cat "$d/memory.max")" "$(cat "$d/memory.swap.max")" "$(cat "$d/cpuset.cpus.effective")" \
      "$(tr ' ' , <"$d/cgroup.subtree_control")" "$(wc -l <"$d/cgroup.procs")"
  done) | record v2-real-job-limits.txt
  touch /home/alice/release
  wait_job_end "$job"
  local out
  out=$(job_output "$job")
  indent 'job output: ' <<<"$out"
  grep '^0::' <<<"$out" | record v2-real-container-inside.cgroup
  expect_eq "$(grep Cpus_allowed_list <<<"$out")" "$(cat /home/alice/srun-step.cpus)" "the container's CPUs are the step's"
  expect_match "$(grep '^0::' <<<"$out" | head -n 1)" '^0::/$' "/proc/self/cgroup inside the container (own cgroup namespace)"
  expect_match "$out" $'released\nrc=0' "the container's output and exit code"
  wait_for 30 no_job_folder "$job" || fail "job folders left: $(job_folders "$job")"
  no_container "$job" || fail "container left"
}

t_forged_job() {
  rm -f /home/alice/release
  # shellcheck disable=SC2016 # sh code for the container
  local wait_loop='while [ ! -e $HOME/release ]; do sleep 0.2; done'
  local other job id id2 line
  other=$(sbatch_as bob "sleep 600" --mem=50M)
  wait_for 60 job_running "$other" || fail "bob's job $other does not run"
  echo "    bob's job $other runs"
  job=$(sbatch_as alice "srun -n1 env SLURM_JOB_ID=$other SLURM_JOBID=$other SLURM_STEP_ID=0 SLURM_STEPID=0 \
socker run $IMAGE sh -c '$wait_loop'; echo \"rc=\$?\"" --mem=100M)
  echo "    alice's job $job, with SLURM_JOB_ID=$other in socker's environment"
  # And outside any job, from alice's shell.
  as alice env SLURM_JOB_ID="$other" SLURM_JOBID="$other" SLURM_STEP_ID=0 \
    socker run "$IMAGE" sh -c "$wait_loop" >"$work/outside.out" 2>&1 &
  local outside=$!
  wait_for 120 has_container "$job" || fail "no container of job $job: $(job_output "$job")"
  id=$(job_containers "$job")
  line=$(cat "/proc/$(container_pid "$id")/cgroup")
  expect_match "$line" "^0::$SCOPE_RE/job_$job/step_0/user/$id\$" "in a job: the container's cgroup"
  expect_eq "$(docker inspect -f '{{index .Config.Labels "socker.job"}}' "$id")" "$job" "in a job: label socker.job"
  # The other container of alice's carries no socker.job label.
  wait_for 120 sh -c "[ \$(docker ps -q --filter label=socker.uid=2001 | wc -l) = 2 ]" ||
    fail "no container outside a job: $(cat "$work/outside.out")"
  id2=$(docker ps -q --no-trunc --filter label=socker.uid=2001 | grep -vxF "$id")
  expect_eq "$(docker inspect -f '{{index .Config.Labels "socker.job"}}' "$id2")" "" "outside a job: label socker.job"
  container_cgroups "$id2" | indent 'outside a job: container process: '
  echo "    outside a job: State.Pid $(container_pid "$id2"), --cgroup-parent '$(docker inspect -f '{{.HostConfig.CgroupParent}}' "$id2")'"
  line=$(cat "/proc/$(container_pid "$id2")/cgroup")
  expect_match "$line" "^0::/docker/$id2\$" "outside a job: the container's cgroup (Docker's own parent)"
  [[ "$line" != *slurmstepd* && "$line" != *job_* ]] || fail "outside a job, the container is in a job's cgroup: $line"
  echo "    ok: outside a job: not in any job's cgroup"
  local inside
  inside=$(find "/sys/fs/cgroup" -path "*/job_$other/*" -type d -regextype egrep -regex '.*/[0-9a-f]{64}')
  expect_eq "$inside" "" "containers in bob's job $other"
  touch /home/alice/release
  wait "$outside" || fail "socker outside a job exited $?: $(cat "$work/outside.out")"
  wait_job_end "$job"
  expect_match "$(job_output "$job")" '^rc=0$' "in a job: exit code"
  scancel "$other"
  wait_job_end "$other"
}

t_memory() {
  local job out
  # shellcheck disable=SC2016 # sh code for the job
  job=$(sbatch_as alice 'p=$(sed -n "s/^0:://p" /proc/self/cgroup); step=${p%/user/*}; jobdir=${step%/*}
echo "job_memory.max=$(cat /sys/fs/cgroup$jobdir/memory.max) step_memory.max=$(cat /sys/fs/cgroup$step/memory.max) user_memory.max=$(cat /sys/fs/cgroup$step/user/memory.max)"
socker run '"$IMAGE"' dd if=/dev/zero of=/dev/null bs=300M count=1; echo "big=$?"
socker run '"$IMAGE"' dd if=/dev/zero of=/dev/null bs=30M count=1; echo "small=$?"' --mem=100M)
  echo "    job $job (sbatch --mem=100M)"
  wait_job_end "$job" 240
  out=$(job_output "$job")
  indent 'job output: ' <<<"$out"
  expect_match "$out" 'job_memory.max=104857600 ' "the job's memory.max"
  expect_match "$out" $'(^|\n)big=137(\n|$)' "a 300 MB allocation"
  expect_match "$out" $'(^|\n)small=0(\n|$)' "a 30 MB allocation"
  grep '_memory.max=' <<<"$out" | tr ' ' '\n' | record v2-real-batch-memory-max.txt
}

# The audit records of job J, as the node's journal has them.
audit_of_job() { journalctl --no-pager -o short-precise -t socker | grep -F "\"job\":\"$1\"" || true; }
# The containers the Epilog's cleanup of job J found.
epilog_found() { audit_of_job "$1" | sed -n 's/.*"event":"cleanup".*"containers":\[\([^]]*\)\].*/\1/p'; }

# A job running SCRIPT is cancelled once its container runs; the container and every folder of the
# job must go. Sets CANCEL_JOB and CANCEL_MS (scancel until the container was gone).
cancel_case() {
  local script=$1 limit_s=$2 job start
  job=$(sbatch_as alice "$script")
  echo "    job $job: ${script//$'\n'/; }"
  wait_for 120 has_container "$job" || fail "no container of job $job: $(job_output "$job")"
  sleep 1
  start=$(now_ms)
  scancel "$job"
  if ! wait_for "$limit_s" no_container "$job"; then
    docker ps -a --filter "label=socker.job=$job" --format '{{.ID}} {{.Status}}' | indent 'left: '
    audit_of_job "$job" | indent 'audit: '
    fail "container still there ${limit_s} s after scancel"
  fi
  CANCEL_MS=$(($(now_ms) - start))
  CANCEL_JOB=$job
  echo "    scancel -> container gone: $CANCEL_MS ms"
  wait_job_end "$job"
  wait_for 30 no_job_folder "$job" || fail "cgroup folders of job $job left: $(job_folders "$job")"
  echo "    ok: no container and no cgroup folder of job $job left"
  wait_for 60 sh -c "journalctl --no-pager -o cat -t socker | grep -F '\"job\":\"$job\"' | grep -q '\"event\":\"cleanup\"'" ||
    fail "the Epilog did not run socker cleanup for job $job"
  audit_of_job "$job" | indent 'audit: '
}

t_scancel_srun() {
  cancel_case "srun -n1 socker run $IMAGE sleep 1000" 90
  printf '%s\n' "$CANCEL_MS" >"$io/results/scancel-srun-ms"
  # socker got SIGTERM from Slurm and removed its container itself: the Epilog found none.
  expect_eq "$(epilog_found "$CANCEL_JOB")" "" "containers the Epilog still found"
}

t_epilog() {
  cancel_case "socker run $IMAGE sleep 1000
echo never" 120
  printf '%s\n' "$CANCEL_MS" >"$io/results/scancel-epilog-ms"
  # socker only got SIGKILL: the container was the node's watcher's or the Epilog's to remove, whichever
  # came first (the other finds it gone, or being removed).
  expect_match "$(epilog_found "$CANCEL_JOB" | grep . | sort -u)" '^"[0-9a-f]{12}"$' "container the watcher or the Epilog removed"
  expect_match "$(audit_of_job "$CANCEL_JOB" | grep '"event":"cleanup"')" '"outcome":"ok"' "the Epilog's cleanup"
}

t_plain_run() {
  local out rc=0 start docker_ms socker_ms
  start=$(now_ms)
  docker run --rm "$IMAGE" true
  docker_ms=$(($(now_ms) - start))
  start=$(now_ms)
  # shellcheck disable=SC2016 # sh code for the container
  out=$(as alice socker run "$IMAGE" sh -c 'id -u; echo "home=$HOME pwd=$(pwd)"; exit 7' 2>&1) || rc=$?
  socker_ms=$(($(now_ms) - start))
  indent 'output: ' <<<"$out"
  expect_eq "$rc" 7 "exit code"
  expect_match "$out" $'^2001\nhome=/home/alice pwd=/home/alice$' "output"
  echo "    docker run --rm (root) $docker_ms ms; socker run (alice) $socker_ms ms"
  printf 'docker_run_ms %s\nsocker_run_ms %s\n' "$docker_ms" "$socker_ms" >"$io/results/run-times"
}

t_gpus() {
  local out rc=0
  out=$(as alice srun -n1 socker run --gpus "$IMAGE" true 2>&1) || rc=$?
  expect_eq "$rc" 125 "srun socker run --gpus: exit code"
  expect_match "$out" 'no GPU is allocated to job [0-9]+' "srun socker run --gpus: message"
  rc=0
  out=$(as alice socker run --gpus "$IMAGE" true 2>&1) || rc=$?
  expect_eq "$rc" 125 "socker run --gpus outside a job: exit code"
  expect_match "$out" 'only inside a Slurm job' "socker run --gpus outside a job: message"
}

# Device nodes of both GPUs in alice's home (mounted in her containers): opening one reaches the
# container's device rules. Allowed: ENXIO (no driver); not allowed: EPERM.
gpu_nodes() {
  rm -rf /home/alice/gpu-nodes
  mkdir -p /home/alice/gpu-nodes
  mknod -m 0666 /home/alice/gpu-nodes/nvidia0 c 195 0
  mknod -m 0666 /home/alice/gpu-nodes/nvidia1 c 195 1
}
# shellcheck disable=SC2016 # sh code for the container
readonly SEE_AND_OPEN='echo "sees: $(ls /dev | grep nvidia | tr "\n" " ")"; for i in 0 1; do cat /home/alice/gpu-nodes/nvidia$i 2>&1 | sed "s|.*: ||; s|^|gpu$i: |"; done'

t_gpu_devices() {
  local out
  gpu_nodes
  out=$(as alice srun -n1 --gres=gpu:1 socker run --gpus "$IMAGE" sh -c "$SEE_AND_OPEN" 2>&1 | grep -v '^srun') || true
  indent 'one GPU, --gpus: ' <<<"$out"
  expect_eq "$out" $'sees: nvidia0 nvidiactl \ngpu0: No such device or address\ngpu1: Operation not permitted' "a job with one GPU, --gpus"
  out=$(as alice srun -n1 socker run "$IMAGE" sh -c "$SEE_AND_OPEN" 2>&1 | grep -v '^srun') || true
  indent 'no GPU: ' <<<"$out"
  expect_eq "$out" $'sees: \ngpu0: Operation not permitted\ngpu1: Operation not permitted' "a job with no GPU"
  out=$(as alice srun -n1 --gres=gpu:2 socker run --gpus "$IMAGE" sh -c "$SEE_AND_OPEN" 2>&1 | grep -v '^srun') || true
  indent 'two GPUs, --gpus: ' <<<"$out"
  expect_eq "$out" $'sees: nvidia0 nvidia1 nvidiactl \ngpu0: No such device or address\ngpu1: No such device or address' "a job with both GPUs, --gpus"
  rm -rf /home/alice/gpu-nodes
}

t_salloc() {
  local out rc=0
  out=$(as alice salloc -n1 --mem=100M sh -c 'srun -n1 cat /proc/self/cgroup; srun -n1 socker run '"$IMAGE"' sh -c "exit 3"; echo "rc=$?"' 2>&1) || rc=$?
  indent '' <<<"$out"
  expect_eq "$rc" 0 "salloc's exit code"
  expect_match "$(grep '^0::' <<<"$out")" "^0::$SCOPE_RE/job_[0-9]+/step_0/user/task_0\$" "salloc + srun step's /proc/self/cgroup"
  grep '^0::' <<<"$out" | record v2-real-salloc-srun-step.cgroup
  expect_match "$out" 'rc=3' "salloc + srun socker run: the container's exit code"
}

t_doctor() {
  local out rc=0
  out=$("$ENTRY" doctor 2>&1) || rc=$?
  indent 'doctor: ' <<<"$out"
  printf '%s\n' "$out" >"$io/results/doctor.txt"
  expect_match "$out" $'ok   Docker engine: [^\n]*cgroup driver cgroupfs, cgroup v'"${mode#v}" "doctor: engine"
  expect_match "$out" $'ok   engine fits Slurm\'s cgroups' "doctor: cgroups"
  expect_match "$out" $'ok   Slurm configuration' "doctor: Slurm"
  expect_eq "$rc" 0 "doctor's exit code"
}

# ---------------------------------------------------------------- v1 mode: placement and the job's memory

# v1_path CGROUP-TEXT CONTROLLER: the path of CONTROLLER in a /proc/<pid>/cgroup text.
v1_path() {
  awk -F: -v c="$2" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' <<<"$1"
}
# The start of alice's v1 step paths: /slurm[_<node>]/uid_2001/job_ (Debian builds Slurm with
# multiple-slurmd support, which names the node).
readonly V1_JOB_RE='/slurm(_[A-Za-z0-9._-]+)?/uid_2001/job_'
readonly V1_CONTROLLERS=(memory cpuset devices freezer)

t_v1_hybrid() {
  expect_eq "$(stat -fc %T /sys/fs/cgroup)" tmpfs "/sys/fs/cgroup file system (v1 controllers below)"
  local c
  for c in "${V1_CONTROLLERS[@]}"; do
    expect_match "$(awk -v c="$c" '$3 == "cgroup" && ("," $4 ",") ~ ("," c ",") {print $2}' /proc/mounts)" \
      "^/sys/fs/cgroup/$c\$" "v1 $c hierarchy"
  done
  expect_eq "$(docker info --format '{{.CgroupDriver}} v{{.CgroupVersion}}')" "cgroupfs v1" "Docker's cgroups"
  expect_match "$(grep '^CgroupPlugin' /etc/slurm/cgroup.conf)" 'cgroup/v1' "Slurm's cgroup plugin"
  expect_match "$(v1_path "$(cat /proc/self/cgroup)" memory)" '^/' "the suite's memory cgroup line"
}

t_placement_v1() {
  rm -f /home/alice/release
  # shellcheck disable=SC2016 # sh code for the container
  local wait_loop='grep Cpus_allowed_list /proc/self/status; while [ ! -e $HOME/release ]; do sleep 0.2; done; echo released'
  local job id step c pid paths jobdir
  job=$(sbatch_as alice "srun -n1 sh -c 'cat /proc/self/cgroup >\$HOME/srun-step.cgroup; grep Cpus_allowed_list /proc/self/status >\$HOME/srun-step.cpus; exec socker run $IMAGE sh -c \"$wait_loop\"'
echo \"rc=\$?\"" --mem=200M)
  echo "    job $job"
  wait_for 120 has_container "$job" || fail "no container of job $job appeared: $(job_output "$job")"
  id=$(job_containers "$job")
  step=$(docker inspect -f '{{.HostConfig.CgroupParent}}' "$id")
  expect_match "$step" "^$V1_JOB_RE$job/step_0\$" "docker's --cgroup-parent (the srun step's v1 cgroup)"
  # Every process of the container, in every controller Slurm manages.
  for pid in $(docker top "$id" -eo pid | tail -n +2); do
    cat "/proc/$pid/cgroup" 2>/dev/null || true
  done >"$work/procs"
  for c in "${V1_CONTROLLERS[@]}"; do
    paths=$(v1_path "$(cat "$work/procs")" "$c" | sort -u)
    expect_eq "$paths" "$step/$id" "$c cgroup of every container process"
  done
  record v1-real-container.cgroup <"/proc/$(container_pid "$id")/cgroup"
  expect_match "$(v1_path "$(cat /home/alice/srun-step.cgroup)" memory)" "^$step(/task_0)?\$" "the srun step's memory cgroup"
  record v1-real-srun-step.cgroup </home/alice/srun-step.cgroup
  jobdir=${step%/step_0}
  expect_eq "$(cat "/sys/fs/cgroup/memory$jobdir/memory.limit_in_bytes")" 209715200 "the job's memory limit (--mem=200M)"
  expect_eq "$(cat "/sys/fs/cgroup/cpuset$step/$id/cpuset.cpus")" "$(cat "/sys/fs/cgroup/cpuset$step/cpuset.cpus")" \
    "the container's cpuset.cpus, the step's"
  touch /home/alice/release
  wait_job_end "$job"
  local out
  out=$(job_output "$job")
  indent 'job output: ' <<<"$out"
  expect_eq "$(grep Cpus_allowed_list <<<"$out")" "$(cat /home/alice/srun-step.cpus)" "the container's CPUs are the step's"
  expect_match "$out" $'released\nrc=0' "the container's output and exit code"
  wait_for 30 no_job_folder "$job" || fail "job folders left: $(job_folders "$job")"
  no_container "$job" || fail "container left"
}

t_memory_v1() {
  local job out
  # shellcheck disable=SC2016 # sh code for the job
  job=$(sbatch_as alice 'p=$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup); jobdir=${p%%/step_*}
echo "job_memory.limit_in_bytes=$(cat /sys/fs/cgroup/memory$jobdir/memory.limit_in_bytes)"
socker run '"$IMAGE"' dd if=/dev/zero of=/dev/null bs=300M count=1; echo "big=$?"
socker run '"$IMAGE"' dd if=/dev/zero of=/dev/null bs=30M count=1; echo "small=$?"' --mem=100M)
  echo "    job $job (sbatch --mem=100M)"
  wait_job_end "$job" 240
  out=$(job_output "$job")
  indent 'job output: ' <<<"$out"
  expect_match "$out" 'job_memory.limit_in_bytes=104857600' "the job's memory.limit_in_bytes"
  expect_match "$out" $'(^|\n)big=137(\n|$)' "a 300 MB allocation"
  expect_match "$out" $'(^|\n)small=0(\n|$)' "a 30 MB allocation"
}

# ---------------------------------------------------------------- the real node's path: root has every capability

# Containers of alice's (outside a job, the cases below run one at a time).
alice_containers() { docker ps -aq --no-trunc --filter label=socker.uid=2001; }
alice_runs() { [ -n "$(docker ps -q --filter label=socker.uid=2001)" ]; }
# supervisor_of ID: the pid of the socker that runs container ID (its label socker.supervisor, pid:start).
supervisor_of() {
  local label
  label=$(docker inspect -f '{{index .Config.Labels "socker.supervisor"}}' "$1")
  printf '%s\n' "${label%%:*}"
}
# proc_limit PID ROW: "SOFT HARD" of a row of /proc/PID/limits (e.g. "Max open files").
proc_limit() {
  awk -v r="$2" 'index($0, r " ") == 1 { split(substr($0, length(r) + 1), a, " "); print a[1], a[2] }' "/proc/$1/limits"
}

t_root_limits() {
  rm -f /home/alice/release
  # shellcheck disable=SC2016 # sh code for the container
  local probe='echo "n=$(ulimit -n) Hn=$(ulimit -H -n) f=$(ulimit -f) Hf=$(ulimit -H -f) t=$(ulimit -t) Ht=$(ulimit -H -t)"; while [ ! -e $HOME/release ]; do sleep 0.2; done'
  # Hard limits below what socker needs (128 open files, no file-size limit): where root lacks
  # CAP_SYS_RESOURCE these are refused (125, tests/limits_test.ts); here socker raises its own.
  as alice bash -c "ulimit -n 64; ulimit -f 100000; ulimit -t 600; exec socker run $IMAGE sh -c '$probe'" \
    >"$work/limits.out" 2>&1 &
  local run=$! id sup rc=0
  wait_for 120 alice_runs || { wait "$run" || true; fail "no container started: $(cat "$work/limits.out")"; }
  id=$(alice_containers)
  sup=$(supervisor_of "$id")
  echo "    socker (pid $sup), its /proc/$sup/limits:"
  grep -E '^Max (open files|file size|cpu time) ' "/proc/$sup/limits" | indent '  '
  expect_eq "$(proc_limit "$sup" 'Max open files')" "128 128" "socker's own open files (the caller's hard limit was 64)"
  expect_eq "$(proc_limit "$sup" 'Max file size')" "unlimited unlimited" "socker's own file size (the caller's was 100000 KiB)"
  expect_eq "$(proc_limit "$sup" 'Max cpu time')" "unlimited unlimited" "socker's own CPU time (the caller's was 600 s)"
  touch /home/alice/release
  wait "$run" || rc=$?
  indent 'output: ' <"$work/limits.out"
  expect_eq "$rc" 0 "exit code"
  # busybox counts the file size in 512-byte blocks: 100000 KiB are 200000.
  expect_eq "$(cat "$work/limits.out")" "n=64 Hn=64 f=200000 Hf=200000 t=600 Ht=600" "ulimit inside the container: the caller's"
  expect_eq "$(alice_containers)" "" "containers left"
}

# A job's memory limit: socker stays in the step's memory cgroup with OOM score -1000; the OOM killer
# takes the container's processes, never the supervisor, which reports the container's end.
t_root_oom() {
  rm -f /home/alice/go
  local job id sup cg before kills out ends
  before=$(dmesg | grep -c 'oom-kill:' || true)
  # Sixteen processes of 20 MiB each, all alive together for a while, under a 250 MiB limit: the OOM
  # killer must kill, and the largest process in the step's memory cgroup is socker (~45 MB), which it
  # would take if it could. Then one 300 MB allocation. socker's own exit code is echoed inside each step:
  # srun's is Slurm's word (cgroup/v2 makes it 1, "Out Of Memory", once the step saw an OOM kill).
  # shellcheck disable=SC2016 # sh code for the container
  printf '%s\n' 'while [ ! -e $HOME/go ]; do sleep 0.2; done' \
    'i=0; while [ $i -lt 16 ]; do (dd if=/dev/zero bs=20M count=1 2>/dev/null | sleep 20) & i=$((i+1)); sleep 0.2; done' \
    'wait; echo survived; exit 7' >/home/alice/oom.sh
  chown alice:alice /home/alice/oom.sh
  # shellcheck disable=SC2016 # sh code for the job
  job=$(sbatch_as alice 'srun -n1 sh -c '\''socker run --no-stdin '"$IMAGE"' sh $HOME/oom.sh; echo "socker=$?"'\''
echo "srun=$?"
srun -n1 sh -c '\''socker run '"$IMAGE"' dd if=/dev/zero of=/dev/null bs=300M count=1; echo "socker=$?"'\''
echo "srun=$?"' --mem=250M)
  echo "    job $job (sbatch --mem=250M)"
  wait_for 120 has_container "$job" || fail "no container of job $job: $(job_output "$job")"
  id=$(job_containers "$job")
  sup=$(supervisor_of "$id")
  expect_eq "$(cat "/proc/$sup/oom_score_adj")" -1000 "socker's oom_score_adj (pid $sup)"
  cg=$(cat "/proc/$sup/cgroup")
  if [ "$mode" = v1 ]; then
    expect_match "$(v1_path "$cg" memory)" "^$V1_JOB_RE$job/step_0(/task_[0-9]+)?\$" "socker's memory cgroup: the step's (it did not leave it)"
  else
    expect_match "$cg" "^0::$SCOPE_RE/job_$job/step_0/user/task_[0-9]+\$" "socker's cgroup: the step's"
  fi
  echo "    the container's oom_score_adj: $(cat "/proc/$(container_pid "$id")/oom_score_adj")"
  touch /home/alice/go
  wait_job_end "$job" 400
  out=$(job_output "$job")
  indent 'job output: ' <<<"$out"
  # The kernel's one line per OOM kill: oom-kill:...,task_memcg=<cgroup>,task=<name>,pid=<pid>,uid=<uid>.
  kills=$(dmesg | grep -o 'oom-kill:.*' | tail -n +$((before + 1)) || true)
  sed -E 's/.*task_memcg=([^,]*),task=([^,]*),pid=([0-9]+).*/killed \2 (pid \3) in \1/' <<<"$kills" | indent 'kernel: '
  expect_match "$(grep -c "task_memcg=[^,]*/job_$job/step_0/" <<<"$kills" || true)" '^[1-9][0-9]*$' "OOM kills in step 0"
  expect_match "$(grep -c "task_memcg=[^,]*/job_$job/step_1/" <<<"$kills" || true)" '^[1-9][0-9]*$' "OOM kills in step 1"
  if grep -qE ",pid=$sup," <<<"$kills"; then fail "the OOM killer killed socker ($sup)"; fi
  expect_match "$out" $'(^|\n)survived\n' "the container's output, through a supervisor that survived"
  expect_eq "$(grep '^socker=' <<<"$out" | paste -sd' ' -)" "socker=7 socker=137" \
    "socker's exit codes: the container's own 7, then 137 for the 300 MB allocation"
  wait_for 30 sh -c "journalctl --no-pager -o cat -t socker | grep -F '\"job\":\"$job\"' | grep -c '\"event\":\"end\"' | grep -qx 2" ||
    fail "socker did not log both ends: $(audit_of_job "$job")"
  ends=$(audit_of_job "$job" | grep '"event":"end"' | grep -o '"outcome":"[^"]*"' | paste -sd' ' -)
  expect_eq "$ends" '"outcome":"exit 7" "outcome":"exit 137"' "the audit's end records"
  wait_for 30 no_job_folder "$job" || fail "job folders left: $(job_folders "$job")"
}

t_root_signals() {
  as alice socker run "$IMAGE" sleep 1000 >"$work/term.out" 2>&1 &
  local run=$! id sup parent rc=0 start ms
  wait_for 120 alice_runs || { wait "$run" || true; fail "no container started: $(cat "$work/term.out")"; }
  id=$(alice_containers)
  sup=$(supervisor_of "$id")
  parent=$(ps -o ppid= -p "$sup" | tr -d ' ')
  expect_eq "$(ps -o comm= -p "$parent")" sudo "socker's parent"
  # SIGTERM to the user's sudo, as their shell's kill or a terminal's end sends it; sudo relays it.
  start=$(now_ms)
  kill -TERM "$parent"
  wait "$run" || rc=$?
  ms=$(($(now_ms) - start))
  echo "    SIGTERM -> socker exited: $ms ms"
  expect_eq "$rc" 143 "exit code"
  expect_eq "$(alice_containers)" "" "containers left once socker exited"
  if kill -0 "$sup" 2>/dev/null; then fail "socker ($sup) still runs"; fi
  expect_eq "$(ls -A /run/socker 2>/dev/null || true)" "" "socker's staging folder"
  wait_for 30 sh -c "journalctl --no-pager -o cat -t socker | grep -F '${id:0:12}' | grep -q '\"event\":\"end\"'" ||
    fail "no end record for ${id:0:12}"
  expect_match "$(journalctl --no-pager -o cat -t socker | grep -F "${id:0:12}" | grep '"event":"end"')" '"outcome":"exit 143"' "the audit's end record"
  printf '%s\n' "$ms" >"$io/results/sigterm-ms"
}

suite_start=$SECONDS
if [ "$mode" = v2 ]; then
  case_ "this node is cgroup v2 only, and Docker sees v2 with the cgroupfs driver" t_v2_only
  case_ "socker run outside a job: my uid, my home and my exit code come back" t_plain_run
  case_ "srun socker run: every process of my container is in my step's cgroup, .../job_J/step_0/user/<container id>" t_placement
  case_ "a forged SLURM_JOB_ID pointing at bob's running job changes nothing, in a job or outside one" t_forged_job
  case_ "sbatch --mem=100M: a 300 MB allocation in my container is killed (137), a 30 MB one exits 0" t_memory
else
  case_ "this node has cgroup v1 controllers (hybrid), and Docker sees v1 with the cgroupfs driver" t_v1_hybrid
  case_ "srun socker run: every process of my container is in my step's memory, cpuset, devices and freezer cgroups" t_placement_v1
  case_ "sbatch --mem=100M: a 300 MB allocation in my container is killed (137), a 30 MB one exits 0" t_memory_v1
fi
case_ "hard limits below socker's needs: socker raises its own, my container keeps mine (ulimit -Hn 64 inside)" t_root_limits
case_ "a --mem job's OOM kills: socker has OOM score -1000 in my step's cgroup, survives and reports 7 and 137" t_root_oom
case_ "SIGTERM to my socker: the container is gone, exit 143, nothing left" t_root_signals
if [ "$mode" = v2 ]; then
  case_ "salloc + srun socker run: the step's cgroup, and my container's exit code comes back" t_salloc
fi
case_ "scancel of a job running srun socker run IMG sleep 1000 leaves no container and no cgroup folder" t_scancel_srun
case_ "a plain socker run line in a cancelled batch job: the watcher or the Epilog removes the container, and every job folder goes" t_epilog
if [ "$mode" = v2 ]; then
  case_ "--gpus is refused when my job has no GPU, and outside a job" t_gpus
  case_ "a job with one GPU of two sees that one with --gpus and is refused the other (EPERM); with none, none; with both, both" t_gpu_devices
fi
case_ "socker doctor on cgroup $mode passes, cgroup checks included" t_doctor
log "cases took $((SECONDS - suite_start)) s"
[ "$failed" = 0 ] || debug_dump
