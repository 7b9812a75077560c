#!/usr/bin/env bash
# install.sh: installs (or, with --uninstall, removes) socker on one node.
#
# socker lets the users of a Slurm cluster run administrator-allowlisted Docker images
# as themselves, without the docker group. The privilege comes from sudo:
#   $PREFIX/bin/socker               user launcher (sh), execs `sudo -n` on the entry point
#   $PREFIX/libexec/socker/socker    privileged entry point, run as root by sudo: an sh script
#                                    (socker-entry.sh.in with this install's paths filled in) that
#                                    makes the process safe to supervise (signals, resource limits)
#                                    and execs, with `env -i`, either the binary made by
#                                    `deno compile` ($PREFIX/lib/socker/socker-bin) or the pinned
#                                    Deno on socker.ts with fixed permission flags
#   $PREFIX/libexec/socker/socker-runc  the OCI runtime of socker's containers in jobs on cgroup v1 nodes:
#                                    runc without its two mknod wildcard device rules (see that file),
#                                    registered as the runtime "socker-runc" in /etc/docker/daemon.json
#   $PREFIX/lib/socker/              socker.ts (install-time constants rewritten), the pinned
#                                    deno binary, its DENO_DIR, and docker-config/ (root 0700:
#                                    the registry login socker uses for pulls, if any)
#   $SYSCONFDIR/socker/socker-images the image allowlist (installed once, never overwritten)
#   /etc/sudoers.d/socker            lets every user run exactly the entry point as root
#   /var/log/socker/                 the audit log's folder (root 0700; socker writes audit.log)
#   /etc/logrotate.d/socker          weekly rotation of the audit log (sooner past 100 MB)
#   socker-reaper                    systemd timer or cron entry: `socker cleanup --orphans`
#   socker-watch                     the node's watcher (`socker watch`): systemd service, else a loop
#                                    script ($PREFIX/libexec/socker/socker-watch-loop) kept running
# socker talks to the Docker engine's socket itself; it runs no docker CLI.
# Nothing is ever installed set-uid or set-gid (see --setuid). Run `install.sh --help`.
set -euo pipefail
# set -e holds inside command substitutions too: a function whose output is captured stops at its
# first failure instead of going on and printing half a result.
shopt -s inherit_errexit
umask 022
export LC_ALL=C

readonly DENO_VERSION=2.9.6            # pinned: installed with npm when no deno is found
readonly COMPILE_TIMEOUT=60            # seconds for `deno compile`: it hangs on a proxy that never answers
readonly SUDOERS_FILE=/etc/sudoers.d/socker
readonly SUDOERS_DIR=/etc/sudoers.d
readonly LOG_DIR=/var/log/socker       # fixed in socker.ts: the audit log is $LOG_DIR/audit.log
readonly LOGROTATE_FILE=/etc/logrotate.d/socker
readonly CRON_FILE=/etc/cron.d/socker-reaper
readonly SYSTEMD_DIR=/etc/systemd/system
readonly REAPER_SERVICE=socker-reaper.service
readonly REAPER_TIMER=socker-reaper.timer
readonly EPILOG_TIMEOUT=40             # seconds for the Epilog's cleanup (then SIGKILL 5 s later)
readonly REAPER_TIMEOUT=50             # seconds for one orphan sweep (it runs every minute)
readonly WATCH_SERVICE=socker-watch.service
readonly WATCH_LOOP_PID=/run/socker-watch-loop.pid  # the loop's pid (its process group) without systemd
# What Deno $DENO_VERSION needs before socker.ts runs (measured): below these it dies at start.
# Address space and data in KiB (as ulimit prints them), open files as a count.
readonly NEED_AS_KIB=67108864          # 64 GiB: V8 reserves ~34 GiB of address space at start, and more
                                       # while it aligns its heap cages, where it lands by chance (measured
                                       # with Deno 2.9.6: 1 start in 14 dies under 48 GiB, 1 in 20 under 40;
                                       # none of 150 under 64 GiB); the soft limit is raised to the hard one
readonly NEED_DATA_KIB=1048576         # 1 GiB (~600 MB needed)
readonly NEED_STACK_KIB=1024           # 1 MiB (512 KiB needed); raised to WANT_STACK_KIB when allowed
readonly WANT_STACK_KIB=8192
readonly NEED_NOFILE=64                # 24 needed
readonly DEMO_DOCKER=/usr/bin/docker   # the demo builds its image with the docker CLI, as root
# sudo's settings for the entry point, paid on every call. sudo must stay socker's parent process: it
# relays the caller's signals (kill, timeout) to socker, and socker reads the caller's environment from
# its parent's /proc/PPID/environ. sudo 1.9 execs the command in its own place instead (measured: the
# entry point's parent is then the caller's shell) when it has nothing left to do after the command:
# no pty, no I/O log, no PAM session and no PAM credentials to delete, no exit status to log. So
# pam_setcred (sudo's default) stays on, and !pam_setcred must never be added here alone.
#   !log_allowed   no syslog line (nor Linux audit record) of sudo's own per run: socker's audit log
#                  records every run itself, as the record of truth
#   !pam_session   no PAM session (its modules, e.g. pam_limits, would also change the caller's limits)
#   !use_pty, !log_output  no pty and no I/O log between the caller and socker
# Kept: PAM account management (site account policy: expiry, pam_access, SSSD access rules). Measured
# on this kind of machine, 150 interleaved calls each: none of these settings moves a call by more
# than the noise (~0.5 ms of 24 ms CPU); leaving sudo's parent role (!pam_setcred) would save 6 ms.
readonly SUDOERS_DEFAULTS='env_reset, !env_keep, !env_check, !setenv, !use_pty, !requiretty, !log_output, !pam_session, !log_allowed'
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
readonly SELF_DIR
readonly SOURCE_TS="$SELF_DIR/socker.ts"
readonly SOURCE_IMAGES="$SELF_DIR/socker-images.example"
readonly DEMO_IMAGE=socker-demo:latest
readonly SOURCE_RUNC="$SELF_DIR/socker-runc"
readonly SOURCE_ENTRY="$SELF_DIR/socker-entry.sh.in" # the entry point's template (see entry_text)
readonly ENGINE_CONFIG=/etc/docker/daemon.json # the Docker engine's configuration file
readonly RUNTIME_NAME=socker-runc              # fixed in socker.ts
# Podman (--engine podman): its API service, run as root on a socket of its own in a root-only folder
# (PODMAN_SOCKET in socker.ts), with the cgroupfs manager so that a cgroup parent inside a Slurm step is
# honoured; a systemd unit where systemd runs, else a loop kept running like the watcher's.
readonly PODMAN_SOCKET_DIR=/run/socker-engine
readonly PODMAN_SOCKET=$PODMAN_SOCKET_DIR/podman.sock
readonly PODMAN_SERVICE=socker-podman.service
readonly PODMAN_LOOP_PID=/run/socker-podman-loop.pid
readonly PODMAN_RUNTIMES=/etc/containers/containers.conf.d/socker.conf # Podman's runtime entry for socker-runc

PREFIX=/usr/local
SYSCONFDIR=/etc
DENO_SRC=""
DENORT=""
DO_EPILOG=0
DO_DEMO=0
DRY_RUN=0
UNINSTALL=0
ENGINE="" # --engine: docker or podman, written to socker.conf; empty: socker.conf's engine is kept
SCRATCH="" # private folder (0700) for generated content; cleanup_temps removes it at exit
PLANNED_DIRS="" # folders that --dry-run would have created
INSTALLED_PKGS=() # Debian packages this run installed, for the summary

# ---------------------------------------------------------------- messages

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
# die MESSAGE: says why and stops the install. Inside a command substitution the exit ends only that
# subshell, so its callers write `x=$(f) || exit`: die has already said why, and the install stops
# whatever the context (set -e is off in an if or || list).
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'install.sh: %s (see install.sh --help)\n' "$*" >&2; exit 2; }

usage() {
  cat <<EOF
Usage: install.sh [OPTIONS]

Installs socker on this node (run it on every node, as root). Idempotent: a second run
changes nothing and says "unchanged". Nothing is installed set-uid or set-gid. What socker
needs at run time and is missing is installed from Debian (apt-get) and said: sudo, and Deno
$DENO_VERSION (npm install -g deno@$DENO_VERSION, with Debian's npm when there is no npm).
A missing syslog daemon is no error: socker's audit log is the file $LOG_DIR/audit.log.

Options:
  --prefix DIR       installation prefix (default: /usr/local)
  --sysconfdir DIR   configuration root (default: /etc); the allowlist is DIR/socker/socker-images
  --deno PATH        deno binary to copy as socker's pinned runtime (default: the deno on PATH;
                     if there is none: npm install -g deno@$DENO_VERSION)
  --denort PATH      denort base binary for \`deno compile\` on air-gapped clusters (matching the
                     deno version); passed to deno compile as DENORT_BIN
  --epilog           also install the Slurm Epilog hook that removes a finished job's containers
                     (always exits 0; its cleanup is bounded to ${EPILOG_TIMEOUT} s)
  --demo             quick start: make sure a docker engine answers on /var/run/docker.sock
                     (a running engine is used as it is; else apt-get install docker.io iptables
                     and start it), build the local image $DEMO_IMAGE from busybox with
                     $DEMO_DOCKER, allow it, and run it through socker as an unprivileged user
                     (\$SUDO_USER or nobody)
  --engine ENGINE    docker or podman: the engine socker talks to, written as 'engine = ENGINE' in
                     SYSCONFDIR/socker/socker.conf (other lines kept). podman: installs Debian's
                     podman and catatonit when missing, runs its API service as root on
                     $PODMAN_SOCKET (folder root 0700) with --cgroup-manager=cgroupfs
                     (systemd unit $PODMAN_SERVICE, else a loop kept running like the
                     watcher's), and registers socker-runc in $PODMAN_RUNTIMES.
                     docker: stops and removes that service. Default: socker.conf's engine is kept
  --dry-run          print every action, change nothing (works without root)
  --uninstall        remove what install.sh installed; keeps SYSCONFDIR/socker (the allowlist),
                     $LOG_DIR (the audit log) and any dockerroot user or docker group
  --setuid, --setgid refused: socker is never installed set-id (the reason is printed)
  -h, --help         show this help

Installed (default paths):
  /usr/local/bin/socker                    user launcher: exec /usr/bin/sudo -n -- <entry point>
  /usr/local/libexec/socker/socker         privileged entry point (sh): ignores SIGTSTP, SIGTTIN,
                                           SIGTTOU and SIGXFSZ, passes the caller's limits on as
                                           SOCKER_LIMITS, raises (or refuses with exit 125) the
                                           limits Deno needs, then execs with env -i the compiled
                                           socker (lib/socker/socker-bin) or the pinned deno
  /usr/local/libexec/socker/slurm-epilog   Slurm Epilog hook (only with --epilog)
  /usr/local/libexec/socker/socker-runc    the OCI runtime socker's containers use in Slurm jobs on
                                           cgroup v1 nodes with ConstrainDevices=yes: runc without its
                                           mknod wildcards 'c *:* m' and 'b *:* m'. Registered as the
                                           runtime "$RUNTIME_NAME" in $ENGINE_CONFIG (other
                                           keys kept), then the engine reloads its configuration
                                           (SIGHUP; running containers are untouched); --uninstall
                                           removes the entry again
  /usr/local/lib/socker/socker.ts          socker, with its install-time constants set
  /usr/local/lib/socker/deno               pinned private copy of deno
  /usr/local/lib/socker/deno-dir/          DENO_DIR of the privileged side (filled at install)
  /usr/local/lib/socker/docker-config/     root 0700: registry logins socker pulls with, made by
                                           DOCKER_CONFIG=<this folder> docker login REGISTRY
  /etc/socker/socker-images                image allowlist (from socker-images.example, only if absent)
  /etc/sudoers.d/socker                    sudo rule: every user may run the entry point as root
  $LOG_DIR/                         root 0700; socker writes audit.log (0600) in it
  $LOGROTATE_FILE                  audit log rotation: weekly or past 100 MB, 52 kept, compressed
                                           (installed even without logrotate, which is then said)
  $SYSTEMD_DIR/$REAPER_TIMER  the orphan reaper, every minute: <entry point>
    and $REAPER_SERVICE                 cleanup --orphans (removes containers whose socker died);
                                           when systemd runs. Else, when a cron daemon is installed:
  $CRON_FILE                   the same, every minute, as root
  $SYSTEMD_DIR/$WATCH_SERVICE  the watcher (<entry point> watch): removes a container the
                                           moment its socker dies (scancel JOB.STEP, kill -9); without
                                           systemd, <libexec>/socker-watch-loop runs it, restarted
EOF
}

refuse_setid() {
  cat >&2 <<'EOF'
install.sh: refused: socker is never installed set-uid or set-gid.
A Deno runtime honours environment variables (e.g. DENO_INTERNAL_CHILD_ENTRYPOINT with NODE_CHANNEL_FD)
and a V8 code cache in /tmp, so a set-id socker would run any caller's own code with its privileges;
the launcher goes through sudo instead, which resets the environment before any runtime code starts.
EOF
  exit 2
}

# ---------------------------------------------------------------- helpers

dry() { [ "$DRY_RUN" -eq 1 ]; }

# run CMD...: prints the command in --dry-run, executes it otherwise.
run() {
  if dry; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# cleanup_temps: at exit, removes the temp files that new_temp made (those not moved into place), then
# the scratch folder.
cleanup_temps() {
  local p
  [ -n "$SCRATCH" ] || return 0
  if [ -f "$SCRATCH/temps" ]; then
    while IFS= read -r p; do
      rm -f -- "$p" 2>/dev/null || true
    done <"$SCRATCH/temps"
  fi
  rm -rf -- "$SCRATCH" 2>/dev/null || true
}
trap cleanup_temps EXIT

# new_temp DIR NAME: prints the path of a new temp file in DIR, removed at exit unless moved into
# place. It is listed in a file, not a variable, so that it is removed even when new_temp runs in a
# command substitution's subshell.
new_temp() {
  local tmp
  tmp=$(mktemp "$1/.$2.XXXXXX") || die "cannot make a temp file in $1"
  printf '%s\n' "$tmp" >>"$SCRATCH/temps"
  printf '%s\n' "$tmp"
}

# check_path NAME VALUE: an absolute path without quotes, backslashes, blanks, newlines or '..'.
# The character set is what sudoers, sh and deno's comma-separated permission lists take literally.
check_path() {
  local name=$1 value=$2
  [[ "$value" == /* ]] || usage_error "$name must be an absolute path: $value"
  [[ "$value" =~ ^[A-Za-z0-9._/+-]+$ ]] ||
    usage_error "$name may only contain letters, digits and . _ / + - : $value"
  [[ "/$value/" != */../* && "/$value/" != */./* ]] || usage_error "$name must not contain '.' or '..' components: $value"
}

strip_slash() {
  local p=$1
  while [ "${#p}" -gt 1 ] && [ "${p%/}" != "$p" ]; do p=${p%/}; done
  printf '%s\n' "$p"
}

# mode_owner PATH: "user:group octal-mode" of PATH itself (not following symlinks), e.g. "root:root 755".
mode_owner() { stat -c '%U:%G %a' -- "$1"; }

# root_mode MODE: what mode_owner prints for a root:root file of MODE (0755 -> "root:root 755").
root_mode() { printf 'root:root %o\n' "$((8#$1))"; }

# check_ancestors PATH [group-ok]: every existing folder from / down to PATH must be root-owned and not
# writable by group or others, else whoever can write there could swap what root runs.
check_ancestors() {
  local p=$1 group_ok=${2-} cur="" part info
  local -a parts
  IFS=/ read -r -a parts <<<"${p#/}"
  for part in / "${parts[@]}"; do
    if [ "$part" = / ]; then cur=/; else cur="${cur%/}/$part"; fi
    [ -e "$cur" ] || break
    if [ -L "$cur" ]; then
      die "$cur is a symlink; install socker under real folders (use --prefix / --sysconfdir)"
    fi
    info=$(stat -c '%U %A' -- "$cur")
    if [ -n "$group_ok" ] && [[ "${info%% *}" == root && "${info#* }" =~ ^.....w && ! "${info#* }" =~ ^........w ]]; then
      # Ubuntu's /var/log is root:syslog 0775: its group (the syslog daemon) could swap what is below.
      warn "$cur is '$info', group $(stat -c %G -- "$cur"): members of that group could replace $p"
      continue
    fi
    if [[ "${info%% *}" != root || "${info#* }" =~ ^.....w || "${info#* }" =~ ^........w ]]; then
      die "$cur is '$info' (must be root-owned and not writable by group or others): fix it or choose another --prefix/--sysconfdir"
    fi
  done
}

# ensure_parent DIR: creates a missing folder (root, 0755) but never changes an existing one.
ensure_parent() {
  local d=$1
  if [ -d "$d" ] || [[ " $PLANNED_DIRS " == *" $d "* ]]; then return 0; fi
  run mkdir -p -- "$d"
  if dry; then PLANNED_DIRS+=" $d"; else say "created $d"; fi
}

# ensure_dir DIR MODE: a folder that socker owns: root:root MODE.
ensure_dir() {
  local d=$1 mode=$2
  if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then
    die "$d exists and is not a folder; remove it first"
  fi
  if [ -d "$d" ]; then
    if [ "$(mode_owner "$d")" = "$(root_mode "$mode")" ]; then
      say "unchanged $d/"
      return 0
    fi
    run chown root:root -- "$d"
    # An octal mode leaves a folder's set-id bits alone in GNU chmod: clear them explicitly.
    run chmod "$mode" -- "$d"
    run chmod ug-s -- "$d"
    dry || say "fixed owner/mode of $d/"
    return 0
  fi
  ensure_parent "$(dirname "$d")"
  run install -d -o root -g root -m "$mode" -- "$d"
  if dry; then PLANNED_DIRS+=" $d"; else say "installed $d/"; fi
}

# same_file SRC DEST MODE: DEST exists with SRC's content, root:root and MODE.
same_file() {
  [ -f "$2" ] && [ ! -L "$2" ] && [ -r "$2" ] && cmp -s -- "$1" "$2" &&
    [ "$(mode_owner "$2")" = "$(root_mode "$3")" ]
}

# install_file SRC DEST MODE: installs SRC as DEST atomically (temp file beside DEST, then mv).
install_file() {
  local src=$1 dest=$2 mode=$3 tmp
  if [ -L "$dest" ] || { [ -e "$dest" ] && [ ! -f "$dest" ]; }; then
    die "$dest exists and is not a regular file; remove it first"
  fi
  if same_file "$src" "$dest" "$mode"; then
    say "unchanged $dest"
    return 0
  fi
  if dry; then
    say "would install $dest (root:root $mode)"
    return 0
  fi
  tmp=$(new_temp "$(dirname "$dest")" "$(basename "$dest")") || exit
  install -o root -g root -m "$mode" -- "$src" "$tmp"
  mv -f -- "$tmp" "$dest"
  say "installed $dest"
}

# content_file TEXT: prints the path of a new scratch file holding TEXT and a newline.
content_file() {
  local file
  file=$(mktemp "$SCRATCH/content.XXXXXX") || die "cannot make a file in $SCRATCH"
  printf '%s\n' "$1" >"$file"
  printf '%s\n' "$file"
}

# install_text TEXT DEST MODE: installs TEXT and a newline as DEST (see install_file).
install_text() {
  local file
  file=$(content_file "$1") || exit
  install_file "$file" "$2" "$3"
}

# install_output DEST MODE COMMAND [ARG...]: installs what COMMAND prints as DEST, and stops the install
# when COMMAND fails (as an argument, "$(COMMAND)" would lose its exit status).
install_output() {
  local dest=$1 mode=$2 text
  shift 2
  text=$("$@") || exit
  install_text "$text" "$dest" "$mode"
}

is_elf() { [ "$(head -c 4 -- "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

# ---------------------------------------------------------------- options

parse_args() {
  while [ $# -gt 0 ]; do
    case $1 in
    --prefix | --sysconfdir | --deno | --denort | --engine)
      [ $# -ge 2 ] || usage_error "$1 needs a value"
      case $1 in
      --prefix) PREFIX=$2 ;;
      --sysconfdir) SYSCONFDIR=$2 ;;
      --deno) DENO_SRC=$2 ;;
      --denort) DENORT=$2 ;;
      --engine) ENGINE=$2 ;;
      esac
      shift 2
      ;;
    --prefix=* | --sysconfdir=* | --deno=* | --denort=* | --engine=*)
      local name=${1%%=*} value=${1#*=}
      set -- "$name" "$value" "${@:2}"
      ;;
    --epilog) DO_EPILOG=1; shift ;;
    --demo) DO_DEMO=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --docker | --docker=*) usage_error "--docker is gone: socker talks to the engine's socket itself and runs no docker CLI" ;;
    --setuid | --setgid) refuse_setid ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
    esac
  done
  PREFIX=$(strip_slash "$PREFIX")
  SYSCONFDIR=$(strip_slash "$SYSCONFDIR")
  check_path --prefix "$PREFIX"
  check_path --sysconfdir "$SYSCONFDIR"
  if [ "$PREFIX" = / ] || [ "$SYSCONFDIR" = / ]; then usage_error "--prefix and --sysconfdir cannot be /"; fi
  if [ -n "$DENO_SRC" ]; then check_path --deno "$DENO_SRC"; fi
  if [ -n "$DENORT" ]; then check_path --denort "$DENORT"; fi
  case $ENGINE in
  "" | docker | podman) ;;
  *) usage_error "--engine must be docker or podman, not '$ENGINE'" ;;
  esac
  if [ "$ENGINE" = podman ] && [ "$DO_DEMO" -eq 1 ]; then
    usage_error "--demo builds its image with the docker CLI: run it without --engine podman"
  fi
  if [ "$UNINSTALL" -eq 1 ] && [ $((DO_EPILOG + DO_DEMO)) -gt 0 ]; then
    usage_error "--uninstall cannot be combined with --epilog or --demo"
  fi
  if [ "$(id -u)" -ne 0 ] && ! dry; then
    die "must run as root (only --help and --dry-run work without root)"
  fi
  BIN_DIR=$PREFIX/bin
  LAUNCHER=$PREFIX/bin/socker
  LIBEXEC=$PREFIX/libexec/socker
  ENTRY=$LIBEXEC/socker
  EPILOG_HOOK=$LIBEXEC/slurm-epilog
  RUNTIME=$LIBEXEC/$RUNTIME_NAME
  LIB=$PREFIX/lib/socker
  CONF_DIR=$SYSCONFDIR/socker
  ALLOWLIST=$CONF_DIR/socker-images
  SETTINGS=$CONF_DIR/socker.conf
  DOCKER_CONFIG_DIR=$LIB/docker-config
  # Deno permissions of the privileged side: used for deno compile and for the wrapper alike.
  # Deno 2.9 opens no path under /proc or /sys (socker reads /proc/self/cgroup and
  # /proc/sys/kernel/hostname, and manages /sys/fs/cgroup) to anything but a plain --allow-all
  # without any --deny-* flag: "Requires all access", whatever --allow-read/--allow-write say.
  # So socker.ts as it is runs only with --allow-all. The fine-grained set, for a socker that
  # leaves /proc and /sys alone (Deno.connect to the engine also needs --allow-net=unix:PATH):
  #   --allow-read --allow-write=/var/run/docker.sock,/run/docker.sock
  #   --allow-net=unix:/var/run/docker.sock,unix:/run/docker.sock
  #   --allow-run=/usr/bin/setpriv
  #   --allow-env=SUDO_UID,SUDO_GID,SUDO_USER --allow-sys=hostname,uid
  # Deno's sandbox is defence in depth only: callers are kept out by sudo's environment reset,
  # env -i, root-owned code and DENO_DIR, and --no-config --no-remote --no-npm --cached-only.
  PERM_FLAGS=(--allow-all)
  local f
  for f in "${PERM_FLAGS[@]}"; do
    [[ "$f" =~ ^[A-Za-z0-9._/+,=-]+$ ]] || die "unexpected character in deno flag: $f"
  done
  if dry; then say "dry run: nothing will be changed"; fi
}

# ---------------------------------------------------------------- checks

# check_trusted_file OPTION PATH: an executable file, root-owned, not writable by group or others.
check_trusted_file() {
  local option=$1 path=$2 info
  if [ ! -f "$path" ] || [ ! -x "$path" ]; then die "$option $path: no such executable file"; fi
  info=$(stat -L -c '%U %A' -- "$path")
  if [[ "${info%% *}" != root || "${info#* }" =~ ^.....w || "${info#* }" =~ ^........w ]]; then
    die "$option $path is '$info': it must be root-owned and not writable by group or others"
  fi
}

# check_tools: what socker and its hooks run besides Deno.
check_tools() {
  local tool
  for tool in /usr/bin/setpriv /usr/bin/timeout; do
    [ -x "$tool" ] || warn "$tool is missing: socker or its hooks run it (util-linux / coreutils)"
  done
  if [ ! -S /dev/log ]; then
    say "no syslog daemon (/dev/log): fine, socker's audit log is $LOG_DIR/audit.log (syslog only gets a copy when one runs)"
  fi
}

# apt_install PKG...: installs the missing Debian packages among PKG..., says which.
APT_UPDATED=0
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  command -v apt-get >/dev/null || die "${missing[*]} missing, and there is no apt-get to install it: install ${missing[*]} first"
  if [ "$APT_UPDATED" -eq 0 ]; then run apt-get update -q; fi
  APT_UPDATED=1
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if dry; then return 0; fi
  INSTALLED_PKGS+=("${missing[@]}")
  say "installed ${missing[*]} (apt-get, from Debian)"
}

check_sudo() {
  SUDO=$(command -v sudo || true)
  if [ -z "$SUDO" ] || ! command -v visudo >/dev/null; then
    say "sudo is missing: socker's users reach it through sudo"
    apt_install sudo
    if dry; then
      SUDO=/usr/bin/sudo
      return 0
    fi
    SUDO=$(command -v sudo || true)
    [ -n "$SUDO" ] || die "apt-get install sudo did not install sudo"
  fi
  SUDO=$(readlink -f -- "$SUDO")
  command -v visudo >/dev/null || die "visudo is missing (it comes with sudo)"
  if [ -r /etc/sudoers ] && ! grep -Eqs '^[@#]includedir[[:space:]]+/etc/sudoers\.d/?[[:space:]]*$' /etc/sudoers; then
    warn "/etc/sudoers has no '@includedir /etc/sudoers.d': $SUDOERS_FILE will have no effect"
  fi
}

check_source() {
  if [ ! -f "$SOURCE_TS" ]; then
    dry || die "$SOURCE_TS not found (install.sh installs the socker.ts beside it)"
    warn "$SOURCE_TS not found: a real run would fail here"
    return 0
  fi
  local name
  for name in PREFIX CONFIG_DIR DOCKER_CONFIG_DIR SOCKER_VERSION; do
    local n
    n=$(grep -c -E "^export const $name = \"[^\"]*\"; // install\\.sh\$" "$SOURCE_TS" || true)
    [ "$n" -eq 1 ] || die "$SOURCE_TS must contain exactly one line 'export const $name = \"...\"; // install.sh' (found $n): refusing to install a copy with default paths"
  done
  if [ ! -f "$SOURCE_ENTRY" ]; then
    dry || die "$SOURCE_ENTRY not found (install.sh renders the entry point from the template beside it)"
    warn "$SOURCE_ENTRY not found: a real run would fail here"
  fi
}

# ---------------------------------------------------------------- deno

find_deno() {
  if [ -z "$DENO_SRC" ]; then
    DENO_SRC=$(command -v deno || true)
  fi
  if [ -z "$DENO_SRC" ]; then
    say "no deno found: installing deno $DENO_VERSION from the npm registry"
    if ! command -v npm >/dev/null; then
      say "npm is missing: installing Debian's npm"
      apt_install npm
    fi
    run npm install -g --no-fund --no-audit "deno@$DENO_VERSION"
    if dry; then
      DENO_SRC=/usr/bin/deno
      return 0
    fi
    hash -r
    DENO_SRC=$(command -v deno || true)
    [ -n "$DENO_SRC" ] || die "npm install -g deno@$DENO_VERSION did not put deno on PATH: pass --deno PATH"
    say "installed deno $DENO_VERSION with npm ($DENO_SRC)"
  fi
  # npm's deno is a symlink to the real binary; copy the binary, never a JS shim.
  DENO_SRC=$(readlink -f -- "$DENO_SRC")
  check_trusted_file --deno "$DENO_SRC"
  is_elf "$DENO_SRC" || die "--deno $DENO_SRC is not a native deno binary (a launcher script?): pass the real binary"
  local version
  version=$("$DENO_SRC" --version 2>/dev/null | head -n 1 || true)
  [[ "$version" == "deno "* ]] || die "--deno $DENO_SRC does not run as deno ('$version')"
  say "using $version from $DENO_SRC"
  if [ -n "$DENORT" ]; then
    check_trusted_file --denort "$DENORT"
    if [ "$DENORT" -ef "$DENO_SRC" ]; then die "--denort must be the denort base binary, not deno itself"; fi
  fi
}

# ---------------------------------------------------------------- pieces

# make_socker_ts OUT: writes the installed socker.ts to OUT (the repo's copy with the install-time
# constants rewritten) and prints its SOCKER_VERSION.
make_socker_ts() {
  local out=$1 version sha
  cp -- "$SOURCE_TS" "$out"
  set_const "$out" PREFIX "$PREFIX"
  set_const "$out" CONFIG_DIR "$CONF_DIR"
  set_const "$out" DOCKER_CONFIG_DIR "$DOCKER_CONFIG_DIR"
  version=$(sed -n -E 's|^export const SOCKER_VERSION = "([^"]*)"; // install\.sh$|\1|p' "$out")
  # rev-parse only: it runs no hooks or fsmonitor of the checkout.
  if [[ "$version" != *+g* ]] && command -v git >/dev/null &&
    sha=$(git -C "$SELF_DIR" rev-parse --short HEAD 2>/dev/null) && [[ "$sha" =~ ^[0-9a-f]+$ ]]; then
    version="$version+g$sha"
    set_const "$out" SOCKER_VERSION "$version"
  fi
  printf '%s\n' "$version"
}

# set_const FILE NAME VALUE: rewrites the value of one `// install.sh` constant, then checks it.
set_const() {
  local file=$1 name=$2 value=$3
  sed -i -E "s|^(export const $name = \")[^\"]*(\"; // install\\.sh)\$|\\1$value\\2|" "$file"
  grep -Fqx "export const $name = \"$value\"; // install.sh" "$file" ||
    die "could not set $name in the installed socker.ts"
}

launcher_text() {
  cat <<EOF
#!/usr/bin/env -S -u PWD /bin/sh
# socker launcher, installed by install.sh: the privileged side runs through sudo, which resets the environment.
# PWD is unset before sh starts: sh would stat \$PWD, which hangs in a folder on a stalled filesystem
# (without it sh asks the kernel for its folder's name, which never asks the filesystem).
exec $SUDO -n -- $ENTRY "\$@"
EOF
}

# render TEMPLATE NAME=VALUE...: prints TEMPLATE with every @NAME@ replaced by VALUE, as plain text.
# So that sed's replacement and sh take each VALUE literally, a VALUE may hold only letters, digits,
# blanks and . _ / + , = - (no \ & | quote or newline); a @NAME@ left without a value is an error.
render() {
  local template=$1 pair name value text left
  local -a script=()
  local plain='^[A-Za-z0-9._/+,= -]+$'
  shift
  [ -f "$template" ] || die "$template not found (install.sh renders the file beside it)"
  for pair in "$@"; do
    name=${pair%%=*} value=${pair#*=}
    [[ "$name" =~ ^[A-Z][A-Z_]*$ ]] || die "render: bad placeholder name: $name"
    [[ "$value" =~ $plain ]] || die "render: unexpected character in the value of @$name@ for $template: $value"
    script+=(-e "s|@$name@|$value|g")
  done
  text=$(sed "${script[@]}" -- "$template")
  if left=$(grep -o -m 1 -E '@[A-Z][A-Z_]*@' <<<"$text"); then
    die "render: $template has $left, which install.sh gives no value"
  fi
  printf '%s\n' "$text"
}

# entry_text MODE: the privileged entry point, the sh script socker-entry.sh.in with this install's
# values; MODE is compiled (exec $LIB/socker-bin) or wrapper (exec the pinned deno on socker.ts).
entry_text() {
  local mode=$1 flags="" f cmd
  # parse_args checked that every flag is safe unquoted in sh.
  for f in "${PERM_FLAGS[@]}"; do flags+=" $f"; done
  if [ "$mode" = compiled ]; then
    cmd="$LIB/socker-bin"
  else
    cmd="$LIB/deno run --quiet --no-config --no-lock --no-remote --no-npm --cached-only$flags $LIB/socker.ts"
  fi
  render "$SOURCE_ENTRY" "LIB=$LIB" "COMMAND=$cmd" "NEED_AS_KIB=$NEED_AS_KIB" "NEED_DATA_KIB=$NEED_DATA_KIB" \
    "NEED_STACK_KIB=$NEED_STACK_KIB" "WANT_STACK_KIB=$WANT_STACK_KIB" "NEED_NOFILE=$NEED_NOFILE"
}

sudoers_text() {
  cat <<EOF
# socker: every user may run exactly the installed privileged socker as root, nothing else.
# Installed by install.sh; edit install.sh rather than this file.
Cmnd_Alias SOCKER = $ENTRY
Defaults!SOCKER $SUDOERS_DEFAULTS
ALL ALL=(root) NOPASSWD: SOCKER
EOF
}

# logger_path: logger(1), or nothing when this node has none.
logger_path() { command -v logger || true; }

epilog_text() {
  local logger
  logger=$(logger_path)
  cat <<EOF
#!/bin/sh
# socker's Slurm Epilog: removes every container of the finished job. An Epilog must always exit 0 (a failing
# Epilog drains the node) and must not hang (neither must a slow one): the cleanup gets $EPILOG_TIMEOUT s, then
# SIGTERM, and SIGKILL 5 s later (timeout signals its whole process group).
# Installed by install.sh. Runs as root from slurmd; socker runs with an empty environment.
job=\${SLURM_JOB_ID-}
case \$job in '' | *[!0-9]*) exit 0 ;; esac
# Messages go to a file, not a pipe: a process left holding a pipe open would hold the hook too.
out=\$(/usr/bin/mktemp /run/socker-epilog.XXXXXX 2>/dev/null) || out=/dev/null
/usr/bin/timeout -k 5 $EPILOG_TIMEOUT /usr/bin/env -i $ENTRY cleanup --job "\$job" </dev/null >/dev/null 2>"\$out"
rc=\$?
msg=
if [ "\$out" != /dev/null ]; then
  msg=\$(/usr/bin/head -c 2000 -- "\$out" 2>/dev/null)
  /bin/rm -f -- "\$out"
fi
case \$rc in 124 | 137) msg="timed out after $EPILOG_TIMEOUT s\${msg:+: \$msg}" ;; esac
EOF
  if [ -n "$logger" ]; then
    cat <<EOF
if [ "\$rc" -ne 0 ] || [ -n "\$msg" ]; then
  printf 'job %s: cleanup exit %s: %s\n' "\$job" "\$rc" "\$msg" | /usr/bin/timeout 5 $logger -t socker-epilog -p daemon.warning >/dev/null 2>&1
fi
EOF
  else
    # shellcheck disable=SC2016 # the text is sh code for the hook
    printf '%s\n' ': "$rc" "$msg" # no logger(1) on this node at install time: cleanup messages are dropped'
  fi
  printf '%s\n' 'exit 0'
}

logrotate_text() {
  cat <<EOF
# socker's audit log, the record of truth of every run, refusal and cleanup. Installed by install.sh.
# socker opens the file for every record, so a rename rotates it: no copytruncate (which loses records).
$LOG_DIR/audit.log {
  weekly
  maxsize 100M
  rotate 52
  compress
  delaycompress
  missingok
  notifempty
  create 0600 root root
}
EOF
}

# reaper_command: one orphan sweep, bounded so that sweeps never pile up.
reaper_command() { printf '/usr/bin/timeout -k 5 %s %s cleanup --orphans' "$REAPER_TIMEOUT" "$ENTRY"; }

reaper_service_text() {
  cat <<EOF
# socker's orphan reaper: removes the socker containers whose supervising socker died (SIGKILL, OOM),
# outside Slurm jobs too. Installed by install.sh; started every minute by $REAPER_TIMER.
[Unit]
Description=socker orphan reaper (remove containers whose supervising socker died)

[Service]
Type=oneshot
ExecStart=$ENTRY cleanup --orphans
TimeoutStartSec=$REAPER_TIMEOUT
EOF
}

reaper_timer_text() {
  cat <<EOF
# Installed by install.sh: runs $REAPER_SERVICE every minute.
[Unit]
Description=socker orphan reaper, every minute

[Timer]
OnCalendar=minutely
AccuracySec=5s

[Install]
WantedBy=timers.target
EOF
}

reaper_cron_text() {
  local logger sink
  logger=$(logger_path)
  if [ -n "$logger" ]; then sink="2>&1 | $logger -t socker-reaper -p daemon.warning >/dev/null 2>&1"; else sink=">/dev/null 2>&1"; fi
  cat <<EOF
# socker's orphan reaper: removes the socker containers whose supervising socker died (SIGKILL, OOM),
# outside Slurm jobs too. Installed by install.sh; every minute, as root.
SHELL=/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
* * * * * root $(reaper_command) </dev/null $sink
EOF
}

watch_service_text() {
  cat <<EOF
# socker's watcher: removes a socker container the moment its supervising socker dies (scancel
# JOB.STEP, --kill-on-bad-exit, kill -9, OOM), while the job goes on. Installed by install.sh.
[Unit]
Description=socker watcher (remove containers whose supervising socker died, at once)
After=docker.service

[Service]
ExecStart=$ENTRY watch
Restart=always
RestartSec=1
MemoryMax=256M

[Install]
WantedBy=multi-user.target
EOF
}

# watch_loop_text: without systemd, this loop keeps the watcher running (a second after it ends, again).
watch_loop_text() {
  local logger sink
  logger=$(logger_path)
  if [ -n "$logger" ]; then sink="2>&1 | $logger -t socker-watch -p daemon.warning >/dev/null 2>&1"; else sink=">/dev/null 2>&1"; fi
  cat <<EOF
#!/bin/sh
# Installed by install.sh: keeps socker's watcher ($ENTRY watch) running on a node without systemd.
# Started by install.sh with setsid: this shell leads its own process group, recorded in $WATCH_LOOP_PID.
echo \$\$ >$WATCH_LOOP_PID
while :; do
  $ENTRY watch </dev/null $sink
  sleep 1
done
EOF
}

# stop_watch_loop: stops the loop install.sh started (and the watcher in its process group), if it runs.
stop_watch_loop() {
  local pid
  pid=$(cat "$WATCH_LOOP_PID" 2>/dev/null) || return 0
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'socker-watch-loop'; then
    run kill -TERM -- "-$pid" 2>/dev/null || true
    dry || say "stopped the watcher loop (process group $pid)"
  fi
  dry || rm -f -- "$WATCH_LOOP_PID"
}

# ---------------------------------------------------------------- steps

step_layout() {
  check_ancestors "$PREFIX"
  check_ancestors "$CONF_DIR"
  check_ancestors "$SUDOERS_DIR"
  check_ancestors "$LOG_DIR" group-ok
  ensure_parent "$BIN_DIR"
  ensure_dir "$LIBEXEC" 0755
  ensure_dir "$LIB" 0755
  # Registry logins (config.json) that socker, as root, pulls with: root's alone.
  ensure_dir "$DOCKER_CONFIG_DIR" 0700
  ensure_dir "$CONF_DIR" 0755
}

# step_audit_log: the audit log's folder (socker creates audit.log 0600 in it) and its rotation.
step_audit_log() {
  ensure_dir "$LOG_DIR" 0700
  if [ -e "$LOG_DIR/audit.log" ] && ! dry &&
    [ "$(stat -c '%U:%G %a' -- "$LOG_DIR/audit.log")" != "root:root 600" ]; then
    run chown root:root -- "$LOG_DIR/audit.log"
    run chmod 0600 -- "$LOG_DIR/audit.log"
    say "fixed owner/mode of $LOG_DIR/audit.log (root:root 0600)"
  fi
  ensure_parent "$(dirname "$LOGROTATE_FILE")"
  install_output "$LOGROTATE_FILE" 0644 logrotate_text
  if ! command -v logrotate >/dev/null && [ ! -x /usr/sbin/logrotate ]; then
    say "note: logrotate is not installed: $LOGROTATE_FILE takes effect once it is (apt-get install logrotate); until then $LOG_DIR/audit.log grows unrotated"
  fi
}

# has_systemd: systemd is PID 1 (sd_booted's test).
has_systemd() { [ -d /run/systemd/system ]; }

# cron_daemon: the installed cron daemon that reads /etc/cron.d, if any.
cron_daemon() {
  local c
  for c in /usr/sbin/cron /usr/sbin/crond; do
    if [ -x "$c" ]; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

# remove_ours FILE: removes FILE when install.sh installed it.
remove_ours() {
  if [ -f "$1" ] && grep -qs 'Installed by install.sh' "$1"; then
    run rm -f -- "$1"
    dry || say "removed $1"
  fi
}

step_reaper() {
  local cron changed=0 unit text file
  if has_systemd; then
    remove_ours "$CRON_FILE"
    for unit in "$REAPER_SERVICE" "$REAPER_TIMER"; do
      if [ "$unit" = "$REAPER_TIMER" ]; then text=$(reaper_timer_text); else text=$(reaper_service_text); fi
      file=$(content_file "$text") || exit
      same_file "$file" "$SYSTEMD_DIR/$unit" 0644 || changed=1
      install_file "$file" "$SYSTEMD_DIR/$unit" 0644
    done
    if [ "$changed" -eq 1 ]; then run systemctl daemon-reload; fi
    if [ "$changed" -eq 1 ] || ! systemctl is-enabled --quiet "$REAPER_TIMER" 2>/dev/null ||
      ! systemctl is-active --quiet "$REAPER_TIMER" 2>/dev/null; then
      run systemctl enable --now "$REAPER_TIMER"
      dry || say "enabled and started $REAPER_TIMER (every minute: $ENTRY cleanup --orphans)"
    else
      say "unchanged $REAPER_TIMER (enabled, active)"
    fi
    return 0
  fi
  if cron=$(cron_daemon); then
    ensure_parent "$(dirname "$CRON_FILE")"
    install_output "$CRON_FILE" 0644 reaper_cron_text
    if ! pgrep -x "$(basename "$cron")" >/dev/null 2>&1; then
      say "note: $cron is installed but not running: start it, or the orphan reaper never runs"
    fi
    return 0
  fi
  say "note: no orphan reaper installed: this node has neither systemd nor a cron daemon. Run '$ENTRY cleanup --orphans' as root every minute (it removes containers whose supervising socker died), or install cron (apt-get install cron) and run install.sh again"
}

# step_watcher: the node's watcher, kept alive like the reaper (systemd, else a supervised loop); always
# restarted, so that it runs the socker.ts just installed.
step_watcher() {
  local loop=$LIBEXEC/socker-watch-loop
  if has_systemd; then
    install_output "$SYSTEMD_DIR/$WATCH_SERVICE" 0644 watch_service_text
    run systemctl daemon-reload
    run systemctl enable "$WATCH_SERVICE"
    run systemctl restart "$WATCH_SERVICE"
    dry || say "started $WATCH_SERVICE ($ENTRY watch)"
    return 0
  fi
  install_output "$loop" 0755 watch_loop_text
  stop_watch_loop
  # In a chroot (an image being built, a test root) a started loop would outlive install.sh there.
  local init_root
  if init_root=$(stat -c %d:%i /proc/1/root/. 2>/dev/null) && [ "$(stat -c %d:%i /)" != "$init_root" ]; then
    say "note: this is a chroot: the watcher is not started here; start $loop (as root) on the booted node"
    return 0
  fi
  run setsid -f /bin/sh "$loop" </dev/null >/dev/null 2>&1
  dry || say "started the watcher: $loop (no systemd; install.sh starts it again on each run, start it at boot yourself)"
}

# ---------------------------------------------------------------- podman

# podman_runtime_option: the service's default runtime, socker-runc when installed. Podman 4.3 ignores a
# container's own runtime (HostConfig.Runtime) on its Docker API, so every container of socker's service
# runs with socker-runc (without runc's two mknod wildcard rules: socker's containers never have CAP_MKNOD).
podman_runtime_option() {
  if [ -x "$RUNTIME" ] || dry; then printf ' --runtime %s' "$RUNTIME_NAME"; fi
}

podman_service_text() {
  cat <<EOF
# The Podman API service socker talks to (engine = podman): root's, on a socket only root can reach,
# with the cgroupfs manager (socker's containers go into the Slurm step's cgroup). Installed by install.sh.
[Unit]
Description=Podman API service for socker (root only, cgroupfs)

[Service]
ExecStartPre=/usr/bin/install -d -o root -g root -m 0700 $PODMAN_SOCKET_DIR
ExecStart=$PODMAN --cgroup-manager=cgroupfs$(podman_runtime_option) system service --time=0 unix://$PODMAN_SOCKET
# conmon, each container's monitor, must outlive a restart of the service, as containerd-shim does dockerd's.
KillMode=process
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
EOF
}

# podman_loop_text: without systemd, this loop keeps the Podman service running (a second after it ends).
podman_loop_text() {
  cat <<EOF
#!/bin/sh
# Installed by install.sh: keeps the Podman API service socker talks to running on a node without systemd.
# Started by install.sh with setsid: this shell leads its own process group, recorded in $PODMAN_LOOP_PID.
echo \$\$ >$PODMAN_LOOP_PID
while :; do
  /usr/bin/install -d -o root -g root -m 0700 $PODMAN_SOCKET_DIR
  $PODMAN --cgroup-manager=cgroupfs$(podman_runtime_option) system service --time=0 unix://$PODMAN_SOCKET </dev/null >/dev/null 2>&1
  sleep 1
done
EOF
}

# podman_runtimes_text: socker-runc as a runtime Podman knows by name (Docker's is in $ENGINE_CONFIG).
podman_runtimes_text() {
  cat <<EOF
# Installed by install.sh: the OCI runtime socker's containers use in Slurm jobs (see $RUNTIME).
[engine.runtimes]
$RUNTIME_NAME = ["$RUNTIME"]
EOF
}

# stop_podman_loop: stops the loop install.sh started, with the service in its process group (containers
# keep running under their conmon, which left that group).
stop_podman_loop() {
  local pid
  pid=$(cat "$PODMAN_LOOP_PID" 2>/dev/null) || return 0
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'socker-podman-loop'; then
    run kill -TERM -- "-$pid" 2>/dev/null || true
    dry || say "stopped the Podman service loop (process group $pid)"
  fi
  dry || rm -f -- "$PODMAN_LOOP_PID"
}

# podman_answers: the Podman service answers on its socket.
podman_answers() {
  [ -S "$PODMAN_SOCKET" ] && "$PODMAN" --url "unix://$PODMAN_SOCKET" version >/dev/null 2>&1
}

# step_podman: Podman installed, socker-runc registered, and its API service running as root.
step_podman() {
  local loop=$LIBEXEC/socker-podman-loop changed=0 file text _
  apt_install podman catatonit
  PODMAN=$(command -v podman || true)
  if dry && [ -z "$PODMAN" ]; then PODMAN=/usr/bin/podman; fi
  [ -n "$PODMAN" ] || die "apt-get install podman did not install podman"
  if [ -x "$RUNTIME" ] || dry; then
    ensure_parent "$(dirname "$PODMAN_RUNTIMES")"
    file=$(content_file "$(podman_runtimes_text)") || exit
    same_file "$file" "$PODMAN_RUNTIMES" 0644 || changed=1
    install_file "$file" "$PODMAN_RUNTIMES" 0644
  fi
  if has_systemd; then
    text=$(podman_service_text)
    file=$(content_file "$text") || exit
    same_file "$file" "$SYSTEMD_DIR/$PODMAN_SERVICE" 0644 || changed=1
    install_file "$file" "$SYSTEMD_DIR/$PODMAN_SERVICE" 0644
    run systemctl daemon-reload
    run systemctl enable "$PODMAN_SERVICE"
    if [ "$changed" -eq 1 ] || ! systemctl is-active --quiet "$PODMAN_SERVICE" 2>/dev/null; then
      run systemctl restart "$PODMAN_SERVICE"
    fi
  else
    file=$(content_file "$(podman_loop_text)") || exit
    same_file "$file" "$loop" 0755 || changed=1
    install_file "$file" "$loop" 0755
    local init_root
    if init_root=$(stat -c %d:%i /proc/1/root/. 2>/dev/null) && [ "$(stat -c %d:%i /)" != "$init_root" ]; then
      say "note: this is a chroot: the Podman service is not started here; start $loop (as root) on the booted node"
      return 0
    fi
    if [ "$changed" -eq 1 ] || ! podman_answers; then
      stop_podman_loop
      changed=1
      run setsid -f /bin/sh "$loop" </dev/null >/dev/null 2>&1
    fi
  fi
  if dry; then
    say "would wait up to 30 s for the Podman service on $PODMAN_SOCKET"
    return 0
  fi
  for _ in $(seq 150); do
    if podman_answers; then
      if [ "$changed" -eq 1 ]; then
        say "started the Podman service on $PODMAN_SOCKET (root 0600 in a root 0700 folder, cgroupfs)"
      else
        say "unchanged Podman service on $PODMAN_SOCKET (answers)"
      fi
      return 0
    fi
    sleep 0.2
  done
  die "the Podman service did not answer on $PODMAN_SOCKET within 30 s"
}

# remove_podman_service: stops and removes socker's Podman service (--engine docker, --uninstall).
remove_podman_service() {
  if [ -f "$SYSTEMD_DIR/$PODMAN_SERVICE" ] && grep -qs 'Installed by install.sh' "$SYSTEMD_DIR/$PODMAN_SERVICE"; then
    if has_systemd; then run systemctl disable --now "$PODMAN_SERVICE" 2>/dev/null || true; fi
  fi
  remove_ours "$SYSTEMD_DIR/$PODMAN_SERVICE"
  stop_podman_loop
  remove_ours "$LIBEXEC/socker-podman-loop"
  remove_ours "$PODMAN_RUNTIMES"
}

# step_engine_setting: 'engine = ENGINE' in socker.conf: the line replaced, or added; the file made when
# missing (root 0644, as socker requires of it). Other lines are kept as they are.
step_engine_setting() {
  local text="" file
  if [ -L "$SETTINGS" ] || { [ -e "$SETTINGS" ] && [ ! -f "$SETTINGS" ]; }; then
    die "$SETTINGS exists and is not a regular file; remove it first"
  fi
  if [ -f "$SETTINGS" ]; then
    text=$(grep -v -E '^[[:space:]]*engine[[:space:]]*=' "$SETTINGS" || true)
    text=${text:+$text$'\n'}
  fi
  text+="engine = $ENGINE"
  file=$(content_file "$text") || exit
  if same_file "$file" "$SETTINGS" 0644; then
    say "unchanged engine = $ENGINE in $SETTINGS"
    return 0
  fi
  install_file "$file" "$SETTINGS" 0644
  dry || say "set engine = $ENGINE in $SETTINGS"
}

# step_runtime: socker.ts and the pinned deno; sets SOCKER_VERSION.
step_runtime() {
  local ts=$SCRATCH/socker.ts dd=$LIB/deno-dir changed=0
  if [ -f "$SOURCE_TS" ]; then
    SOCKER_VERSION=$(make_socker_ts "$ts") || exit
    same_file "$ts" "$LIB/socker.ts" 0644 || changed=1
    install_file "$ts" "$LIB/socker.ts" 0644
  else
    SOCKER_VERSION=unknown
    say "would install $LIB/socker.ts (root:root 0644)"
  fi
  same_file "$DENO_SRC" "$LIB/deno" 0755 || changed=1
  install_file "$DENO_SRC" "$LIB/deno" 0755
  # A new socker.ts or deno makes the wrapper's transpiled cache stale: step_warmup fills it anew.
  if [ "$changed" -eq 1 ] && ! dry && [ -d "$dd" ] && [ ! -L "$dd" ]; then rm -rf -- "$dd"; fi
}

# find_runc: the engine's runc on this node.
find_runc() {
  local r
  for r in /usr/sbin/runc /usr/bin/runc /usr/local/sbin/runc /usr/local/bin/runc; do
    if [ -x "$r" ]; then
      printf '%s\n' "$r"
      return 0
    fi
  done
  return 1
}

# engine_config_edit add|remove FILE: prints FILE's JSON with the runtime entry added (or removed), other
# keys kept; exit 3 when nothing changes; fails on a file that is not a JSON object.
engine_config_edit() {
  # shellcheck disable=SC2016 # TypeScript, not sh
  env -i DENO_NO_UPDATE_CHECK=1 NO_COLOR=1 DENO_DIR="$SCRATCH/deno-dir" "$LIB/deno" eval --quiet --no-config '
    const [mode, file, name, path] = Deno.args;
    let text = "{}";
    try { text = Deno.readTextFileSync(file); } catch (e) { if (!(e instanceof Deno.errors.NotFound)) throw e; }
    const config = text.trim() === "" ? {} : JSON.parse(text);
    if (config === null || typeof config !== "object" || Array.isArray(config)) throw new Error("not a JSON object");
    const runtimes = config.runtimes ?? {};
    if (runtimes === null || typeof runtimes !== "object" || Array.isArray(runtimes)) throw new Error("runtimes is not an object");
    const before = JSON.stringify(runtimes[name] ?? null);
    if (mode === "add") runtimes[name] = { path };
    else if (runtimes[name]?.path === path) delete runtimes[name]; // never another prefix entry
    if (JSON.stringify(runtimes[name] ?? null) === before) Deno.exit(3);
    if (Object.keys(runtimes).length > 0) config.runtimes = runtimes;
    else delete config.runtimes;
    console.log(JSON.stringify(config, null, 2));
  ' "$1" "$2" "$RUNTIME_NAME" "$RUNTIME"
}

# reload_engine: makes the Docker engine read its configuration again (runtimes are reloadable: running
# containers are untouched).
reload_engine() {
  local pid
  if has_systemd && systemctl is-active --quiet docker 2>/dev/null; then
    run systemctl reload docker
    dry || say "reloaded the Docker engine (systemctl reload docker)"
    return 0
  fi
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    run kill -HUP "$pid"
    dry || say "reloaded the Docker engine (SIGHUP to dockerd $pid)"
    return 0
  fi
  say "note: no running dockerd found: the engine reads $ENGINE_CONFIG when it starts"
}

# step_oci_runtime: installs socker-runc for this node's runc and registers it with the engine.
step_oci_runtime() {
  local runc status=0 text file
  if ! runc=$(find_runc); then
    say "note: no runc found: $RUNTIME not installed; socker refuses runs in jobs on cgroup v1 nodes with ConstrainDevices=yes until it is (install the engine, then run install.sh again)"
    return 0
  fi
  if [ ! -f "$SOURCE_RUNC" ]; then
    dry || die "$SOURCE_RUNC not found"
    say "would install $RUNTIME (root:root 0755) and register it as the runtime $RUNTIME_NAME in $ENGINE_CONFIG"
    return 0
  fi
  text=$(sed -E "s|^RUNC=[^ ]* # install.sh|RUNC=$runc # install.sh|" "$SOURCE_RUNC")
  file=$(content_file "$text") || exit
  grep -Fqx "RUNC=$runc # install.sh sets this node's runc" "$file" || die "could not set runc's path in $RUNTIME"
  install_file "$file" "$RUNTIME" 0755
  if dry && [ ! -x "$LIB/deno" ]; then
    say "would register $RUNTIME as the runtime $RUNTIME_NAME in $ENGINE_CONFIG and reload the engine"
    return 0
  fi
  text=$(engine_config_edit add "$ENGINE_CONFIG") || status=$?
  if [ "$status" -eq 3 ]; then
    say "unchanged runtime $RUNTIME_NAME in $ENGINE_CONFIG"
    return 0
  fi
  [ "$status" -eq 0 ] || die "cannot add the runtime $RUNTIME_NAME to $ENGINE_CONFIG (not valid JSON?): fix the file, or add '\"runtimes\": {\"$RUNTIME_NAME\": {\"path\": \"$RUNTIME\"}}' yourself"
  if dry; then
    say "would add the runtime $RUNTIME_NAME ($RUNTIME) to $ENGINE_CONFIG and reload the engine"
    return 0
  fi
  ensure_parent "$(dirname "$ENGINE_CONFIG")"
  install_text "$text" "$ENGINE_CONFIG" 0644
  say "registered the runtime $RUNTIME_NAME ($RUNTIME) in $ENGINE_CONFIG"
  reload_engine
}

# unregister_runtime: removes socker's runtime entry from the engine's configuration.
unregister_runtime() {
  local status=0 text
  [ -f "$ENGINE_CONFIG" ] || return 0
  if [ ! -x "$LIB/deno" ]; then
    grep -qs "\"$RUNTIME_NAME\"" "$ENGINE_CONFIG" && warn "remove the runtime $RUNTIME_NAME from $ENGINE_CONFIG yourself (no deno at $LIB/deno to edit it)"
    return 0
  fi
  text=$(engine_config_edit remove "$ENGINE_CONFIG") || status=$?
  [ "$status" -ne 3 ] || return 0
  if [ "$status" -ne 0 ]; then
    warn "cannot remove the runtime $RUNTIME_NAME from $ENGINE_CONFIG (not valid JSON?): remove it yourself"
    return 0
  fi
  if dry; then
    say "would remove the runtime $RUNTIME_NAME from $ENGINE_CONFIG and reload the engine"
    return 0
  fi
  install_text "$text" "$ENGINE_CONFIG" 0644
  say "removed the runtime $RUNTIME_NAME from $ENGINE_CONFIG"
  reload_engine
}

# step_holder: what keeps a step container alive between its tasks (socker.ts, HOLDER_DIR): a static
# busybox, bound read-only into the container, whose `sleep` needs nothing of the image.
step_holder() {
  # ldd fails on a static binary: a dynamic busybox would not run in an image without its libraries.
  if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
    apt_install busybox-static
  fi
  ensure_dir "$LIBEXEC/holder" 0755
  install_file /bin/busybox "$LIBEXEC/holder/busybox" 0755
}

# try_compile WORK: builds socker with deno compile as WORK/socker, in the new folder WORK; when it
# cannot, prints why (one line) and fails. It runs in an if: set -e is off, every failure is checked.
try_compile() {
  local work=$1 log rc out
  log=$work/log
  # A private DENO_DIR (no cache of root's home) and, when given, the local denort.
  local -a envs=(NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 DENO_NO_PACKAGE_JSON=1 "DENO_DIR=$work/deno-dir")
  if [ -n "$DENORT" ]; then envs+=("DENORT_BIN=$DENORT"); fi
  # Deno's own download cache (root's) may already hold the denort base: let compile find it there.
  local cache=${DENO_DIR:-${HOME:-/root}/.cache/deno}
  if ! mkdir -m 0700 -- "$work" "$work/deno-dir"; then
    printf 'cannot make %s\n' "$work"
    return 1
  fi
  if [ -z "$DENORT" ] && [ -d "$cache/dl" ] && [ "$(stat -c %u -- "$cache/dl")" = 0 ]; then
    ln -s -- "$cache/dl" "$work/deno-dir/dl"
  fi
  rc=0
  (cd "$work" && env -u DENORT_BIN "${envs[@]}" timeout -k 5 "$COMPILE_TIMEOUT" \
    "$LIB/deno" compile --quiet --no-code-cache --no-config --no-lock "${PERM_FLAGS[@]}" \
    -o "$work/socker" "$LIB/socker.ts") >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] || [ ! -s "$work/socker" ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      printf 'timed out after %ss\n' "$COMPILE_TIMEOUT"
    else
      compile_reason "$log"
    fi
    return 1
  fi
  # The result must run socker, not the deno CLI (as a wrong DENORT_BIN would give).
  out=$(env -i "$work/socker" --version 2>&1 | head -n 1 || true)
  if [[ "$out" == deno* || "$out" != *"$SOCKER_VERSION"* ]]; then
    printf "the compiled binary answers --version with '%s', not socker %s\n" "$out" "$SOCKER_VERSION"
    return 1
  fi
}

# compile_reason LOG: one short line from deno's error: its outermost and innermost causes when it
# printed a "Caused by:" list (the error line itself only names the output file), else the error line.
compile_reason() {
  local first outer inner
  first=$(grep -m 1 -E '^error' "$1" || true)
  [ -n "$first" ] || first=$(grep -m 1 -v '^[[:space:]]*$' "$1" || true)
  outer=$(sed -n -E '/^Caused by:/,/^Stack backtrace:/s/^[[:space:]]*[0-9]+: (.*)$/\1/p' "$1" | head -n 1)
  inner=$(sed -n -E '/^Caused by:/,/^Stack backtrace:/s/^[[:space:]]*[0-9]+: (.*)$/\1/p' "$1" | tail -n 1)
  outer=${outer%.}
  if [ -n "$outer" ] && [ "$outer" != "$inner" ]; then
    first="$outer: $inner"
  elif [ -n "$inner" ]; then
    first=$inner
  fi
  printf '%s\n' "${first:-no output}"
}

step_entry() {
  if dry; then
    say "would try: deno compile --no-code-cache --no-config --no-lock ${PERM_FLAGS[*]} (timeout ${COMPILE_TIMEOUT}s)"
    say "would install $ENTRY (sh: signals, limits, then exec $LIB/socker-bin or the pinned $LIB/deno) (root:root 0755)"
    return 0
  fi
  # In the private scratch folder (0700): an unchanged entry point leaves $LIBEXEC untouched.
  local work=$SCRATCH/compile why
  if why=$(try_compile "$work"); then
    install_file "$work/socker" "$LIB/socker-bin" 0755
    install_output "$ENTRY" 0755 entry_text compiled
    say "compiled with deno compile: $ENTRY execs $LIB/socker-bin"
  else
    install_output "$ENTRY" 0755 entry_text wrapper
    # entry_mode tells the modes apart by socker-bin: it exists only with the compiled entry point.
    if [ -e "$LIB/socker-bin" ]; then
      rm -f -- "$LIB/socker-bin"
      say "removed the stale $LIB/socker-bin"
    fi
    say "deno compile unavailable ($why): $ENTRY runs socker.ts with the pinned Deno"
  fi
}

# entry_mode: prints how the installed entry point runs socker: compiled (it execs $LIB/socker-bin,
# which step_entry installs only then) or wrapper (the pinned deno on socker.ts).
entry_mode() {
  if [ -e "$LIB/socker-bin" ]; then echo compiled; else echo wrapper; fi
}

# step_warmup: runs the entry point once as root, so that the wrapper's DENO_DIR holds the
# transpiled socker.ts (nothing is transpiled per run) and a broken install shows now.
step_warmup() {
  local dd=$LIB/deno-dir out
  if dry; then
    say "would run env -i $ENTRY --version once (checks the entry point, fills $dd/)"
    return 0
  fi
  # (step_runtime removed it when socker.ts or deno changed.)
  ensure_dir "$dd" 0755
  if ! out=$(cd / && env -i "$ENTRY" --version 2>&1); then
    die "the installed entry point fails: env -i $ENTRY --version said: $(printf '%s' "$out" | head -n 3)"
  fi
  if [ "$(entry_mode)" = wrapper ] && [ -z "$(ls -A -- "$dd")" ]; then
    die "$dd is still empty after running the entry point once"
  fi
  say "checked $ENTRY --version: $(printf '%s' "$out" | head -n 1)"
}

step_launcher() {
  install_output "$LAUNCHER" 0755 launcher_text
}

step_allowlist() {
  if [ -e "$ALLOWLIST" ] || [ -L "$ALLOWLIST" ]; then
    say "kept existing $ALLOWLIST"
    return 0
  fi
  [ -f "$SOURCE_IMAGES" ] || die "$SOURCE_IMAGES not found"
  install_file "$SOURCE_IMAGES" "$ALLOWLIST" 0644
}

step_sudoers() {
  local text file tmp
  text=$(sudoers_text)
  file=$(content_file "$text") || exit
  if same_file "$file" "$SUDOERS_FILE" 0440; then
    say "unchanged $SUDOERS_FILE"
    return 0
  fi
  if dry; then
    say "would check with visudo -cf and install $SUDOERS_FILE (root:root 0440)"
    return 0
  fi
  # The temp name starts with '.', which sudo's @includedir skips while it sits there.
  tmp=$(new_temp "$SUDOERS_DIR" socker) || exit
  printf '%s\n' "$text" >"$tmp"
  chown root:root -- "$tmp"
  chmod 0440 -- "$tmp"
  if ! visudo -cqf "$tmp" >/dev/null 2>&1; then
    visudo -cf "$tmp" >&2 || true
    die "visudo rejects the new sudoers rule: kept the old $SUDOERS_FILE (if any)"
  fi
  if [ -f "$SUDOERS_FILE" ] && ! grep -Fqx "Cmnd_Alias SOCKER = $ENTRY" "$SUDOERS_FILE"; then
    warn "$SUDOERS_FILE named another entry point; it now names $ENTRY (one socker per node)"
  fi
  mv -f -- "$tmp" "$SUDOERS_FILE"
  say "installed $SUDOERS_FILE (checked with visudo)"
}

find_slurm_conf() {
  local f
  for f in "${SLURM_CONF-}" /etc/slurm/slurm.conf /etc/slurm-llnl/slurm.conf /usr/local/etc/slurm.conf; do
    if [ -n "$f" ] && [ -f "$f" ]; then
      printf '%s\n' "$f"
      return 0
    fi
  done
  return 1
}

step_epilog() {
  local conf="" current=""
  install_output "$EPILOG_HOOK" 0755 epilog_text
  if conf=$(find_slurm_conf); then
    current=$(grep -i -E '^[[:space:]]*Epilog[[:space:]]*=' "$conf" | sed -E 's/^[^=]*=[[:space:]]*//; s/[[:space:]]*(#.*)?$//' | paste -sd ' ' - || true)
  fi
  if [ -n "$current" ] && [ "$current" = "$EPILOG_HOOK" ]; then
    say "kept Epilog=$EPILOG_HOOK in $conf"
    return 0
  fi
  say "add to slurm.conf on every node (install.sh never edits it), then 'scontrol reconfigure':"
  say "  Epilog=$EPILOG_HOOK"
  if [ -n "$current" ]; then
    say "note: $conf already has Epilog=$current: if your Slurm does not take several Epilog= lines, call $EPILOG_HOOK from that script"
  fi
}

self_check() {
  local bad f paths=("$LAUNCHER" "$LIBEXEC" "$LIB" "$CONF_DIR" "$SUDOERS_FILE" "$LOG_DIR" "$LOGROTATE_FILE")
  for f in "$CRON_FILE" "$SYSTEMD_DIR/$REAPER_SERVICE" "$SYSTEMD_DIR/$REAPER_TIMER"; do
    if [ -e "$f" ]; then paths+=("$f"); fi
  done
  bad=$(find "${paths[@]}" \( -type l ! -user root \) -o \( ! -type l \( ! -user root -o ! -group root -o -perm /022 \) \) -print 2>&1 || true)
  [ -z "$bad" ] || die "self-check: not root:root or writable by group/others: $bad"
  bad=$(find "${paths[@]}" -perm /6000 -print 2>&1 || true)
  [ -z "$bad" ] || die "self-check: set-id bit found (never allowed): $bad"
  [ "$(mode_owner "$SUDOERS_FILE")" = "root:root 440" ] || die "self-check: $SUDOERS_FILE is not root:root 0440"
  [ "$(mode_owner "$LOG_DIR")" = "root:root 700" ] || die "self-check: $LOG_DIR is not root:root 0700"
  [ "$(mode_owner "$DOCKER_CONFIG_DIR")" = "root:root 700" ] || die "self-check: $DOCKER_CONFIG_DIR is not root:root 0700"
  visudo -cqf "$SUDOERS_FILE" >/dev/null 2>&1 || die "self-check: visudo -cf $SUDOERS_FILE fails"
  visudo -cq >/dev/null 2>&1 || warn "visudo -c reports a problem in the sudo configuration (not in $SUDOERS_FILE)"
  say "self-check passed: root-owned, no group/other write, no set-id bit, sudoers valid"
}

# ---------------------------------------------------------------- demo

docker_ok() { "$DEMO_DOCKER" info >/dev/null 2>&1; }

# demo_engine: a Docker engine answering on its socket, and the docker CLI that builds the demo image.
# socker itself needs only the engine's socket; an engine that already answers is used as it is.
demo_engine() {
  local _
  if [ ! -x "$DEMO_DOCKER" ]; then
    if [ -S /var/run/docker.sock ]; then
      say "an engine socket exists but no docker CLI: installing docker.io for the CLI that builds the demo image"
      apt_install docker.io
    else
      apt_install docker.io iptables
    fi
  fi
  if ! dry && docker_ok; then
    say "kept the running docker engine (it answers on /var/run/docker.sock)"
    return 0
  fi
  # dockerd refuses to start without iptables.
  apt_install iptables
  if dry; then
    say "would start the docker engine unless one answers, and wait up to 60 s for docker info"
    return 0
  fi
  if has_systemd; then
    systemctl start docker
  else
    command -v dockerd >/dev/null || die "dockerd not found"
    setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 60); do
    if docker_ok; then
      say "started the docker engine"
      return 0
    fi
    sleep 1
  done
  die "the docker engine did not come up within 60 s (see /var/log/dockerd.log or journalctl -u docker)"
}

demo_image() {
  local root tarball applet
  # ldd fails on a static binary: a dynamic busybox would not run in the image.
  if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
    apt_install busybox-static
  fi
  if ! dry && "$DEMO_DOCKER" image inspect "$DEMO_IMAGE" >/dev/null 2>&1; then
    say "kept existing image $DEMO_IMAGE"
    return 0
  fi
  if dry; then
    say "would build $DEMO_IMAGE with docker import from /bin/busybox (unless it exists)"
    return 0
  fi
  root=$SCRATCH/demo
  mkdir -p "$root/rootfs/bin" "$root/rootfs/etc" "$root/rootfs/tmp"
  chmod 1777 "$root/rootfs/tmp"
  cp /bin/busybox "$root/rootfs/bin/busybox"
  for applet in sh cat id echo ls uname hostname env sleep true false; do
    ln -s busybox "$root/rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$root/rootfs/etc/group"
  tarball=$root/rootfs.tar
  tar -C "$root/rootfs" --owner=0 --group=0 --numeric-owner -cf "$tarball" .
  "$DEMO_DOCKER" import -c 'ENV PATH=/bin' -m 'socker demo image, built by install.sh --demo' \
    "$tarball" "$DEMO_IMAGE" >/dev/null
  say "built image $DEMO_IMAGE"
}

# demo_allow: appends the demo image to the allowlist unless a line already names it.
demo_allow() {
  local tmp
  if [ -f "$ALLOWLIST" ] && awk '
    { sub(/#.*/, ""); gsub(/[ \t\r]/, "") }
    $0 == "socker-demo" || $0 == "socker-demo:latest" || $0 == "library/socker-demo" ||
    $0 == "library/socker-demo:latest" || $0 == "docker.io/library/socker-demo" ||
    $0 == "docker.io/library/socker-demo:latest" { found = 1 }
    END { exit !found }' "$ALLOWLIST"; then
    say "kept $ALLOWLIST (already allows $DEMO_IMAGE)"
    return 0
  fi
  if dry; then
    say "would append $DEMO_IMAGE to $ALLOWLIST"
    return 0
  fi
  tmp=$(new_temp "$CONF_DIR" socker-images) || exit
  cat -- "$ALLOWLIST" >"$tmp"
  if [ -s "$tmp" ] && [ -n "$(tail -c 1 -- "$tmp")" ]; then printf '\n' >>"$tmp"; fi
  printf '# added by install.sh --demo\n%s\n' "$DEMO_IMAGE" >>"$tmp"
  chown root:root -- "$tmp"
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$ALLOWLIST"
  say "added $DEMO_IMAGE to $ALLOWLIST"
}

demo_run() {
  local user=nobody home out rc=0
  if [ -n "${SUDO_USER-}" ] && [ "${SUDO_UID-0}" != 0 ] && getent passwd "$SUDO_USER" >/dev/null; then
    user=$SUDO_USER
  fi
  # The single quotes matter: id runs inside the container, not here.
  # shellcheck disable=SC2016
  local -a cmd=("$LAUNCHER" run socker-demo sh -c 'echo "hello from socker, uid=$(id -u) gid=$(id -g) groups=$(id -G)"')
  if dry; then
    printf 'would run as %s:' "$user"
    printf ' %q' runuser -u "$user" -- "${cmd[@]}"
    printf '\n'
    return 0
  fi
  home=$(getent passwd "$user" | cut -d: -f6)
  [ -n "$home" ] && [ -d "$home" ] || home=/tmp
  out=$(cd "$home" && runuser -u "$user" -- "${cmd[@]}" 2>&1) || rc=$?
  say "demo as $user (uid $(id -u "$user")): socker run socker-demo ..."
  printf '%s\n' "$out" | sed 's/^/  | /'
  [ "$rc" -eq 0 ] || die "the demo failed (socker exited $rc)"
}

# ---------------------------------------------------------------- uninstall

uninstall() {
  local p
  # The sudo rule goes first, so no half-removed socker can run as root.
  # Only the rule for this prefix's entry point: another prefix's socker may own the file.
  if [ -e "$SUDOERS_FILE" ]; then
    if [ ! -r "$SUDOERS_FILE" ]; then
      say "would remove $SUDOERS_FILE if it names $ENTRY (not readable without root)"
    elif grep -Fqx "Cmnd_Alias SOCKER = $ENTRY" "$SUDOERS_FILE"; then
      run rm -f -- "$SUDOERS_FILE"
      dry || say "removed $SUDOERS_FILE"
    else
      warn "kept $SUDOERS_FILE: it does not name $ENTRY (another installation's?)"
    fi
  fi
  # The watcher and the reaper next: they would run an entry point that is going away.
  if [ -f "$SYSTEMD_DIR/$WATCH_SERVICE" ] && grep -qs 'Installed by install.sh' "$SYSTEMD_DIR/$WATCH_SERVICE"; then
    if has_systemd; then run systemctl disable --now "$WATCH_SERVICE" 2>/dev/null || true; fi
  fi
  remove_ours "$SYSTEMD_DIR/$WATCH_SERVICE"
  stop_watch_loop
  if [ -f "$SYSTEMD_DIR/$REAPER_TIMER" ] && grep -qs 'Installed by install.sh' "$SYSTEMD_DIR/$REAPER_TIMER"; then
    if has_systemd; then run systemctl disable --now "$REAPER_TIMER" 2>/dev/null || true; fi
  fi
  remove_ours "$SYSTEMD_DIR/$REAPER_TIMER"
  remove_ours "$SYSTEMD_DIR/$REAPER_SERVICE"
  if has_systemd && [ ! -e "$SYSTEMD_DIR/$REAPER_SERVICE" ]; then run systemctl daemon-reload 2>/dev/null || true; fi
  remove_ours "$CRON_FILE"
  remove_ours "$LOGROTATE_FILE"
  remove_podman_service
  # The engine's runtime entry before the runtime itself (below, with $LIBEXEC).
  unregister_runtime
  if [ -e "$LAUNCHER" ] || [ -L "$LAUNCHER" ]; then
    if grep -qs 'installed by install.sh' "$LAUNCHER"; then
      run rm -f -- "$LAUNCHER"
      dry || say "removed $LAUNCHER"
    else
      warn "kept $LAUNCHER: it is not socker's launcher"
    fi
  fi
  if [ -f "$DOCKER_CONFIG_DIR/config.json" ]; then
    say "note: removing $DOCKER_CONFIG_DIR with its registry login (config.json)"
  fi
  for p in "$LIBEXEC" "$LIB"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
      run rm -rf -- "$p"
      dry || say "removed $p"
    fi
  done
  say "kept $CONF_DIR (the allowlist; remove it by hand if wanted)"
  say "kept $LOG_DIR (the audit log; remove it by hand if wanted)"
  if getent passwd dockerroot >/dev/null 2>&1 || getent group docker >/dev/null 2>&1; then
    say "kept any user dockerroot and group docker (socker no longer uses them; other software may)"
  fi
  local conf epilogs
  if conf=$(find_slurm_conf) &&
    epilogs=$(grep -i -E '^[[:space:]]*Epilog[[:space:]]*=' "$conf") &&
    grep -qs -F "$EPILOG_HOOK" <<<"$epilogs"; then
    say "remove Epilog=$EPILOG_HOOK from $conf yourself (install.sh never edits it)"
  fi
  if dry; then say "dry run done: nothing was changed"; else say "uninstalled socker from $PREFIX"; fi
}

# ---------------------------------------------------------------- main

main() {
  parse_args "$@"
  SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/socker-install.XXXXXX") || die "cannot make a scratch folder in ${TMPDIR:-/tmp}"
  if [ "$UNINSTALL" -eq 1 ]; then
    uninstall
    return 0
  fi
  if [ "$DO_DEMO" -eq 1 ]; then demo_engine; fi
  check_tools
  check_sudo
  check_source
  find_deno
  step_layout
  step_runtime
  step_entry
  step_holder
  step_warmup
  step_launcher
  step_allowlist
  step_sudoers
  step_audit_log
  step_reaper
  step_oci_runtime
  case $ENGINE in
  podman) step_podman ;;
  docker) remove_podman_service ;;
  esac
  if [ -n "$ENGINE" ]; then step_engine_setting; fi
  step_watcher
  if [ "$DO_EPILOG" -eq 1 ]; then step_epilog; fi
  dry || self_check
  if [ "$DO_DEMO" -eq 1 ]; then
    demo_image
    demo_allow
    demo_run
  fi
  if dry; then
    say "dry run done: nothing was changed"
    return 0
  fi
  if [ "${#INSTALLED_PKGS[@]}" -gt 0 ]; then
    say "installed from Debian for socker: ${INSTALLED_PKGS[*]}"
  fi
  say "socker $SOCKER_VERSION installed: users run $LAUNCHER (entry point: $(entry_mode))"
}

main "$@"
