#!/usr/bin/env bash
# socker's whole test suite, from nothing, on a Debian machine, as root:
#   1. tests/setup.sh: Docker engine, munge, a two-node Slurm cluster, test users and the test image;
#   2. install.sh --epilog: socker from this checkout, through the same path a sysadmin uses;
#   3. tests/setup.sh again, so that Slurm picks up the Epilog hook that now exists, and
#      tests/setup-registry.sh: a local registry (127.0.0.1:5000) holding the pull tests' images;
#   4. the unit tests and the integration tests (real Docker, real Slurm, real sudo), with the test
#      allowlist in place; the site's own allowlist is put back afterwards.
# Usage: sudo tests/run.sh [deno test arguments, e.g. --filter SIGTERM]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: run as root (sudo tests/run.sh): the tests create users, start services and install socker" >&2
  exit 1
fi
export NO_COLOR=1

bash tests/setup.sh
bash install.sh --epilog
bash tests/setup.sh
bash tests/setup-registry.sh

# The tests need their own allowlist; keep the site's and restore it whatever happens.
allowlist=/etc/socker/socker-images
backup=$(mktemp /etc/socker/.socker-images.tests.XXXXXX)
cp -p "$allowlist" "$backup"
trap 'cp -p "$backup" "$allowlist" && rm -f "$backup"' EXIT
deno eval --quiet 'import { TEST_ALLOWLIST } from "./tests/helpers.ts"; Deno.stdout.writeSync(new TextEncoder().encode(TEST_ALLOWLIST));' >"$allowlist"

log=$(mktemp)
status=0
deno test --allow-all tests/ "$@" 2>&1 | tee "$log" || status=$?
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1 || true)
rm -f "$log"
passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
echo "socker tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
