/**
 * socker: run an administrator-allowlisted Docker image as the calling user, safely, inside Slurm jobs.
 *
 * What socker guarantees (each point is tested against a real Docker engine and a real Slurm cluster):
 * - Only images listed in the root-owned allowlist run, matched after Docker's own name normalisation;
 *   socker never pulls.
 * - The container runs as the caller (`--user uid:gid` plus the caller's groups from the user database),
 *   never as root, with all capabilities dropped and `no-new-privileges`. No docker option is ever taken
 *   from the user: docker's argument vector is built only from socker's own decisions.
 * - Inside a Slurm job the container is created inside the calling step's cgroup, read from
 *   `/proc/self/cgroup` (never from the environment), so the job's CPU, memory and device limits hold.
 * - socker kills its container on SIGTERM, SIGINT and SIGHUP, waits until it is gone, and never exits while
 *   it still runs; `socker cleanup --job ID` (Slurm's Epilog) catches what a SIGKILL left behind.
 * - What a user names (a bind mount, the working folder) is judged by the kernel as the user, and the
 *   folder mounted is proven to be the one judged; the administrator's policy (socker.conf) bounds the rest.
 * - The container's stdin, stdout, stderr and exit code pass through untouched; socker's own refusals exit
 *   125 with one line on stderr and change nothing.
 * - Every run, refusal and cleanup is one JSON line in the system log; a run is never started unlogged.
 *
 * How privilege is obtained: the `socker` command users run is a root-owned shell launcher that `exec`s
 * `sudo -n` on this program; sudo resets the environment before any runtime code starts. This program is
 * never set-id (see README.md, "Security model"). It trusts only what sudo and the kernel say.
 *
 * The module reads top to bottom in the order data flows: arguments, configuration, identity, cgroup,
 * data and devices, docker command line, the engine's API, supervision, doctor, audit log, commands, help,
 * main. Every decision is a pure, exported function;
 * side effects live in the few functions that read files, spawn processes or handle signals.
 */

// ---------------------------------------------------------------------------------------------------------
// Installation constants. install.sh rewrites these lines in the installed copy; nothing at run time (no
// environment variable, no option) can move them.

export const PREFIX = "/usr/local"; // install.sh
export const CONFIG_DIR = "/etc/socker"; // install.sh
export const DOCKER_PATH = "/usr/bin/docker"; // install.sh
export const DOCKER_CONFIG_DIR = "/usr/local/lib/socker/docker-config"; // install.sh
export const SOCKER_VERSION = "0.1.0"; // install.sh

/** The Docker engine's socket; the CLI and socker's own API calls both use it. */
export const DOCKER_SOCKET = "/var/run/docker.sock";
/** The unprivileged account the docker CLI runs as: its only group is `docker`, which opens the socket. */
export const DOCKER_USER = "dockerroot";

export const ALLOWLIST_PATH = `${CONFIG_DIR}/socker-images`;
export const SETTINGS_PATH = `${CONFIG_DIR}/socker.conf`;
/** Where the kernel shows cgroup hierarchies (socker reads the mount table to find each controller). */
export const CGROUP_MOUNTS = "/proc/self/mountinfo";

/** Exit codes, following docker's convention. Listed in --help and README.md. */
export const EXIT = {
  /** socker refused (bad usage, image not allowed, unsafe installation, engine unreachable). */
  REFUSED: 125,
} as const;

/** Signals that end the container, and the ones passed on to it. Numbers are Linux's. */
export const TERMINATING_SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
export const FORWARDED_SIGNALS = { SIGQUIT: 3, SIGUSR1: 10, SIGUSR2: 12 } as const;
const SIGNAL_NUMBERS: Record<string, number> = {
  ...TERMINATING_SIGNALS,
  ...FORWARDED_SIGNALS,
  SIGKILL: 9,
  SIGPIPE: 13,
  SIGALRM: 14,
};

/** A refusal: a one-line message for the user and the exit code it ends with. */
export class SockerError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT.REFUSED) {
    super(message);
    this.name = "SockerError";
  }
}

const HELP_HINT = "see 'socker --help'";

// ---------------------------------------------------------------------------------------------------------
// Arguments

/** The options of `socker run`, as given; policy has not judged them yet. */
export type RunOptions = {
  /** `-v SRC:DST[:ro]`, in order. */
  volumes: string[];
  /** `-w DIR`. */
  workdir?: string;
  /** `-e NAME[=VALUE]`, in order. */
  env: string[];
  /** `--no-tty`: never attach a terminal. `--no-stdin`: do not pass stdin on. */
  noTty: boolean;
  noStdin: boolean;
  /** `--gpus`: the GPUs allocated to the Slurm job. */
  gpus: boolean;
};

/** What the caller asked for, after parsing. Nothing in it has been checked against policy yet. */
export type Invocation =
  | { command: "help" }
  | { command: "version" }
  | { command: "images"; verbose: boolean }
  | { command: "run"; verbose: boolean; image: string; argv: string[]; options: RunOptions }
  | { command: "cleanup"; verbose: boolean; jobId: string }
  | { command: "doctor" };

const COMMANDS = ["images", "run", "cleanup", "doctor"] as const;

/** How many mounts and variables one run may ask for: enough for real work, not for abuse. */
export const MAX_VOLUMES = 32;
export const MAX_ENV = 256;

/**
 * Parses socker's command line. Options are read only up to the COMMAND and, for `run`, up to IMAGE:
 * everything after IMAGE is the container's command, untouched (`sh -c '...'` keeps its `-c`).
 * Before `run`, `-v` means --verbose; after it, `-v` is a volume, as in docker.
 * Throws SockerError (exit 125) naming the problem for anything it does not understand.
 */
export function parseCommandLine(args: readonly string[]): Invocation {
  let verbose = false;
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") return { command: "help" };
    if (arg === "--version") return { command: "version" };
    if (arg === "-v" || arg === "--verbose") verbose = true;
    else if (arg.startsWith("-")) throw usageError(`unknown option '${printable(arg)}'`);
    else break;
  }
  if (i === args.length) throw usageError("no command given");
  const command = args[i++] as (typeof COMMANDS)[number];
  if (!COMMANDS.includes(command)) throw usageError(`unknown command '${printable(command)}'`);

  // Options of the command itself.
  let jobId: string | undefined;
  const options: RunOptions = { volumes: [], env: [], noTty: false, noStdin: false, gpus: false };
  /** The value of an option given as `-x VALUE`, `--long VALUE` or `--long=VALUE`. */
  const valueOf = (arg: string, short: string, long: string): string | undefined => {
    if (arg === short || arg === long) {
      if (i + 1 >= args.length) throw usageError(`${arg} needs a value`);
      return args[++i];
    }
    return arg.startsWith(`${long}=`) ? arg.slice(long.length + 1) : undefined;
  };
  for (; i < args.length; i++) {
    const arg = args[i];
    let value: string | undefined;
    if (arg === "-h" || arg === "--help") return { command: "help" };
    if (arg === "--verbose" || (arg === "-v" && command !== "run")) verbose = true;
    else if (command === "cleanup" && (value = valueOf(arg, "--job", "--job")) !== undefined) {
      jobId = value;
      if (!/^[1-9][0-9]{0,9}$/.test(jobId)) {
        throw usageError(`--job needs a numeric Slurm job id, got '${printable(jobId)}'`);
      }
    } else if (command === "run" && (value = valueOf(arg, "-v", "--volume")) !== undefined) {
      options.volumes.push(value);
    } else if (command === "run" && (value = valueOf(arg, "-w", "--workdir")) !== undefined) {
      options.workdir = value;
    } else if (command === "run" && (value = valueOf(arg, "-e", "--env")) !== undefined) {
      options.env.push(value);
    } else if (command === "run" && arg === "--no-tty") options.noTty = true;
    else if (command === "run" && arg === "--no-stdin") options.noStdin = true;
    else if (command === "run" && arg === "--gpus") options.gpus = true;
    else if (arg === "--" && command === "run") {
      i++;
      break;
    } else if (arg.startsWith("-")) {
      throw usageError(`unknown option '${printable(arg)}' for '${command}'`);
    } else break;
  }
  const rest = args.slice(i);

  if (command === "images" || command === "doctor") {
    if (rest.length > 0) throw usageError(`'${command}' takes no arguments, got '${printable(rest[0])}'`);
    return command === "images" ? { command, verbose } : { command };
  }
  if (command === "cleanup") {
    if (rest.length > 0) throw usageError(`'cleanup' takes no arguments, got '${printable(rest[0])}'`);
    if (jobId === undefined) throw usageError("'cleanup' needs --job ID");
    return { command, verbose, jobId };
  }
  if (options.volumes.length > MAX_VOLUMES) throw usageError(`at most ${MAX_VOLUMES} volumes`);
  if (options.env.length > MAX_ENV) throw usageError(`at most ${MAX_ENV} environment variables`);
  if (rest.length === 0) throw usageError("'run' needs an IMAGE and a COMMAND");
  const [image, ...argv] = rest;
  if (image.startsWith("-")) throw usageError(`IMAGE must not start with '-', got '${printable(image)}'`);
  if (argv.length === 0) throw usageError(`'run' needs a COMMAND to run in '${printable(image)}'`);
  return { command: "run", verbose, image, argv, options };
}

function usageError(problem: string): SockerError {
  return new SockerError(`socker: ${problem}; ${HELP_HINT}`);
}

/** Makes a user-supplied string safe to print on one line: control characters become escapes. */
export function printable(text: string, max = 200): string {
  // deno-lint-ignore no-control-regex
  const escaped = text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return escaped.length > max ? `${escaped.slice(0, max)}...` : escaped;
}

// ---------------------------------------------------------------------------------------------------------
// Configuration: the allowlist, and the trust it needs

/** An image reference normalised as Docker does it: `centos` is `docker.io/library/centos:latest`. */
export type ImageRef = {
  /** The registry host, `docker.io` by default. */
  domain: string;
  /** The repository path inside the registry, `library/centos` for Docker Hub's official images. */
  path: string;
  tag?: string;
  digest?: string;
};

// The grammar of github.com/distribution/reference, which the docker CLI and engine use.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const NAME_MAX = 255;

/**
 * Parses and normalises an image reference the way Docker does. Returns the reference, or a string saying
 * why it is not one. Anything Docker would not read as the same name is not normalised to it: no case
 * folding, no trimming, ASCII only.
 */
export function parseImageRef(text: string): ImageRef | string {
  if (text === "") return "empty image reference";
  if (!/^[\x21-\x7e]+$/.test(text)) return "image reference must be printable ASCII without spaces";
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) return "digest must be sha256: followed by 64 lowercase hex digits";
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) return `invalid tag '${tag}'`;
  }
  if (rest.length > NAME_MAX) return `name longer than ${NAME_MAX} characters`;
  if (/^[a-f0-9]{64}$/.test(rest)) return "a 64-hex name is an image id, not a reference";

  let domain = "docker.io";
  let path = rest;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    // Docker's rule: the first component is a registry when it looks like a host name.
    if (/[.:]/.test(first) || first === "localhost" || first !== first.toLowerCase()) {
      domain = first;
      path = rest.slice(slash + 1);
      if (!DOMAIN.test(domain)) return `invalid registry '${domain}'`;
    }
  }
  if (domain === "index.docker.io") domain = "docker.io";
  const components = path.split("/");
  for (const component of components) {
    if (!PATH_COMPONENT.test(component)) {
      return component !== component.toLowerCase()
        ? "repository name must be lowercase"
        : `invalid repository name component '${component}'`;
    }
  }
  if (domain === "docker.io" && components.length === 1) path = `library/${path}`;
  // A digest pins the content; Docker ignores a tag given alongside it.
  return digest !== undefined ? { domain, path, digest } : { domain, path, tag: tag ?? "latest" };
}

/** The one string a normalised reference is known by; two references match when these are equal. */
export function canonicalImage(ref: ImageRef): string {
  return `${ref.domain}/${ref.path}${ref.digest !== undefined ? `@${ref.digest}` : `:${ref.tag}`}`;
}

export type AllowlistEntry = { line: number; text: string; canonical: string };

/**
 * Parses the allowlist: one reference per line, `#` starts a comment, blank lines are ignored. Any line
 * that is not a valid reference makes the whole file invalid (fail closed: the administrator must see it).
 */
export function parseAllowlist(text: string, fileName: string): AllowlistEntry[] {
  const entries: AllowlistEntry[] = [];
  text.split("\n").forEach((raw, index) => {
    const content = raw.replace(/#.*$/, "").trim();
    if (content === "") return;
    const ref = parseImageRef(content);
    if (typeof ref === "string") {
      throw new SockerError(
        `socker: ${fileName}:${index + 1}: '${printable(content)}' is not a valid image reference (${ref}); ` +
          "ask your administrator to fix the allowlist",
      );
    }
    entries.push({ line: index + 1, text: content, canonical: canonicalImage(ref) });
  });
  return entries;
}

/** Returns the allowlist entry the requested image matches exactly after normalisation, if any. */
export function matchImage(allowlist: readonly AllowlistEntry[], requested: ImageRef): AllowlistEntry | undefined {
  const wanted = canonicalImage(requested);
  return allowlist.find((entry) => entry.canonical === wanted);
}

/** What socker needs to know of a file or folder to decide whether to trust it. */
export type Ownership = { path: string; uid: number; mode: number; kind: "file" | "dir" | "other" };

/**
 * Returns why a configuration file cannot be trusted, or undefined when it can: the file and every folder
 * above it must be owned by root and not writable by group or others, or an unprivileged user could have
 * written the policy. `chain` holds the file first, then each folder up to `/`.
 */
export function untrustedReason(chain: readonly Ownership[]): string | undefined {
  for (const [index, item] of chain.entries()) {
    const wanted = index === 0 ? "file" : "dir";
    if (item.kind !== wanted) return `${item.path} is not a regular ${wanted === "file" ? "file" : "folder"}`;
    if (item.uid !== 0) return `${item.path} is not owned by root (owner uid ${item.uid})`;
    if ((item.mode & 0o022) !== 0) {
      return `${item.path} is writable by ${(item.mode & 0o020) !== 0 ? "its group" : "others"} (mode ${
        (item.mode & 0o7777).toString(8).padStart(4, "0")
      })`;
    }
  }
  return undefined;
}

/** Lists a path and every folder above it, file first: `/etc/socker/x`, `/etc/socker`, `/etc`, `/`. */
export function pathChain(path: string): string[] {
  const chain = [path];
  for (let current = path; current !== "/";) {
    current = current.slice(0, current.lastIndexOf("/")) || "/";
    chain.push(current);
  }
  return chain;
}

const CONFIG_MAX_BYTES = 1 << 20;

/**
 * Checks that a file and every folder above it are root's alone, both along the path as written and along
 * its real path (a symlink anywhere must not lead out of root's hands). Returns the real path.
 */
export function assertTrusted(path: string): string {
  let realPath: string;
  try {
    realPath = Deno.realPathSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new SockerError(`socker: ${path} is missing; socker is not fully installed, ask your administrator`);
    }
    throw new SockerError(`socker: cannot resolve ${path}: ${errorText(error)}`);
  }
  const realChain = pathChain(realPath);
  const ownerships = [...realChain, ...pathChain(path).slice(1)].map((item, index): Ownership => {
    const info = Deno.statSync(item);
    const kind = info.isFile ? "file" : info.isDirectory ? "dir" : "other";
    return { path: index === 0 ? path : item, uid: info.uid ?? -1, mode: info.mode ?? 0o7777, kind };
  });
  const reason = untrustedReason(ownerships.slice(0, realChain.length)) ??
    untrustedReason([ownerships[0], ...ownerships.slice(realChain.length)]);
  if (reason !== undefined) {
    throw new SockerError(`socker: refusing to trust ${path}: ${reason}; ask your administrator to fix it`);
  }
  return realPath;
}

/** Reads a root-owned configuration file after `assertTrusted`; it must be small, valid UTF-8 text. */
export function readTrustedFile(path: string): string {
  const realPath = assertTrusted(path);
  const bytes = Deno.readFileSync(realPath);
  if (bytes.length > CONFIG_MAX_BYTES) {
    throw new SockerError(`socker: ${path} is larger than ${CONFIG_MAX_BYTES} bytes; ask your administrator`);
  }
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    if (text.includes("\0")) throw new TypeError("NUL byte");
    return text;
  } catch {
    throw new SockerError(`socker: ${path} is not a text file; ask your administrator to fix it`);
  }
}

/** The administrator's settings in socker.conf; every key has a safe default. */
export type Settings = {
  /** `require_job`: refuse to run outside a Slurm job (for compute nodes). */
  requireJob: boolean;
  /** `network`: the engine's default `bridge`, or `none`. Never `host`. */
  network: "bridge" | "none";
  /** `docker`: the docker CLI; root-owned, checked like the configuration. */
  docker: string;
  /** `default_mounts`: mounted in every run: `home`, `workdir` (the caller's folder) or absolute paths. */
  defaultMounts: string[];
  /** `mount_prefixes`: folders under which users may mount more with `-v` (whole path components). */
  mountPrefixes: string[];
  /** `forbidden_destinations`: added to the built-in list of places no mount may cover. */
  forbiddenDestinations: string[];
  /** `env_set NAME=VALUE`: always set in the container. */
  envSet: Record<string, string>;
  /** `env_deny`: never passed with `-e`. */
  envDeny: string[];
  /** `log_facility`: the syslog facility of the audit log. */
  logFacility: string;
};

/** Facilities the audit log may use. */
export const LOG_FACILITIES = [
  "auth",
  "authpriv",
  "daemon",
  "user",
  ...Array.from({ length: 8 }, (_, i) => `local${i}`),
];

/** Destinations no mount may cover, whatever socker.conf says: the image's system and the kernel's views. */
export const BUILTIN_FORBIDDEN_DESTINATIONS = [
  "/bin",
  "/boot",
  "/dev",
  "/etc",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/proc",
  "/root",
  "/run",
  "/sbin",
  "/sys",
  "/usr",
  "/var",
];

export const DEFAULT_SETTINGS: Settings = {
  requireJob: false,
  network: "bridge",
  docker: DOCKER_PATH,
  defaultMounts: ["home", "workdir"],
  mountPrefixes: ["/home"],
  forbiddenDestinations: [],
  envSet: {},
  envDeny: [],
  logFacility: "authpriv",
};

const BOOLEAN_WORDS: Record<string, boolean> = { yes: true, true: true, no: false, false: false };
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Whether a path is absolute and clean: no `.`, `..`, empty components or trailing slash. */
export function isCleanAbsolute(path: string): boolean {
  return path === "/" ||
    (/^\/[^\0]*[^/]$/.test(path) && !path.slice(1).split("/").some((p) => ["", ".", ".."].includes(p)));
}

/**
 * Parses socker.conf: `key = value` lines, `#` comments; list values are separated by blanks. An unknown
 * key or a bad value makes the whole file invalid, naming file and line, so that a typo never silently
 * weakens a policy.
 */
export function parseSettings(text: string, fileName: string): Settings {
  const settings: Settings = { ...DEFAULT_SETTINGS, envSet: {}, envDeny: [] };
  text.split("\n").forEach((raw, index) => {
    const content = raw.replace(/#.*$/, "").trim();
    if (content === "") return;
    const fail = (why: string): never => {
      throw new SockerError(`socker: ${fileName}:${index + 1}: ${why}`);
    };
    const match = /^([a-z_]+)\s*=\s*(.*)$/.exec(content);
    if (!match) return fail(`expected 'key = value', got '${printable(content)}'`);
    const [, key, value] = match;
    const words = value.split(/\s+/).filter((word) => word !== "");
    const paths = (what: string) => {
      for (const word of words) {
        if (!isCleanAbsolute(word)) fail(`${what}: '${printable(word)}' is not a clean absolute path`);
      }
      return words;
    };
    switch (key) {
      case "require_job":
        if (!(value in BOOLEAN_WORDS)) fail("require_job must be yes or no");
        settings.requireJob = BOOLEAN_WORDS[value];
        break;
      case "network":
        if (value !== "bridge" && value !== "none") fail(`network must be bridge or none, not '${printable(value)}'`);
        settings.network = value as Settings["network"];
        break;
      case "docker":
        if (words.length !== 1) fail("docker takes one path");
        settings.docker = paths("docker")[0];
        break;
      case "default_mounts":
        for (const word of words) {
          if (word !== "home" && word !== "workdir" && !isCleanAbsolute(word)) {
            fail(`default_mounts: '${printable(word)}' is not home, workdir or a clean absolute path`);
          }
        }
        settings.defaultMounts = words;
        break;
      case "mount_prefixes":
        settings.mountPrefixes = paths("mount_prefixes");
        if (settings.mountPrefixes.includes("/")) fail("mount_prefixes: '/' would allow mounting the whole host");
        break;
      case "forbidden_destinations":
        settings.forbiddenDestinations = paths("forbidden_destinations");
        break;
      case "env_set": {
        const equals = value.indexOf("=");
        const name = value.slice(0, equals);
        if (equals < 1 || !ENV_NAME.test(name)) fail("env_set takes NAME=VALUE");
        settings.envSet[name] = value.slice(equals + 1);
        break;
      }
      case "env_deny":
        for (const word of words) {
          if (!ENV_NAME.test(word)) fail(`env_deny: '${printable(word)}' is not a variable name`);
        }
        settings.envDeny.push(...words);
        break;
      case "log_facility":
        if (!LOG_FACILITIES.includes(value)) fail(`log_facility must be one of ${LOG_FACILITIES.join(" ")}`);
        settings.logFacility = value;
        break;
      default:
        fail(`unknown setting '${printable(key)}'`);
    }
  });
  return settings;
}

/** Reads socker.conf when it exists (it is optional); it must be as trusted as the allowlist. */
function readSettings(): Settings {
  try {
    Deno.lstatSync(SETTINGS_PATH);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return DEFAULT_SETTINGS;
  }
  return parseSettings(readTrustedFile(SETTINGS_PATH), SETTINGS_PATH);
}

// ---------------------------------------------------------------------------------------------------------
// Identity: who called, from what sudo and the user database say

/** The person socker acts for. */
export type Caller = { uid: number; gid: number; user: string; groups: number[] };

/**
 * Decides who the caller is from the variables sudo sets (sudo resets the environment first, so they
 * cannot be forged through it). Without them, the caller is whoever runs this process: root running
 * socker directly. Returns the uid, gid and name, or throws when they are malformed.
 */
export function callerFromSudo(
  env: { SUDO_UID?: string; SUDO_GID?: string; SUDO_USER?: string },
  processUid: number,
): { uid: number; gid: number; user: string } {
  const { SUDO_UID = "", SUDO_GID = "", SUDO_USER = "" } = env;
  if (SUDO_UID === "" && SUDO_GID === "" && SUDO_USER === "") {
    return { uid: processUid, gid: processUid === 0 ? 0 : -1, user: processUid === 0 ? "root" : "" };
  }
  if (!/^(0|[1-9][0-9]{0,9})$/.test(SUDO_UID) || !/^(0|[1-9][0-9]{0,9})$/.test(SUDO_GID)) {
    throw new SockerError("socker: SUDO_UID/SUDO_GID are not numbers; socker must be started through sudo");
  }
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?$/.test(SUDO_USER)) {
    throw new SockerError(`socker: SUDO_USER '${printable(SUDO_USER)}' is not a valid user name`);
  }
  return { uid: Number(SUDO_UID), gid: Number(SUDO_GID), user: SUDO_USER };
}

/**
 * Combines what sudo said with what the user database says: the uid must agree, the primary group is the
 * caller's current one (sudo's SUDO_GID), the supplementary groups are the database's. Root is refused:
 * socker never runs a container as uid 0 or gid 0.
 */
export function resolveCaller(
  sudo: { uid: number; gid: number; user: string },
  database: { uid: number; gid: number; groups: number[] },
): Caller {
  if (sudo.uid === 0) {
    throw new SockerError(
      "socker: refusing to run a container as root; run socker as the user the container should run as",
    );
  }
  if (database.uid !== sudo.uid) {
    throw new SockerError(
      `socker: the user database says '${sudo.user}' is uid ${database.uid}, sudo says ${sudo.uid}; refusing`,
    );
  }
  const groups = [...new Set(database.groups)].filter((g) => g !== sudo.gid).sort((a, b) => a - b);
  if (sudo.gid === 0 || groups.includes(0)) {
    throw new SockerError(`socker: refusing to run a container with the root group (gid 0) for '${sudo.user}'`);
  }
  return { ...sudo, groups };
}

/** Finds a local account's uid and primary gid in /etc/passwd text. */
export function passwdEntry(passwd: string, name: string): { uid: number; gid: number } | undefined {
  for (const line of passwd.split("\n")) {
    const fields = line.split(":");
    if (fields.length >= 7 && fields[0] === name && /^\d+$/.test(fields[2]) && /^\d+$/.test(fields[3])) {
      return { uid: Number(fields[2]), gid: Number(fields[3]) };
    }
  }
  return undefined;
}

/** The C library's functions socker calls in-process; opened once, on first use. */
const LIBC_SYMBOLS = {
  getpwnam: { parameters: ["buffer"], result: "pointer" },
  getgrouplist: { parameters: ["buffer", "u32", "buffer", "buffer"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;
let openedLibc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"] | undefined;
function libc(): Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"] {
  openedLibc ??= Deno.dlopen("libc.so.6", LIBC_SYMBOLS).symbols;
  return openedLibc;
}

/** What the user database (NSS: files, LDAP, SSSD, ...) says of a user. */
export type UserRecord = { uid: number; gid: number; home?: string; groups: number[] };

/** glibc's `struct passwd` on 64-bit Linux: name, passwd, uid (16), gid (20), gecos, dir (32), shell. */
const PASSWD_UID_OFFSET = 16;
const PASSWD_GID_OFFSET = 20;
const PASSWD_DIR_OFFSET = 32;
const MAX_GROUPS = 65536;

/**
 * Asks the C library, through NSS exactly as `id` would, for a user's uid, gid, home and groups. Called
 * in-process (getpwnam, getgrouplist) because spawning `id` and `getent` cost ~10 ms of every run.
 */
function userRecord(user: string): UserRecord {
  {
    const name = new TextEncoder().encode(`${user}\0`);
    const entry = libc().getpwnam(name);
    if (entry === null) throw new SockerError(`socker: user '${user}' is not in the user database; refusing`);
    const view = new Deno.UnsafePointerView(entry);
    const uid = view.getUint32(PASSWD_UID_OFFSET);
    const gid = view.getUint32(PASSWD_GID_OFFSET);
    const dirPointer = view.getPointer(PASSWD_DIR_OFFSET);
    const dir = dirPointer === null ? "" : Deno.UnsafePointerView.getCString(dirPointer);
    let groups = new Uint32Array(64);
    const count = new Int32Array([groups.length]);
    if (libc().getgrouplist(name, gid, groups, count) < 0) {
      if (count[0] <= 0 || count[0] > MAX_GROUPS) throw new SockerError(`socker: cannot list the groups of '${user}'`);
      groups = new Uint32Array(count[0]);
      if (libc().getgrouplist(name, gid, groups, count) < 0) {
        throw new SockerError(`socker: cannot list the groups of '${user}'`);
      }
    }
    return { uid, gid, home: isCleanAbsolute(dir) ? dir : undefined, groups: [...groups.slice(0, count[0])] };
  }
}

// ---------------------------------------------------------------------------------------------------------
// cgroup: which Slurm job step the caller is in, from /proc/self/cgroup (written by the kernel; the
// caller cannot move a process into a cgroup of another job). Environment variables never count.

/** The Slurm job step socker runs in, and the cgroup its container is created under. */
export type JobCgroup = {
  version: 1 | 2;
  jobId: string;
  stepId: string;
  /** The `--cgroup-parent`: the step's cgroup, relative to each hierarchy's root. */
  parent: string;
};

const V1_SLURM_PATH =
  /^\/(slurm(?:_[A-Za-z0-9._-]+)?)\/uid_(\d+)\/job_(\d+)\/step_(\d+|batch|extern|interactive)(?:\/task_(\d+))?$/;
const V2_SLURM_PATH =
  /^((?:\/[A-Za-z0-9@:._-]+)*\/(?:[A-Za-z0-9._-]+_)?slurmstepd\.scope\/job_(\d+)\/step_(\d+|batch|extern|interactive)\/user)\/task_(\d+)$/;
/** Anything that says "this process is in a Slurm job": if one of these shows, socker must resolve it. */
const SLURM_HINT = /(^|\/)(slurm(_[^/]*)?|[^/]*slurmstepd\.scope|job_\d+|step_[a-z0-9]+)(\/|$)/;

/**
 * Finds the Slurm job step from the text of /proc/self/cgroup. Returns undefined outside any job. Throws
 * (fail closed) when the process is visibly inside a Slurm cgroup that cannot be resolved safely: paths
 * with `.` or `..`, another user's job, or controllers that disagree about the job.
 */
export function jobCgroup(procSelfCgroup: string, uid: number): JobCgroup | undefined {
  const lines = procSelfCgroup.split("\n").filter((line) => line !== "");
  const entries = lines.map((line) => {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!match) throw new SockerError(`socker: cannot read /proc/self/cgroup line '${printable(line)}'`);
    return { hierarchy: Number(match[1]), controllers: match[2], path: match[3] };
  });
  const hinted = entries.filter((entry) => SLURM_HINT.test(entry.path));
  if (hinted.length === 0) return undefined;
  const refuse = (why: string): never => {
    throw new SockerError(`socker: cannot place the container in this Slurm job's cgroup: ${why}; refusing to run`);
  };
  for (const entry of hinted) {
    if (entry.path.split("/").some((part) => part === "." || part === "..") || entry.path.includes("//")) {
      refuse(`the path '${printable(entry.path)}' is not normalised`);
    }
  }

  const v1 = hinted.filter((entry) => entry.hierarchy !== 0);
  if (v1.length > 0) {
    const steps = new Set<string>();
    let found: JobCgroup | undefined;
    for (const entry of v1) {
      const match = V1_SLURM_PATH.exec(entry.path);
      if (!match) refuse(`'${printable(entry.path)}' (${entry.controllers}) is not a Slurm step cgroup`);
      const [, root, owner, jobId, stepId] = match!;
      if (Number(owner) !== uid) refuse(`'${printable(entry.path)}' belongs to uid ${owner}, not to you (${uid})`);
      const parent = `/${root}/uid_${owner}/job_${jobId}/step_${stepId}`;
      steps.add(parent);
      found = { version: 1, jobId, stepId, parent };
    }
    if (steps.size > 1) refuse(`the controllers disagree about the job step (${[...steps].join(", ")})`);
    return found;
  }
  const unified = hinted.filter((entry) => entry.hierarchy === 0 && entry.controllers === "");
  if (unified.length !== 1 || hinted.length !== 1) refuse("unexpected cgroup v2 layout");
  const match = V2_SLURM_PATH.exec(unified[0].path);
  if (!match) return refuse(`'${printable(unified[0].path)}' is not a Slurm task cgroup`);
  return { version: 2, jobId: match[2], stepId: match[3], parent: match[1] };
}

/**
 * Checks that the engine can nest containers under Slurm's cgroups: only the cgroupfs driver takes a
 * plain cgroup path as parent, and engine and Slurm must see the same cgroup version.
 */
export function engineCgroupProblem(info: { CgroupDriver?: string; CgroupVersion?: string }, job: JobCgroup) {
  if (info.CgroupDriver !== "cgroupfs") {
    return `the Docker engine uses the '${printable(String(info.CgroupDriver))}' cgroup driver, which cannot ` +
      'place containers in Slurm\'s cgroups; ask your administrator to set "exec-opts": ' +
      '["native.cgroupdriver=cgroupfs"] in /etc/docker/daemon.json';
  }
  if (String(info.CgroupVersion ?? "1") !== String(job.version)) {
    return `the Docker engine sees cgroup v${info.CgroupVersion} but this job is on cgroup v${job.version}`;
  }
  return undefined;
}

/** The cgroup hierarchies mounted on this node (v1 controllers and the v2 unified tree), from mountinfo. */
export function cgroupMountPoints(mountinfo: string): string[] {
  const points: string[] = [];
  for (const line of mountinfo.split("\n")) {
    const [before, after] = line.split(" - ");
    if (after === undefined) continue;
    const type = after.split(" ")[0];
    if (type === "cgroup" || type === "cgroup2") {
      points.push(before.split(" ")[4].replace(/\\(\d{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8))));
    }
  }
  return points;
}

/**
 * Lists, deepest first, the folders a finished job may have left in one hierarchy: Slurm's own job folder
 * and the parents Docker created for containers (also in controllers Slurm does not manage). v1 jobs sit
 * in `<root>/slurm[_<node>]/uid_<uid>/job_<id>`, v2 jobs in `<root>/system.slice/[<node>_]slurmstepd.scope/
 * job_<id>`. `listDirs` returns a folder's sub-folders, or nothing when it does not exist.
 */
export function jobFolders(root: string, jobId: string, listDirs: (path: string) => string[]): string[] {
  const below = (path: string): string[] =>
    listDirs(path).flatMap((name) => [...below(`${path}/${name}`), `${path}/${name}`]);
  const jobs: string[] = [];
  for (const top of listDirs(root).filter((name) => /^slurm(_.+)?$/.test(name))) {
    for (const user of listDirs(`${root}/${top}`).filter((name) => /^uid_\d+$/.test(name))) {
      jobs.push(`${root}/${top}/${user}`);
    }
  }
  for (const scope of listDirs(`${root}/system.slice`).filter((name) => /slurmstepd\.scope$/.test(name))) {
    jobs.push(`${root}/system.slice/${scope}`);
  }
  return jobs.filter((parent) => listDirs(parent).includes(`job_${jobId}`))
    .flatMap((parent) => [...below(`${parent}/job_${jobId}`), `${parent}/job_${jobId}`]);
}

// ---------------------------------------------------------------------------------------------------------
// Data and devices: mounts, working directory, environment, GPUs. The Docker daemon makes bind mounts as
// root, so every path a user names is judged by a process running as the user (the kernel's own rules,
// ACLs and groups included), and the folder that is mounted is proven to be the one that was judged.

/** A mount as asked for: by the user (`-v`) or by the administrator (`default_mounts`). */
export type MountRequest = {
  source: string;
  destination: string;
  readOnly: boolean;
  /** Where the request came from, for messages: `-v /x:/y` or `default_mounts home`. */
  origin: string;
  /** The administrator named this path in default_mounts: it need not lie under mount_prefixes. */
  adminPath: boolean;
};

/** What the kernel said about a path, asked as the user. */
export type PathCheck = {
  realPath: string;
  device: number;
  inode: number;
  kind: "dir" | "file" | "other";
  readable: boolean;
  writable: boolean;
  searchable: boolean;
};

/** A mount socker decided to make: the checked real path, and the inode it must still be when mounted. */
export type Mount = {
  source: string;
  destination: string;
  readOnly: boolean;
  device: number;
  inode: number;
  kind: "dir" | "file";
};

/** Destinations are passed to docker's `--mount` (comma-separated): keep them to plain characters. */
const DESTINATION_CHARS = /^[A-Za-z0-9._+@/-]+$/;

/** Parses `-v SRC:DST[:ro|:rw]`. Throws SockerError naming the value and the rule it broke. */
export function parseVolume(spec: string): MountRequest {
  const parts = spec.split(":");
  const bad = (why: string): never => {
    throw new SockerError(`socker: -v '${printable(spec)}': ${why}; ${HELP_HINT}`);
  };
  if (parts.length < 2 || parts.length > 3) bad("expected SRC:DST or SRC:DST:ro");
  const [source, destination, mode = "rw"] = parts;
  if (mode !== "ro" && mode !== "rw") bad(`the mode must be ro or rw, not '${printable(mode)}'`);
  if (!source.startsWith("/")) bad("SRC must be an absolute path");
  if (!isCleanAbsolute(destination)) bad("DST must be a clean absolute path (no '.', '..', '//' or trailing '/')");
  if (!DESTINATION_CHARS.test(destination)) bad("DST may hold only letters, digits and . _ + @ / -");
  return { source, destination, readOnly: mode === "ro", origin: `-v ${spec}`, adminPath: false };
}

/** Whether `path` is `prefix` or lies below it, by whole path components (`/scratch` is not `/scratch2`). */
export function isUnder(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(prefix === "/" ? "/" : `${prefix}/`);
}

/** Why a destination may not be mounted over, or undefined when it may. */
export function destinationProblem(destination: string, forbidden: readonly string[]): string | undefined {
  if (destination === "/") return "'/' would cover the image's own root";
  const rule = [...BUILTIN_FORBIDDEN_DESTINATIONS, ...forbidden].find((item) => isUnder(destination, item));
  return rule === undefined ? undefined : `'${destination}' is under the forbidden destination ${rule}`;
}

/**
 * Decides one mount from the request and what the kernel said as the user. Returns the mount, or why
 * not. The source is the checked real path; read-only when asked or when the user cannot write it.
 */
export function decideMount(request: MountRequest, check: PathCheck | string, settings: Settings): Mount | string {
  const what = `${request.origin}: '${printable(request.source)}'`;
  if (typeof check === "string") return `${what}: ${check}`;
  if (!request.adminPath && !settings.mountPrefixes.some((prefix) => isUnder(check.realPath, prefix))) {
    return `${what} (real path ${printable(check.realPath)}) is not under a folder users may mount ` +
      `(${settings.mountPrefixes.join(" ") || "none"})`;
  }
  if (check.kind === "other") return `${what} is neither a folder nor a regular file`;
  if (!check.readable || (check.kind === "dir" && !check.searchable)) return `${what} is not readable by you`;
  const problem = destinationProblem(request.destination, settings.forbiddenDestinations);
  if (problem !== undefined) return `${request.origin}: ${problem}`;
  return {
    source: check.realPath,
    destination: request.destination,
    readOnly: request.readOnly || !check.writable,
    device: check.device,
    inode: check.inode,
    kind: check.kind,
  };
}

/** The mounts every run gets from `default_mounts`: `home`, `workdir` (when known) and admin paths. */
export function defaultMountRequests(settings: Settings, home: string | undefined, cwd: string | undefined) {
  const requests: MountRequest[] = [];
  for (const item of settings.defaultMounts) {
    const path = item === "home" ? home : item === "workdir" ? cwd : item;
    if (path === undefined || requests.some((request) => isUnder(path, request.source))) continue;
    requests.push({
      source: path,
      destination: path,
      readOnly: false,
      origin: `default_mounts ${item}`,
      adminPath: item.startsWith("/"),
    });
  }
  return requests;
}

/**
 * Joins the default mounts and the user's: a user's mount replaces a default one at the same destination;
 * two of the user's at one destination are refused (docker would fail on them, later and less clearly).
 */
export function mountRequests(defaults: readonly MountRequest[], user: readonly MountRequest[]): MountRequest[] {
  const seen = new Set<string>();
  for (const request of user) {
    if (seen.has(request.destination)) {
      throw new SockerError(`socker: two mounts at ${request.destination}; ${HELP_HINT}`);
    }
    seen.add(request.destination);
  }
  return [...defaults.filter((request) => !seen.has(request.destination)), ...user];
}

/**
 * The container's working directory: the one asked for (absolute, clean, never under /proc, where a
 * leaked file descriptor becomes a way out: CVE-2024-21626), else the caller's folder when a mount holds
 * it, else the image's own (undefined).
 */
export function chooseWorkdir(requested: string | undefined, cwd: string | undefined, mounts: readonly Mount[]) {
  if (requested !== undefined) {
    if (!isCleanAbsolute(requested)) {
      throw new SockerError(`socker: -w '${printable(requested)}' must be a clean absolute path; ${HELP_HINT}`);
    }
    if (isUnder(requested, "/proc")) throw new SockerError(`socker: -w '${printable(requested)}': never a /proc path`);
    return requested;
  }
  if (cwd === undefined) return undefined;
  const holder = mounts.find((mount) => mount.kind === "dir" && isUnder(cwd, mount.source));
  return holder === undefined ? undefined : holder.destination + cwd.slice(holder.source.length);
}

/**
 * The container's environment: HOME, USER and LOGNAME of the caller (so programs work in images without
 * the user in /etc/passwd), then the user's `-e` (a bare NAME takes the caller's value), then the
 * administrator's `env_set`, which always wins. `env_deny` names are refused.
 */
export function containerEnvironment(
  requests: readonly string[],
  callerEnv: Readonly<Record<string, string>> | undefined,
  caller: { user: string; home?: string },
  settings: Settings,
): string[] {
  const env = new Map<string, string>([["HOME", caller.home ?? "/"], ["USER", caller.user], ["LOGNAME", caller.user]]);
  for (const request of requests) {
    const equals = request.indexOf("=");
    const name = equals < 0 ? request : request.slice(0, equals);
    if (!ENV_NAME.test(name)) {
      throw new SockerError(`socker: -e '${printable(request)}': '${printable(name)}' is not a variable name`);
    }
    if (settings.envDeny.includes(name)) {
      throw new SockerError(`socker: -e ${name}: your administrator never lets ${name} into containers (env_deny)`);
    }
    if (equals >= 0) env.set(name, request.slice(equals + 1));
    else if (callerEnv === undefined) {
      throw new SockerError(`socker: -e ${name}: socker cannot see your environment here; give -e ${name}=VALUE`);
    } else if (name in callerEnv) env.set(name, callerEnv[name]);
  }
  for (const [name, value] of Object.entries(settings.envSet)) env.set(name, value);
  return [...env].map(([name, value]) => `${name}=${value}`);
}

/**
 * Parses the user's path checks: find(1) prints `2049 131 d rwx/the/path` and a NUL for each path it
 * could look at, and `/usr/bin/find: '/the/path': Permission denied` on stderr for each it could not.
 * Returns, for every path, what the kernel said or why it could not be checked.
 */
export function parsePathChecks(stdout: string, stderr: string): Map<string, PathCheck | string> {
  const results = new Map<string, PathCheck | string>();
  for (const record of stdout.split("\0")) {
    const match = /^(\d+) (\d+) ([a-z]) ([rwx]*)(\/.*)$/s.exec(record);
    if (!match) continue;
    results.set(match[5], {
      realPath: match[5],
      device: Number(match[1]),
      inode: Number(match[2]),
      kind: match[3] === "d" ? "dir" : match[3] === "f" ? "file" : "other",
      readable: match[4].includes("r"),
      writable: match[4].includes("w"),
      searchable: match[4].includes("x"),
    });
  }
  for (const line of stderr.split("\n")) {
    const match = /^(?:\S*\/)?find: '(\/.*)': ([^:]+)$/.exec(line);
    if (match && !results.has(match[1])) results.set(match[1], match[2].toLowerCase());
  }
  return results;
}

/** NVIDIA GPUs are character devices of major 195; minor 255 is the control device. */
const NVIDIA_MAJOR = 195;

/**
 * The GPUs a cgroup v1 `devices.list` allows (`c 195:1 rw`), or undefined when the list does not
 * constrain devices at all (`a *:* rwm`) and so proves nothing.
 */
export function gpusFromDeviceRules(devicesList: string): number[] | undefined {
  const lines = devicesList.split("\n").map((line) => line.trim()).filter((line) => line !== "");
  if (lines.some((line) => /^a \*:\* /.test(line))) return undefined;
  const gpus = lines.flatMap((line) => {
    const match = /^c (\d+):(\d+) [rwm]+$/.exec(line);
    return match && Number(match[1]) === NVIDIA_MAJOR && Number(match[2]) < 255 ? [Number(match[2])] : [];
  });
  return [...new Set(gpus)].sort((a, b) => a - b);
}

/** The GPU indices Slurm records for a job (`scontrol show job -d`: `GRES=gpu:a100:2(IDX:0-1,3)`). */
export function gpusFromSlurmJob(scontrolDetail: string): number[] {
  const gpus = new Set<number>();
  for (const match of scontrolDetail.matchAll(/GRES=gpu[^ ]*?\(IDX:([0-9,-]+)\)/g)) {
    for (const range of match[1].split(",")) {
      const [first, last = first] = range.split("-").map(Number);
      for (let gpu = first; gpu <= last && gpu - first < 1024; gpu++) gpus.add(gpu);
    }
  }
  return [...gpus].sort((a, b) => a - b);
}

/** The device nodes for these GPUs plus the shared control devices that exist on this node. */
export function gpuDeviceNodes(gpus: readonly number[], exists: (path: string) => boolean): string[] {
  const shared = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"].filter(exists);
  return [...gpus.map((gpu) => `/dev/nvidia${gpu}`), ...shared];
}

// ---------------------------------------------------------------------------------------------------------
// Docker command line

/** Everything decided about one run; `dockerRunArgv` turns it into docker's arguments and nothing else. */
export type RunPlan = {
  caller: Caller;
  /** The canonical reference of the allowlisted image. */
  image: string;
  argv: readonly string[];
  containerName: string;
  tty: boolean;
  /** Pass stdin on (`--interactive`); off with `--no-stdin`. */
  stdin: boolean;
  labels: Readonly<Record<string, string>>;
  /** The cgroup the container is created in (inside a Slurm job), relative to each controller's root. */
  cgroupParent?: string;
  /** Bind mounts; `source` is socker's root-owned staging path of the checked folder or file. */
  mounts: readonly { source: string; destination: string; readOnly: boolean }[];
  workdir?: string;
  /** `NAME=VALUE` entries. */
  env: readonly string[];
  network: Settings["network"];
  /** Device nodes (the job's GPUs). */
  devices: readonly string[];
};

/**
 * Builds `docker run`'s argument vector. Every option comes from socker; the user supplies only the
 * image (already allowlisted and normalised) and the command, which follow the image and so are never
 * read as options by docker.
 */
export function dockerRunArgv(plan: RunPlan): string[] {
  const args = [
    "run",
    "--rm",
    ...(plan.stdin ? ["--interactive"] : []),
    ...(plan.tty ? ["--tty"] : []),
    "--init",
    "--pull=never",
    // socker itself passes signals on, once: the CLI would repeat those sent to the whole process group.
    "--sig-proxy=false",
    "--name",
    plan.containerName,
    ...Object.entries(plan.labels).flatMap(([key, value]) => ["--label", `${key}=${value}`]),
    "--user",
    `${plan.caller.uid}:${plan.caller.gid}`,
    ...plan.caller.groups.flatMap((gid) => ["--group-add", String(gid)]),
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    // Output goes to the caller only: nothing is written under /var/lib/docker as root.
    "--log-driver",
    "none",
    "--network",
    plan.network,
    ...(plan.cgroupParent !== undefined ? ["--cgroup-parent", plan.cgroupParent] : []),
    ...plan.mounts.flatMap((mount) => [
      "--mount",
      `type=bind,source=${mount.source},target=${mount.destination}${mount.readOnly ? ",readonly" : ""}`,
    ]),
    ...(plan.workdir !== undefined ? ["--workdir", plan.workdir] : []),
    ...plan.env.flatMap((entry) => ["--env", entry]),
    ...plan.devices.flatMap((device) => ["--device", device]),
    "--",
    plan.image,
    ...plan.argv,
  ];
  return args;
}

/** The docker CLI's whole environment: nothing of the caller's, no config, hooks or plugins of anyone's. */
export function dockerEnv(): Record<string, string> {
  return {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    DOCKER_HOST: `unix://${DOCKER_SOCKET}`,
    DOCKER_CONFIG: DOCKER_CONFIG_DIR,
    HOME: DOCKER_CONFIG_DIR,
    DOCKER_CLI_HINTS: "false",
    LANG: "C.UTF-8",
  };
}

/** A container name socker can find again: `socker-<uid>-<random>`. */
export function containerName(uid: number, random: Uint8Array): string {
  return `socker-${uid}-${Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** The staging folder of a container's mounts: named after its job too, so that the job's Epilog finds it. */
export function stagingName(container: string, jobId: string | undefined): string {
  return jobId === undefined ? container : `job_${jobId}.${container}`;
}

/** Reads a staging folder's name back: the container and, inside a job, the job. */
export function parseStagingName(staging: string): { container: string; jobId?: string } {
  const match = /^job_(\d+)\.(.+)$/.exec(staging);
  return match ? { jobId: match[1], container: match[2] } : { container: staging };
}

/** Quotes an argument vector for display (`socker -v`), so that a reader can paste it into a shell. */
export function shellQuote(args: readonly string[]): string {
  return args.map((arg) => /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`).join(" ");
}

// ---------------------------------------------------------------------------------------------------------
// The engine's API, spoken directly over its socket for the small questions: a CLI start costs ~40 ms,
// a request here ~2 ms. Requests are HTTP/1.0, so the engine answers with a plain body and closes.

export type ApiResponse = { status: number; body: string };

/** Splits a raw HTTP/1.x response into status and body. Returns undefined for anything else. */
export function parseHttpResponse(raw: string): ApiResponse | undefined {
  const match = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(raw);
  const end = raw.indexOf("\r\n\r\n");
  if (!match || end < 0) return undefined;
  return { status: Number(match[1]), body: raw.slice(end + 4) };
}

/** Sends one request to the engine. Throws SockerError when the engine cannot be reached. */
export async function dockerApi(method: "GET" | "POST" | "DELETE", path: string): Promise<ApiResponse> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: DOCKER_SOCKET });
  } catch (error) {
    throw new SockerError(`socker: the Docker engine is not reachable at ${DOCKER_SOCKET}: ${errorText(error)}`);
  }
  try {
    await conn.write(new TextEncoder().encode(`${method} /v1.41${path} HTTP/1.0\r\nHost: docker\r\n\r\n`));
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(16384);
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) chunks.push(buffer.slice(0, n));
    const response = parseHttpResponse(new TextDecoder().decode(concatBytes(chunks)));
    if (response === undefined) throw new SockerError("socker: the Docker engine gave an unreadable answer");
    return response;
  } catch (error) {
    if (error instanceof SockerError) throw error;
    throw new SockerError(`socker: lost the connection to the Docker engine: ${errorText(error)}`);
  } finally {
    conn.close();
  }
}

function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const all = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/** The local image's id (its content digest), or undefined when the engine does not hold it (socker never pulls). */
async function imageId(canonical: string): Promise<string | undefined> {
  const { status, body } = await dockerApi("GET", `/images/${encodeURIComponent(canonical)}/json`);
  if (status === 200) return String(JSON.parse(body).Id ?? "");
  if (status === 404) return undefined;
  throw new SockerError(`socker: the Docker engine answered ${status} for image ${canonical}: ${apiMessage(body)}`);
}

function apiMessage(body: string): string {
  try {
    return printable(String(JSON.parse(body).message ?? body));
  } catch {
    return printable(body);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Supervision: run the CLI, pass signals on, and make sure the container is gone before socker exits

/** What the supervisor should do when a signal arrives. */
export function signalAction(signal: string): { kind: "terminate"; number: number } | {
  kind: "forward";
  number: number;
} | undefined {
  if (signal in TERMINATING_SIGNALS) {
    return { kind: "terminate", number: TERMINATING_SIGNALS[signal as keyof typeof TERMINATING_SIGNALS] };
  }
  if (signal in FORWARDED_SIGNALS) {
    return { kind: "forward", number: FORWARDED_SIGNALS[signal as keyof typeof FORWARDED_SIGNALS] };
  }
  return undefined;
}

/** Repeats of one signal closer together than this are passed on once. */
export const SIGNAL_REPEAT_MS = 100;

/**
 * Whether a forwarded signal is a repeat of one just passed on. Slurm signals every process of a step,
 * so socker gets the signal once directly and once more relayed by sudo; the container should get it once.
 */
export function isSignalRepeat(lastForwardedAt: number | undefined, now: number): boolean {
  return lastForwardedAt !== undefined && now - lastForwardedAt < SIGNAL_REPEAT_MS;
}

/**
 * socker's exit code: 128+N after socker itself was told to stop by signal N; 128+N when the docker CLI
 * died of signal N; otherwise the CLI's code, which is the container's (or 125-127 for docker's own errors).
 */
export function exitCodeFor(
  status: { code: number; signal: string | null },
  terminatedBy: number | undefined,
): number {
  if (terminatedBy !== undefined) return 128 + terminatedBy;
  if (status.signal !== null) return 128 + (SIGNAL_NUMBERS[status.signal] ?? 0);
  return status.code;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long socker keeps making sure a container is gone before it reports failure. */
const GONE_TIMEOUT_MS = 30_000;

/**
 * Makes sure the named container no longer exists: kills it while it runs, removes it when it was created
 * but never started, and waits for the engine's `--rm` otherwise. Returns false if it is still there
 * after the timeout (the Epilog, or an administrator, must then remove it).
 */
async function ensureContainerGone(name: string, timeoutMs = GONE_TIMEOUT_MS): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const { status, body } = await dockerApi("GET", `/containers/${name}/json`);
      if (status === 404) return true;
      const state = status === 200 ? JSON.parse(body).State ?? {} : {};
      if (state.Running === true) await dockerApi("POST", `/containers/${name}/kill?signal=SIGKILL`);
      else if (state.Status === "created") await dockerApi("DELETE", `/containers/${name}?force=true`);
    } catch {
      // The engine may be restarting; keep trying until the deadline.
    }
    await sleep(50);
  }
  return false;
}

/** A terminating signal that arrived while socker was still preparing the run. */
type EarlyTrap = { signal: () => number | undefined; release: () => void };

/**
 * Catches SIGTERM, SIGINT and SIGHUP from the moment socker changes anything (staging mounts) until
 * supervision takes over, so that such a signal undoes the preparation instead of killing socker halfway.
 */
function trapEarlySignals(): EarlyTrap {
  let caught: number | undefined;
  const listeners = (Object.keys(TERMINATING_SIGNALS) as Deno.Signal[]).map((signal) => {
    const listener = () => caught ??= signalAction(signal)?.number;
    Deno.addSignalListener(signal, listener);
    return [signal, listener] as const;
  });
  return {
    signal: () => caught,
    release: () => listeners.forEach(([signal, listener]) => Deno.removeSignalListener(signal, listener)),
  };
}

/**
 * Runs `docker run` and supervises it. Signal listeners are in place before the CLI starts, so no signal
 * can slip between the start and the trap. Returns socker's exit code.
 */
async function superviseRun(
  dockerPath: string,
  args: string[],
  name: string,
  dockerUser: { uid: number; gid: number },
  early: EarlyTrap,
): Promise<{ exitCode: number; containerId?: string }> {
  let terminatedBy: number | undefined;
  let cliDone = false;
  let containerId: string | undefined;
  // For the audit log: the engine's id of the container, once it exists.
  const learnContainerId = async () => {
    // A few spaced questions, so as not to load the engine while it starts the container.
    for (const delay of [150, 300, 600, 1200]) {
      await sleep(delay);
      if (cliDone || containerId !== undefined) return;
      const found = await dockerApi("GET", `/containers/${name}/json`).catch(() => undefined);
      if (found?.status === 200) containerId = String(JSON.parse(found.body).Id ?? "") || undefined;
    }
  };

  const killUntilCliEnds = async () => {
    // The container may not exist yet (the CLI is still creating it): keep killing until the CLI returns.
    while (!cliDone) {
      await dockerApi("POST", `/containers/${name}/kill?signal=SIGKILL`).catch(() => undefined);
      await sleep(100);
    }
  };
  const lastForwarded = new Map<string, number>();
  const onSignal = (signal: Deno.Signal) => () => {
    const action = signalAction(signal);
    if (action?.kind === "terminate" && terminatedBy === undefined) {
      terminatedBy = action.number;
      void killUntilCliEnds();
    } else if (action?.kind === "forward" && !isSignalRepeat(lastForwarded.get(signal), performance.now())) {
      lastForwarded.set(signal, performance.now());
      void dockerApi("POST", `/containers/${name}/kill?signal=${signal}`).catch(() => undefined);
    }
  };
  const signals = [...Object.keys(TERMINATING_SIGNALS), ...Object.keys(FORWARDED_SIGNALS)] as Deno.Signal[];
  const listeners = signals.map((signal) => [signal, onSignal(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  early.release();
  if (early.signal() !== undefined) {
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    return { exitCode: 128 + early.signal()! };
  }

  let status: Deno.CommandStatus;
  try {
    const child = new Deno.Command(dockerPath, {
      args,
      uid: dockerUser.uid,
      gid: dockerUser.gid,
      clearEnv: true,
      env: dockerEnv(),
      // The caller's folder may be closed to others; the CLI needs no folder of its own.
      cwd: "/",
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    void learnContainerId();
    status = await child.status;
  } catch (error) {
    cliDone = true;
    throw new SockerError(`socker: cannot start ${dockerPath}: ${errorText(error)}`);
  }
  cliDone = true;

  // Normally the CLI returns after the engine removed the container (--rm); this check costs one request.
  const gone = await ensureContainerGone(name);
  for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
  if (!gone) {
    throw new SockerError(`socker: container ${name} could not be removed; ask your administrator to remove it`);
  }
  return { exitCode: exitCodeFor(status, terminatedBy), containerId };
}

// ---------------------------------------------------------------------------------------------------------
// Doctor: the administrator's check of an installation, one line per check

/** One check's verdict: ok, or what is wrong and how to fix it. */
export type Check = { name: string; ok: boolean; detail: string };

/** Distribution builds of runc known to carry the fix for CVE-2024-21626 although their version is older. */
const RUNC_FIXED_BUILDS = [/^1\.1\.5\+ds1-1\+deb12u([1-9]\d*)$/];

/**
 * Whether the engine's runc is free of CVE-2024-21626 (a working directory in /proc/self/fd lets a
 * container reach the host): upstream 1.1.12 or later, or a distribution build known to carry the fix.
 * Returns undefined when the version cannot be read.
 */
export function runcFixed(runcId: string): boolean | undefined {
  if (RUNC_FIXED_BUILDS.some((pattern) => pattern.test(runcId))) return true;
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(runcId);
  if (!match) return undefined;
  const [major, minor, patch] = match.slice(1).map(Number);
  return major > 1 || (major === 1 && (minor > 1 || (minor === 1 && patch >= 12)));
}

/** What a node's slurm.conf lacks for socker: cgroup process tracking and limits, and the Epilog hook. */
export function slurmConfProblems(slurmConf: string, epilogHook: string): string[] {
  const settings = new Map<string, string>();
  for (const raw of slurmConf.split("\n")) {
    const match = /^\s*([A-Za-z]+)\s*=\s*(\S+)/.exec(raw.replace(/#.*$/, ""));
    if (match) settings.set(match[1].toLowerCase(), match[2]);
  }
  const problems: string[] = [];
  if (settings.get("proctracktype") !== "proctrack/cgroup") problems.push("set ProctrackType=proctrack/cgroup");
  if (!(settings.get("taskplugin") ?? "").split(",").includes("task/cgroup")) {
    problems.push("add task/cgroup to TaskPlugin");
  }
  if (!(settings.get("epilog") ?? "").split(",").includes(epilogHook)) {
    problems.push(`add Epilog=${epilogHook} (install.sh --epilog installs it)`);
  }
  return problems;
}

/** The report: one line per check, and the exit code (0 only when every check passed). */
export function doctorReport(checks: readonly Check[]): { lines: string[]; exitCode: number } {
  const lines = checks.map((check) =>
    `${check.ok ? "ok  " : "FIX "} ${check.name}${check.detail ? `: ${check.detail}` : ""}`
  );
  const failed = checks.filter((check) => !check.ok).length;
  lines.push(failed === 0 ? `all ${checks.length} checks passed` : `${failed} of ${checks.length} checks need a fix`);
  return { lines, exitCode: failed === 0 ? 0 : 1 };
}

// ---------------------------------------------------------------------------------------------------------
// Audit log: every run, refusal and cleanup, one structured line in the system log (tag `socker`)

/** One audit record; undefined fields are left out. */
export type AuditRecord = Record<string, string | number | readonly string[] | undefined>;

const AUDIT_FIELD_MAX = 2000;
const AUDIT_FAILURE = "socker: cannot write the audit log";

/** The record as one line of JSON, long fields cut, so that a log reader never has to guess. */
export function auditLine(record: AuditRecord): string {
  const cut = (value: unknown): unknown =>
    typeof value === "string"
      ? (value.length > AUDIT_FIELD_MAX ? `${value.slice(0, AUDIT_FIELD_MAX)}...` : value)
      : Array.isArray(value)
      ? value.slice(0, 64).map(cut)
      : value;
  return JSON.stringify(
    Object.fromEntries(Object.entries(record).filter(([, v]) => v !== undefined).map(([k, v]) => [k, cut(v)])),
  );
}

/** syslog facility numbers (RFC 5424). */
const FACILITY_CODES: Record<string, number> = {
  user: 1,
  daemon: 3,
  auth: 4,
  authpriv: 10,
  ...Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`local${i}`, 16 + i])),
};
const SEVERITY_INFO = 6;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** One datagram for the local syslog socket, in the traditional format: `<86>Nov 29 03:58:00 socker[7]: ...`. */
export function syslogDatagram(facility: string, pid: number, date: Date, line: string): string {
  const priority = (FACILITY_CODES[facility] ?? FACILITY_CODES.authpriv) * 8 + SEVERITY_INFO;
  const two = (n: number) => String(n).padStart(2, "0");
  const stamp = `${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2, " ")} ` +
    `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  return `<${priority}>${stamp} socker[${pid}]: ${line}`;
}

const SYSLOG_SOCKET = "/dev/log";

/**
 * Writes one record to the system log, straight to its socket (a logger(1) process would cost ~3 ms
 * of every run, twice). Throws when the log cannot be written: a run is never started without its record.
 */
function audit(facility: string, record: AuditRecord): Promise<void> {
  const c = libc();
  const failure = (what: string): never => {
    const errno = new Deno.UnsafePointerView(c.__errno_location()!).getInt32();
    const text = c.strerror(errno);
    const why = text === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(text);
    throw new SockerError(
      `${AUDIT_FAILURE} (${what} ${SYSLOG_SOCKET}: ${why}); refusing to run unlogged, ask your administrator`,
    );
  };
  const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000;
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  try {
    if (fd < 0) failure("socket for");
    const address = new Uint8Array(110); // struct sockaddr_un: family, then the path
    new DataView(address.buffer).setUint16(0, AF_UNIX, true);
    address.set(new TextEncoder().encode(SYSLOG_SOCKET), 2);
    if (c.connect(fd, address, address.length) !== 0) failure("connect to");
    const message = new TextEncoder().encode(syslogDatagram(facility, Deno.pid, new Date(), auditLine(record)));
    if (Number(c.send(fd, message, BigInt(message.length), 0)) !== message.length) failure("send to");
    return Promise.resolve();
  } catch (error) {
    return Promise.reject(error);
  } finally {
    if (fd >= 0) c.close(fd);
  }
}

/** Writes a record after the fact (an outcome, a refusal): a failure is reported, never hidden. */
async function auditAfter(facility: string, record: AuditRecord): Promise<void> {
  try {
    await audit(facility, record);
  } catch (error) {
    console.error(`socker: warning: ${errorText(error).replace(/^socker: /, "")}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Commands

/** `socker run`, with its audit records: a start before the container, then its outcome or the refusal. */
async function runCommand(invocation: Extract<Invocation, { command: "run" }>): Promise<number> {
  const started = performance.now();
  const record: AuditRecord = {
    event: "run",
    user: Deno.env.get("SUDO_USER") || "root",
    uid: Deno.env.get("SUDO_UID") || "0",
    host: hostName(),
    image: printable(invocation.image),
    command: invocation.argv.map((arg) => printable(arg)),
  };
  const facility = { name: DEFAULT_SETTINGS.logFacility };
  try {
    const exitCode = await runContainer(invocation, record, facility);
    await auditAfter(facility.name, {
      ...record,
      event: "end",
      outcome: `exit ${exitCode}`,
      duration_ms: Math.round(performance.now() - started),
    });
    return exitCode;
  } catch (error) {
    if (error instanceof SockerError && !error.message.startsWith(AUDIT_FAILURE)) {
      await auditAfter(facility.name, { ...record, event: "refused", rule: error.message.replace(/^socker: /, "") });
    }
    throw error;
  }
}

/**
 * Decides everything about one run (image, caller, job, mounts, environment), in the order of the data,
 * refusing at the first rule broken; then logs the start, runs and supervises the container.
 * `record` collects what the audit log reports; `facility` is the log's, once socker.conf is read.
 */
async function runContainer(
  invocation: Extract<Invocation, { command: "run" }>,
  record: AuditRecord,
  facility: { name: string },
): Promise<number> {
  const sudo = sudoCaller();
  if (sudo.uid === 0) resolveCaller(sudo, { uid: 0, gid: 0, groups: [] }); // throws the refusal for root
  requireRoot();

  const requested = parseImageRef(invocation.image);
  if (typeof requested === "string") {
    throw new SockerError(`socker: '${printable(invocation.image)}' is not a valid image reference: ${requested}`);
  }
  const allowlist = parseAllowlist(readTrustedFile(ALLOWLIST_PATH), ALLOWLIST_PATH);
  const entry = matchImage(allowlist, requested);
  if (entry === undefined) {
    throw new SockerError(
      `socker: image '${printable(invocation.image)}' is not allowed on this cluster; ` +
        "'socker images' lists the allowed ones",
    );
  }

  const settings = readSettings();
  facility.name = settings.logFacility;
  const job = jobCgroup(Deno.readTextFileSync("/proc/self/cgroup"), sudo.uid);
  record.job = job?.jobId;
  record.step = job?.stepId;
  if (job === undefined && settings.requireJob) {
    throw new SockerError("socker: this node runs containers only inside Slurm jobs; use srun, sbatch or salloc");
  }
  const options = invocation.options;
  const volumeRequests = options.volumes.map(parseVolume);
  chooseWorkdir(options.workdir, undefined, []); // refuse a bad -w before any work
  const dockerPath = assertTrusted(settings.docker);
  const dockerUser = dockerAccount();
  const database = userRecord(sudo.user);
  const caller = resolveCaller(sudo, database);
  const home = database.home;
  const env = containerEnvironment(options.env, callerEnvironment(), { user: caller.user, home }, settings);

  // Mounts: the user's must pass every rule; a default mount the user cannot use is simply left out.
  const folder = currentFolder();
  const resolvedFolder = folder === undefined ? undefined : realPathOf(folder);
  const cwd = typeof resolvedFolder === "object" ? resolvedFolder.realPath : undefined;
  const defaults = defaultMountRequests(settings, home, cwd);
  // The engine's answers and the checks made as the user are independent: wait for them together.
  const requests = mountRequests(defaults, volumeRequests);
  const defaultCount = requests.length - volumeRequests.length;
  const [imageDigest, engineInfo, checks] = await Promise.all([
    imageId(entry.canonical),
    job !== undefined ? dockerApi("GET", "/info") : undefined,
    // The caller's folder is the default working directory only if they can enter it themselves.
    checkPathsAsUser(caller, [...requests.map((request) => request.source), ...(cwd !== undefined ? [cwd] : [])]),
  ]);
  const decided = requests.map((request) => decideMount(request, checks.get(request.source)!, settings));
  const cwdCheck = cwd !== undefined ? checks.get(cwd) : undefined;
  if (job !== undefined && engineInfo !== undefined) {
    const problem = engineInfo.status === 200
      ? engineCgroupProblem(JSON.parse(engineInfo.body), job)
      : `the engine answered ${engineInfo.status}`;
    if (problem !== undefined) throw new SockerError(`socker: cannot run inside this Slurm job: ${problem}`);
  }
  if (imageDigest === undefined) {
    throw new SockerError(
      `socker: image '${entry.text}' is allowed but not present on node ${hostName()}; ` +
        "ask your administrator to load it (socker never pulls)",
    );
  }
  const devices = options.gpus ? gpuDeviceNodes(await jobGpus(job), exists) : [];
  const refusal = decided.slice(defaultCount).find((result) => typeof result === "string");
  if (refusal !== undefined) throw new SockerError(`socker: ${refusal}`);
  const mounts = decided.filter((result): result is Mount => typeof result !== "string");
  const cwdUsable = typeof cwdCheck === "object" && cwdCheck.kind === "dir" && cwdCheck.searchable;
  const workdir = chooseWorkdir(options.workdir, cwdUsable ? cwd : undefined, mounts);

  const name = containerName(caller.uid, crypto.getRandomValues(new Uint8Array(6)));
  const staging = stagingName(name, job?.jobId);
  const early = trapEarlySignals();
  try {
    const staged = await stageMounts(staging, mounts);
    const plan: RunPlan = {
      caller,
      image: entry.canonical,
      argv: invocation.argv,
      containerName: name,
      tty: !options.noTty && Deno.stdin.isTerminal() && Deno.stdout.isTerminal(),
      stdin: !options.noStdin,
      labels: {
        "socker.managed": "true",
        "socker.uid": String(caller.uid),
        "socker.user": caller.user,
        "socker.node": hostName(),
        ...(job !== undefined ? { "socker.job": job.jobId, "socker.step": job.stepId } : {}),
      },
      cgroupParent: job?.parent,
      mounts: staged,
      workdir,
      env,
      network: settings.network,
      devices,
    };
    const args = dockerRunArgv(plan);
    if (invocation.verbose) console.error(`socker: ${shellQuote([dockerPath, ...args])}`);
    Object.assign(record, {
      image: entry.canonical,
      digest: imageDigest,
      container: name,
      mounts: mounts.map((m) => `${printable(m.source)}:${m.destination}${m.readOnly ? ":ro" : ""}`),
      workdir,
    });
    await audit(facility.name, { ...record, event: "start" });
    const { exitCode, containerId } = await superviseRun(dockerPath, args, name, dockerUser, early);
    record.container_id = containerId;
    return exitCode;
  } finally {
    early.release();
    await unstageMounts(staging);
  }
}

/** The caller's current folder (sudo keeps it), or undefined when it no longer exists. */
function currentFolder(): string | undefined {
  try {
    return Deno.cwd();
  } catch {
    return undefined;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs a query as the caller: their uid, gid and groups, no privileges, an empty environment. */
async function asCaller(caller: Caller, command: string, args: string[]) {
  const output = await new Deno.Command("/usr/bin/setpriv", {
    args: [
      `--reuid=${caller.uid}`,
      `--regid=${caller.gid}`,
      ...(caller.groups.length > 0 ? [`--groups=${caller.groups.join(",")}`] : ["--clear-groups"]),
      "--no-new-privs",
      "--",
      command,
      ...args,
    ],
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin", LANG: "C" },
    cwd: "/",
    stdin: "null",
  }).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { success: output.success, stdout: text(output.stdout), stderr: text(output.stderr) };
}

/** Resolves a path to its real path; returns why not on failure. What it leads to is then checked as the user. */
function realPathOf(path: string): { realPath: string } | string {
  try {
    return { realPath: Deno.realPathSync(path) };
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "no such file or folder" : errorText(error);
  }
}

/** find(1) arguments printing, for each path, what access(2) says as the user: `2049 131 d rwx/path\0`. */
const FIND_ACCESS = [
  ..."-maxdepth 0 -printf".split(" "),
  "%D %i %y ",
  ..."( -readable -printf r -o -true ) ( -writable -printf w -o -true ) ( -executable -printf x -o -true )"
    .split(" "),
  "-printf",
  "%p\\0",
];

/**
 * Asks the kernel, as the caller, about the real path of each path: whether they may read, write and
 * search it, every folder above included (so a 0700 folder of someone else stops it; ACLs and groups
 * count). One find(1) process for all of them. Returns, by the path as given, the check or why not.
 */
async function checkPathsAsUser(caller: Caller, paths: readonly string[]): Promise<Map<string, PathCheck | string>> {
  const resolved = new Map(paths.map((path) => [path, realPathOf(path)] as const));
  const realPaths = [...new Set([...resolved.values()].flatMap((r) => typeof r === "string" ? [] : [r.realPath]))];
  const found = realPaths.length === 0
    ? new Map<string, PathCheck | string>()
    : await asCaller(caller, "/usr/bin/find", ["-H", "--", ...realPaths.map((p) => p), ...FIND_ACCESS])
      .then((result) => parsePathChecks(result.stdout, result.stderr));
  return new Map(paths.map((path) => {
    const real = resolved.get(path)!;
    return [path, typeof real === "string" ? real : found.get(real.realPath) ?? "cannot be checked"];
  }));
}

/**
 * Whether no one but root can change which folder a real path names: every folder above it is root's
 * and not group/other-writable. Such a path is mounted as it is; any other is staged (see stageMounts).
 */
function pathFixedByRoot(realPath: string): boolean {
  return pathChain(realPath).slice(1).every((dir) => {
    const info = Deno.statSync(dir);
    return info.uid === 0 && ((info.mode ?? 0o777) & 0o022) === 0;
  });
}

/** Where socker stages the checked mounts of each container: root's alone, out of every user's reach. */
const STAGING_DIR = "/run/socker";
/** How old a staging folder must be before `cleanup` may judge it abandoned. */
const STAGING_GRACE_MS = 60_000;

/**
 * Binds each checked path whose folders a user could change to a root-owned staging path, and proves
 * the bind holds the very inode the caller's check saw. A user who swaps a folder for a symlink after the check gets a refusal, not
 * someone else's data: docker is given only the staging path, which no user can change.
 */
async function stageMounts(staging: string, mounts: readonly Mount[]) {
  const direct = mounts.map((mount) => pathFixedByRoot(mount.source));
  if (direct.every(Boolean)) {
    return mounts.map(({ source, destination, readOnly }) => ({ source, destination, readOnly }));
  }
  Deno.mkdirSync(STAGING_DIR, { recursive: true, mode: 0o700 });
  Deno.mkdirSync(`${STAGING_DIR}/${staging}`, { mode: 0o700 });
  return await Promise.all(mounts.map(async (mount, index) => {
    if (direct[index]) return { source: mount.source, destination: mount.destination, readOnly: mount.readOnly };
    const target = `${STAGING_DIR}/${staging}/${index}`;
    if (mount.kind === "dir") Deno.mkdirSync(target, { mode: 0o700 });
    else Deno.writeFileSync(target, new Uint8Array(), { mode: 0o600 });
    const bound = await new Deno.Command("/usr/bin/mount", {
      args: ["--bind", "--no-canonicalize", "--", mount.source, target],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", LANG: "C" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!bound.success) {
      throw new SockerError(
        `socker: cannot mount ${printable(mount.source)}: ${printable(new TextDecoder().decode(bound.stderr).trim())}`,
      );
    }
    const info = Deno.statSync(target);
    if (info.dev !== mount.device || info.ino !== mount.inode) {
      throw new SockerError(`socker: ${printable(mount.source)} changed while socker was checking it; refusing`);
    }
    return { source: target, destination: mount.destination, readOnly: mount.readOnly };
  }));
}

/** Undoes stageMounts: unmounts and removes each staging path, never recursively (a mount may still hold data). */
async function unstageMounts(staging: string): Promise<void> {
  const dir = `${STAGING_DIR}/${staging}`;
  let entries: string[];
  try {
    entries = [...Deno.readDirSync(dir)].map((entry) => `${dir}/${entry.name}`);
  } catch {
    return;
  }
  for (const target of entries) {
    await new Deno.Command("/usr/bin/umount", { args: ["--", target], stdout: "null", stderr: "null", clearEnv: true })
      .output();
    try {
      Deno.removeSync(target); // fails, harmlessly, while something is still mounted there
    } catch { /* left for cleanup */ }
  }
  try {
    Deno.removeSync(dir);
  } catch { /* left for cleanup */ }
}

/**
 * The caller's environment, for `-e NAME`: sudo reset socker's own, but sudo (our parent, started with
 * the caller's environment) still holds it. Read only when the parent really is sudo.
 */
function callerEnvironment(): Record<string, string> | undefined {
  try {
    if (Deno.readLinkSync(`/proc/${Deno.ppid}/exe`) !== "/usr/bin/sudo") return undefined;
    const entries = Deno.readTextFileSync(`/proc/${Deno.ppid}/environ`).split("\0").filter((item) =>
      item.includes("=")
    );
    return Object.fromEntries(
      entries.map((item) => [item.slice(0, item.indexOf("=")), item.slice(item.indexOf("=") + 1)]),
    );
  } catch {
    return undefined;
  }
}

/** The GPUs of the caller's job, from the job's cgroup device rules, else from Slurm's own record. */
async function jobGpus(job: JobCgroup | undefined): Promise<number[]> {
  if (job === undefined) throw new SockerError("socker: --gpus works only inside a Slurm job with GPUs allocated");
  const rulesFile = `/sys/fs/cgroup/devices${job.parent}/devices.list`;
  const fromRules = job.version === 1 && exists(rulesFile)
    ? gpusFromDeviceRules(Deno.readTextFileSync(rulesFile))
    : undefined;
  let gpus = fromRules;
  if (gpus === undefined) {
    const output = await new Deno.Command("/usr/bin/scontrol", {
      args: ["show", "job", "-d", job.jobId],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", LANG: "C" },
      stdin: "null",
      stderr: "null",
    }).output();
    gpus = gpusFromSlurmJob(new TextDecoder().decode(output.stdout));
  }
  if (gpus.length === 0) throw new SockerError(`socker: --gpus: no GPU is allocated to job ${job.jobId}`);
  return gpus;
}

async function imagesCommand(): Promise<number> {
  const allowlist = parseAllowlist(readTrustedFile(ALLOWLIST_PATH), ALLOWLIST_PATH);
  const rows = [["IMAGE", "NORMALISED", "ON THIS NODE"]];
  for (const entry of allowlist) {
    rows.push([entry.text, entry.canonical, (await imageId(entry.canonical)) !== undefined ? "yes" : "no"]);
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  for (const row of rows) console.log(row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd());
  if (allowlist.length === 0) console.error(`socker: no images are allowed yet (${ALLOWLIST_PATH} lists none)`);
  return 0;
}

/** `socker doctor`: checks the installation, the engine and Slurm's configuration, one line each. */
async function doctorCommand(): Promise<number> {
  requireRootCaller("socker: 'doctor' is for root");
  const checks: Check[] = [];
  const check = async (name: string, body: () => string | Promise<string>) => {
    try {
      checks.push({ name, ok: true, detail: await body() });
    } catch (error) {
      checks.push({ name, ok: false, detail: errorText(error).replace(/^socker: /, "") });
    }
  };
  const fail = (why: string): never => {
    throw new Error(why);
  };

  for (
    const file of [`${PREFIX}/bin/socker`, `${PREFIX}/libexec/socker/socker`, Deno.mainModule.replace(/^file:\/\//, "")]
  ) {
    await check(`installed ${file}`, () => {
      assertTrusted(file);
      if ((Deno.statSync(file).mode ?? 0) & 0o6000) {
        fail(`${file} is set-id; remove the bit (chmod ug-s): never run a Deno program set-id`);
      }
      return "root-owned, not writable by others, not set-id";
    });
  }
  let allowlist: AllowlistEntry[] = [];
  await check(`allowlist ${ALLOWLIST_PATH}`, () => {
    allowlist = parseAllowlist(readTrustedFile(ALLOWLIST_PATH), ALLOWLIST_PATH);
    return `${allowlist.length} image(s)`;
  });
  await check(`settings ${SETTINGS_PATH}`, () => {
    readSettings();
    return exists(SETTINGS_PATH) ? "valid" : "absent (defaults apply)";
  });
  await check("sudoers rule /etc/sudoers.d/socker", async () => {
    const info = Deno.statSync("/etc/sudoers.d/socker");
    if (info.uid !== 0 || ((info.mode ?? 0) & 0o777) !== 0o440) fail("must be root-owned, mode 0440: rerun install.sh");
    const text = Deno.readTextFileSync("/etc/sudoers.d/socker");
    if (!text.includes(`${PREFIX}/libexec/socker/socker`)) {
      fail(`does not name ${PREFIX}/libexec/socker/socker: rerun install.sh`);
    }
    if (!/env_reset/.test(text)) fail("does not reset the environment: rerun install.sh");
    const visudo = await new Deno.Command("/usr/sbin/visudo", {
      args: ["-cf", "/etc/sudoers.d/socker"],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!visudo.success) fail(`visudo rejects it: ${printable(new TextDecoder().decode(visudo.stderr).trim())}`);
    return "valid, environment reset";
  });
  await check(`account ${DOCKER_USER}`, () => {
    const account = dockerAccount();
    const record = userRecord(DOCKER_USER);
    if (record.groups.length !== 1 || record.groups[0] !== account.gid) {
      fail(`its groups are ${record.groups.join(",")}; its only group must be docker (usermod -G "" ${DOCKER_USER})`);
    }
    return `uid ${account.uid}, only group ${account.gid}`;
  });
  let info: Record<string, unknown> = {};
  await check("Docker engine", async () => {
    const answer = await dockerApi("GET", "/info");
    info = JSON.parse(answer.body);
    return `version ${
      printable(String(info.ServerVersion))
    }, cgroup driver ${info.CgroupDriver}, cgroup v${info.CgroupVersion}`;
  });
  await check("runc free of CVE-2024-21626", () => {
    const id = String((info.RuncCommit as { ID?: string } | undefined)?.ID ?? "");
    const fixed = runcFixed(id);
    if (fixed === undefined) {
      fail(`cannot tell runc's version from '${printable(id)}': make sure it is 1.1.12 or later`);
    }
    if (!fixed) fail(`runc ${printable(id)} is vulnerable: upgrade runc to 1.1.12 or later`);
    return `runc ${printable(id)}`;
  });
  for (const entry of allowlist) {
    await check(`image ${entry.text}`, async () => {
      if ((await imageId(entry.canonical)) === undefined) {
        fail(`not present on this node: docker pull or docker load it`);
      }
      return "present";
    });
  }
  if (exists("/etc/slurm/slurm.conf")) {
    await check("Slurm configuration /etc/slurm/slurm.conf", () => {
      const problems = slurmConfProblems(
        Deno.readTextFileSync("/etc/slurm/slurm.conf"),
        `${PREFIX}/libexec/socker/slurm-epilog`,
      );
      if (problems.length > 0) fail(problems.join("; "));
      return "proctrack/cgroup, task/cgroup, socker's Epilog";
    });
    await check("engine fits Slurm's cgroups", () => {
      if (info.CgroupDriver !== "cgroupfs") {
        fail('set "exec-opts": ["native.cgroupdriver=cgroupfs"] in /etc/docker/daemon.json');
      }
      return "cgroupfs driver";
    });
  }
  await check("audit log", async () => {
    const facility = auditFacility();
    await audit(facility, { event: "doctor", host: hostName() });
    return `writable (facility ${facility})`;
  });
  const report = doctorReport(checks);
  for (const line of report.lines) console.log(line);
  return report.exitCode;
}

/**
 * Removes every container of a finished Slurm job, found both by label and by the cgroup folders under
 * the job (which do not depend on labels), then every folder of the job in every cgroup hierarchy.
 * For Slurm's Epilog and root only: a user could otherwise end another user's job.
 */
async function cleanupCommand(jobId: string, verbose: boolean): Promise<number> {
  requireRootCaller("socker: 'cleanup' is for root and Slurm's Epilog only");
  const listDirs = (path: string): string[] => {
    try {
      return [...Deno.readDirSync(path)].filter((entry) => entry.isDirectory).map((entry) => entry.name);
    } catch {
      return [];
    }
  };
  const mounts = cgroupMountPoints(Deno.readTextFileSync(CGROUP_MOUNTS));
  const folders = () => mounts.flatMap((mount) => jobFolders(mount, jobId, listDirs));
  const ids = new Set(
    folders().map((path) => path.slice(path.lastIndexOf("/") + 1)).filter((name) => /^[0-9a-f]{64}$/.test(name)),
  );
  const filter = encodeURIComponent(JSON.stringify({ label: [`socker.job=${jobId}`] }));
  const listed = await dockerApi("GET", `/containers/json?all=1&filters=${filter}`);
  if (listed.status === 200) { for (const container of JSON.parse(listed.body)) ids.add(container.Id); }

  let failures = 0;
  await Promise.all([...ids].map(async (id) => {
    await dockerApi("DELETE", `/containers/${id}?force=true`).catch(() => undefined);
    const gone = await ensureContainerGone(id, 10_000);
    if (!gone) failures++;
    if (verbose || !gone) {
      console.error(`socker: job ${jobId}: container ${id.slice(0, 12)} ${gone ? "removed" : "NOT removed"}`);
    }
  }));
  for (const folder of folders()) {
    try {
      Deno.removeSync(folder);
      if (verbose) console.error(`socker: job ${jobId}: removed ${folder}`);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        failures++;
        console.error(`socker: job ${jobId}: cannot remove ${folder}: ${errorText(error)}`);
      }
    }
  }
  // Staging mounts left by a socker that was killed before it could undo them: all of this job's, and
  // those of containers that are gone, once older than a minute (a younger one may belong to a socker
  // still preparing its container).
  for (const entry of listDirs(STAGING_DIR)) {
    const { container, jobId: owner } = parseStagingName(entry);
    if (owner !== jobId) {
      const modified = Deno.statSync(`${STAGING_DIR}/${entry}`).mtime?.getTime() ?? Date.now();
      if (Date.now() - modified < STAGING_GRACE_MS) continue;
      const { status } = await dockerApi("GET", `/containers/${container}/json`).catch(() => ({ status: 0 }));
      if (status !== 404) continue;
    }
    await unstageMounts(entry);
  }
  console.log(`socker: job ${jobId}: ${ids.size} container(s) removed, ${failures} problem(s)`);
  await auditAfter(auditFacility(), {
    event: "cleanup",
    host: hostName(),
    job: jobId,
    containers: [...ids].map((id) => id.slice(0, 12)),
    outcome: failures === 0 ? "ok" : `${failures} problem(s)`,
  });
  return failures === 0 ? 0 : 1;
}

/** The docker CLI's account, from /etc/passwd (install.sh creates it as a local system user). */
function dockerAccount(): { uid: number; gid: number } {
  const account = passwdEntry(Deno.readTextFileSync("/etc/passwd"), DOCKER_USER);
  if (account === undefined || account.uid === 0) {
    throw new SockerError(`socker: the account '${DOCKER_USER}' is missing; ask your administrator to run install.sh`);
  }
  return account;
}

/** Who called, as sudo said (or root, when root ran this program directly). */
function sudoCaller(): { uid: number; gid: number; user: string } {
  return callerFromSudo(
    { SUDO_UID: Deno.env.get("SUDO_UID"), SUDO_GID: Deno.env.get("SUDO_GID"), SUDO_USER: Deno.env.get("SUDO_USER") },
    Deno.uid() ?? -1,
  );
}

/** Refuses unless root itself called (not a user through sudo): for cleanup and doctor. */
function requireRootCaller(refusal: string): void {
  if (sudoCaller().uid !== 0 || Deno.uid() !== 0) throw new SockerError(refusal);
}

/** The audit log's facility from socker.conf, or the default when the file cannot be read. */
function auditFacility(): string {
  try {
    return readSettings().logFacility;
  } catch {
    return DEFAULT_SETTINGS.logFacility;
  }
}

function requireRoot(): void {
  if (Deno.uid() !== 0) {
    throw new SockerError("socker: this program must be started through sudo by the 'socker' launcher");
  }
}

let cachedHostName: string | undefined;
function hostName(): string {
  cachedHostName ??= Deno.readTextFileSync("/proc/sys/kernel/hostname").trim();
  return cachedHostName;
}

function errorText(error: unknown): string {
  return printable(error instanceof Error ? error.message : String(error));
}

// ---------------------------------------------------------------------------------------------------------
// Help

export const HELP = `NAME
    socker - run an allowlisted Docker image as yourself, inside your Slurm job

SYNOPSIS
    socker [--version] [-h|--help] [-v|--verbose] COMMAND
    socker images
    socker [-v] run [RUN OPTIONS] IMAGE COMMAND [ARG...]
    socker cleanup --job ID              (root and Slurm's Epilog only)
    socker doctor                        (root only)

DESCRIPTION
    socker runs a container from an image the administrator allowed, as your own user and groups, never
    as root, with no capabilities and no way to add docker options. Inside a Slurm job the container is
    placed in the job's cgroup, so the job's CPU, memory and device limits hold, and it is killed when
    the job ends or is cancelled. stdin, stdout, stderr and the exit code pass through untouched.

OPTIONS
    -h, --help      Print this help and exit.
    --version       Print socker's version and exit.
    -v, --verbose   Also print the docker command socker runs, on stderr (after 'run': --verbose).

RUN OPTIONS
    -v, --volume SRC:DST[:ro]
                    Bind SRC (a folder or file you can read, under a folder your administrator lets
                    users mount) at DST. Read-only with :ro, or when you cannot write SRC. DST may not
                    cover /, /etc, /usr, /proc, /sys, /dev, /var and the like.
    -w, --workdir DIR
                    Working directory in the container (never under /proc). Default: your current
                    folder when it is mounted, else the image's.
    -e, --env NAME[=VALUE]
                    Set NAME in the container; a bare NAME takes your own value. HOME, USER and
                    LOGNAME are always yours.
    --no-tty        Never attach a terminal, even from a terminal.
    --no-stdin      Do not pass stdin on.
    --gpus          Give the container the GPUs allocated to your Slurm job (and no other).
    --verbose       As -v before 'run'.

COMMANDS
    images          List the allowed images and whether each is present on this node.
    run IMAGE COMMAND [ARG...]
                    Run COMMAND in a new container of IMAGE. Everything after IMAGE is the container's
                    command, passed on untouched. A terminal is attached when stdin and stdout are both
                    terminals. The container is removed when it ends.
    cleanup --job ID
                    Kill and remove every container of Slurm job ID. For Slurm's Epilog and root.
    doctor          Check the installation, the engine and Slurm's configuration: one line per check,
                    ok or how to fix it. Exit 0 only when every check passes. For root.

EXAMPLES
    socker images
    socker run centos cat /etc/system-release
    socker run ubuntu:22.04 sh -c 'echo $HOME; exit 3'
    socker run -v /scratch/$USER/in:/in:ro -e OMP_NUM_THREADS=4 myimage ./solve /in
    srun socker run myimage ./simulate --steps 100      (in a batch script: srun or exec, see README)

FILES
    ${ALLOWLIST_PATH}
                    The allowed images, one reference per line; root-owned, not group/other-writable.
    ${SETTINGS_PATH}
                    Optional settings (mounts, network, environment, require_job); same checks.
    ${DOCKER_PATH}
                    The docker CLI socker runs (as the user ${DOCKER_USER}, group docker).

EXIT STATUS
    0-124, 126-255  The container's own exit code; 128+N when it or socker was stopped by signal N.
    125             socker refused (bad usage, image not allowed, unsafe installation, engine down),
                    or docker itself failed to start the container. Nothing was started.
`;

// ---------------------------------------------------------------------------------------------------------
// Main

/** Runs socker with these arguments and returns its exit code; refusals are printed, never thrown. */
export async function main(args: readonly string[]): Promise<number> {
  try {
    const invocation = parseCommandLine(args);
    switch (invocation.command) {
      case "help":
        console.log(HELP);
        return 0;
      case "version":
        console.log(`socker ${SOCKER_VERSION}`);
        return 0;
      case "images":
        requireRoot();
        return await imagesCommand();
      case "run":
        return await runCommand(invocation);
      case "cleanup":
        return await cleanupCommand(invocation.jobId, invocation.verbose);
      case "doctor":
        return await doctorCommand();
    }
  } catch (error) {
    if (error instanceof SockerError) {
      console.error(error.message);
      return error.exitCode;
    }
    console.error(`socker: internal error: ${errorText(error)}`);
    return EXIT.REFUSED;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
