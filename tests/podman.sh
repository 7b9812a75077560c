#!/usr/bin/env bash
# The integration tests on Podman: socker's engine switched to Podman for this part only (install.sh
# --engine podman: Debian's podman and catatonit, its API service as root on its own socket), the test
# images loaded into Podman's storage, the local registry (127.0.0.1:5000) known to Podman, then the tests
# of run, signals, slurm, cleanup, mounts, limits, env, ps, images and doctor with SOCKER_TEST_ENGINE=podman
# (each named "[podman] ..."). Whatever happens, socker.conf, the allowlist and the Docker engine's
# watcher are put back as they were, and Podman's service is stopped.
# Prints "podman: N passed, M failed" (tests/run.sh's part). Usage: tests/podman.sh [deno test arguments]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export NO_COLOR=1
started=$SECONDS
deno=$(command -v deno || echo /usr/local/lib/socker/deno)
settings=/etc/socker/socker.conf
allowlist=/etc/socker/socker-images
registries=/etc/containers/registries.conf.d/socker-tests.conf
saved=$(mktemp -d /etc/socker/.podman-tests.XXXXXX)
cp -p "$allowlist" "$saved/allowlist"
if [ -e "$settings" ]; then cp -p "$settings" "$saved/settings"; fi

restore() {
  bash install.sh --epilog --engine docker >"$saved/uninstall.log" 2>&1 || tail -20 "$saved/uninstall.log" >&2
  if [ -e "$saved/settings" ]; then cp -p "$saved/settings" "$settings"; else rm -f "$settings"; fi
  cp -p "$saved/allowlist" "$allowlist"
  rm -rf "$saved"
}
trap restore EXIT
trap 'exit 143' TERM INT HUP

bash install.sh --epilog --engine podman >"$saved/install.log" 2>&1 || {
  tail -30 "$saved/install.log" >&2
  echo "podman: 0 passed, 1 failed (install.sh --engine podman failed)"
  exit 1
}
grep -E 'podman|Podman|engine' "$saved/install.log" || true
mkdir -p "$(dirname "$registries")"
printf '[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n' >"$registries"
# The tests' local images, loaded the way an administrator brings images to a Podman node (podman load).
for image in socker-test/busybox:2 socker-test/links:1; do
  if ! podman image exists "localhost/$image" && /usr/bin/docker image inspect "$image" >/dev/null 2>&1; then
    /usr/bin/docker save "$image" | podman load -q >/dev/null
  fi
done
"$deno" eval --quiet 'import { TEST_ALLOWLIST } from "./tests/helpers.ts"; Deno.stdout.writeSync(new TextEncoder().encode(TEST_ALLOWLIST));' >"$allowlist"

log=$(mktemp)
status=0
files=()
for feature in run signals slurm cleanup mounts limits env ps images doctor; do files+=("tests/${feature}_test.ts"); done
SOCKER_TEST_ENGINE=podman "$deno" test --allow-all "${files[@]}" "$@" 2>&1 | tee "$log" || status=$?
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1 || true)
rm -f "$log"
passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
passed=${passed:-0} failed=${failed:-0}
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "podman: $passed passed, $failed failed ($((SECONDS - started)) s)"
[ "$failed" -eq 0 ]
