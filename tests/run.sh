#!/usr/bin/env bash
# socker's whole test suite, from nothing, on a Debian machine, as root (README's test command; CI runs
# exactly this):
#   1. tests/setup.sh: Docker engine, munge, a two-node Slurm cluster with PMIx and fake GPUs, test users,
#      the test images (tests/setup-mpi.sh: OpenMPI), and install.sh --epilog (socker from this checkout,
#      the way a sysadmin installs it; Deno comes with it), then setup.sh again so Slurm sees the Epilog,
#      and tests/setup-registry.sh: a local registry (127.0.0.1:5000) holding the pull tests' images;
#   2. the unit tests and the integration tests (real Docker, real Slurm, real sudo, real OpenMPI), with
#      the test allowlist in place; the site's own allowlist is put back afterwards;
#   2b. Podman (tests/podman.sh: the integration tests of run, signals, slurm, cleanup, mounts, limits,
#      env, ps, images and doctor with the engine switched to Podman, each named "[podman] ...") is not
#      run here yet: issue 23 is open (ps/stop, pulls and the engine-stop tests fail on Podman 4.3.1),
#      so the part prints as a named skip; run `sudo tests/podman.sh` by hand;
#   3. tests/fresh-install.sh: README's first command in a fresh Debian root (no sudo, syslog, Deno, npm);
#   4. tests/cgroup-v2.sh: socker on a cgroup v2-only node, a QEMU guest whose root has every capability
#      (the real node's path); then the same guest booted with cgroup v1 (tests/cgroup-v2.sh --cgroup v1).
# It ends with one line per part and `socker tests: N passed, M failed`, and exits non-zero on a failure.
# Usage: sudo tests/run.sh [--only-deno] [deno test arguments, e.g. --filter SIGTERM]
#   --only-deno  run parts 1 and 2 only (while developing); parts 3 and 4 then print as skipped
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: run as root (sudo tests/run.sh): the tests create users, start services and install socker" >&2
  exit 1
fi
only_deno=0
if [ "${1-}" = --only-deno ]; then
  only_deno=1
  shift
fi
export NO_COLOR=1
started=$SECONDS

bash tests/setup.sh
bash install.sh --epilog
bash tests/setup.sh
bash tests/setup-registry.sh
# install.sh put the pinned Deno in place (installing it with npm when there was none).
deno=$(command -v deno || echo /usr/local/lib/socker/deno)

# The tests need their own allowlist; keep the site's and restore it whatever happens.
allowlist=/etc/socker/socker-images
backup=$(mktemp /etc/socker/.socker-images.tests.XXXXXX)
cp -p "$allowlist" "$backup"
trap 'cp -p "$backup" "$allowlist" && rm -f "$backup"' EXIT
"$deno" eval --quiet 'import { TEST_ALLOWLIST } from "./tests/helpers.ts"; Deno.stdout.writeSync(new TextEncoder().encode(TEST_ALLOWLIST));' >"$allowlist"

log=$(mktemp)
status=0
"$deno" test --allow-all tests/ "$@" 2>&1 | tee "$log" || status=$?
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1 || true)
rm -f "$log"
passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
passed=${passed:-0} failed=${failed:-0}
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
parts="deno tests: $passed passed, $failed failed"
cp -p "$backup" "$allowlist"

# part: NAME SCRIPT [ARGS...]: runs one of the suites that print "NAME: passed" / "NAME: N passed, M failed".
part() {
  local name=$1 script=$2 out rc=0 line p f
  shift 2
  if [ "$only_deno" -eq 1 ]; then
    parts+=$'\n'"$name: skipped (--only-deno)"
    return 0
  fi
  out=$(mktemp)
  bash "$script" "$@" 2>&1 | tee "$out" || rc=$?
  line=$(grep -E "^$name: ([0-9]+ passed|passed|failed)" "$out" | tail -n 1 || true)
  rm -f "$out"
  if [[ "$line" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
  elif [ "$rc" -eq 0 ] && [[ "$line" == *": passed" ]]; then
    p=1 f=0
  else
    p=0 f=1
  fi
  [ "$rc" -eq 0 ] || [ "$f" -gt 0 ] || f=1
  passed=$((passed + p)) failed=$((failed + f))
  parts+=$'\n'"${line:-$name: no result (exit $rc)}"
  [ "$f" -eq 0 ] || status=1
}
# Named, never silent: see 2b above.
parts+=$'\n'"podman: skipped (issue 23 open: Podman support is experimental; sudo tests/podman.sh runs it)"
part fresh-install tests/fresh-install.sh
part cgroup-v2 tests/cgroup-v2.sh
part cgroup-v1-root tests/cgroup-v2.sh --cgroup v1

printf '%s\n' "$parts"
echo "socker tests: $passed passed, $failed failed ($(((SECONDS - started) / 60)) min)"
exit "$status"
