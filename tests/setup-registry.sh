#!/usr/bin/env bash
# tests/setup-registry.sh: a real Docker registry on this machine for socker's pull tests.
#
# Installs Debian's docker-registry, runs it by hand (no systemd here) on 127.0.0.1:5000 with its
# storage under /var/lib/socker-tests/registry, and pushes three repositories made from the local
# test image socker-test/busybox:2 (built by tests/setup.sh):
#   127.0.0.1:5000/socker-test/pullme:1      for an allowlist entry by tag
#   127.0.0.1:5000/socker-test/pinned:1      for an entry pinned by digest; the digest is written to
#                                             /var/lib/socker-tests/registry/pinned.digest
#   127.0.0.1:5000/socker-test/notallowed:1  in the registry, never in the allowlist
# Then the engine holds none of these names (tags and repository digests removed, never
# socker-test/busybox:2 itself), so that a run has to pull them. The engine treats 127.0.0.0/8 as
# an insecure (plain HTTP) registry by default: no daemon.json change is needed.
# Idempotent, and fast when the registry already runs and holds the images.
#
# Usage: tests/setup-registry.sh            install, start, push (when needed), reset the engine's copies
#        tests/setup-registry.sh --start    start the registry only (after --stop)
#        tests/setup-registry.sh --stop     stop it (for the "registry stopped" test)
#        tests/setup-registry.sh --status   say whether it answers; exit 0 only if it does
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

readonly DOCKER=/usr/bin/docker
readonly REGISTRY_BIN=/usr/bin/docker-registry
readonly ADDR=127.0.0.1:5000
readonly STATE=/var/lib/socker-tests/registry
readonly CONFIG=$STATE/config.yml
readonly STORAGE=$STATE/storage
readonly PIDFILE=$STATE/registry.pid
readonly LOG=$STATE/registry.log
readonly DIGEST_FILE=$STATE/pinned.digest
readonly SOURCE=socker-test/busybox:2
readonly REPOS=(socker-test/pullme socker-test/pinned socker-test/notallowed)
readonly TAG=1
readonly MANIFEST_V2=application/vnd.docker.distribution.manifest.v2+json

say() { printf 'setup-registry: %s\n' "$*"; }
die() {
	printf 'setup-registry: ERROR: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root"

answers() { curl -fsS -m 2 -o /dev/null "http://$ADDR/v2/" 2>/dev/null; }

# registry_pid: the pid of the registry this script started, if it still runs.
registry_pid() {
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$REGISTRY_BIN" ] && printf '%s\n' "$pid"
}

install_packages() {
	local missing=() p
	for p in docker-registry curl; do
		# shellcheck disable=SC2016 # ${...} is dpkg-query's format
		[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
	done
	[ "${#missing[@]}" -gt 0 ] || return 0
	say "installing ${missing[*]}"
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$STATE/apt.log" 2>&1 ||
		{
			tail -n 20 "$STATE/apt.log" >&2
			die "apt-get install ${missing[*]} failed"
		}
}

write_config() {
	local text
	text="# Written by socker's tests/setup-registry.sh: a plain-HTTP registry on loopback only, no auth.
version: 0.1
log:
  level: info
  fields:
    service: socker-test-registry
storage:
  filesystem:
    rootdirectory: $STORAGE
  delete:
    enabled: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]"
	if [ "$(cat "$CONFIG" 2>/dev/null)" != "$text" ]; then
		printf '%s\n' "$text" >"$CONFIG.new"
		mv "$CONFIG.new" "$CONFIG"
		say "wrote $CONFIG"
		return 0
	fi
	return 1
}

start() {
	local pid _
	if registry_pid >/dev/null && answers; then
		say "registry: running on $ADDR (pid $(registry_pid))"
		return 0
	fi
	if answers; then die "something else answers on $ADDR (not the registry this script started): stop it first"; fi
	[ -x "$REGISTRY_BIN" ] || die "$REGISTRY_BIN is missing: run tests/setup-registry.sh without options first"
	mkdir -p "$STORAGE"
	(cd / && exec setsid "$REGISTRY_BIN" serve "$CONFIG" >>"$LOG" 2>&1 </dev/null) &
	pid=$!
	printf '%s\n' "$pid" >"$PIDFILE"
	for _ in $(seq 1 100); do
		if answers; then
			say "registry: started on $ADDR (pid $pid, log $LOG)"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$LOG" >&2
	die "the registry did not answer on http://$ADDR/v2/ within 10 s"
}

stop() {
	local pid _
	if ! pid=$(registry_pid); then
		say "registry: not running"
		return 0
	fi
	kill -TERM "$pid"
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
	rm -f "$PIDFILE"
	say "registry: stopped (pid $pid)"
}

# remote_digest REPO: the digest of REPO:$TAG's manifest in the registry, or nothing.
remote_digest() {
	curl -fsS -m 5 -I -H "Accept: $MANIFEST_V2" "http://$ADDR/v2/$1/manifests/$TAG" 2>/dev/null |
		tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

push_all() {
	local repo ref digest pushed=0
	"$DOCKER" image inspect "$SOURCE" >/dev/null 2>&1 || die "the engine has no $SOURCE: run tests/setup.sh first"
	for repo in "${REPOS[@]}"; do
		ref=$ADDR/$repo:$TAG
		# Pushed before, and still the test image's content: nothing to do.
		if [ -n "$(remote_digest "$repo")" ] && [ -f "$STATE/pushed.$(basename "$repo")" ] &&
			[ "$(cat "$STATE/pushed.$(basename "$repo")")" = "$("$DOCKER" image inspect -f '{{.Id}}' "$SOURCE")" ]; then
			continue
		fi
		"$DOCKER" tag "$SOURCE" "$ref"
		"$DOCKER" push -q "$ref" >/dev/null 2>"$STATE/push.err" || {
			cat "$STATE/push.err" >&2
			die "docker push $ref failed (the engine must treat 127.0.0.0/8 as an insecure registry, its default)"
		}
		"$DOCKER" image inspect -f '{{.Id}}' "$SOURCE" >"$STATE/pushed.$(basename "$repo")"
		pushed=$((pushed + 1))
		say "pushed $ref"
	done
	digest=$(remote_digest socker-test/pinned)
	[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "the registry gives no digest for socker-test/pinned:$TAG ('$digest')"
	if [ "$(cat "$DIGEST_FILE" 2>/dev/null)" != "$digest" ]; then
		printf '%s\n' "$digest" >"$DIGEST_FILE"
		say "wrote $DIGEST_FILE"
	fi
	say "images in the registry: ${REPOS[*]/#/$ADDR/} (tag $TAG); pinned: $ADDR/socker-test/pinned@$digest"
}

# forget_local: the engine holds none of the pushed names (tags and repository digests), so a run
# has to pull them; socker-test/busybox:2 (the same image) stays.
forget_local() {
	local repo ref removed=0
	for repo in "${REPOS[@]}"; do
		while read -r ref; do
			[ -n "$ref" ] || continue
			case $ref in "$ADDR/$repo:"* | "$ADDR/$repo@"*) ;; *) continue ;; esac
			# Untagging a repository's last tag drops its digest reference too: look again first.
			"$DOCKER" image inspect "$ref" >/dev/null 2>&1 || continue
			"$DOCKER" image rm "$ref" >/dev/null
			removed=$((removed + 1))
		done < <("$DOCKER" image ls --digests --format '{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}' "$ADDR/$repo" |
			tr ' ' '\n' | grep -v -e ':<none>$' -e '@<none>$' | sort -u)
	done
	"$DOCKER" image inspect "$SOURCE" >/dev/null 2>&1 || die "$SOURCE is gone from the engine (it must never be removed)"
	if [ "$removed" -gt 0 ]; then say "removed $removed local name(s) of the pushed images (kept $SOURCE)"; fi
	for repo in "${REPOS[@]}"; do
		if "$DOCKER" image inspect "$ADDR/$repo:$TAG" >/dev/null 2>&1; then die "the engine still holds $ADDR/$repo:$TAG"; fi
	done
	if "$DOCKER" image inspect "$ADDR/socker-test/pinned@$(cat "$DIGEST_FILE")" >/dev/null 2>&1; then
		die "the engine still holds $ADDR/socker-test/pinned@$(cat "$DIGEST_FILE")"
	fi
	say "engine: holds none of the pushed names"
}

mkdir -p "$STATE"
chmod 0755 "$STATE"
case ${1-} in
--start) start ;;
--stop) stop ;;
--status)
	if answers; then say "registry: answers on $ADDR"; else say "registry: does not answer on $ADDR"; exit 1; fi
	;;
'')
	install_packages
	if write_config && registry_pid >/dev/null; then stop; fi
	start
	push_all
	forget_local
	;;
-h | --help) sed -n '2,22s/^# \{0,1\}//p' "$0" ;;
*)
	printf 'usage: %s [--start | --stop | --status]\n' "$0" >&2
	exit 2
	;;
esac
