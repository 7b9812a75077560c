#!/usr/bin/env bash
# tests/setup-mpi.sh - the MPI part of socker's test machine (issue 10), called by tests/setup.sh:
#   prepare: OpenMPI and PMIx on the host (libpmix2 must be there before slurmd starts), the MPI test
#            programs of tests/mpi/ compiled with the host's mpicc into /opt/socker-tests/mpi, and the
#            image socker-test/openmpi:1 (Debian minbase + OpenMPI, from debootstrap: no registry)
#            with the same programs at the same path;
#   check:   with Slurm running, MPI through srun --mpi=pmix as alice on two nodes and on one.
# Idempotent and cached: the debootstrap root stays under /var/cache/socker-tests/openmpi/, keyed by
# a hash of its inputs, and the image carries the hash of all its inputs in the label
# socker-test.inputs; an image with the same inputs is not imported again.
# Usage: tests/setup-mpi.sh prepare [--rebuild-images] | check
set -euo pipefail

DOCKER=/usr/bin/docker # not /usr/local/bin/docker, an unrelated client
MPI_IMAGE=socker-test/openmpi:1
LABEL=socker-test.inputs
PROGRAMS_DIR=/opt/socker-tests/mpi # on the host and in the image
CACHE=/var/cache/socker-tests/openmpi
PROGRAMS=(hello pingpong)
HOST_PKGS=(libpmix2 openmpi-bin libopenmpi-dev debootstrap)
IMAGE_PKGS=openmpi-bin,libopenmpi3
# Change these when the way the root or the image is made changes: the hash changes, and the root
# is made again (ROOT_RECIPE) or only the image imported again (IMAGE_RECIPE).
ROOT_RECIPE=1
IMAGE_RECIPE=1
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/mpi
say() { printf 'setup-mpi: %s\n' "$*"; }
die() { printf 'setup-mpi: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" -eq 0 ] || die "must run as root"

# The Debian mirror apt uses for the host's release (deb822 .sources first, then sources.list).
apt_mirror() { # codename
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$1" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) types = $i
          else if ($i ~ /^URIs:/) uris = $i
          else if ($i ~ /^Suites:/) suites = $i
        }
        if (types ~ /[: ]deb( |$)/ && (" " substr(suites, 8) " ") ~ (" " suite " ")) {
          split(substr(uris, 6), u, " "); print u[1]; exit
        }
      }' "$f")
    [ -z "$uri" ] || { echo "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$1" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }' "$f")
    [ -z "$uri" ] || { echo "$uri"; return 0; }
  done
  return 1
}

prepare() {
  local rebuild=$1 work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: work is local
  trap "rm -rf '$work'" EXIT

  # 1. Host packages.
  install_missing "$work/apt.log" "${HOST_PKGS[@]}"
  local ompi_version
  ompi_version=$(dpkg-query -W -f='${Version}' libopenmpi3)

  # OpenMPI's TCP transport must not use docker0: once a container runs, docker0 is up with 172.17.0.1,
  # the ranks of two nodes on this host advertise it, the kernel sends from the host's address
  # instead, the peer drops the connection as unexpected, and large messages hang (a 1 MiB send never
  # completes). A site with Docker on its nodes sets the same (containers get it from socker's
  # env_set: the image's own file is not changed here).
  local mca=/etc/openmpi/openmpi-mca-params.conf line="btl_tcp_if_exclude = 127.0.0.1/8,docker0"
  if ! grep -qxF "$line" "$mca" 2>/dev/null; then
    # Debian's file has no newline at its end.
    if [ -s "$mca" ] && [ -n "$(tail -c1 "$mca")" ]; then echo >>"$mca"; fi
    printf '%s\n' "# socker's tests/setup-mpi.sh: never docker0 (a bridge to containers, not between nodes)" \
      "$line" >>"$mca"
    say "set '$line' in $mca"
  fi

  # 2. The programs, for the host: compiled again only when a source or OpenMPI changed.
  local prog_hash stamp="$PROGRAMS_DIR/.inputs"
  prog_hash=$( (echo "openmpi $ompi_version"; for p in "${PROGRAMS[@]}"; do sha256sum <"$src/$p.c"; done) |
    sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$prog_hash" ]; then
    mkdir -p "$work/bin"
    for p in "${PROGRAMS[@]}"; do
      mpicc -O2 -Wall -Wextra -Werror -o "$work/bin/$p" "$src/$p.c" || die "mpicc $p.c failed"
    done
    echo "$prog_hash" >"$work/bin/.inputs"
    install -d -o root -g root -m 0755 /opt/socker-tests
    rm -rf "$PROGRAMS_DIR.new"
    install -d -o root -g root -m 0755 "$PROGRAMS_DIR.new"
    for p in "${PROGRAMS[@]}" .inputs; do install -o root -g root -m 0755 "$work/bin/$p" "$PROGRAMS_DIR.new/$p"; done
    rm -rf "$PROGRAMS_DIR"
    mv "$PROGRAMS_DIR.new" "$PROGRAMS_DIR"
    say "compiled ${PROGRAMS[*]} into $PROGRAMS_DIR (OpenMPI $ompi_version)"
  fi

  # 3. The image.
  local codename mirror root_key root image_key have
  codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
  [ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
  mirror=$(apt_mirror "$codename") || die "no Debian mirror for $codename in /etc/apt/sources.list*"
  root_key=$(printf '%s\n' "recipe $ROOT_RECIPE" "$codename" "$mirror" "$IMAGE_PKGS" "$ompi_version" |
    sha256sum | cut -c1-16)
  image_key=$(printf '%s\n' "$root_key" "image $IMAGE_RECIPE" "$prog_hash" | sha256sum | cut -c1-16)
  have=$("$DOCKER" image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$MPI_IMAGE" 2>/dev/null) || true
  if [ "$have" = "$image_key" ] && [ "$rebuild" = 0 ]; then
    say "image $MPI_IMAGE: present ($LABEL=$image_key)"
    return 0
  fi

  # One build at a time on this machine (two test runs may start together).
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  have=$("$DOCKER" image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$MPI_IMAGE" 2>/dev/null) || true
  if [ "$have" = "$image_key" ] && [ "$rebuild" = 0 ]; then
    say "image $MPI_IMAGE: present ($LABEL=$image_key), built meanwhile"
    return 0
  fi
  root="$CACHE/root-$root_key"
  if [ ! -f "$root/.complete" ]; then
    local t0=$SECONDS
    say "debootstrap $codename ($IMAGE_PKGS) from $mirror into $root (about a minute)"
    mkdir -p "$CACHE"
    rm -rf "$root.tmp"
    debootstrap --variant=minbase --include="$IMAGE_PKGS" "$codename" "$root.tmp" "$mirror" \
      >"$work/debootstrap.log" 2>&1 ||
      { tail -n 30 "$work/debootstrap.log" >&2; rm -rf "$root.tmp"; die "debootstrap failed"; }
    # What a container never needs: downloaded packages, package lists, documentation.
    rm -rf "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/* \
      "$root.tmp"/usr/share/doc/* "$root.tmp"/usr/share/man/* "$root.tmp"/usr/share/info/*
    local in_image
    # shellcheck disable=SC2016 # ${...} is dpkg-query's format, not the shell's
    in_image=$(chroot "$root.tmp" dpkg-query -W -f='${Version}' libopenmpi3)
    [ "$in_image" = "$ompi_version" ] ||
      { rm -rf "$root.tmp"; die "OpenMPI in the image is $in_image, on the host $ompi_version"; }
    touch "$root.tmp/.complete"
    rm -rf "$root"
    mv "$root.tmp" "$root"
    say "debootstrap done in $((SECONDS - t0)) s ($(du -sm "$root" | cut -f1) MB)"
  fi
  # Older roots of this cache are of no use any more.
  for p in "$CACHE"/root-*; do
    [ "$p" = "$root" ] || [ ! -d "$p" ] || { rm -rf "$p"; say "removed old cache $p"; }
  done

  # The image: the cached root plus the programs at the same path as on the host.
  local t1=$SECONDS old new
  mkdir -p "$work/stage/opt/socker-tests"
  cp -a "$PROGRAMS_DIR" "$work/stage/opt/socker-tests/"
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$MPI_IMAGE" 2>/dev/null) || true
  tar --numeric-owner -c --exclude=./.complete -C "$root" . -C "$work/stage" ./opt/socker-tests |
    "$DOCKER" import -c "LABEL $LABEL=$image_key" \
      -c "ENV PATH=$PROGRAMS_DIR:/usr/local/bin:/usr/bin:/bin" - "$MPI_IMAGE" >/dev/null
  new=$("$DOCKER" image inspect -f '{{.Id}}' "$MPI_IMAGE")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then "$DOCKER" image rm "$old" >/dev/null 2>&1 || true; fi
  say "imported $MPI_IMAGE (${new:7:12}, $LABEL=$image_key, $(("$("$DOCKER" image inspect -f '{{.Size}}' "$MPI_IMAGE")" / 1000000)) MB) in $((SECONDS - t1)) s"
}

# Each line of hello's output must be rank R of size N on the wanted node, with the right allreduce.
check_hello() { # label wanted-nodes (space separated, by rank) output
  local label=$1 want=$2 out=$3 n r line got=""
  n=$(wc -w <<<"$want")
  for ((r = 0; r < n; r++)); do
    line=$(grep -E "^hello rank=$r size=$n " <<<"$out") || die "$label: no line for rank $r of $n: $out"
    [[ "$line" =~ sum=$((n * (n - 1) / 2))\ want= ]] || die "$label: wrong allreduce: $line"
    got+="$(sed -E 's/.* node=([^ ]+) .*/\1/' <<<"$line") "
  done
  [ "$got" = "$want " ] || die "$label: ranks ran on '$got', want '$want': $out"
  say "OK: $label: $n ranks in one world on $want"
}

check() {
  local out
  as_alice() { (cd /tmp && timeout 60 runuser -u alice -- "$@"); }
  out=$(as_alice srun -Q --mpi=pmix -N2 -n2 "$PROGRAMS_DIR/hello" 2>&1) || die "srun --mpi=pmix -N2 -n2 hello failed: $out"
  check_hello "srun --mpi=pmix -N2 -n2 hello" "n1 n2" "$out"
  out=$(as_alice srun -Q --mpi=pmix -w n1 -n2 --overcommit "$PROGRAMS_DIR/hello" 2>&1) ||
    die "srun --mpi=pmix -w n1 -n2 --overcommit hello failed: $out"
  check_hello "srun --mpi=pmix -w n1 -n2 --overcommit hello" "n1 n1" "$out"
  out=$(as_alice srun -Q --mpi=pmix -N2 -n2 "$PROGRAMS_DIR/pingpong" 20 2>&1) || die "pingpong across nodes failed: $out"
  grep -q '^pingpong .* check_1MiB=ok$' <<<"$out" || die "pingpong across nodes: $out"
  say "OK: $(grep '^pingpong ' <<<"$out")"
  # Fake GPUs (tests/setup.sh), in one step that holds both of the node's: Slurm's own record of the job
  # shows the allocated indices, and a container of the MPI image starts under the step's cgroup with the
  # engine's own runc (Slurm denies no device there; a step denied a GPU needs socker's runtime
  # socker-runc, which install.sh registers).
  # shellcheck disable=SC2016 # expanded in the step
  out=$(cd /tmp && timeout 60 srun -Q -w n2 --gres=gpu:2 sh -c 'scontrol show job -d "$SLURM_JOB_ID" &&
    "$0" run --rm --cgroup-parent "$(grep -E "^[0-9]+:freezer:" /proc/self/cgroup | cut -d: -f3)" "$1" \
      sh -c "ls /opt/socker-tests/mpi && ompi_info --parsable | grep ^ompi:version:full:"' \
    "$DOCKER" "$MPI_IMAGE" 2>/dev/null) || die "srun --gres=gpu:2 with docker run --cgroup-parent <step> failed: $out"
  grep -qE '^ +Nodes=n2 .*GRES=gpu:2\(IDX:0-1\)$' <<<"$out" || die "srun --gres=gpu:2: no GRES=gpu:2(IDX:0-1) on n2: $out"
  say "OK: srun --gres=gpu:2 got both fake GPUs: $(grep -E '^ +Nodes=n2 ' <<<"$out" | sed 's/^ *//')"
  local host_ompi
  host_ompi=$(ompi_info --parsable | grep '^ompi:version:full:')
  if ! grep -qxF "$host_ompi" <<<"$out" || ! grep -qx pingpong <<<"$out"; then
    die "$MPI_IMAGE under a step: not the host's OpenMPI ($host_ompi) or no programs: $out"
  fi
  say "OK: $MPI_IMAGE starts under a step's cgroup (docker run --cgroup-parent): $(grep -E '^(hello|pingpong|ompi:)' <<<"$out" | paste -sd' ' -)"
}

case "${1:-}" in
  prepare)
    case "${2:-}" in
      "") prepare 0 ;;
      --rebuild-images) prepare 1 ;;
      *) die "usage: $0 prepare [--rebuild-images] | check" ;;
    esac
    ;;
  check) check ;;
  -h | --help) sed -n '2,11s/^# \{0,1\}//p' "$0" ;;
  *) die "usage: $0 prepare [--rebuild-images] | check" ;;
esac
