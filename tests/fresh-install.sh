#!/usr/bin/env bash
# tests/fresh-install.sh: README's first command on a truly fresh Debian 12, as root.
#
# Makes a fresh Debian 12 root with debootstrap (minbase: no sudo, no syslog daemon and no /dev/log,
# no Deno, no npm, no docker), copies this checkout in, enters it with unshare --mount + chroot and
# runs `./install.sh --demo` there as root. The chroot shares the host's Docker engine through its
# socket (/var/run/docker.sock, bound at the same path); no dockerd runs in the chroot, and install.sh
# must see the running engine and not start one (docker.io is installed in the chroot only for the
# CLI that builds the demo image). Asserts the demo line, that sudo, npm and deno were installed, and
# that the run left an audit record in the chroot's /var/log/socker/audit.log. Ends with
# "fresh-install: passed" or "fresh-install: failed".
#
# Nothing on the host changes but the cache under $CACHE and the demo image in the shared engine.
# The pristine root is cached, keyed by its inputs (debootstrap's version, suite, variant, mirror,
# architecture); every run starts from a new copy of it. Downloaded .deb files and npm's tarballs
# are cached too (bound into the copy), so a warm run downloads only package lists.
#
# Usage: tests/fresh-install.sh [--keep] [--rebuild]
#   --keep     keep the run's root (its path is printed) instead of removing it
#   --rebuild  make the pristine root again even when the cache has it
set -euo pipefail
export LC_ALL=C

readonly SUITE=bookworm VARIANT=minbase
readonly CACHE=${SOCKER_FRESH_CACHE:-/var/cache/socker-tests/fresh}
readonly HOST_SOCKET=/var/run/docker.sock
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly REPO

keep=0 rebuild=0
for arg in "$@"; do
	case $arg in
	--keep) keep=1 ;;
	--rebuild) rebuild=1 ;;
	-h | --help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) printf 'usage: %s [--keep] [--rebuild]\n' "$0" >&2; exit 2 ;;
	esac
done

say() { printf 'fresh-install: %s\n' "$*"; }
fail() {
	printf 'fresh-install: FAIL: %s\n' "$*" >&2
	say failed
	exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap, unshare and chroot need it)"
for tool in debootstrap unshare chroot; do
	command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install debootstrap util-linux coreutils)"
done
[ -S "$HOST_SOCKET" ] || fail "no Docker engine socket at $HOST_SOCKET: start dockerd on the host first"
/usr/bin/docker info >/dev/null 2>&1 || fail "the host's Docker engine does not answer on $HOST_SOCKET"

# The mirror apt uses: the first URIs of a deb822 stanza whose Suites include $SUITE.
mirror() {
	awk -v suite="$SUITE" '
		BEGIN { RS = ""; FS = "\n" }
		{
			uri = ""; ok = 0
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^URIs:/) { split($i, f, /[ \t]+/); uri = f[2] }
				if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
			}
			if (ok && uri != "") { print uri; exit }
		}' /etc/apt/sources.list.d/*.sources 2>/dev/null
}
MIRROR=$(mirror)
[ -n "$MIRROR" ] || fail "no mirror for $SUITE in /etc/apt/sources.list.d/*.sources"

start=$SECONDS
mkdir -p "$CACHE"
chmod 0700 "$CACHE"
KEY=$(printf '%s\n' "$(dpkg-query -W -f='${Version}' debootstrap)" "$SUITE" "$VARIANT" "$MIRROR" "$(dpkg --print-architecture)" |
	sha256sum | cut -c1-16)
PRISTINE=$CACHE/root-$KEY
APT_CACHE=$CACHE/apt-archives
NPM_CACHE=$CACHE/npm

# 1. The pristine root, made once per key.
if [ "$rebuild" -eq 1 ] || [ ! -f "$PRISTINE/.complete" ]; then
	rm -rf -- "$PRISTINE" "$PRISTINE.new"
	say "debootstrap --variant=$VARIANT $SUITE from $MIRROR (cached as $PRISTINE)"
	t0=$SECONDS
	log=$CACHE/debootstrap-$KEY.log
	if ! debootstrap --variant="$VARIANT" "$SUITE" "$PRISTINE.new" "$MIRROR" >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		fail "debootstrap failed (log: $log)"
	fi
	mv -- "$PRISTINE.new" "$PRISTINE"
	touch "$PRISTINE/.complete"
	say "made the pristine root in $((SECONDS - t0)) s"
	# Other keys' roots are stale.
	find "$CACHE" -mindepth 1 -maxdepth 1 -name 'root-*' ! -name "root-$KEY" -exec rm -rf -- {} +
else
	say "pristine root: cached ($PRISTINE)"
fi

# What makes the machine fresh, checked on the pristine root.
for absent in usr/bin/sudo usr/bin/npm usr/bin/deno usr/local/bin/deno usr/bin/docker usr/sbin/rsyslogd dev/log; do
	[ ! -e "$PRISTINE/$absent" ] || fail "the pristine root has /$absent: it is not a fresh machine"
done

# 2. A new copy for this run, removed at exit (mounts live in the private namespace only).
mkdir -p "$APT_CACHE/partial" "$NPM_CACHE"
ROOT=$(mktemp -d "$CACHE/run.XXXXXX")
cleanup() {
	local d
	# Processes left in the chroot (none are expected): end them, by pid.
	for d in /proc/[0-9]*; do
		if [ "$(readlink "$d/root" 2>/dev/null)" = "$ROOT" ]; then kill -KILL "${d#/proc/}" 2>/dev/null || true; fi
	done
	if grep -qF " $ROOT" /proc/self/mountinfo; then
		printf 'fresh-install: warning: %s is still mounted on the host; not removing it\n' "$ROOT" >&2
	elif [ "$keep" -eq 1 ]; then
		say "kept the run's root: $ROOT"
	else
		rm -rf -- "$ROOT"
	fi
}
trap cleanup EXIT
cp -a -- "$PRISTINE/." "$ROOT/"
rm -f -- "$ROOT/.complete"
# The checkout as it is (uncommitted changes too), without git's own files.
mkdir -p "$ROOT/root/socker"
tar -C "$REPO" --exclude=./.git --exclude=./.ci -cf - . | tar -C "$ROOT/root/socker" -xf -
# This machine's network as the host has it: its resolver, names and the local CA certificates it trusts
# (an egress proxy's), which Debian's ca-certificates picks up when npm's dependencies install it.
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# An installed node resolves its own name from /etc/hosts (debootstrap writes none; without it sudo
# prints "unable to resolve host" and asks DNS on every call).
cp -L /etc/hosts "$ROOT/etc/hosts"
if [ -d /usr/local/share/ca-certificates ]; then
	mkdir -p "$ROOT/usr/local/share/ca-certificates"
	cp -a /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
# The chroot has no init: keep maintainer scripts from starting services in it (a dockerd started
# by docker.io's postinst would fight the host's engine for the socket). Debian's own convention.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

# 3. Run install.sh --demo in the chroot. /dev is a new tmpfs with the usual nodes bound from the host,
# not the host's /dev: the host's /dev/log (its syslog socket) must not be visible in the fresh machine.
inner=$(
	cat <<'EOF'
set -eu
R=$1
mount --bind /proc "$R/proc"
mount --rbind /sys "$R/sys"
mount -t tmpfs -o mode=0755,nosuid dev "$R/dev"
for n in null zero full random urandom tty; do
	touch "$R/dev/$n"
	mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount --bind "$2" "$R/var/cache/apt/archives"
mkdir -p "$R/root/.npm"
mount --bind "$3" "$R/root/.npm"
touch "$R/run/docker.sock"
mount --bind /var/run/docker.sock "$R/run/docker.sock"
exec chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	${NODE_EXTRA_CA_CERTS:+"NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS"} \
	/bin/bash -c 'cd /root/socker && ./install.sh --demo'
EOF
)
dockerd_before=$(pgrep -c -x dockerd || true)
say "running ./install.sh --demo as root in $ROOT"
t0=$SECONDS
rc=0
out=$(unshare --mount --propagation private /bin/sh -c "$inner" sh "$ROOT" "$APT_CACHE" "$NPM_CACHE" 2>&1) || rc=$?
run_s=$((SECONDS - t0))
printf '%s\n' "$out" | sed 's/^/  > /'
say "install.sh --demo exited $rc after $run_s s"

# 4. Assertions.
failures=()
check() { # description command...
	local what=$1
	shift
	if "$@"; then say "ok: $what"; else failures+=("$what"); say "NOT OK: $what"; fi
}
has_line() { grep -qE -- "$1" <<<"$out"; }
check "install.sh --demo exits 0" test "$rc" -eq 0
check "the demo line: demo as nobody (uid 65534)" has_line '^demo as nobody \(uid 65534\): socker run socker-demo'
check "the container's line: hello from socker, uid=65534" has_line '^  \| hello from socker, uid=65534 gid=65534'
check "install.sh says it installed sudo" has_line '^installed sudo'
check "install.sh says it installed npm" has_line '^installed npm'
check "install.sh says it installed deno" has_line '^installed deno'
check "sudo is installed in the chroot" test -x "$ROOT/usr/bin/sudo"
check "npm is installed in the chroot" test -x "$ROOT/usr/bin/npm"
check "deno is installed in the chroot" test -x "$ROOT/usr/local/bin/deno"
check "install.sh used the running engine and started none" has_line '^kept the running docker engine'
check "no dockerd was started" test "$(pgrep -c -x dockerd || true)" = "$dockerd_before"
audit=$ROOT/var/log/socker/audit.log
check "/var/log/socker is root:root 0700" test "$(stat -c '%U:%G %a' "$ROOT/var/log/socker" 2>/dev/null)" = "root:root 700"
check "the run left an audit record in /var/log/socker/audit.log (root, 0600)" \
	test -s "$audit" -a "$(stat -c '%U %a' "$audit" 2>/dev/null)" = "root 600"

say "total $((SECONDS - start)) s"
if [ "${#failures[@]}" -gt 0 ]; then
	printf 'fresh-install: failed check: %s\n' "${failures[@]}" >&2
	say failed
	exit 1
fi
say passed
