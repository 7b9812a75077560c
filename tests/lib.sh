# Shell functions the test setup scripts share. Sourced, not run: the caller defines say and die.
# shellcheck shell=bash

# install_missing LOG PACKAGE...: apt-get installs the packages that are not installed yet (quietly, with
# no recommends); on failure, the last lines of LOG go to stderr and the caller's die ends the script.
install_missing() {
  local log=$1 p missing=()
  shift
  for p in "$@"; do
    # shellcheck disable=SC2016 # ${...} is dpkg-query's format, not the shell's
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  say "installing: ${missing[*]}"
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "apt-get failed"; }
}
