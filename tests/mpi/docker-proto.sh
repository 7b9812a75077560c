#!/usr/bin/env bash
# tests/mpi/docker-proto.sh - a by-hand prototype of what socker must emit for MPI (issue 10): run one
# rank of an srun --mpi=pmix step in its own container of socker-test/openmpi:1, with plain docker.
# Not part of the test suite. It runs as root through sudo from inside the step, like socker:
#   install -d -m 0755 /opt/socker-tests/proto
#   install -m 0755 tests/mpi/docker-proto.sh /opt/socker-tests/proto/docker-proto
#   echo 'alice ALL=(root) NOPASSWD: /opt/socker-tests/proto/docker-proto' >/etc/sudoers.d/zz-mpi-proto
#   cd /tmp && runuser -u alice -- srun --mpi=pmix -N2 -n2 sudo -n /opt/socker-tests/proto/docker-proto hello
#   rm /etc/sudoers.d/zz-mpi-proto        # afterwards: it is a test aid, not a policy
# Arguments: PROGRAM (hello or pingpong) [ITERATIONS]. Nothing the caller passes becomes a docker option
# except through the fixed switches below, read from the caller's environment (the one sudo was started
# with), so that experiments can leave pieces out:
#   PROTO_PASS     variable name patterns (comma or space separated) passed into the container
#                  (default "SLURM_* PMI_* PMIX_*")
#   PROTO_NET      host|bridge (default host);  PROTO_IPC, PROTO_PID, PROTO_UTS: host|private (default host)
#   PROTO_SERVER   1|ro|0: bind the step's PMIx server folder <SlurmdSpoolDir>/pmix.<job>.<step>
#                  (ro: read-only; default 1)
#   PROTO_CLI      1|0: bind the step's PMIx client folder <TmpFS>/spmix_appdir_<uid>_<job>.<step> (default 0)
#   PROTO_HARDEN   1|0: --cap-drop ALL --security-opt no-new-privileges (default 1)
#   PROTO_CGROUP   1|0: --cgroup-parent the step's cgroup (default 1)
#   PROTO_MCA      1|0: OMPI_MCA_btl_tcp_if_exclude=127.0.0.1/8,docker0 and
#                  OMPI_MCA_btl_vader_single_copy_mechanism=none (default 1)
#   PROTO_SHOW     1: print the docker command on stderr
# The job, step, node and cgroup come from /proc/self/cgroup (this process is in the step), the folders
# from Slurm's configuration, never from the caller's variables.
set -euo pipefail

DOCKER=/usr/bin/docker
IMAGE=socker-test/openmpi:1
die() { printf 'docker-proto: %s\n' "$*" >&2; exit 125; }
[ "$(id -u)" = 0 ] || die "run through sudo"

# The caller's environment: that of the outermost sudo above us (sudo's own environment is reset).
pid=$$ caller=""
while [ "$pid" -gt 1 ]; do
  ppid=$(ps -o ppid= -p "$pid" | tr -d ' ')
  [ "$(ps -o comm= -p "$ppid")" = sudo ] || break
  caller=$ppid pid=$ppid
done
[ -n "$caller" ] || die "not started by sudo"
uid=${SUDO_UID:?} gid=${SUDO_GID:?}
declare -A callenv=()
while IFS= read -r -d '' kv; do callenv[${kv%%=*}]=${kv#*=}; done <"/proc/$caller/environ"
opt() { local v=${callenv[$1]:-$2}; [[ "$v" =~ ^(host|private|bridge|ro|0|1)$ ]] || die "bad $1=$v"; echo "$v"; }

prog=${1:-hello}
[[ "$prog" =~ ^(hello|pingpong)$ ]] || die "program: hello or pingpong"
args=()
if [ $# -ge 2 ]; then [[ "$2" =~ ^[0-9]{1,7}$ ]] || die "iterations: a number"; args=("$2"); fi

# Job, step and node from our own cgroup (freezer: /slurm_<node>/uid_<uid>/job_<job>/step_<step>).
cg=$(grep -E '^[0-9]+:freezer:' /proc/self/cgroup | cut -d: -f3)
[[ "$cg" =~ ^/slurm_([A-Za-z0-9_-]+)/uid_([0-9]+)/job_([0-9]+)/step_([0-9]+)$ ]] || die "not in a Slurm step: $cg"
node=${BASH_REMATCH[1]} job=${BASH_REMATCH[3]} step=${BASH_REMATCH[4]}
[ "${BASH_REMATCH[2]}" = "$uid" ] || die "step of another user"
conf() { scontrol show config | awk -v k="$1" '$1 == k { print $3 }'; }
spool=$(conf SlurmdSpoolDir) tmpfs=$(conf TmpFS)
server="${spool//%n/$node}/pmix.$job.$step"
cli="${tmpfs//%n/$node}/spmix_appdir_${uid}_$job.$step"

cmd=("$DOCKER" run --rm --init --name "mpi-proto-$job.$step-$node-$$" --user "$uid:$gid")
for g in $(id -G "$(id -nu "$uid")"); do [ "$g" = "$gid" ] || cmd+=(--group-add "$g"); done
[ "$(opt PROTO_HARDEN 1)" = 0 ] || cmd+=(--cap-drop ALL --security-opt no-new-privileges)
[ "$(opt PROTO_CGROUP 1)" = 0 ] || cmd+=(--cgroup-parent "$cg")
[ "$(opt PROTO_NET host)" = bridge ] || cmd+=(--network host)
[ "$(opt PROTO_IPC host)" = private ] || cmd+=(--ipc host)
[ "$(opt PROTO_PID host)" = private ] || cmd+=(--pid host)
[ "$(opt PROTO_UTS host)" = private ] || cmd+=(--uts host)
server_mode=$(opt PROTO_SERVER 1)
if [ "$server_mode" != 0 ]; then
  [ "$(stat -c %u "$server")" = "$uid" ] || die "$server is not the caller's"
  if [ "$server_mode" = ro ]; then cmd+=(-v "$server:$server:ro"); else cmd+=(-v "$server:$server"); fi
fi
if [ "$(opt PROTO_CLI 0)" = 1 ]; then
  [ "$(stat -c %u "$cli")" = "$uid" ] || die "$cli is not the caller's"
  cmd+=(-v "$cli:$cli")
fi
if [ "$(opt PROTO_MCA 1)" = 1 ]; then
  cmd+=(-e "OMPI_MCA_btl_tcp_if_exclude=127.0.0.1/8,docker0" -e OMPI_MCA_btl_vader_single_copy_mechanism=none)
fi
IFS=", " read -r -a patterns <<<"${callenv[PROTO_PASS]-SLURM_* PMI_* PMIX_*}"
for name in $(printf '%s\n' "${!callenv[@]}" | sort); do
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
  for p in "${patterns[@]}"; do
    # shellcheck disable=SC2053 # a glob on purpose
    if [[ "$name" == $p ]]; then cmd+=(-e "$name=${callenv[$name]}"); break; fi
  done
done
cmd+=("$IMAGE" "/opt/socker-tests/mpi/$prog" "${args[@]}")
if [ "${callenv[PROTO_SHOW]:-0}" = 1 ]; then
  line=$(printf '%q ' "${cmd[@]}")
  printf 'docker-proto: %s\n' "$line" >&2
fi
exec "${cmd[@]}"
