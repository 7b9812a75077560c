/**
 * socker: run an administrator-allowlisted Docker image as the calling user, safely, inside Slurm jobs.
 *
 * What socker guarantees (each point is tested against a real Docker engine and a real Slurm cluster):
 * - Only images listed in the root-owned allowlist run, matched after Docker's own name normalisation.
 *   socker pulls only when the administrator allows it (`pull = missing`), and then only the allowlisted
 *   reference, with the site's registry settings, never the user's credentials.
 * - The container runs as the caller (their uid, gid and groups from the user database), never as root,
 *   with all capabilities dropped and `no-new-privileges`, and with the caller's own resource limits.
 *   No container option is ever taken from the user: the container's specification is built only from
 *   socker's own decisions and the administrator's settings.
 * - Inside a Slurm job the container is created inside the calling step's cgroup, read from
 *   `/proc/self/cgroup` (never from the environment), so the job's CPU, memory and device limits hold; it
 *   gets the step's Slurm, PMI and PMIx variables and folder, so it is an ordinary task of the job.
 * - socker kills its container on SIGTERM, SIGINT and SIGHUP (and when its caller disappears), waits until
 *   it is gone, and never exits while it still runs. What a SIGKILL leaves behind is removed within a
 *   second by the node's watcher (`socker watch`), and else by Slurm's Epilog (`socker cleanup --job`)
 *   inside a job and by the reaper (`socker cleanup --orphans`) outside.
 * - What a user names (a bind mount, the working folder) is resolved and judged by the kernel with the
 *   user's own credentials, the very object judged is the one mounted, and nothing is created on the host
 *   as root where the user could not create it.
 * - The container's stdin, stdout, stderr and exit code pass through untouched; socker's own refusals exit
 *   125 with one line on stderr and change nothing.
 * - Every run, refusal, pull, stop and cleanup is one JSON line in the root-owned audit file
 *   (`/var/log/socker/audit.log`, copied to the system log when one runs); a run is never started unlogged.
 *
 * How privilege is obtained: the `socker` command users run is a root-owned shell launcher that `exec`s
 * `sudo -n` on a root-owned sh entry point, which sets socker's own resource limits and starts this
 * program with an empty environment. This program is never set-id (see README.md, "Security model"). It
 * trusts only what sudo and the kernel say, and talks to the Docker engine over its socket itself.
 *
 * The module reads top to bottom in the order data flows: errors and numbers, arguments, configuration,
 * identity, resource limits, cgroups and Slurm, data and devices, the run plan and the container's
 * specification, the C library, the engine's API, supervision, the audit log, then each command as its
 * four phases (read the facts, decide in one pure function, act, report), help, and main. Every decision
 * is a pure, exported function; side effects live only in the read and act functions.
 */

// ---------------------------------------------------------------------------------------------------------
// Installation constants. install.sh rewrites these lines in the installed copy; nothing at run time (no
// environment variable, no option) can move them.

export const PREFIX = "/usr/local"; // install.sh
export const CONFIG_DIR = "/etc/socker"; // install.sh
export const DOCKER_CONFIG_DIR = "/usr/local/lib/socker/docker-config"; // install.sh
export const SOCKER_VERSION = "0.2.0"; // install.sh

/** The Docker engine's socket: socker (root) opens it itself; no docker CLI runs on any socker path. */
export const DOCKER_SOCKET = "/var/run/docker.sock";
/**
 * The Podman API service's socket (`engine = podman`), in a root-only folder of its own (not STAGING_DIR,
 * whose entries cleanup sweeps): install.sh runs `podman system service` on it as root.
 */
export const PODMAN_SOCKET = "/run/socker-engine/podman.sock";
/** The engine API version socker speaks (Docker 20.10 and later). */
export const ENGINE_API = "/v1.41";

export const ALLOWLIST_PATH = `${CONFIG_DIR}/socker-images`;
export const SETTINGS_PATH = `${CONFIG_DIR}/socker.conf`;
/** The registry logins of the site (`config.json` made with `DOCKER_CONFIG=... docker login`), root's. */
export const REGISTRY_AUTH_PATH = `${DOCKER_CONFIG_DIR}/config.json`;
export const SLURM_CONF_PATH = "/etc/slurm/slurm.conf";
export const ENTRY_POINT = `${PREFIX}/libexec/socker/socker`;
export const EPILOG_HOOK = `${PREFIX}/libexec/socker/slurm-epilog`;
/** The record of truth of the audit log: root's folder (0700) and file (0600), rotated by logrotate. */
export const AUDIT_DIR = "/var/log/socker";
export const AUDIT_LOG = `${AUDIT_DIR}/audit.log`;
/** Where socker stages checked mounts, and keeps its locks: root's alone, out of every user's reach. */
export const STAGING_DIR = "/run/socker";
export const LOCK_DIR = "/run/socker-locks";
/** Where the kernel shows cgroup hierarchies (socker reads the mount table to find each controller). */
export const MOUNTINFO_PATH = "/proc/self/mountinfo";

// ---------------------------------------------------------------------------------------------------------
// Errors and exit codes: one error model. A refusal carries its kind and its reason; `main` adds the
// `socker: ` prefix, the hint, and the exit code. Nothing is started after a refusal.

/** Exit codes, following docker's convention. Listed in --help and README.md. */
export const EXIT = {
  /** socker refused (bad usage, image not allowed, unsafe installation, engine unreachable, ...). */
  REFUSED: 125,
} as const;

/**
 * What a refusal is about, which says who can fix it: `usage` (the command line; see --help), `policy`
 * (the administrator's rules, or the caller's own permissions and limits), `installation` (socker or the
 * site is set up wrongly: ask the administrator), `engine` (the Docker engine failed or is unreachable),
 * `audit` (the audit log cannot be written: nothing runs unlogged).
 */
export type RefusalKind = "usage" | "policy" | "installation" | "engine" | "audit";

/** The longest reason a refusal gives: it often quotes the caller's own text, which may be huge. */
export const REASON_MAX = 1000;

/**
 * A refusal: thrown by any phase, printed by `main` as one line, exit 125. Its reason is made printable
 * and bounded here, once for every refusal: it reaches the caller's terminal and the audit record, where
 * control bytes or a megabyte quoted from a `-v` argument must never go.
 */
export class Refusal extends Error {
  readonly reason: string;
  constructor(readonly kind: RefusalKind, reason: string) {
    const bounded = printable(reason, REASON_MAX);
    super(bounded);
    this.reason = bounded;
    this.name = "Refusal";
  }
}

/** Throws the refusal; for use in expressions (`x ?? refuse(...)`). */
export function refuse(kind: RefusalKind, reason: string): never {
  throw new Refusal(kind, reason);
}

const HELP_HINT = "see 'socker --help'";

/** The one line a refusal prints: `socker: <reason>` and, for usage errors, where to read more. */
export function refusalLine(refusal: Refusal): string {
  return `socker: ${refusal.reason}${refusal.kind === "usage" ? `; ${HELP_HINT}` : ""}`;
}

/**
 * Every character that can move a terminal or a reader's eye when text a user controls is printed: C0
 * controls, DEL, C1 controls (U+0080-U+009F: VTE and xterm act on them as CSI, OSC, ...), the bidirectional
 * embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069), the line and paragraph separators
 * (U+2028, U+2029), and lone UTF-16 surrogates (they cannot be written as UTF-8 and become U+FFFD).
 */
const UNSAFE_CHARACTERS =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * The one escaping of text a user controls, wherever it lands (the audit file and its system-log copy,
 * `ps`, doctor, cleanup, every error line): each unsafe character (UNSAFE_CHARACTERS) becomes an escape.
 * `text`: `\xHH` below U+0100, `\uHHHH` above, for a terminal line. `json`: for a line of JSON (already
 * made by JSON.stringify, which leaves C1, DEL and the rest raw): `\uHHHH`, so the JSON reads back as the
 * same string while its bytes hold no unsafe character.
 */
export function escapeUnsafe(text: string, mode: "text" | "json"): string {
  return text.replace(UNSAFE_CHARACTERS, (c) => {
    const code = c.charCodeAt(0);
    const hex = (width: number) => code.toString(16).padStart(width, "0");
    return mode === "text" && code < 0x100 ? `\\x${hex(2)}` : `\\u${hex(4)}`;
  });
}

/** Makes a user-supplied string safe to print on one line (escapeUnsafe), at most `max` characters. */
export function printable(text: string, max = 200): string {
  const escaped = escapeUnsafe(text, "text");
  if (escaped.length <= max) return escaped;
  // Never cut inside an escape, which would leave a bare backslash and half its digits.
  // Nor between the halves of a surrogate pair, which would leave a lone one.
  const cut = escaped.slice(0, max).replace(/\\(x[0-9a-f]?|u[0-9a-f]{0,3})?$|[\ud800-\udbff]$/, "");
  return `${cut}...`;
}

/**
 * A value that came as bytes which are not UTF-8 text (a file name or an argument in Latin-1, a stray
 * byte). Deno would decode it with U+FFFD, which names another object; socker never does: it refuses.
 */
export type NotText = { notText: Uint8Array };

const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The bytes as text, or NotText when they are not UTF-8. */
export function exactText(bytes: Uint8Array): string | NotText {
  try {
    return strictDecoder.decode(bytes);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error; // the strict decoder's "not UTF-8"
    return { notText: bytes.slice() };
  }
}

/** Bytes shown on one line: printable ASCII as is, every other byte as `\xHH`. */
export function showBytes(bytes: Uint8Array, max = 200): string {
  const shown = Array.from(
    bytes,
    (b) => b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`,
  );
  return printable(shown.join(""), max);
}

/**
 * socker's own arguments as the caller gave them: the last `count` NUL-ended items of /proc/self/cmdline
 * (before them come deno, its flags and the module, or the compiled binary), each as text or NotText.
 * Undefined when the command line does not hold `count` items.
 */
export function exactArguments(cmdline: Uint8Array, count: number): (string | NotText)[] | undefined {
  const items: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i < cmdline.length; i++) {
    if (cmdline[i] === 0) {
      items.push(cmdline.subarray(start, i));
      start = i + 1;
    }
  }
  if (start < cmdline.length) items.push(cmdline.subarray(start));
  if (items.length < count) return undefined;
  return items.slice(items.length - count).map(exactText);
}

/** The variables of an environment that are text: what rules that read a variable's value may see. */
export function textVariables(
  env: Readonly<Record<string, string | NotText>> | undefined,
): Record<string, string> | undefined {
  if (env === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(env).filter((entry): entry is [string, string] => typeof entry[1] === "string"),
  );
}

/**
 * The refusal for an argument that is not UTF-8 text: the engine's API is JSON text, and a decoded
 * argument (U+FFFD for each stray byte) would be another command, another folder: never passed on.
 */
export function notTextProblem(args: readonly (string | NotText)[]): string | undefined {
  const index = args.findIndex((arg) => typeof arg !== "string");
  if (index < 0) return undefined;
  const arg = args[index] as NotText;
  return `argument ${index + 1} ('${showBytes(arg.notText)}') is not UTF-8 text: socker passes only text to ` +
    `the engine and never a changed argument (rename the file or give the text in UTF-8)`;
}

export function errorText(error: unknown): string {
  return printable(error instanceof Error ? error.message : String(error));
}

/**
 * Whether an error is a fault in socker's own code (a bug), never a fact about the system it read: what
 * JavaScript throws for a wrong type, range or name, and a failed assertion. A bug is reported as one
 * (exit 125, "socker: internal error: ...", its stack in the audit log), never as an installation fault.
 * (The TypeError of a strict UTF-8 decoder, which socker expects, is caught where the decoder is called.)
 */
export function isBug(error: unknown): boolean {
  return error instanceof TypeError || error instanceof RangeError || error instanceof ReferenceError ||
    (error instanceof Error && error.name === "AssertionError");
}

/** The one line a bug is reported by. */
export function internalErrorLine(error: unknown): string {
  return `socker: internal error: ${errorText(error)}`;
}

/** The longest stack an audit record keeps of a bug. */
const INTERNAL_ERROR_STACK_MAX = 4000;

/** The audit record's rule for a bug: what it was and where (its stack, on one line, bounded). */
export function internalErrorRule(error: unknown): string {
  const stack = error instanceof Error && error.stack !== undefined ? error.stack : String(error);
  return printable(`internal error: ${stack}`, INTERNAL_ERROR_STACK_MAX);
}

/**
 * Reads a decimal integer within [min, max]; anything else (signs, spaces, leading zeros, huge values) is
 * undefined. Every integer socker reads from argv, settings, /proc, Slurm or the engine passes here, so a
 * hostile or broken source can never make socker loop, allocate or index without bound.
 */
export function boundedInt(text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined || !/^(0|[1-9][0-9]{0,15})$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) && value >= min && value <= max ? value : undefined;
}

/** The same for a JSON number from the engine or Slurm. */
export function boundedNumber(value: unknown, min: number, max: number): number | undefined {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= min && value <= max ? value : undefined;
}

/** Largest ids and counts socker accepts anywhere: uids and gids are 32-bit, job ids Slurm's 32-bit ids. */
export const ID_MAX = 4294967294;

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
  /** `--gpus`: the GPUs allocated to the Slurm job on this node. */
  gpus: boolean;
  /** `--entrypoint PROG` (`""`: none), as Docker's: replaces the image's entrypoint and its CMD. */
  entrypoint?: string;
  /** `--tmpfs DST[:size=N]`, in order. */
  tmpfs?: string[];
};

/** What the caller asked for, after parsing. Nothing in it has been checked against policy yet. */
export type Invocation =
  | { command: "help" }
  | { command: "version" }
  | { command: "images" }
  | { command: "ps" }
  | { command: "stop"; target: string }
  | { command: "pull"; image?: string }
  | { command: "run"; verbose: boolean; image: string; argv: string[]; options: RunOptions }
  | { command: "cleanup"; verbose: boolean; scope: { job: string } | { orphans: true } }
  | { command: "doctor" }
  | { command: "watch" };

const COMMANDS = ["images", "ps", "stop", "pull", "run", "cleanup", "doctor", "watch"] as const;

/** How many mounts, variables and arguments one run may ask for: enough for real work, not for abuse. */
export const MAX_VOLUMES = 32;
export const MAX_ENV = 256;
export const MAX_ARGS = 4096;
export const MAX_ARGS_BYTES = 1 << 20;

/** The options a command's own part of the command line gave (see parseCommandOptions). */
type CommandOptions = { verbose: boolean; jobId?: string; orphans: boolean; all: boolean; options: RunOptions };

/**
 * Parses socker's command line. Options are read only up to the COMMAND and, for `run`, up to IMAGE:
 * everything after IMAGE is the container's command, untouched (`sh -c '...'` keeps its `-c`).
 * Before `run`, `-v` means --verbose; after it, `-v` is a volume, as in docker.
 * Throws a usage Refusal naming the problem for anything it does not understand.
 */
export function parseCommandLine(args: readonly string[]): Invocation {
  if (args.length > MAX_ARGS || args.reduce((sum, arg) => sum + arg.length, 0) > MAX_ARGS_BYTES) {
    refuse("usage", `at most ${MAX_ARGS} arguments of ${MAX_ARGS_BYTES} bytes in all`);
  }
  let verbose = false;
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") return { command: "help" };
    if (arg === "--version") return { command: "version" };
    if (arg === "-v" || arg === "--verbose") verbose = true;
    else if (arg.startsWith("-")) refuse("usage", `unknown option '${printable(arg)}'`);
    else break;
  }
  if (i === args.length) refuse("usage", "no command given");
  const command = args[i++] as (typeof COMMANDS)[number];
  if (!COMMANDS.includes(command)) refuse("usage", `unknown command '${printable(command)}'`);
  const parsed = parseCommandOptions(command, args.slice(i), verbose);
  return parsed.help ? { command: "help" } : invocationOf(command, parsed, parsed.rest);
}

/**
 * The options of the command itself, up to its first argument (or `--` for run): what they set, and the
 * arguments left; `help` when -h or --help came among them.
 */
function parseCommandOptions(
  command: (typeof COMMANDS)[number],
  args: readonly string[],
  verbose: boolean,
): CommandOptions & { help: boolean; rest: readonly string[] } {
  const usage = (problem: string): never => refuse("usage", problem);
  const found: CommandOptions = {
    verbose,
    orphans: false,
    all: false,
    options: { volumes: [], env: [], noTty: false, noStdin: false, gpus: false },
  };
  const options = found.options;
  let i = 0;
  /** The value of an option given as `-x VALUE`, `--long VALUE` or `--long=VALUE`. */
  const valueOf = (arg: string, short: string, long: string): string | undefined => {
    if (arg === short || arg === long) {
      if (i + 1 >= args.length) usage(`${arg} needs a value`);
      return args[++i];
    }
    return arg.startsWith(`${long}=`) ? arg.slice(long.length + 1) : undefined;
  };
  for (; i < args.length; i++) {
    const arg = args[i];
    let value: string | undefined;
    if (arg === "-h" || arg === "--help") return { ...found, help: true, rest: [] };
    if (arg === "--verbose" || (arg === "-v" && command !== "run")) found.verbose = true;
    else if (command === "cleanup" && (value = valueOf(arg, "--job", "--job")) !== undefined) {
      if (boundedInt(value, 1, ID_MAX) === undefined) {
        usage(`--job needs a numeric Slurm job id, got '${printable(value)}'`);
      }
      found.jobId = value;
    } else if (command === "cleanup" && arg === "--orphans") found.orphans = true;
    else if (command === "pull" && arg === "--all") found.all = true;
    else if (command === "run" && (value = valueOf(arg, "-v", "--volume")) !== undefined) {
      options.volumes.push(value);
    } else if (command === "run" && (value = valueOf(arg, "-w", "--workdir")) !== undefined) {
      options.workdir = value;
    } else if (command === "run" && (value = valueOf(arg, "-e", "--env")) !== undefined) {
      options.env.push(value);
    } else if (command === "run" && arg === "--no-tty") options.noTty = true;
    else if (command === "run" && arg === "--no-stdin") options.noStdin = true;
    else if (command === "run" && arg === "--gpus") options.gpus = true;
    else if (command === "run" && (value = valueOf(arg, "--entrypoint", "--entrypoint")) !== undefined) {
      options.entrypoint = value;
    } else if (command === "run" && (value = valueOf(arg, "--tmpfs", "--tmpfs")) !== undefined) {
      (options.tmpfs ??= []).push(value);
    } else if (arg === "--" && command === "run") {
      i++;
      break;
    } else if (arg.startsWith("-")) {
      usage(`unknown option '${printable(arg)}' for '${command}'`);
    } else break;
  }
  return { ...found, help: false, rest: args.slice(i) };
}

/** The invocation a command's options and arguments make, or a usage refusal naming what is wrong. */
function invocationOf(
  command: (typeof COMMANDS)[number],
  { verbose, jobId, orphans, all, options }: CommandOptions,
  rest: readonly string[],
): Invocation {
  const usage = (problem: string): never => refuse("usage", problem);
  const noArguments = () => {
    if (rest.length > 0) usage(`'${command}' takes no arguments, got '${printable(rest[0])}'`);
  };
  switch (command) {
    case "images":
    case "ps":
    case "doctor":
    case "watch":
      noArguments();
      return { command };
    case "stop":
      if (rest.length !== 1) usage("'stop' needs one container NAME or ID (see 'socker ps')");
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(rest[0])) {
        usage(`'${printable(rest[0])}' is not a container name or id`);
      }
      return { command, target: rest[0] };
    case "pull":
      if (all === (rest.length === 1) || rest.length > 1) usage("'pull' needs one IMAGE or --all");
      return all ? { command } : { command, image: rest[0] };
    case "cleanup":
      noArguments();
      if ((jobId === undefined) === !orphans) usage("'cleanup' needs --job ID or --orphans");
      return { command, verbose, scope: jobId !== undefined ? { job: jobId } : { orphans: true } };
  }
  if (options.volumes.length > MAX_VOLUMES) usage(`at most ${MAX_VOLUMES} volumes`);
  if (options.env.length > MAX_ENV) usage(`at most ${MAX_ENV} environment variables`);
  if ((options.tmpfs?.length ?? 0) > MAX_VOLUMES) usage(`at most ${MAX_VOLUMES} --tmpfs`);
  if (rest.length === 0) usage("'run' needs an IMAGE");
  const [image, ...argv] = rest;
  if (image.startsWith("-")) usage(`IMAGE must not start with '-', got '${printable(image)}'`);
  return { command: "run", verbose, image, argv, options };
}

// ---------------------------------------------------------------------------------------------------------
// Configuration: image references, the allowlist, the settings, and the trust they need

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
  /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]{1,5})?$/;
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
      const port = domain.includes(":") ? boundedInt(domain.slice(domain.lastIndexOf(":") + 1), 1, 65535) : 1;
      if (port === undefined) return `invalid registry port in '${domain}'`;
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

export type AllowlistEntry = { line: number; text: string; canonical: string; ref: ImageRef };

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
      refuse(
        "installation",
        `${fileName}:${index + 1}: '${printable(content)}' is not a valid image reference (${ref}); ` +
          "ask your administrator to fix the allowlist",
      );
    }
    entries.push({ line: index + 1, text: content, canonical: canonicalImage(ref), ref });
  });
  return entries;
}

/** Returns the allowlist entry the requested image matches exactly after normalisation, if any. */
export function matchImage(allowlist: readonly AllowlistEntry[], requested: ImageRef): AllowlistEntry | undefined {
  const wanted = canonicalImage(requested);
  return allowlist.find((entry) => entry.canonical === wanted);
}

/** The allowlist entry a user's image text names, or the refusal that says why there is none. */
export function allowedImage(allowlist: readonly AllowlistEntry[], text: string): AllowlistEntry {
  const requested = parseImageRef(text);
  if (typeof requested === "string") {
    refuse("policy", `'${printable(text)}' is not a valid image reference: ${requested}`);
  }
  return matchImage(allowlist, requested) ??
    refuse(
      "policy",
      `image '${printable(text)}' is not allowed on this cluster; 'socker images' lists the allowed ones`,
    );
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

export const CONFIG_MAX_BYTES = 1 << 20;

/**
 * A root-owned configuration file as read: its text, and the ownership of the file and every folder above
 * it, both along the path as written and along its real path (a symlink anywhere must not lead out of
 * root's hands). `missing` when it does not exist; `problem` when it could not be read.
 */
export type ConfigFile =
  | { path: string; missing: true }
  | { path: string; problem: string }
  | { path: string; bytes: Uint8Array; written: Ownership[]; real: Ownership[] };

/**
 * The text of a configuration file socker may trust, or the refusal: missing (when required), untrusted
 * ownership or mode anywhere along either chain, larger than 1 MiB, or not UTF-8 text.
 */
export function trustedText(file: ConfigFile, required: boolean): string | undefined {
  if ("missing" in file) {
    return required
      ? refuse("installation", `${file.path} is missing; socker is not fully installed, ask your administrator`)
      : undefined;
  }
  if ("problem" in file) refuse("installation", `cannot read ${file.path}: ${file.problem}`);
  const reason = untrustedReason(file.real) ?? untrustedReason([file.real[0], ...file.written.slice(1)]);
  if (reason !== undefined) {
    refuse("installation", `refusing to trust ${file.path}: ${reason}; ask your administrator to fix it`);
  }
  if (file.bytes.length > CONFIG_MAX_BYTES) {
    refuse("installation", `${file.path} is larger than ${CONFIG_MAX_BYTES} bytes; ask your administrator`);
  }
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(file.bytes);
    if (text.includes("\0")) throw new TypeError("NUL byte");
    return text;
  } catch (error) {
    if (!(error instanceof TypeError)) throw error; // the strict decoder's "not UTF-8", or the NUL above
    return refuse("installation", `${file.path} is not a text file; ask your administrator to fix it`);
  }
}

/** The allowlist's entries, from its file as read: it must exist and be trusted (see trustedText). */
export function allowlistFrom(file: ConfigFile): AllowlistEntry[] {
  return parseAllowlist(trustedText(file, true)!, ALLOWLIST_PATH);
}

/** The administrator's settings in socker.conf; every key has a safe default. */
export type Settings = {
  /** `require_job`: refuse to run outside a Slurm job (for compute nodes). */
  requireJob: boolean;
  /** `network`: the engine's default `bridge`, `none`, or the node's own (`host`, for multi-node MPI). */
  network: "bridge" | "none" | "host";
  /** `ipc`, `pid`, `uts`: the container's own namespace (`private`) or the node's (`host`). */
  ipc: "private" | "host";
  pid: "private" | "host";
  uts: "private" | "host";
  /** `default_mounts`: mounted in every run: `home`, `workdir` (the caller's folder) or absolute paths. */
  defaultMounts: string[];
  /** `mount_prefixes`: folders under which users may mount more with `-v` (whole path components). */
  mountPrefixes: string[];
  /** `forbidden_destinations`: added to the built-in list of places no mount may cover. */
  forbiddenDestinations: string[];
  /** `env_set NAME=VALUE`: always set in the container. */
  envSet: Record<string, string>;
  /** `env_deny`: never passed into the container, neither with `-e` nor through `env_pass`. */
  envDeny: string[];
  /** `env_pass`: glob patterns of the caller's variables passed into every container (`OMP_* NCCL_*`). */
  envPass: string[];
  /** `log_facility`: the syslog facility of the audit log's copy in the system log. */
  logFacility: string;
  /** `pull`: `never` (images are loaded by the administrator) or `missing` (pulled on first use). */
  pull: "never" | "missing";
  /**
   * `user_filesystems`: `refuse` (default) or `allow` mount sources and working folders on filesystems a
   * user mounted (FUSE through fusermount): one that stops answering would hang socker and the engine.
   */
  userFilesystems: "refuse" | "allow";
  /** `env_inherit`: the caller's environment passes into the container (but NOT_INHERITED), as in pyxis. */
  envInherit: boolean;
  /** `shm_size`: /dev/shm's size, a share of the job's memory limit (`50%`) or a size (`1G`), see shmBytes. */
  shmSize: { percent: number } | { bytes: number };
  /** `rendezvous_variables`: inside a step, PyTorch's RANK, WORLD_SIZE, MASTER_ADDR... from Slurm's. */
  rendezvousVariables: boolean;
  /** `default_gpus`: a job's containers get its GPUs on this node without --gpus. */
  defaultGpus: boolean;
  /** `share`: `step` (the tasks of a step on a node share one container, see planShare) or `none`. */
  share: "step" | "none";
  /** `engine`: the engine socker talks to over its Docker-compatible API: `docker` or `podman`. */
  engine: EngineKind;
  /** `socket`: the engine's socket, when not its default (DOCKER_SOCKET, PODMAN_SOCKET). */
  socket?: string;
};

/** The engines socker speaks to. */
export type EngineKind = "docker" | "podman";

/** Facilities the audit log's system-log copy may use. */
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

export const DEFAULT_SETTINGS: Readonly<Settings> = Object.freeze({
  requireJob: false,
  network: "bridge",
  ipc: "private",
  pid: "private",
  uts: "private",
  defaultMounts: ["home", "workdir"],
  mountPrefixes: ["/home"],
  forbiddenDestinations: [],
  envSet: {},
  envDeny: [],
  envPass: [],
  logFacility: "authpriv",
  pull: "never",
  userFilesystems: "refuse",
  envInherit: true,
  shmSize: { percent: 50 },
  rendezvousVariables: true,
  defaultGpus: false,
  share: "step",
  engine: "docker",
});

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** An env_pass pattern: a variable name in which `*` and `?` stand for any characters. */
const ENV_PATTERN = /^[A-Za-z0-9_*?]+$/;

/** Whether a path is absolute and clean: no `.`, `..`, empty components or trailing slash. */
export function isCleanAbsolute(path: string): boolean {
  return path === "/" ||
    (/^\/[^\0]*[^/]$/.test(path) && !path.slice(1).split("/").some((p) => ["", ".", ".."].includes(p)));
}

/** One setting's parser: the value's words and raw text in, the settings changed or a reason thrown. */
type SettingParser = (value: string, words: string[], settings: Settings) => void;

const choice =
  <K extends keyof Settings>(key: K, name: string, allowed: readonly string[]): SettingParser =>
  (value, _words, settings) => {
    if (!allowed.includes(value)) throw new Error(`${name} must be ${allowed.join(" or ")}, not '${printable(value)}'`);
    (settings[key] as string) = value;
  };

const yesNo = <K extends keyof Settings>(key: K, name: string): SettingParser => (value, _words, settings) => {
  if (value !== "yes" && value !== "no") throw new Error(`${name} must be yes or no`);
  (settings[key] as boolean) = value === "yes";
};

/** The largest size socker reads (`shm_size`, `--tmpfs size=`): 1 TiB. */
export const SIZE_MAX = 2 ** 40;

/** Reads a size in bytes: digits with an optional k, m, g or t (powers of 1024, as Docker); within SIZE_MAX. */
export function sizeBytes(text: string): number | undefined {
  const match = /^([0-9]{1,13})([kmgt]?)b?$/i.exec(text);
  if (match === null) return undefined;
  const bytes = Number(match[1]) * 1024 ** " kmgt".indexOf((match[2] || " ").toLowerCase());
  return bytes >= 1 && bytes <= SIZE_MAX ? bytes : undefined;
}

const cleanPaths = (name: string, words: string[]): string[] => {
  for (const word of words) {
    if (!isCleanAbsolute(word)) throw new Error(`${name}: '${printable(word)}' is not a clean absolute path`);
  }
  return words;
};

/** Every key socker.conf takes, and how its value is read. */
const SETTING_PARSERS: Record<string, SettingParser> = {
  require_job: (value, _words, settings) => {
    if (value !== "yes" && value !== "no") throw new Error("require_job must be yes or no");
    settings.requireJob = value === "yes";
  },
  network: choice("network", "network", ["bridge", "none", "host"]),
  ipc: choice("ipc", "ipc", ["private", "host"]),
  pid: choice("pid", "pid", ["private", "host"]),
  uts: choice("uts", "uts", ["private", "host"]),
  pull: choice("pull", "pull", ["never", "missing"]),
  user_filesystems: choice("userFilesystems", "user_filesystems", ["refuse", "allow"]),
  share: choice("share", "share", ["step", "none"]),
  engine: choice("engine", "engine", ["docker", "podman"]),
  socket: (value, words, settings) => {
    if (words.length !== 1 || !isCleanAbsolute(value) || value === "/") {
      throw new Error(`socket must be one clean absolute path, not '${printable(value)}'`);
    }
    settings.socket = value;
  },
  log_facility: choice("logFacility", "log_facility", LOG_FACILITIES),
  default_mounts: (_value, words, settings) => {
    for (const word of words) {
      if (word !== "home" && word !== "workdir" && !isCleanAbsolute(word)) {
        throw new Error(`default_mounts: '${printable(word)}' is not home, workdir or a clean absolute path`);
      }
    }
    settings.defaultMounts = words;
  },
  mount_prefixes: (_value, words, settings) => {
    settings.mountPrefixes = cleanPaths("mount_prefixes", words);
    if (words.includes("/")) throw new Error("mount_prefixes: '/' would allow mounting the whole host");
  },
  forbidden_destinations: (_value, words, settings) => {
    settings.forbiddenDestinations = cleanPaths("forbidden_destinations", words);
  },
  env_set: (value, _words, settings) => {
    const equals = value.indexOf("=");
    const name = value.slice(0, equals);
    if (equals < 1 || !ENV_NAME.test(name)) throw new Error("env_set takes NAME=VALUE");
    settings.envSet[name] = value.slice(equals + 1);
  },
  env_deny: (_value, words, settings) => {
    for (const word of words) {
      if (!ENV_NAME.test(word)) throw new Error(`env_deny: '${printable(word)}' is not a variable name`);
    }
    settings.envDeny.push(...words);
  },
  env_pass: (_value, words, settings) => {
    for (const word of words) {
      if (!ENV_PATTERN.test(word)) {
        throw new Error(`env_pass: '${printable(word)}' is not a variable name or a pattern of * and ?`);
      }
    }
    settings.envPass.push(...words);
  },
  env_inherit: yesNo("envInherit", "env_inherit"),
  rendezvous_variables: yesNo("rendezvousVariables", "rendezvous_variables"),
  default_gpus: yesNo("defaultGpus", "default_gpus"),
  shm_size: (value, _words, settings) => {
    const percent = /^([1-9][0-9]?|100)%$/.exec(value);
    const bytes = sizeBytes(value);
    if (percent === null && bytes === undefined) {
      throw new Error(
        `shm_size must be a share of the job's memory (50%) or a size (512M, 2G), not '${printable(value)}'`,
      );
    }
    settings.shmSize = percent !== null ? { percent: Number(percent[1]) } : { bytes: bytes! };
  },
  docker: () => {
    throw new Error("'docker' is obsolete: socker no longer runs the docker CLI; remove the line");
  },
};

/**
 * Parses socker.conf: `key = value` lines, `#` comments; list values are separated by blanks. An unknown
 * key or a bad value makes the whole file invalid, naming file and line, so that a typo never silently
 * weakens a policy. Throws an installation Refusal.
 */
export function parseSettings(text: string, fileName: string): Settings {
  const settings: Settings = { ...DEFAULT_SETTINGS, envSet: {}, envDeny: [], envPass: [] };
  text.split("\n").forEach((raw, index) => {
    const content = raw.replace(/#.*$/, "").trim();
    if (content === "") return;
    const fail = (why: string): never => refuse("installation", `${fileName}:${index + 1}: ${why}`);
    const match = /^([a-z_]+)\s*=\s*(.*)$/.exec(content);
    if (!match) fail(`expected 'key = value', got '${printable(content)}'`);
    const [, key, value] = match!;
    const parser = Object.hasOwn(SETTING_PARSERS, key) ? SETTING_PARSERS[key] : undefined;
    if (parser === undefined) fail(`unknown setting '${printable(key)}'`);
    try {
      parser!(value, value.split(/\s+/).filter((word) => word !== ""), settings);
    } catch (error) {
      if (isBug(error)) throw error;
      fail(errorText(error));
    }
  });
  return settings;
}

/** The settings from socker.conf, which is optional but, when present, must be as trusted as the allowlist. */
export function settingsFrom(file: ConfigFile): Settings {
  const text = trustedText(file, false);
  return text === undefined ? { ...DEFAULT_SETTINGS } : parseSettings(text, file.path);
}

// ---------------------------------------------------------------------------------------------------------
// Identity: who called, from what sudo and the user database say

/** Who sudo says called: the caller's uid, current gid and name. */
export type SudoIdentity = { uid: number; gid: number; user: string };

/** The person socker acts for: sudo's word checked against the user database. */
export type Caller = SudoIdentity & { groups: number[]; home?: string };

/** What the user database (NSS: files, LDAP, SSSD, ...) says of a user. */
export type UserRecord = { uid: number; gid: number; home?: string; groups: number[] };

/**
 * Decides who the caller is from the variables sudo sets (sudo resets the environment first, so they
 * cannot be forged through it). Without them, the caller is whoever runs this process: root running
 * socker directly. Throws when they are malformed.
 */
export function parseSudoIdentity(
  env: { SUDO_UID?: string; SUDO_GID?: string; SUDO_USER?: string },
  processUid: number,
): SudoIdentity {
  const { SUDO_UID = "", SUDO_GID = "", SUDO_USER = "" } = env;
  if (SUDO_UID === "" && SUDO_GID === "" && SUDO_USER === "") {
    return { uid: processUid, gid: processUid === 0 ? 0 : -1, user: processUid === 0 ? "root" : "" };
  }
  const uid = boundedInt(SUDO_UID, 0, ID_MAX);
  const gid = boundedInt(SUDO_GID, 0, ID_MAX);
  if (uid === undefined || gid === undefined) {
    refuse("installation", "SUDO_UID/SUDO_GID are not numbers; socker must be started through sudo");
  }
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,255}\$?$/.test(SUDO_USER)) {
    refuse("installation", `SUDO_USER '${printable(SUDO_USER)}' is not a valid user name`);
  }
  return { uid: uid!, gid: gid!, user: SUDO_USER };
}

/** Whether root itself runs this program (not a user through sudo): the callers of cleanup and doctor. */
export function isRootItself(sudo: SudoIdentity, processUid: number): boolean {
  return sudo.uid === 0 && processUid === 0;
}

/**
 * Combines what sudo said with what the user database says: the uid must agree, the primary group is the
 * caller's current one (sudo's SUDO_GID), the supplementary groups are the database's. Root is refused:
 * socker never runs a container as uid 0 or gid 0.
 */
export function checkCaller(sudo: SudoIdentity, database: UserRecord | string): Caller {
  if (sudo.uid === 0) {
    refuse("policy", "refusing to run a container as root; run socker as the user the container should run as");
  }
  if (typeof database === "string") refuse("policy", database);
  if (database.uid !== sudo.uid) {
    refuse("policy", `the user database says '${sudo.user}' is uid ${database.uid}, sudo says ${sudo.uid}; refusing`);
  }
  const groups = [...new Set(database.groups)].filter((g) => g !== sudo.gid).sort((a, b) => a - b);
  if (sudo.gid === 0 || groups.includes(0)) {
    refuse("policy", `refusing to run a container with the root group (gid 0) for '${sudo.user}'`);
  }
  return { ...sudo, groups, home: database.home };
}

// ---------------------------------------------------------------------------------------------------------
// Resource limits: the caller's limits go to the container; socker's own are raised so that the caller
// cannot kill or starve the supervisor through them (sudo hands the command the caller's limits).

/** One limit: soft and hard, `Infinity` for unlimited, in the kernel's units (seconds, bytes, counts). */
export type Limit = { soft: number; hard: number };
export type Limits = Record<string, Limit>;

/**
 * The rows of /proc/self/limits, in the kernel's order of resource numbers (RLIMIT_CPU is 0): the kernel's
 * name of each, socker's (docker's `Ulimits` name too; docker cannot pass the address space on).
 */
export const LIMIT_ROWS: readonly { row: string; name: string; resource: number; docker?: string }[] =
  ("cpu cpu time, fsize file size, data data size, stack stack size, core core file size, rss resident set, " +
    "nproc processes, nofile open files, memlock locked memory, as address space, locks file locks, " +
    "sigpending pending signals, msgqueue msgqueue size, nice nice priority, rtprio realtime priority, " +
    "rttime realtime timeout").split(", ").map((entry, resource) => {
      const [name, ...words] = entry.split(" ");
      return { row: `Max ${words.join(" ")}`, name, resource, docker: name === "as" ? undefined : name };
    });

/** Largest finite limit socker accepts: beyond 2^53 a number loses precision (the kernel's own are far below). */
const LIMIT_MAX = Number.MAX_SAFE_INTEGER;

/**
 * Parses the text of /proc/<pid>/limits (`Max open files  1024  4096  files`). Every row socker knows must
 * be present with values it can read; anything else is an installation refusal (the entry point passes
 * this text, so a broken one means a broken installation).
 */
export function parseProcLimits(text: string): Limits {
  const limits: Limits = {};
  const value = (word: string) => word === "unlimited" ? Infinity : boundedInt(word, 0, LIMIT_MAX);
  for (const line of text.split("\n")) {
    const spec = LIMIT_ROWS.find((row) => line.startsWith(`${row.row} `));
    if (spec === undefined) continue;
    const words = line.slice(spec.row.length).trim().split(/\s+/);
    const [soft, hard] = words.map(value);
    // A limit the caller set that JavaScript cannot hold exactly (above 2^53) cannot be passed on as it is,
    // and passing on another would change it: said as the caller's to change, not as a fault of the node.
    const huge = words.slice(0, 2).find((word) => /^\d{16,}$/.test(word) && value(word) === undefined);
    if (huge !== undefined && words.slice(0, 2).every((word) => /^(\d+|unlimited)$/.test(word))) {
      refuse(
        "usage",
        `your ${spec.row.replace(/^Max /, "").toLowerCase()} limit (${huge}) is too large for socker to pass on ` +
          `exactly: set it to unlimited or below ${LIMIT_MAX}`,
      );
    }
    if (soft === undefined || hard === undefined || soft > hard) {
      refuse("installation", `cannot read the resource limit '${printable(line)}'`);
    }
    limits[spec.name] = { soft: soft!, hard: hard! };
  }
  const absent = LIMIT_ROWS.filter((row) => limits[row.name] === undefined).map((row) => row.row);
  if (absent.length > 0) refuse("installation", `the resource limits lack ${absent.join(", ")}`);
  return limits;
}

/** What socker itself needs to finish supervising a container, whatever the caller's limits. */
export type SupervisorNeeds = { cpu: number; nofile: number; fsize: number };

/**
 * What socker needs: CPU seconds (measured: ~0.1 s for a quiet run; copying output costs more, so socker
 * stops the container in good order when its own CPU time runs low, see planOwnLimits), open files (~40
 * for a run with 32 mounts), and no file-size limit: the audit log grows with every user's runs, and a
 * limit below its size would cost this run its end record.
 */
export const SUPERVISOR_NEEDS: Readonly<SupervisorNeeds> = { cpu: 10, nofile: 128, fsize: Infinity };
/** CPU seconds kept back below a finite hard limit, to stop the container and log the end after SIGXCPU. */
export const SUPERVISOR_CPU_RESERVE = 5;

/** How each limit socker needs is named to a user. */
const LIMIT_WORDS: Record<
  keyof SupervisorNeeds,
  { what: string; flag: string; unit: (n: number) => string; raise: string }
> = {
  cpu: { what: "CPU-time", flag: "-t", unit: (n) => `${n} s`, raise: "ulimit -t unlimited" },
  nofile: { what: "open-files", flag: "-n", unit: (n) => `${n}`, raise: "ulimit -n 1024" },
  fsize: {
    what: "file-size",
    flag: "-f",
    unit: (n) => `${Math.ceil(n / 1024)} KiB`,
    raise: "a new login shell has none; 'ulimit -S -f' sets a soft one",
  },
};

/**
 * Decides socker's own limits, so that nothing the caller set can stop the supervisor mid-run: every soft
 * limit raised to its hard limit; where root may raise hard limits (`canRaiseHard`: CAP_SYS_RESOURCE), the
 * CPU time and file size unlimited and the open files at least what socker needs; where it may not, a hard
 * limit below what socker needs is a refusal naming the limit, and a finite CPU time keeps
 * SUPERVISOR_CPU_RESERVE seconds back: the kernel's SIGXCPU at the soft limit then makes socker stop the
 * container and log its end, instead of the SIGKILL at the hard limit. Returns the setrlimit calls.
 */
export function planOwnLimits(
  current: Limits,
  needs: SupervisorNeeds,
  canRaiseHard: boolean,
): { resource: number; name: string; soft: number; hard: number }[] {
  const changes: { resource: number; name: string; soft: number; hard: number }[] = [];
  for (const row of LIMIT_ROWS) {
    const limit = current[row.name];
    if (limit === undefined) continue;
    const need = (needs as Record<string, number>)[row.name] ?? 0;
    const unlimitedWhenPossible = row.name === "cpu" || row.name === "fsize";
    let hard = limit.hard;
    if (canRaiseHard && unlimitedWhenPossible) hard = Infinity;
    else if (hard < need) {
      const words = LIMIT_WORDS[row.name as keyof SupervisorNeeds];
      if (!canRaiseHard) {
        refuse(
          "policy",
          `your ${words.what} limit (ulimit ${words.flag}) is ${words.unit(hard)}; socker needs ` +
            `${need === Infinity ? "it unlimited" : `at least ${words.unit(need)}`} to supervise the container ` +
            `(${words.raise})`,
        );
      }
      hard = need;
    }
    let soft = hard;
    // The stack stays as it is: an unlimited soft stack changes how the kernel lays out memory.
    if (row.name === "stack") soft = Math.min(Math.max(limit.soft, 8 << 20), hard);
    if (row.name === "cpu" && hard !== Infinity) soft = hard - SUPERVISOR_CPU_RESERVE;
    if (soft !== limit.soft || hard !== limit.hard) {
      changes.push({ resource: row.resource, name: row.name, soft, hard });
    }
  }
  return changes;
}

/** The container's limits: exactly the caller's, as they reached socker, for every limit docker can set. */
export function containerUlimits(caller: Limits): { Name: string; Soft: number; Hard: number }[] {
  const value = (n: number) => (n === Infinity ? -1 : n);
  return LIMIT_ROWS.filter((row) => row.docker !== undefined && caller[row.name] !== undefined).map((row) => ({
    Name: row.docker!,
    Soft: value(caller[row.name].soft),
    Hard: value(caller[row.name].hard),
  }));
}

/**
 * The container's limits as an engine whose runtime may not raise limits can set them: each at most the
 * engine's own hard limit (`-1` is unlimited). Podman's runc inherits the service's limits and, without
 * CAP_SYS_RESOURCE, cannot set one above them: the container would not start. Lowered, never raised.
 */
export function ulimitsWithin(
  ulimits: readonly { Name: string; Soft: number; Hard: number }[],
  engine: Limits,
): { Name: string; Soft: number; Hard: number }[] {
  const bound = (value: number, max: number) => (max === Infinity ? value : value === -1 ? max : Math.min(value, max));
  return ulimits.map((ulimit) => {
    const name = LIMIT_ROWS.find((row) => row.docker === ulimit.Name)?.name;
    const hard = name === undefined || engine[name] === undefined ? Infinity : engine[name].hard;
    return { Name: ulimit.Name, Soft: bound(ulimit.Soft, hard), Hard: bound(ulimit.Hard, hard) };
  });
}

// ---------------------------------------------------------------------------------------------------------
// cgroups and Slurm: which job step the caller is in, from /proc/self/cgroup (written by the kernel; the
// caller cannot move a process into a cgroup of another job), and what Slurm's own files and records say.
// Environment variables never count.

/** The Slurm job step socker runs in, and the cgroup its container is created under. */
export type JobStep = {
  version: 1 | 2;
  jobId: string;
  stepId: string;
  /** The node's name as its cgroup root says it (`slurm_n1`, `n1_slurmstepd.scope`), if it says. */
  node?: string;
  /** The container's cgroup parent: the step's cgroup, relative to each hierarchy's root. */
  parent: string;
};

const V1_SLURM_PATH =
  /^\/slurm(?:_([A-Za-z0-9._-]+))?\/uid_(\d+)\/job_(\d+)\/step_(\d+|batch|extern|interactive)(?:\/task_(\d+))?$/;
const V2_SLURM_PATH =
  /^((?:\/[A-Za-z0-9@:._-]+)*\/(?:([A-Za-z0-9._-]+)_)?slurmstepd\.scope\/job_(\d+)\/step_(\d+|batch|extern|interactive)\/user)\/task_(\d+|special)$/;
/** Anything that says "this process is in a Slurm job": if one of these shows, socker must resolve it. */
const SLURM_HINT = /(^|\/)(slurm(_[^/]*)?|[^/]*slurmstepd\.scope|job_\d+|step_[a-z0-9]+)(\/|$)/;
/** Step numbers and task numbers socker accepts (Slurm's own are far smaller). */
const STEP_MAX = 1_000_000;

/**
 * Finds the Slurm job step from the text of /proc/self/cgroup. Returns undefined outside any job. Throws
 * (fail closed) when the process is visibly inside a Slurm cgroup that cannot be resolved safely: paths
 * with `.` or `..`, another user's job, ids out of range, or controllers that disagree about the job.
 */
export function jobStepFromCgroup(procSelfCgroup: string, uid: number): JobStep | undefined {
  const refuseHere = (why: string): never =>
    refuse("policy", `cannot place the container in this Slurm job's cgroup: ${why}; refusing to run`);
  const lines = procSelfCgroup.split("\n").filter((line) => line !== "");
  if (lines.length > 64) refuseHere("/proc/self/cgroup has more lines than any kernel writes");
  const entries = lines.map((line) => {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line);
    const hierarchy = boundedInt(match?.[1], 0, 1024);
    if (!match || hierarchy === undefined) refuseHere(`cannot read the line '${printable(line)}'`);
    return { hierarchy: hierarchy!, controllers: match![2], path: match![3] };
  });
  const hinted = entries.filter((entry) => SLURM_HINT.test(entry.path));
  if (hinted.length === 0) return undefined;
  for (const entry of hinted) {
    if (entry.path.split("/").some((part) => part === "." || part === "..") || entry.path.includes("//")) {
      refuseHere(`the path '${printable(entry.path)}' is not normalised`);
    }
  }
  const ids = (job: string, step: string, what: string) => {
    if (boundedInt(job, 1, ID_MAX) === undefined) refuseHere(`the job id in '${printable(what)}' is out of range`);
    if (/^\d+$/.test(step) && boundedInt(step, 0, STEP_MAX) === undefined) {
      refuseHere(`the step id in '${printable(what)}' is out of range`);
    }
  };

  const v1 = hinted.filter((entry) => entry.hierarchy !== 0);
  if (v1.length > 0) {
    const steps = new Set<string>();
    let found: JobStep | undefined;
    for (const entry of v1) {
      const match = V1_SLURM_PATH.exec(entry.path);
      if (!match) refuseHere(`'${printable(entry.path)}' (${entry.controllers}) is not a Slurm step cgroup`);
      const [, node, owner, jobId, stepId] = match!;
      if (boundedInt(owner, 0, ID_MAX) !== uid) {
        refuseHere(`'${printable(entry.path)}' belongs to uid ${owner}, not to you (${uid})`);
      }
      ids(jobId, stepId, entry.path);
      const parent = `/slurm${node !== undefined ? `_${node}` : ""}/uid_${owner}/job_${jobId}/step_${stepId}`;
      steps.add(parent);
      found = { version: 1, jobId, stepId, node, parent };
    }
    if (steps.size > 1) refuseHere(`the controllers disagree about the job step (${[...steps].join(", ")})`);
    return found;
  }
  const unified = hinted.filter((entry) => entry.hierarchy === 0 && entry.controllers === "");
  if (unified.length !== 1 || hinted.length !== 1) refuseHere("unexpected cgroup v2 layout");
  const match = V2_SLURM_PATH.exec(unified[0].path);
  if (!match) return refuseHere(`'${printable(unified[0].path)}' is not a Slurm task cgroup`);
  const [, parent, node, jobId, stepId] = match;
  ids(jobId, stepId, unified[0].path);
  return { version: 2, jobId, stepId, node, parent };
}

/**
 * Checks that the engine can nest containers under Slurm's cgroups: only the cgroupfs driver takes a
 * plain cgroup path as parent, and engine and Slurm must see the same cgroup version.
 */
export function engineCgroupProblem(info: { CgroupDriver?: unknown; CgroupVersion?: unknown }, job: JobStep) {
  if (info.CgroupDriver !== "cgroupfs") {
    return `the Docker engine uses the '${printable(String(info.CgroupDriver))}' cgroup driver, which cannot ` +
      'place containers in Slurm\'s cgroups; ask your administrator to set "exec-opts": ' +
      '["native.cgroupdriver=cgroupfs"] in /etc/docker/daemon.json';
  }
  if (String(info.CgroupVersion ?? "1") !== String(job.version)) {
    return `the Docker engine sees cgroup v${
      printable(String(info.CgroupVersion))
    } but this job is on cgroup v${job.version}`;
  }
  return undefined;
}

/** One cgroup hierarchy mounted on this node: where, and (v1) which controllers it holds. */
export type CgroupMount = { path: string; version: 1 | 2; controllers: string[] };

/** The cgroup hierarchies mounted on this node (v1 controllers and the v2 unified tree), from mountinfo. */
export function cgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const [before, after] = line.split(" - ");
    if (after === undefined) continue;
    const [type, , superOptions = ""] = after.split(" ");
    if (type !== "cgroup" && type !== "cgroup2") continue;
    const path = before.split(" ")[4].replace(/\\(\d{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
    const controllers = type === "cgroup2"
      ? []
      : superOptions.split(",").filter((option) =>
        !["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children"].includes(option) &&
        !option.startsWith("release_agent=")
      );
    mounts.push({ path, version: type === "cgroup2" ? 2 : 1, controllers });
  }
  return mounts;
}

/** One line of /proc/self/mountinfo: the mount's id, where it is, its type and its filesystem's options. */
export type MountEntry = { id: number; mountPoint: string; fsType: string; source: string; superOptions: string[] };

/** The mount table (/proc/self/mountinfo) by mount id; lines that do not parse are left out. */
export function parseMountTable(mountinfo: string): Map<number, MountEntry> {
  const table = new Map<number, MountEntry>();
  const unescape = (text: string) => text.replace(/\\(\d{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));
  for (const line of mountinfo.split("\n")) {
    const [before, after] = line.split(" - ");
    if (after === undefined) continue;
    const fields = before.split(" ");
    const id = boundedInt(fields[0], 0, 2 ** 31);
    const [fsType, source = "", superOptions = ""] = after.split(" ");
    if (id === undefined || fields.length < 6 || !fsType) continue;
    table.set(id, {
      id,
      mountPoint: unescape(fields[4]),
      fsType,
      source: unescape(source),
      superOptions: superOptions.split(","),
    });
  }
  return table;
}

/**
 * Why socker must not look into a mount, or undefined. A FUSE filesystem (`fuse`, `fuseblk`, `fuse.*`)
 * that root did not mount (its `user_id=` is not 0) is a user's: its daemon answers every lookup, and one
 * that stops answering leaves whoever asked in uninterruptible sleep (socker as root, the engine's
 * threads). A mount that is not in the table socker read first was made since: judged the same. Other
 * filesystems are mounted by root (a user cannot, outside their own namespaces, which socker never enters).
 */
export function userFilesystemProblem(entry: MountEntry | undefined, allow: boolean): string | undefined {
  if (allow) return undefined;
  const hint = "socker does not use filesystems users mount (a stalled one hangs every process that looks " +
    "into it); use a folder on the node's own filesystems, or ask your administrator (user_filesystems)";
  if (entry === undefined) return `is on a filesystem mounted just now: ${hint}`;
  const fuse = entry.fsType === "fuse" || entry.fsType === "fuseblk" || entry.fsType.startsWith("fuse.");
  if (!fuse) return undefined;
  const owner = entry.superOptions.find((option) => option.startsWith("user_id="))?.slice("user_id=".length);
  if (owner === "0") return undefined;
  return `is on a filesystem a user mounted (${printable(entry.fsType, 40)} at ${printable(entry.mountPoint)}` +
    `${owner !== undefined ? `, by uid ${printable(owner, 12)}` : ""}): ${hint}`;
}

/** The v1 controllers Slurm's proctrack/task/jobacct plugins manage: their job folders are Slurm's. */
export const SLURM_CONTROLLERS = ["freezer", "cpuset", "memory", "devices"];

const CONTAINER_ID = /^[0-9a-f]{64}$/;

/**
 * The container id a cgroup folder's name stands for: Docker names a container's folder by its id, Podman
 * (cgroupfs) `libpod-<id>`; undefined for any other folder.
 */
export function containerIdOfFolder(name: string): string | undefined {
  const id = name.startsWith("libpod-") ? name.slice("libpod-".length) : name;
  return CONTAINER_ID.test(id) ? id : undefined;
}

/**
 * Podman (cgroupfs) puts each container's monitor, `conmon` (root's), in a folder `conmon` beside the
 * container's, under the same cgroup parent: an engine's folder, not Slurm's.
 */
export const CONMON_FOLDER = "conmon";

/** Whether a cgroup folder is the engine's: a container's (by its id) or Podman's conmon folder. */
export function isEngineFolder(name: string): boolean {
  return containerIdOfFolder(name) !== undefined || name === CONMON_FOLDER;
}

/**
 * Lists what a finished job left in one hierarchy, deepest first, by whose it is to remove: `containers`
 * are the engine's folders of containers (see isEngineFolder: a 64-hex id, `libpod-<id>`, Podman's `conmon`,
 * with what lies below) anywhere under
 * the job; `jobFolders` are the job's own folders in hierarchies Slurm does not manage (v1 cpu, cpuacct,
 * blkio, pids, name=systemd, and the unified tree of a hybrid node: Docker created them there for the
 * cgroup parent), socker's to remove at once; `slurmFolders` are the job and step folders in hierarchies
 * Slurm manages (freezer, cpuset, memory, devices; the unified tree of a v2 node), Slurm's own, which socker
 * removes only once Slurm is done with the job (a container that outlived the step kept Slurm from it).
 * v1 jobs sit in `<root>/slurm[_<node>]/uid_<uid>/job_<id>`, v2 jobs in `<root>/system.slice/[<node>_]
 * slurmstepd.scope/job_<id>`. `listDirs` returns a folder's sub-folders, or nothing when it does not exist.
 */
export function jobLeftovers(
  mount: CgroupMount,
  jobId: string,
  listDirs: (path: string) => string[],
  v2Node: boolean,
): { containers: string[]; jobFolders: string[]; slurmFolders: string[] } {
  const below = (path: string, depth = 0): string[] =>
    depth > 8 ? [] : listDirs(path).flatMap((name) => [...below(`${path}/${name}`, depth + 1), `${path}/${name}`]);
  const parents: string[] = [];
  for (const top of listDirs(mount.path).filter((name) => /^slurm(_.+)?$/.test(name))) {
    for (const user of listDirs(`${mount.path}/${top}`).filter((name) => /^uid_\d+$/.test(name))) {
      parents.push(`${mount.path}/${top}/${user}`);
    }
  }
  for (const scope of listDirs(`${mount.path}/system.slice`).filter((name) => /slurmstepd\.scope$/.test(name))) {
    parents.push(`${mount.path}/system.slice/${scope}`);
  }
  const folders = parents.filter((parent) => listDirs(parent).includes(`job_${jobId}`))
    .flatMap((parent) => [...below(`${parent}/job_${jobId}`), `${parent}/job_${jobId}`]);
  const ids = folders.filter((folder) => isEngineFolder(folder.slice(folder.lastIndexOf("/") + 1)));
  const ofContainer = (folder: string) => ids.some((id) => folder === id || folder.startsWith(`${id}/`));
  const slurmOwns = mount.version === 2 ? v2Node : mount.controllers.some((c) => SLURM_CONTROLLERS.includes(c));
  const job = folders.filter((folder) => !ofContainer(folder));
  return {
    containers: folders.filter(ofContainer),
    jobFolders: slurmOwns ? [] : job,
    slurmFolders: slurmOwns ? job : [],
  };
}

/** What socker reads from slurm.conf: the spool folder (for PMIx), the nodes, and what doctor checks. */
export type SlurmConf = {
  spoolDir: string;
  nodes: { name: string; hostname?: string }[];
  settings: Map<string, string>;
};

/** Parses slurm.conf's `Key=Value` lines (keys are case-insensitive) and its NodeName lines. */
export function parseSlurmConf(text: string): SlurmConf {
  const settings = new Map<string, string>();
  const nodes: { name: string; hostname?: string }[] = [];
  for (const raw of text.split("\n").slice(0, 100_000)) {
    const line = raw.replace(/#.*$/, "").trim();
    if (/^NodeName\s*=/i.test(line)) {
      const fields = new Map(
        line.split(/\s+/).map((field) => {
          const equals = field.indexOf("=");
          return [field.slice(0, equals).toLowerCase(), field.slice(equals + 1)] as const;
        }),
      );
      const name = fields.get("nodename") ?? "";
      if (/^[A-Za-z0-9._-]+$/.test(name)) nodes.push({ name, hostname: fields.get("nodehostname") });
      continue;
    }
    const match = /^([A-Za-z]+)\s*=\s*(\S+)/.exec(line);
    if (match) settings.set(match[1].toLowerCase(), match[2]);
  }
  return { spoolDir: settings.get("slurmdspooldir") ?? "/var/spool/slurmd", nodes, settings };
}

/** What a node's slurm.conf lacks for socker: cgroup process tracking and limits, and the Epilog hook. */
export function slurmConfProblems(conf: SlurmConf, epilogHook: string): string[] {
  const problems: string[] = [];
  if (conf.settings.get("proctracktype") !== "proctrack/cgroup") problems.push("set ProctrackType=proctrack/cgroup");
  if (!(conf.settings.get("taskplugin") ?? "").split(",").includes("task/cgroup")) {
    problems.push("add task/cgroup to TaskPlugin");
  }
  if (!(conf.settings.get("epilog") ?? "").split(",").includes(epilogHook)) {
    problems.push(`add Epilog=${epilogHook} (install.sh --epilog installs it)`);
  }
  return problems;
}

/**
 * This node's Slurm name: the one its cgroup root says (`slurm_<node>`), else the NodeName whose
 * NodeHostname (or own name) is this host, else the host name itself.
 */
export function slurmNodeName(job: JobStep, conf: SlurmConf, hostName: string): string {
  if (job.node !== undefined) return job.node;
  const short = hostName.split(".")[0];
  const named = conf.nodes.filter((node) => (node.hostname ?? node.name) === short);
  return named.length === 1 ? named[0].name : short;
}

/**
 * The PMIx server folder of the calling step, `<SlurmdSpoolDir>/pmix.<job>.<step>`, with SlurmdSpoolDir's
 * `%n` (node) and `%h` (host) expanded. Only from trusted sources: slurm.conf, the cgroup's job and step.
 */
export function pmixFolder(job: JobStep, conf: SlurmConf, node: string, hostName: string): string | undefined {
  const spool = conf.spoolDir.replaceAll("%n", node).replaceAll("%h", hostName.split(".")[0]);
  const folder = `${spool}/pmix.${job.jobId}.${job.stepId}`;
  return isCleanAbsolute(folder) && !folder.includes("%") ? folder : undefined;
}

/**
 * Expands a Slurm host list (`n[1-3,7],gpu01`) into names, refusing what it cannot read or what would
 * expand beyond `max` names.
 */
export function expandHostList(list: string, max = 65536): string[] | undefined {
  const names: string[] = [];
  const parts = list.match(/[^,[]+(?:\[[^\]]*\][^,[]*)*/g) ?? [];
  if (parts.join(",") !== list) return undefined;
  for (const part of parts) {
    const bracket = /^([^[]*)\[([^\]]+)\](.*)$/.exec(part);
    if (!bracket) {
      names.push(part);
      continue;
    }
    const [, prefix, ranges, suffix] = bracket;
    if (suffix.includes("[")) return undefined;
    for (const range of ranges.split(",")) {
      const [from, to = from] = range.split("-");
      const first = boundedInt(from.replace(/^0+(?=\d)/, ""), 0, 1e9);
      const last = boundedInt(to.replace(/^0+(?=\d)/, ""), 0, 1e9);
      if (first === undefined || last === undefined || last < first || names.length + last - first >= max) {
        return undefined;
      }
      for (let n = first; n <= last; n++) names.push(`${prefix}${String(n).padStart(from.length, "0")}${suffix}`);
    }
  }
  return names.length <= max ? names : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Data and devices: mounts, working directory, environment, GPUs. The Docker daemon makes bind mounts as
// root, so every path a user names is resolved and judged with the user's own credentials (the kernel's
// rules, ACLs and groups included), and the object mounted is the very one judged.

/** A mount as asked for: by the user (`-v`), the administrator (`default_mounts`) or socker (PMIx). */
export type MountRequest = {
  source: string;
  destination: string;
  readOnly: boolean;
  /** Where the request came from, for messages: `-v /x:/y`, `default_mounts home`, `the step's PMIx folder`. */
  origin: string;
  /**
   * Who asked: `user` (`-v`: must pass every rule, else the run is refused), `default` (home or the
   * caller's folder: the same rules, but left out when they fail), `site` (an administrator's path in
   * default_mounts: need not lie under mount_prefixes), `socker` (the step's PMIx folder: not bound by
   * mount_prefixes or the forbidden destinations, but it must be the caller's).
   */
  by: "user" | "default" | "site" | "socker";
};

/**
 * What the kernel said about a path, asked with the caller's credentials: the object the path led to (its
 * real path, kind, owner, device and inode) and what the caller may do with it. `handle` is socker's open
 * O_PATH descriptor of exactly that object, which the staging mount binds.
 */
export type PathProbe = {
  realPath: string;
  kind: "dir" | "file" | "other";
  owner: number;
  device: number;
  inode: number;
  readable: boolean;
  writable: boolean;
  searchable: boolean;
  handle: number;
};

/** What a caller is told about a path they cannot reach: the same, whatever the reason, so nothing leaks. */
export const UNREACHABLE = "does not exist or you cannot reach it";
/**
 * What a caller is told about a path through /proc/PID/cwd, root, exe or fd/N: those links lead into other
 * processes' views (another mount namespace, a folder reached before a permission changed) and are never
 * followed, even into one's own processes. A symlink loop ends the same way.
 */
export const THROUGH_PROC_LINK = "goes through a /proc/PID link (or a symlink loop): name the file or folder itself";

/** A mount socker decided to make. */
export type Mount = {
  source: string;
  destination: string;
  readOnly: boolean;
  kind: "dir" | "file";
  /** The probe's descriptor of the judged object, for the staging bind. */
  handle: number;
  /** Whether only root can change which object `source` names (every folder above it is root's). */
  fixedByRoot: boolean;
};

/** Destinations are passed in the engine's mount list: keep them to plain characters. */
const DESTINATION_CHARS = /^[A-Za-z0-9._+@/-]+$/;

/** Parses `-v SRC:DST[:ro|:rw]`. Throws a usage Refusal naming the value and the rule it broke. */
export function parseVolume(spec: string): MountRequest {
  const parts = spec.split(":");
  const bad = (why: string): never => refuse("usage", `-v '${printable(spec)}': ${why}`);
  const syntax = "the syntax is -v SRC:DST[:ro|rw], with no ':' in SRC or DST";
  if (parts.length < 2 || parts.length > 3) bad(syntax);
  const [source, destination, mode = "rw"] = parts;
  if (mode !== "ro" && mode !== "rw") {
    bad(`'${printable(mode)}' is not a mode (ro or rw): ${syntax}`);
  }
  if (source.includes("\0")) bad("SRC must be a path");
  if (!source.startsWith("/") && !isRelativeSource(source)) {
    bad(
      `'${printable(source)}' is a name, which Docker reads as a named volume (socker has none): write ` +
        `./${printable(source)} for a folder here, or an absolute path`,
    );
  }
  if (!isCleanAbsolute(destination)) bad("DST must be a clean absolute path (no '.', '..', '//' or trailing '/')");
  if (!DESTINATION_CHARS.test(destination)) bad("DST may hold only letters, digits and . _ + @ / -");
  return { source, destination, readOnly: mode === "ro", origin: `-v ${spec}`, by: "user" };
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
 * not. The source is the real path the caller's own lookup reached; read-only when asked or when the user
 * cannot write it. socker's own mounts (the step's PMIx folder) are not bound by mount_prefixes or the
 * forbidden destinations, but must still be the caller's and reachable by them.
 */
export function decideMount(
  request: MountRequest,
  probe: PathProbe | string | undefined,
  settings: Settings,
  fixedByRoot: boolean,
): Mount | string {
  const what = `${request.origin}: '${printable(request.source)}'`;
  if (probe === undefined) return `${what} cannot be checked`;
  if (typeof probe === "string") return `${what} ${probe}`;
  const prefixed = request.by === "user" || request.by === "default";
  if (prefixed && !settings.mountPrefixes.some((prefix) => isUnder(probe.realPath, prefix))) {
    return `${what} (real path ${printable(probe.realPath)}) is not under a folder users may mount ` +
      `(${settings.mountPrefixes.join(" ") || "none"})`;
  }
  if (probe.kind === "other") return `${what} is neither a folder nor a regular file`;
  if (!probe.readable || (probe.kind === "dir" && !probe.searchable)) return `${what} is not readable by you`;
  if (request.by !== "socker") {
    const problem = destinationProblem(request.destination, settings.forbiddenDestinations);
    if (problem !== undefined) return `${request.origin}: ${problem}`;
  }
  return {
    source: probe.realPath,
    destination: request.destination,
    readOnly: request.readOnly || !probe.writable,
    kind: probe.kind,
    handle: probe.handle,
    fixedByRoot,
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
      by: item.startsWith("/") ? "site" : "default",
    });
  }
  return requests;
}

/**
 * Joins the default mounts and the user's: a user's mount replaces a default one at the same destination;
 * two of the user's at one destination are refused (the engine would fail on them, later and less clearly).
 */
export function mountRequests(defaults: readonly MountRequest[], user: readonly MountRequest[]): MountRequest[] {
  const seen = new Set<string>();
  for (const request of user) {
    if (seen.has(request.destination)) refuse("usage", `two mounts at ${request.destination}`);
    seen.add(request.destination);
  }
  return [...defaults.filter((request) => !seen.has(request.destination)), ...user];
}

/** Folders a working directory may never be in: the kernel's views, where a leaked descriptor is a way out. */
export const FORBIDDEN_WORKDIRS = ["/proc", "/sys", "/dev"];

/**
 * The container's working directory: the one asked for (absolute, clean, never under /proc, /sys or /dev,
 * where a leaked file descriptor becomes a way out: runc CVE-2024-21626), else the caller's folder when a
 * mount holds it, else the image's own (undefined).
 */
export function chooseWorkdir(requested: string | undefined, cwd: string | undefined, mounts: readonly Mount[]) {
  if (requested !== undefined) {
    if (!isCleanAbsolute(requested)) refuse("usage", `-w '${printable(requested)}' must be a clean absolute path`);
    const under = FORBIDDEN_WORKDIRS.find((folder) => isUnder(requested, folder));
    if (under !== undefined) refuse("policy", `-w '${printable(requested)}': never a working directory under ${under}`);
    return requested;
  }
  if (cwd === undefined) return undefined;
  const holder = mounts.find((mount) => mount.kind === "dir" && isUnder(cwd, mount.source));
  return holder === undefined ? undefined : holder.destination + cwd.slice(holder.source.length);
}

/**
 * A place the engine creates as root when it is missing: a mount's destination or the working directory.
 * Inside another mount (`holder`: the deepest one above it) it lies in that mount's host folder, and socker
 * walks there from the descriptor it judged, as the caller, never through a symlink, creating what is
 * missing as the caller: the engine, which follows symlinks inside the container's view, then finds it
 * all in place and creates nothing. Elsewhere it lies in the image, where a symlink of the image could
 * lead the engine into another mount: then (`checkImage`) socker checks the image's folders on the way.
 */
export type MountPoint = {
  destination: string;
  kind: "dir" | "file";
  why: string;
  /** Index in the plan's mounts of the deepest mount holding it; undefined when it lies in the image. */
  holder?: number;
  /** Its path's components below the holder's destination, or from `/` in the image. */
  below: string[];
  /** In the image while another mount exists: the image's folders on the way must not be symlinks. */
  checkImage: boolean;
};

/** Where each mount's destination and the working directory lie, in the order the engine meets them. */
export function mountPoints(mounts: readonly Mount[], workdir: string | undefined): MountPoint[] {
  const point = (destination: string, kind: "dir" | "file", why: string, self?: Mount): MountPoint => {
    let holder: number | undefined;
    mounts.forEach((mount, index) => {
      if (mount === self || mount.kind !== "dir" || !isUnder(destination, mount.destination)) return;
      if (holder === undefined || mount.destination.length > mounts[holder].destination.length) holder = index;
    });
    const base = holder === undefined ? "" : mounts[holder].destination;
    const below = destination.slice(base === "/" ? 0 : base.length).split("/").filter((part) => part !== "");
    const others = mounts.filter((mount) => mount !== self).length;
    return { destination, kind, why, holder, below, checkImage: holder === undefined && others > 0 };
  };
  return [
    ...mounts.map((mount) => point(mount.destination, mount.kind, `mount point ${mount.destination}`, mount)),
    ...(workdir === undefined ? [] : [point(workdir, "dir", `-w ${workdir}`)]),
  ];
}

/**
 * How each mount reaches the container. `inside`: inside another mount, bound by socker onto its mount
 * point within the holder's staged copy (the engine would otherwise walk to the mount point as root,
 * through folders the caller may swap for symlinks at any moment); `staged`: bound from its checked
 * descriptor at a root-owned staging path (its folders are not all root's, or a mount lies inside it);
 * `path`: handed to the engine by its real path, which only root can redirect.
 */
export type MountRoute = "inside" | "staged" | "path";

export function mountRoutes(mounts: readonly Mount[], points: readonly MountPoint[]): MountRoute[] {
  const holders = new Set(points.slice(0, mounts.length).flatMap((point) => point.holder ?? []));
  return mounts.map((mount, index) =>
    points[index].holder !== undefined ? "inside" : holders.has(index) || !mount.fixedByRoot ? "staged" : "path"
  );
}

/**
 * The storage drivers whose layers socker reads: Docker's overlay2 and Podman's overlay (containers/storage),
 * the same overlayfs layout (UpperDir, LowerDir; whiteouts and opaque folders as overlayfs has them).
 */
export const OVERLAY_DRIVERS = ["overlay2", "overlay"];

/**
 * The image's layer folders, top first, from the engine's record (overlay2: UpperDir, then LowerDir), or
 * why socker cannot look into the image.
 */
export function imageLayers(image: ImageRecord): string[] | string {
  const driver = image.GraphDriver;
  if (driver === undefined || !OVERLAY_DRIVERS.includes(String(driver.Name))) {
    return `socker checks the folders inside images only on the overlay2 storage driver; this engine uses ` +
      `${printable(String(driver?.Name ?? "an unknown one"))}`;
  }
  const lower = driver.Data?.LowerDir;
  const layers = [driver.Data?.UpperDir, ...(typeof lower === "string" ? lower.split(":") : [])];
  if (layers.some((layer) => typeof layer !== "string" || !isCleanAbsolute(layer))) {
    return "the engine's record of the image names no layer folders";
  }
  return layers as string[];
}

/** What one overlay layer holds at a path (`opaque`: a folder that hides the layers below it). */
export type LayerEntry = "missing" | "whiteout" | "symlink" | "dir" | "opaque" | "other";

/**
 * One step of a walk through an image's layers (0 on top) as overlayfs merges them: what the topmost layer
 * holding something at `path` holds there, and the layers whose folders merge into the folder seen there
 * (a folder merges with the folders below it until a layer holds something else there, a whiteout, or an
 * opaque folder).
 */
function layerStep(live: readonly number[], path: string, entry: (layer: number, path: string) => LayerEntry) {
  const merged: number[] = [];
  let top: LayerEntry = "missing";
  for (const layer of live) {
    const found = entry(layer, path);
    if (found === "missing") continue;
    if (top === "missing") top = found;
    if (found !== "dir" && found !== "opaque") break;
    merged.push(layer);
    if (found === "opaque") break;
  }
  return { top, merged };
}

/**
 * Walks a path through an image's layers and returns the first folder on the way, or the path itself, that
 * is a symlink in the image; undefined when there is none (a missing part is fine: the engine then creates
 * it in the container's own layer).
 */
export function imageSymlinkOn(
  below: readonly string[],
  layerCount: number,
  entry: (layer: number, path: string) => LayerEntry,
): string | undefined {
  let live = Array.from({ length: layerCount }, (_, layer) => layer);
  let path = "";
  for (const name of below) {
    path += `/${name}`;
    const { top, merged } = layerStep(live, path, entry);
    if (top === "symlink") return path;
    if (top !== "dir" && top !== "opaque") return undefined;
    live = merged;
  }
  return undefined;
}

/** What the image holds at a path whose folders are real folders in it ("missing" when one is not). */
export function imageEntryAt(
  below: readonly string[],
  layerCount: number,
  entry: (layer: number, path: string) => LayerEntry,
): LayerEntry {
  let live = Array.from({ length: layerCount }, (_, layer) => layer);
  let path = "";
  for (const [index, name] of below.entries()) {
    path += `/${name}`;
    const { top, merged } = layerStep(live, path, entry);
    if (index === below.length - 1) return top;
    if (top !== "dir" && top !== "opaque") return "missing";
    live = merged;
  }
  return "dir";
}

/**
 * Why a `-w` folder in the image cannot be the working folder: missing there (the engine would create it,
 * root's, where the caller cannot write: pyxis fails the same way), or not a folder. A symlink is the
 * image's own, followed inside the container.
 */
export function workdirProblem(workdir: string, found: LayerEntry, imageText: string): string | undefined {
  if (found === "dir" || found === "opaque" || found === "symlink") return undefined;
  return found === "other"
    ? `-w ${printable(workdir)}: Not a directory in image ${printable(imageText)}`
    : `-w ${printable(workdir)}: No such file or directory in image ${printable(imageText)} (socker creates no ` +
      "folder there: name one that exists, or one in a mounted folder)";
}

/** Where socker looks for the image's shell, which enters a working folder inside a mount (see containerSpec). */
export const IMAGE_SHELLS = ["/bin/sh", "/usr/bin/sh"];

/**
 * The script the image's shell runs, as the caller, to enter the working folder and run the command: the
 * engine never walks to a working folder inside a mount (it would, as root, through folders the caller may
 * swap for symlinks, and create what is missing where they lead). `$1` is the folder; then the image's
 * entrypoint, then the command. A command word that a shell's `exec` would read as its own option (`-a`,
 * `--`) or an empty one is not found, exactly as when the engine starts the command itself (127): the
 * command stays untouched, never an option of the shell.
 */
export const ENTER_WORKDIR =
  'cd -P -- "$1" && shift && case $1 in ""|-*) echo "socker-workdir: $1: command not found" >&2; exit 127;; esac && exec "$@"';

/** Variables that always describe the caller and are never taken from elsewhere. */
export const CALLER_VARIABLES = ["HOME", "USER", "LOGNAME"];
/** The step's own variables a container of a Slurm job gets from the caller's environment. */
export const JOB_VARIABLE_PATTERNS = ["SLURM_*", "SLURMD_NODENAME", "PMI_*", "PMIX_*"];
/** Never taken from the caller's environment by a pattern, whatever env_pass says. */
const NEVER_PASSED = (name: string) => name === "PATH" || name.startsWith("LD_") || CALLER_VARIABLES.includes(name);
/** Bounds of what the caller's environment may pass into a container. */
export const MAX_PASSED_VARIABLES = 1024;
export const MAX_ENV_BYTES = 1 << 20;

/** Whether a variable name matches an env_pass pattern (`*` any characters, `?` one). */
export function matchesPattern(name: string, pattern: string): boolean {
  const regex = new RegExp(`^${pattern.replaceAll("*", ".*").replaceAll("?", ".")}$`);
  return regex.test(name);
}

/**
 * Never inherited from the caller's environment (`env_inherit`): what describes the host or the caller's
 * session there (PATH, the loader's LD_*, HOME, USER, LOGNAME, SHELL, PWD, OLDPWD, sudo's SUDO_*, the
 * shell's `_`); the site's env_deny and what socker sets itself are left out too.
 */
export function notInherited(name: string): boolean {
  return NEVER_PASSED(name) || ["SHELL", "PWD", "OLDPWD", "_"].includes(name) || name.startsWith("SUDO_");
}
/** Bounds of an inherited environment: a value, and the container's whole environment (MAX_ENV_BYTES). */
export const MAX_VALUE_BYTES = 128 << 10;

/** What else reaches the container's environment: the image's ENV names, Slurm's derived variables. */
export type MoreEnvironment = {
  /** Names the image's own ENV sets: they win over what is only inherited (as in pyxis). */
  imageNames?: readonly string[];
  /** Derived from the step's Slurm variables (rendezvousVariables): set unless the caller set them. */
  derived?: Readonly<Record<string, string>>;
};

/**
 * The container's environment, in this order, a later one winning: HOME, USER and LOGNAME of the caller
 * (so programs work in images without the user in /etc/passwd); with env_inherit, the caller's whole
 * environment but what notInherited names, env_deny and the names the image's ENV sets; inside a job, the
 * step's SLURM_*, PMI_* and PMIX_* variables and, always, what the administrator passes with env_pass and
 * the caller's TERM; the variables derived from the step's (`more.derived`) unless the caller set them; then
 * the user's `-e` (a bare NAME takes the caller's value); then the administrator's `env_set`, which always
 * wins. `env_deny` names are refused for `-e` and never passed. These values reach only the container:
 * nothing socker decides reads them.
 */
export function containerEnvironment(
  requests: readonly string[],
  callerEnv: Readonly<Record<string, string | NotText>> | undefined,
  caller: { user: string; home?: string },
  settings: Settings,
  inJob: boolean,
  more: MoreEnvironment = {},
): string[] {
  const env = new Map<string, string>([["HOME", caller.home ?? "/"], ["USER", caller.user], ["LOGNAME", caller.user]]);
  const patterns = [...(inJob ? JOB_VARIABLE_PATTERNS : []), ...settings.envPass, "TERM"];
  const imageNames = new Set(more.imageNames ?? []);
  const replaced = new Set(requests.filter((request) => request.includes("=")).map((r) => r.slice(0, r.indexOf("="))));
  let passed = 0;
  for (const [name, value] of Object.entries(callerEnv ?? {})) {
    if (!ENV_NAME.test(name) || NEVER_PASSED(name) || settings.envDeny.includes(name)) continue;
    const byPattern = patterns.some((pattern) => matchesPattern(name, pattern));
    // Outside a job, the job's variables describe no step this container is part of: never inherited.
    const jobVariable = JOB_VARIABLE_PATTERNS.some((pattern) => matchesPattern(name, pattern));
    const inherited = settings.envInherit && !notInherited(name) && !imageNames.has(name) &&
      !Object.hasOwn(settings.envSet, name) && (inJob || !jobVariable);
    if (!byPattern && !inherited) continue;
    if (replaced.has(name) && typeof value !== "string") continue;
    if (++passed > MAX_PASSED_VARIABLES) {
      refuse(
        "policy",
        `more than ${MAX_PASSED_VARIABLES} of your variables would pass into the container (bound of ` +
          `${MAX_PASSED_VARIABLES} variables); unset some${
            settings.envInherit ? " or pass only what it needs with -e" : ""
          }`,
      );
    }
    const valueText = variableText(name, value, "it passes into containers");
    if (valueText.length > MAX_VALUE_BYTES) {
      refuse(
        "policy",
        `your variable ${name} holds ${valueText.length} bytes, more than the ${MAX_VALUE_BYTES} bytes a variable ` +
          "may pass into a container (bound per value); unset it",
      );
    }
    env.set(name, valueText);
  }
  for (const [name, value] of Object.entries(more.derived ?? {})) {
    if (callerEnv === undefined || !Object.hasOwn(callerEnv, name)) env.set(name, value);
  }
  for (const request of requests) setRequested(env, request, callerEnv, settings);
  for (const [name, value] of Object.entries(settings.envSet)) env.set(name, value);
  const entries = [...env].map(([name, value]) => `${name}=${value}`);
  const bytes = entries.reduce((sum, entry) => sum + entry.length + 1, 0);
  if (bytes > MAX_ENV_BYTES) {
    refuse(
      "policy",
      `the container's environment would hold ${bytes} bytes; at most ${MAX_ENV_BYTES} bytes in all (its bound): ` +
        "unset some of your variables or pass less",
    );
  }
  return entries;
}

/**
 * A variable's value as text. A variable whose value is not UTF-8 text is refused only when it would pass
 * (the engine takes text, and a decoded value is another value); one that would not pass, or that
 * -e NAME=VALUE replaces, is dropped like every other.
 */
function variableText(name: string, value: string | NotText, why: string): string {
  return typeof value === "string" ? value : refuse(
    "policy",
    `your variable ${name} (${why}) holds bytes that are not UTF-8 text ('${showBytes(value.notText, 60)}'): ` +
      `socker passes only text; fix or unset it`,
  );
}

/** Sets one `-e` request in the environment (a bare NAME takes the caller's value), or refuses it. */
function setRequested(
  env: Map<string, string>,
  request: string,
  callerEnv: Readonly<Record<string, string | NotText>> | undefined,
  settings: Settings,
): void {
  const equals = request.indexOf("=");
  const name = equals < 0 ? request : request.slice(0, equals);
  if (!ENV_NAME.test(name)) {
    refuse("usage", `-e '${printable(request)}': '${printable(name)}' is not a variable name`);
  }
  if (CALLER_VARIABLES.includes(name)) {
    refuse(
      "policy",
      `-e ${name}: ${name} is always yours in the container (${CALLER_VARIABLES.join(", ")} cannot be set)`,
    );
  }
  if (settings.envDeny.includes(name)) {
    refuse("policy", `-e ${name}: your administrator never lets ${name} into containers (env_deny)`);
  }
  if (equals >= 0) env.set(name, request.slice(equals + 1));
  else if (callerEnv === undefined) {
    refuse("policy", `-e ${name}: socker cannot see your environment here; give -e ${name}=VALUE`);
  } else if (Object.hasOwn(callerEnv, name)) env.set(name, variableText(name, callerEnv[name], `-e ${name}`));
}

/** The names of a `NAME=VALUE` list (what the audit record keeps of the environment: never the values). */
export function environmentNames(entries: readonly string[]): string[] {
  return entries.map((entry) => entry.slice(0, Math.max(entry.indexOf("="), 0)));
}

/** The names the image's own ENV sets, from the engine's record. */
export function imageEnvNames(image: ImageRecord | undefined): string[] {
  const env = image?.Config?.Env;
  return Array.isArray(env)
    ? env.filter((item) => typeof item === "string" && item.indexOf("=") > 0).map((item) => item.split("=")[0])
    : [];
}

/** Expands Slurm's tasks per node (`2(x3),1`: 2, 2, 2, 1), bounded; undefined when unreadable. */
export function expandTasksPerNode(text: string, max = 65536): number[] | undefined {
  const counts: number[] = [];
  for (const part of text.split(",")) {
    const match = /^([0-9]{1,7})(?:\(x([0-9]{1,7})\))?$/.exec(part);
    if (match === null) return undefined;
    const repeat = Number(match[2] ?? "1");
    if (counts.length + repeat > max) return undefined;
    for (let i = 0; i < repeat; i++) counts.push(Number(match[1]));
  }
  return counts;
}

/** The variables PyTorch's launcher and most rendezvous libraries read, derived from Slurm's. */
export const RENDEZVOUS_VARIABLES = [
  "RANK",
  "LOCAL_RANK",
  "WORLD_SIZE",
  "LOCAL_WORLD_SIZE",
  "MASTER_ADDR",
  "MASTER_PORT",
];

/**
 * PyTorch's rendezvous variables, as enroot's PyTorch hook derives them, from the step's own Slurm variables
 * (in a step only: SLURM_PROCID is set): RANK (SLURM_PROCID), LOCAL_RANK (SLURM_LOCALID), WORLD_SIZE
 * (SLURM_STEP_NUM_TASKS or SLURM_NTASKS), LOCAL_WORLD_SIZE (this node's entry of SLURM_STEP_TASKS_PER_NODE),
 * MASTER_ADDR (the step's first node), MASTER_PORT (49152 + job id % 16384, the same on every node of the
 * job). What cannot be read is left out. Only the container gets them; containerEnvironment keeps the
 * caller's own values.
 */
export function rendezvousVariables(env: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const derived: Record<string, string> = {};
  const int = (name: string) => boundedInt(env?.[name], 0, ID_MAX);
  const rank = int("SLURM_PROCID");
  if (env === undefined || rank === undefined) return derived;
  derived.RANK = String(rank);
  const local = int("SLURM_LOCALID");
  if (local !== undefined) derived.LOCAL_RANK = String(local);
  const world = int("SLURM_STEP_NUM_TASKS") ?? int("SLURM_NTASKS");
  if (world !== undefined) derived.WORLD_SIZE = String(world);
  const perNode = expandTasksPerNode(env.SLURM_STEP_TASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE ?? "");
  const nodeIndex = int("SLURM_NODEID");
  if (perNode !== undefined && nodeIndex !== undefined && nodeIndex < perNode.length) {
    derived.LOCAL_WORLD_SIZE = String(perNode[nodeIndex]);
  }
  const nodes = expandHostList(env.SLURM_STEP_NODELIST ?? env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST ?? "");
  if (nodes !== undefined && nodes.length > 0 && /^[A-Za-z0-9._-]{1,255}$/.test(nodes[0])) {
    derived.MASTER_ADDR = nodes[0];
  }
  const job = int("SLURM_JOB_ID");
  if (job !== undefined) derived.MASTER_PORT = String(49152 + job % 16384);
  return derived;
}

/**
 * The hint for an MPI step whose ranks share this node while the container has private namespaces:
 * OpenMPI's PMIx and shared-memory transports then fail deep inside (`OPAL ERROR: Unreachable`). A hint
 * only (it changes nothing): the step's variables tell a PMIx step (PMIX_RANK, SLURM_MPI_TYPE=pmix*) and
 * how many of its tasks run here (SLURM_STEP_TASKS_PER_NODE at SLURM_NODEID).
 */
export function mpiNamespaceHint(
  env: Readonly<Record<string, string>> | undefined,
  settings: Pick<Settings, "network" | "ipc" | "pid">,
): string | undefined {
  // A step container does not help: its namespaces are private too, and PMIx cannot reach the step's server.
  if (env === undefined) return undefined;
  const pmix = env.PMIX_RANK !== undefined || /^pmix/.test(env.SLURM_MPI_TYPE ?? "");
  if (!pmix) return undefined;
  const perNode = expandTasksPerNode(env.SLURM_STEP_TASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE ?? "");
  const nodeIndex = boundedInt(env.SLURM_NODEID, 0, ID_MAX) ?? 0;
  const here = perNode?.[nodeIndex] ?? 1;
  if (here < 2) return undefined;
  const needed = [
    ...(settings.network !== "host" ? ["network = host"] : []),
    ...(settings.ipc !== "host" ? ["ipc = host"] : []),
    ...(settings.pid !== "host" ? ["pid = host"] : []),
  ];
  if (needed.length === 0) return undefined;
  return `hint: ${here} MPI ranks share this node but each container has its own namespaces; if MPI fails ` +
    `('OPAL ERROR: Unreachable'), ask your administrator for ${needed.join(", ")} in socker.conf`;
}

/** Docker's own /dev/shm size, and the least socker gives: what programs have long been able to count on. */
export const SHM_MIN_BYTES = 64 << 20;

/**
 * The job's memory limit from its cgroup files' texts (the step's folder up to the job's, any order): the
 * smallest limit set; undefined when none is (`max`, v1's near-2^63 "unlimited").
 */
export function memoryLimitOf(texts: readonly (string | undefined)[]): number | undefined {
  const limits = texts.flatMap((text) => boundedInt(text?.trim(), 1, 2 ** 50) ?? []);
  return limits.length === 0 ? undefined : Math.min(...limits);
}

/**
 * /dev/shm's size: its pages are charged to the job's memory, so inside a job with a memory limit it is
 * `shm_size` of that limit (a share, or a size bounded by it), never less than SHM_MIN_BYTES; without a
 * limit, a set size or Docker's 64 MiB.
 */
export function shmBytes(setting: Settings["shmSize"], memoryLimit: number | undefined): number {
  const wanted = "percent" in setting
    ? (memoryLimit === undefined ? SHM_MIN_BYTES : Math.floor(memoryLimit * setting.percent / 100))
    : Math.min(setting.bytes, memoryLimit ?? setting.bytes);
  return Math.max(SHM_MIN_BYTES, wanted);
}

/** A `--tmpfs` scratch folder: private to the container, its pages charged to the job's memory. */
export type TmpfsMount = { destination: string; bytes: number };
/** A --tmpfs without size= gets this much (Docker's own default is half the node's memory). */
export const TMPFS_DEFAULT_BYTES = 64 << 20;

/**
 * Parses `--tmpfs DST[:size=N]`: DST a clean absolute path under no forbidden destination; `size=` the only
 * option (Docker's others change modes, owners and exec rights: not the user's to choose), bounded by the
 * job's memory limit when there is one. Throws a usage or policy Refusal naming the value.
 */
export function parseTmpfs(spec: string, settings: Settings, memoryLimit: number | undefined): TmpfsMount {
  const bad = (why: string): never => refuse("usage", `--tmpfs '${printable(spec)}': ${why}`);
  const colon = spec.indexOf(":");
  const destination = colon < 0 ? spec : spec.slice(0, colon);
  const options = colon < 0 ? [] : spec.slice(colon + 1).split(",");
  if (!isCleanAbsolute(destination)) bad("DST must be a clean absolute path (no '.', '..', '//' or trailing '/')");
  if (!DESTINATION_CHARS.test(destination)) bad("DST may hold only letters, digits and . _ + @ / -");
  let bytes = TMPFS_DEFAULT_BYTES;
  for (const option of options) {
    const size = /^size=(.*)$/.exec(option);
    if (size === null) bad(`only size=N may be given (not '${printable(option)}')`);
    const value = sizeBytes(size![1]);
    if (value === undefined) bad(`size must be a number of bytes with k, m or g, not '${printable(size![1])}'`);
    bytes = value!;
  }
  if (memoryLimit !== undefined && bytes > memoryLimit) {
    refuse("policy", `--tmpfs '${printable(spec)}': its ${bytes} bytes exceed the job's memory limit (${memoryLimit})`);
  }
  const problem = destinationProblem(destination, settings.forbiddenDestinations);
  if (problem !== undefined) refuse("policy", `--tmpfs ${printable(destination)}: ${problem}`);
  return { destination, bytes };
}

/**
 * Whether a `-v` source names a folder relative to the caller's one, as Docker 23+ reads it: only `.`,
 * `..` and what starts with `./` or `../` (a bare name is one of Docker's named volumes).
 */
export function isRelativeSource(source: string): boolean {
  return source === "." || source === ".." || source.startsWith("./") || source.startsWith("../");
}

/** `./data` against the caller's folder, as text (`..` takes the name's parent, as Docker's filepath.Abs). */
export function resolveRelative(source: string, cwd: string): string {
  const parts: string[] = [];
  for (const part of `${cwd}/${source}`.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

/** A `-v` request with its relative source resolved against the caller's folder (refused without one). */
export function withCallerFolder(request: MountRequest, cwd: string | undefined): MountRequest {
  if (!isRelativeSource(request.source)) return request;
  if (cwd === undefined) refuse("policy", `${request.origin}: your current folder is gone; give an absolute SRC`);
  return { ...request, source: resolveRelative(request.source, cwd) };
}

/**
 * The run's --tmpfs folders: parsed (parseTmpfs), one per destination, and never at, inside or above a bind
 * mount (the engine would make its mount point in the caller's folder, as root).
 */
export function tmpfsMounts(
  specs: readonly string[],
  settings: Settings,
  memoryLimit: number | undefined,
  mounts: readonly { destination: string }[],
): TmpfsMount[] {
  const tmpfs: TmpfsMount[] = [];
  for (const spec of specs) {
    const item = parseTmpfs(spec, settings, memoryLimit);
    const clash = [...mounts, ...tmpfs].find((other) =>
      isUnder(item.destination, other.destination) || isUnder(other.destination, item.destination)
    );
    if (clash !== undefined) {
      refuse("policy", `--tmpfs ${item.destination}: overlaps the mount at ${clash.destination}; choose another place`);
    }
    tmpfs.push(item);
  }
  return tmpfs;
}

/** NVIDIA GPUs are character devices of major 195, `/dev/nvidia<minor>`. */
const GPU_INDEX_MAX = 1023;

/**
 * The GPU indices Slurm allocated to the job on this node, from Slurm's structured record of the jobs
 * (`squeue --json`; Slurm 22.05 has no `scontrol show job --json`, and its squeue lists every job): the job
 * must be the caller's and this node one of its nodes; the index detail (`gpu:a100:2(IDX:0-1)`) is the
 * entry of `gres_detail` at this node's position among the job's allocated nodes. No text the user sets
 * (name, comment, folder) is ever read. Returns the indices, or why none.
 */
export function gpusFromJobRecord(record: unknown, jobId: string, uid: number, node: string): number[] | string {
  const jobs = (record as { jobs?: unknown })?.jobs;
  if (!Array.isArray(jobs)) return "Slurm returned no job records";
  const matching = jobs.filter((job) => String(boundedNumber(job?.job_id, 1, ID_MAX)) === jobId);
  if (matching.length !== 1) return `Slurm has no single record of job ${jobId}`;
  const job = matching[0] as Record<string, unknown>;
  if (boundedNumber(job.user_id, 0, ID_MAX) !== uid) return "the job is not yours";
  const allocated = (job.job_resources as { allocated_nodes?: unknown } | undefined)?.allocated_nodes;
  const named = Array.isArray(allocated) ? allocated.map((item) => item?.nodename) : [];
  const nodeList = named.length > 0 && named.every((name) => typeof name === "string")
    ? named as string[]
    : typeof job.nodes === "string"
    ? expandHostList(job.nodes)
    : undefined;
  if (nodeList === undefined) return "Slurm's record has no node list socker can read";
  const position = nodeList.indexOf(node);
  if (position < 0) return `the job has no allocation on node ${node}`;
  const details = job.gres_detail;
  if (!Array.isArray(details) || details.some((entry) => typeof entry !== "string")) return "no GPU detail";
  const detail = details.length === nodeList.length ? details[position] : details.length === 0 ? "" : undefined;
  if (detail === undefined) return "Slurm's GPU detail does not match the job's nodes";
  const gpus = new Set<number>();
  for (const match of String(detail).matchAll(/(?:^|,)gpu(?::[^:(,]*)*\(IDX:([^)]*)\)/g)) {
    if (match[1] === "N/A") continue;
    for (const range of match[1].split(",")) {
      const [from, to = from] = range.split("-");
      const first = boundedInt(from, 0, GPU_INDEX_MAX);
      const last = boundedInt(to, 0, GPU_INDEX_MAX);
      if (first === undefined || last === undefined || last < first) {
        return `unreadable GPU index '${printable(range)}'`;
      }
      for (let gpu = first; gpu <= last; gpu++) gpus.add(gpu);
    }
  }
  return [...gpus].sort((a, b) => a - b);
}

/** The NVIDIA devices every GPU's user needs besides the GPU's own (the driver's control, unified memory). */
const GPU_CONTROL_DEVICES = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];

/** The device nodes for these GPUs plus the shared control devices that exist on this node. */
export function gpuDeviceNodes(gpus: readonly number[], exists: (path: string) => boolean): string[] {
  const shared = GPU_CONTROL_DEVICES.filter(exists);
  return [...gpus.map((gpu) => `/dev/nvidia${gpu}`), ...shared];
}

// ---------------------------------------------------------------------------------------------------------
// Device rules on cgroup v1. With ConstrainDevices=yes Slurm denies each step the GPUs it did not get
// ('c 195:N rwm' in the step's devices.deny). The engine's runc always adds 'c *:* m' and 'b *:* m' (mknod of
// any device) to a container's rules, and the kernel refuses a child cgroup a rule that overlaps a denial
// of its parent: no container could start under such a step (runc issue 1618). socker's containers there
// use the runtime socker-runc (install.sh installs and registers it): runc without those two wildcards,
// every other rule kept, each checked by the kernel against the step's. Safe because the wildcards only
// allow mknod, which socker's containers cannot call (no CAP_MKNOD: every capability is dropped).

/** NVIDIA's character device major. */
const GPU_MAJOR = 195;
/** The engine runtime socker's install registers (see the file socker-runc). */
export const DEVICE_RUNTIME = "socker-runc";
export const DEVICE_RUNTIME_PATH = `${PREFIX}/libexec/socker/${DEVICE_RUNTIME}`;
/** Slurm reads cgroup.conf beside slurm.conf. */
export const CGROUP_CONF_PATH = SLURM_CONF_PATH.replace(/[^/]*$/, "cgroup.conf");

/** Whether cgroup.conf makes Slurm confine each step to its devices (`ConstrainDevices=yes`; default no). */
export function constrainsDevices(cgroupConfText: string | undefined): boolean {
  return (parseSlurmConf(cgroupConfText ?? "").settings.get("constraindevices") ?? "").toLowerCase() === "yes";
}

/**
 * The engine runtime of a container: socker-runc in a job on cgroup v1 with constrained devices, where the
 * engine's runc cannot start any container a step was denied a device; the engine's default (undefined)
 * everywhere else, other containers untouched. Refuses when socker-runc is needed and not in place.
 * `runtimes` is the engine's info field `Runtimes` (name -> { path }).
 */
export function containerRuntime(
  job: JobStep | undefined,
  constrained: boolean,
  runtimes: unknown,
  installed: boolean,
): string | undefined {
  if (job === undefined || job.version !== 1 || !constrained) return undefined;
  const entry = (runtimes as Record<string, { path?: unknown } | undefined> | undefined)?.[DEVICE_RUNTIME];
  const problem = entry?.path !== DEVICE_RUNTIME_PATH
    ? `the Docker engine has no runtime ${DEVICE_RUNTIME} at ${DEVICE_RUNTIME_PATH}`
    : !installed
    ? `${DEVICE_RUNTIME_PATH} is missing`
    : undefined;
  if (problem !== undefined) {
    refuse(
      "installation",
      `this node confines Slurm jobs to their devices on cgroup v1 (ConstrainDevices=yes) and ${problem}: ` +
        "ask your administrator to run socker's install.sh on this node",
    );
  }
  return DEVICE_RUNTIME;
}

/**
 * Whether a v1 devices cgroup whose `devices.list` is this text lets its processes read and write the
 * character device major:minor. The kernel lists the rules of a deny-by-default cgroup; one that allows by
 * default lists only `a *:* rwm` (its denials do not show: socker asks the kernel, see gpusRefusedHere).
 */
export function devicesCgroupAllows(list: string, major: number, minor: number): boolean {
  return list.split("\n").some((line) => {
    const match = /^([abc]) (\*|\d+):(\*|\d+) ([rwm]+)$/.exec(line.trim());
    if (!match) return false;
    const [, type, ruleMajor, ruleMinor, access] = match;
    return (type === "a" || type === "c") && (ruleMajor === "*" || Number(ruleMajor) === major) &&
      (ruleMinor === "*" || Number(ruleMinor) === minor) && access.includes("r") && access.includes("w");
  });
}

/**
 * The GPUs of the job that this step may not use: those its devices cgroup does not allow (`list`, the
 * step's devices.list) or that the kernel refused socker itself, a process of the step (`refused`, see
 * gpusRefusedHere). `--gpus` gives the container the others only.
 */
export function stepDeniedGpus(
  gpus: readonly number[],
  list: string | undefined,
  refused: readonly number[],
): number[] {
  return gpus.filter((gpu) =>
    refused.includes(gpu) || (list !== undefined && !devicesCgroupAllows(list, GPU_MAJOR, gpu))
  );
}

// ---------------------------------------------------------------------------------------------------------
// The container's specification: everything decided about one run, and the engine's create request that
// follows from it and from nothing else.

/** The labels socker puts on its containers; the Epilog, the reaper, `ps` and `stop` find them by these. */
export const LABEL = {
  managed: "socker.managed",
  uid: "socker.uid",
  user: "socker.user",
  node: "socker.node",
  job: "socker.job",
  step: "socker.step",
  /** `<pid>:<start time>` of the supervising socker: who must be alive while the container runs. */
  supervisor: "socker.supervisor",
} as const;

/** Everything decided about one run; `containerSpec` turns it into the engine's create request. */
export type RunPlan = {
  caller: Caller;
  /** The allowlist entry the image matched; its canonical reference is what the engine is given. */
  entry: AllowlistEntry;
  /** The engine's id of the image, when it holds it; undefined when it must be pulled first. */
  imageId?: string;
  argv: readonly string[];
  containerName: string;
  /** The staging folder of this run's mounts under STAGING_DIR. */
  staging: string;
  tty: boolean;
  /** Pass stdin on; off with `--no-stdin`. */
  stdin: boolean;
  labels: Readonly<Record<string, string>>;
  /** The cgroup the container is created in (inside a Slurm job), relative to each controller's root. */
  cgroupParent?: string;
  mounts: readonly Mount[];
  /** Where the engine would create mount points and the working directory (see mountPoints). */
  mountPoints: readonly MountPoint[];
  /** The image's layer folders, when a mount point in the image must be checked and the image is here. */
  imageLayers?: readonly string[];
  /** How each mount reaches the container (see mountRoutes). */
  mountRoutes: readonly MountRoute[];
  /** The working folder lies below a mount's root: the image's shell enters it (see ENTER_WORKDIR). */
  workdirInMount: boolean;
  /** `-w` names a folder in the image (no mount or --tmpfs holds it): it must exist there (workdirProblem). */
  workdirInImage?: boolean;
  /** The entrypoint (the image's own when it is here, or --entrypoint's; see startCommand). */
  imageEntrypoint: readonly string[];
  /** The command the entrypoint gets (the COMMAND given, or the image's CMD; see startCommand). */
  cmd: readonly string[];
  /** `--entrypoint` as given: the engine is told the entrypoint explicitly. */
  entrypointOption?: string;
  workdir?: string;
  /** `NAME=VALUE` entries. */
  env: readonly string[];
  /** The `--tmpfs` scratch folders. */
  tmpfs: readonly TmpfsMount[];
  /** /dev/shm's size in bytes (private IPC only; see shmBytes). */
  shmBytes?: number;
  network: Settings["network"];
  ipc: Settings["ipc"];
  pid: Settings["pid"];
  uts: Settings["uts"];
  /** Device nodes (the job's GPUs). */
  devices: readonly string[];
  /** The engine runtime (socker-runc on cgroup v1 with constrained devices); the engine's default if absent. */
  runtime?: string;
  ulimits: readonly { Name: string; Soft: number; Hard: number }[];
  /**
   * The container's OOM score adjustment: 1000 when socker could not keep the kernel's OOM killer off
   * itself (root without CAP_SYS_RESOURCE, on cgroup v2), so that inside the job's memory limit the
   * container's processes are chosen before the supervisor; undefined (the engine's 0) otherwise.
   */
  oomScoreAdj?: number;
  /** The caller's own containers on this node whose supervisor died: removed before this run starts. */
  orphans: readonly Orphan[];
  /** One-line hints for the caller (printed on stderr; they change nothing). */
  hints: readonly string[];
  job?: JobStep;
  /** The syslog facility of the run's audit records (`log_facility`). */
  logFacility: string;
  /** Whether a step's tasks share a container (`share`; see planShare). */
  share: Settings["share"];
};

/** A container (or a staging folder) whose supervising socker is gone. */
export type Orphan = { container?: string; name?: string; staging?: string; uid?: string; job?: string };

/** The detach sequence of attached terminals: one that no one types (the engine has no way to turn it off). */
export const DETACH_KEYS = "ctrl-^,ctrl-@,ctrl-^,ctrl-@,ctrl-^,ctrl-@,ctrl-^,ctrl-@";

/**
 * The engine's create request for a plan: `--rm --init`, never pulled, as the caller with their groups, no
 * capabilities, `no-new-privileges`, no log driver (output goes to the caller only, nothing is written
 * under /var/lib/docker as root), the administrator's namespaces, the job's cgroup, the checked mounts
 * (`sources[i]`: the path the engine binds for `plan.mounts[i]`, socker's staging path or the fixed real
 * path), the caller's limits. The user's image text never reaches the engine: only the allowlisted
 * canonical reference does.
 */
export function containerSpec(
  plan: RunPlan,
  sources: readonly (string | undefined)[],
  start: { shell?: string; entrypoint?: readonly string[]; cmd?: readonly string[]; env?: readonly string[] } = {},
): Record<string, unknown> {
  const host = (mode: "private" | "host", otherwise: string) => (mode === "host" ? "host" : otherwise);
  // A working folder inside a mount is entered by the image's shell, as the caller; the engine starts in
  // `/`, which every image has. Without a shell in the image the engine enters it (see README).
  const entered = plan.workdirInMount && start.shell !== undefined;
  const entrypoint = start.entrypoint ?? plan.imageEntrypoint;
  return {
    Image: plan.entry.canonical,
    ...(entered
      ? { Entrypoint: [start.shell, "-c", ENTER_WORKDIR, "socker-workdir", plan.workdir, ...entrypoint] }
      : plan.entrypointOption !== undefined
      ? { Entrypoint: entrypoint }
      : {}),
    Cmd: start.cmd ?? (plan.argv.length > 0 ? plan.argv : plan.cmd),
    User: `${plan.caller.uid}:${plan.caller.gid}`,
    Env: start.env ?? plan.env,
    WorkingDir: entered ? "/" : plan.workdir ?? "",
    Labels: plan.labels,
    Tty: plan.tty,
    OpenStdin: plan.stdin,
    StdinOnce: plan.stdin,
    AttachStdin: plan.stdin,
    AttachStdout: true,
    AttachStderr: true,
    HostConfig: {
      AutoRemove: true,
      Init: true,
      Privileged: false,
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      LogConfig: { Type: "none", Config: {} },
      NetworkMode: plan.network,
      IpcMode: host(plan.ipc, "private"),
      PidMode: host(plan.pid, ""),
      UTSMode: host(plan.uts, ""),
      CgroupParent: plan.cgroupParent ?? "",
      GroupAdd: plan.caller.groups.map(String),
      // Binds are recursive: the mounts socker made inside a staged copy come along with it.
      Mounts: plan.mounts.flatMap((mount, index) =>
        sources[index] === undefined
          ? []
          : [{ Type: "bind", Source: sources[index], Target: mount.destination, ReadOnly: mount.readOnly }]
      ),
      Devices: plan.devices.map((device) => ({
        PathOnHost: device,
        PathInContainer: device,
        CgroupPermissions: "rwm",
      })),
      Ulimits: plan.ulimits,
      ...(plan.shmBytes !== undefined ? { ShmSize: plan.shmBytes } : {}),
      ...(plan.tmpfs.length > 0
        ? {
          Tmpfs: Object.fromEntries(
            plan.tmpfs.map((item) => [item.destination, `rw,nosuid,nodev,size=${item.bytes},mode=1777`]),
          ),
        }
        : {}),
      ...(plan.oomScoreAdj !== undefined ? { OomScoreAdj: plan.oomScoreAdj } : {}),
      ...(plan.runtime !== undefined ? { Runtime: plan.runtime } : {}),
    },
  };
}

/** A container name socker can find again: `socker-<uid>-<random>`. */
export function containerName(uid: number, random: Uint8Array): string {
  return `socker-${uid}-${Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * The staging folder of a container's mounts, named after the job (so that the job's Epilog finds it) and
 * the supervisor (so that the reaper knows when it is abandoned): `[job_<id>.]<container>@<pid>-<start>`.
 */
export function stagingName(container: string, jobId: string | undefined, supervisor: string): string {
  return `${jobId === undefined ? "" : `job_${jobId}.`}${container}@${supervisor.replace(":", "-")}`;
}

/** Reads a staging folder's name back: the container, the supervisor and, inside a job, the job. */
export function parseStagingName(staging: string): { container: string; jobId?: string; supervisor?: string } {
  const match = /^(?:job_(\d+)\.)?(socker-\d+-[0-9a-f]+)(?:@(\d+)-(\d+))?$/.exec(staging);
  if (!match) return { container: staging };
  const [, jobId, container, pid, start] = match;
  return { container, jobId, supervisor: pid === undefined ? undefined : `${pid}:${start}` };
}

/** The supervisor label's value: this process's pid and its start time in clock ticks since boot. */
export function supervisorId(pid: number, procStat: string): string | undefined {
  const fields = procStat.slice(procStat.lastIndexOf(")") + 2).split(" ");
  const start = boundedInt(fields[19], 0, Number.MAX_SAFE_INTEGER);
  return start === undefined ? undefined : `${pid}:${start}`;
}

/**
 * Whether a supervisor recorded as `<pid>:<start>` still runs: the process exists and started at that
 * moment (a reused pid has another start time). `procStat` is /proc/<pid>/stat, or undefined when absent.
 */
export function supervisorAlive(recorded: string | undefined, procStat: string | undefined): boolean {
  const match = /^(\d+):(\d+)$/.exec(recorded ?? "");
  if (!match || procStat === undefined) return false;
  return supervisorId(Number(match[1]), procStat) === recorded;
}

// ---------------------------------------------------------------------------------------------------------
// The C library and the kernel, called in-process (a process start costs ~5 ms of every run): the user
// database through NSS, and system calls made directly (per thread, which glibc's wrappers are not: path
// checks are made with the caller's credentials on this one thread). Every symbol costs ~0.3 ms to bind,
// so there are five: the two NSS lookups, syscall(2), errno and its text.

const LIBC_SYMBOLS = {
  getpwnam: { parameters: ["buffer"], result: "pointer" },
  getgrouplist: { parameters: ["buffer", "u32", "buffer", "buffer"], result: "i32" },
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;
type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
let openedLibc: Libc | undefined;
function libc(): Libc {
  openedLibc ??= Deno.dlopen("libc.so.6", LIBC_SYMBOLS).symbols;
  return openedLibc;
}

/** The Linux system calls socker makes, by their numbers on the two CPUs Deno runs on. */
const SYSCALLS = Deno.build.arch === "aarch64"
  ? {
    close: 57n,
    readlinkat: 78n,
    openat: 56n,
    statx: 291n,
    mount: 40n,
    umount2: 39n,
    prlimit64: 261n,
    prctl: 167n,
    socket: 198n,
    connect: 203n,
    sendto: 206n,
    setfsuid: 151n,
    setfsgid: 152n,
    getgroups: 158n,
    setgroups: 159n,
    faccessat2: 439n,
    write: 64n,
    mkdirat: 34n,
    openat2: 437n,
    capget: 90n,
    capset: 91n,
    lgetxattr: 9n,
  }
  : {
    close: 3n,
    readlinkat: 267n,
    openat: 257n,
    statx: 332n,
    mount: 165n,
    umount2: 166n,
    prlimit64: 302n,
    prctl: 157n,
    socket: 41n,
    connect: 42n,
    sendto: 44n,
    setfsuid: 122n,
    setfsgid: 123n,
    getgroups: 115n,
    setgroups: 116n,
    faccessat2: 439n,
    write: 1n,
    mkdirat: 258n,
    openat2: 437n,
    capget: 125n,
    capset: 126n,
    lgetxattr: 192n,
  };

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const cString = (text: string) => encoder.encode(`${text}\0`);
/** A system call's argument: a number, or a buffer passed by its address. */
type Arg = number | bigint | Uint8Array | Uint32Array | BigUint64Array | null;
const argument = (value: Arg): bigint =>
  value === null
    ? 0n
    : typeof value === "bigint"
    ? value
    : typeof value === "number"
    ? BigInt(value)
    : BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(value)));

/** Makes one system call; returns its result (-1 with errno set on failure, as glibc's syscall(2)). */
function sys(number: bigint, ...args: Arg[]): number {
  const a = [...args, 0, 0, 0, 0, 0, 0].slice(0, 6).map(argument);
  return Number(libc().syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]));
}

function lastErrno(): number {
  return new Deno.UnsafePointerView(libc().__errno_location()!).getInt32();
}

function errnoText(errno: number): string {
  const text = libc().strerror(errno);
  return text === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(text);
}

/** glibc's `struct passwd` on 64-bit Linux: name, passwd, uid (16), gid (20), gecos, dir (32), shell. */
const PASSWD_UID_OFFSET = 16;
const PASSWD_GID_OFFSET = 20;
const PASSWD_DIR_OFFSET = 32;
const MAX_GROUPS = 65536;

/**
 * Asks the C library, through NSS exactly as `id` would, for a user's uid, gid, home and groups. Returns
 * why not when the user is unknown.
 */
function userRecord(user: string): UserRecord | string {
  const name = cString(user);
  const entry = libc().getpwnam(name);
  if (entry === null) return `user '${printable(user)}' is not in the user database; refusing`;
  const view = new Deno.UnsafePointerView(entry);
  const uid = view.getUint32(PASSWD_UID_OFFSET);
  const gid = view.getUint32(PASSWD_GID_OFFSET);
  const dirPointer = view.getPointer(PASSWD_DIR_OFFSET);
  const dir = dirPointer === null ? "" : Deno.UnsafePointerView.getCString(dirPointer);
  let groups = new Uint32Array(64);
  const count = new Int32Array([groups.length]);
  if (libc().getgrouplist(name, gid, groups, new Uint8Array(count.buffer)) < 0) {
    if (count[0] <= 0 || count[0] > MAX_GROUPS) return `cannot list the groups of '${printable(user)}'`;
    groups = new Uint32Array(count[0]);
    if (libc().getgrouplist(name, gid, groups, new Uint8Array(count.buffer)) < 0) {
      return `cannot list the groups of '${printable(user)}'`;
    }
  }
  return { uid, gid, home: isCleanAbsolute(dir) ? dir : undefined, groups: [...groups.slice(0, count[0])] };
}

/** setfsuid/setfsgid with an invalid id change nothing and return the current one. */
const CURRENT = 0xffffffff;

/** capget/capset's header (version 3, this thread) and data: effective, permitted, inheritable, twice. */
const CAPABILITY_VERSION_3 = 0x20080522;

/** This thread's capability sets (two 32-bit words each), or undefined when the kernel will not say. */
function threadCapabilities(): Uint32Array | undefined {
  const data = new Uint32Array(6);
  return sys(SYSCALLS.capget, new Uint32Array([CAPABILITY_VERSION_3, 0]), data) === 0 ? data : undefined;
}

/** Sets this thread's effective capabilities (the permitted set stays, so they can be raised again). */
function setEffectiveCapabilities(saved: Uint32Array, effective: [number, number]): boolean {
  const data = saved.slice();
  [data[0], data[3]] = effective;
  return sys(SYSCALLS.capset, new Uint32Array([CAPABILITY_VERSION_3, 0]), data) === 0;
}

/**
 * Runs `body` with the caller's filesystem credentials on this thread only: fsuid, fsgid and groups, and no
 * effective capability at all. The kernel then judges every path lookup, open and access check as the
 * caller: without CAP_SYS_PTRACE, /proc/PID/cwd and /proc/PID/root of another user's process are closed,
 * as they are to the caller; without CAP_DAC_*, so is every folder the caller cannot search. JavaScript
 * runs on this one thread and `body` is synchronous, so nothing else runs with these credentials. If they
 * cannot be put back, socker stops at once.
 */
function asCaller<T>(caller: Caller, body: () => T): T {
  const saved = new Uint32Array(MAX_GROUPS);
  const savedCount = sys(SYSCALLS.getgroups, saved.length, saved);
  const capabilities = threadCapabilities();
  const groups = new Uint32Array([caller.gid, ...caller.groups]);
  if (savedCount < 0 || capabilities === undefined || sys(SYSCALLS.setgroups, groups.length, groups) !== 0) {
    refuse("installation", `cannot take on your groups to check paths: ${errnoText(lastErrno())}`);
  }
  sys(SYSCALLS.setfsgid, caller.gid);
  sys(SYSCALLS.setfsuid, caller.uid);
  try {
    if (sys(SYSCALLS.setfsuid, CURRENT) !== caller.uid || sys(SYSCALLS.setfsgid, CURRENT) !== caller.gid) {
      refuse("installation", "cannot take on your identity to check paths");
    }
    const dropped = setEffectiveCapabilities(capabilities, [0, 0]);
    if (!dropped || threadCapabilities()?.[0] !== 0 || threadCapabilities()?.[3] !== 0) {
      refuse("installation", "cannot put root's capabilities aside to check paths");
    }
    return body();
  } finally {
    const raised = setEffectiveCapabilities(capabilities, [capabilities[0], capabilities[3]]);
    sys(SYSCALLS.setfsuid, 0);
    sys(SYSCALLS.setfsgid, 0);
    const restored = raised && sys(SYSCALLS.setgroups, savedCount, saved) === 0;
    if (!restored || sys(SYSCALLS.setfsuid, CURRENT) !== 0 || sys(SYSCALLS.setfsgid, CURRENT) !== 0) {
      console.error("socker: internal error: cannot restore root's credentials; stopping");
      Deno.exit(EXIT.REFUSED);
    }
    rearmParentWatch(); // the kernel clears the parent-death signal when the fsuid changes
  }
}

const AT_FDCWD = -100, O_PATH = 0o10000000, O_CLOEXEC = 0o2000000;
const AT_EMPTY_PATH = 0x1000, AT_EACCESS = 0x200, AT_SYMLINK_NOFOLLOW = 0x100;
const R_OK = 4, W_OK = 2, X_OK = 1;
const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;
const STATX_MNT_ID = 0x1000;
const ENOENT = 2, ENOSYS = 38, EROFS = 30, EXDEV = 18;

/**
 * Where statx(2) writes each field socker reads (struct statx, linux/stat.h: the same layout on every CPU),
 * in bytes from the start of its buffer.
 */
const STATX_OFFSET = {
  mask: 0, // u32 stx_mask: which fields the kernel filled
  nlink: 16, // u32 stx_nlink
  uid: 20, // u32 stx_uid
  mode: 28, // u16 stx_mode
  inode: 32, // u64 stx_ino
  size: 40, // u64 stx_size
  rdevMajor: 128, // u32 stx_rdev_major
  rdevMinor: 132, // u32 stx_rdev_minor
  devMajor: 136, // u32 stx_dev_major
  devMinor: 140, // u32 stx_dev_minor
  mountId: 144, // u64 stx_mnt_id (only when the mask has STATX_MNT_ID)
} as const;
/** The size of struct statx (256 bytes), and the fields every call asks for (STATX_BASIC_STATS). */
const STATX_SIZE = 256, STATX_BASIC_STATS = 0x7ff;

/** What one statx(2) call wrote, decoded. */
export type Statx = {
  kind: PathProbe["kind"];
  mode: number;
  uid: number;
  nlink: number;
  inode: number;
  size: number;
  /** The device a file lives on, as major * 2^20 + minor (the kernel's own encoding). */
  device: number;
  /** The device a device file stands for. */
  rdev: { major: number; minor: number };
  mount?: bigint;
};

/** Decodes the buffer statx(2) filled: the one place that knows its layout. */
export function decodeStatx(buffer: Uint8Array): Statx {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const at = STATX_OFFSET;
  const mode = view.getUint16(at.mode, true);
  const kind = (mode & S_IFMT) === S_IFDIR ? "dir" : (mode & S_IFMT) === S_IFREG ? "file" : "other";
  return {
    kind,
    mode,
    uid: view.getUint32(at.uid, true),
    nlink: view.getUint32(at.nlink, true),
    inode: Number(view.getBigUint64(at.inode, true)),
    size: Number(view.getBigUint64(at.size, true)),
    device: view.getUint32(at.devMajor, true) * 2 ** 20 + view.getUint32(at.devMinor, true),
    rdev: { major: view.getUint32(at.rdevMajor, true), minor: view.getUint32(at.rdevMinor, true) },
    mount: (view.getUint32(at.mask, true) & STATX_MNT_ID) !== 0 ? view.getBigUint64(at.mountId, true) : undefined,
  };
}

/** A file's kind, owner, device and inode, from an open descriptor. */
function statHandle(fd: number): Statx | undefined {
  const buffer = new Uint8Array(STATX_SIZE);
  if (sys(SYSCALLS.statx, fd, cString(""), AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_MNT_ID, buffer) !== 0) {
    return undefined;
  }
  return decodeStatx(buffer);
}

/**
 * Whether two descriptors hold the same object through the same mount: same device, inode and mount id
 * (one object can be visible through several mounts, and only the mount decides what a path names).
 */
function sameObject(a: number, b: number): boolean {
  const [first, second] = [statHandle(a), statHandle(b)];
  return first !== undefined && second !== undefined && first.mount !== undefined &&
    first.device === second.device && first.inode === second.inode && first.mount === second.mount;
}

/** What statx says of a file: its kind, owner, mode, size and number of names. */
export type FileFacts = { kind: PathProbe["kind"]; uid: number; mode: number; size: number; nlink: number };

/**
 * What statx says of a path (symlinks followed unless `noFollow`), or of an open descriptor when `path`
 * is "" and `fd` is given; the errno when it cannot be looked at.
 */
function pathInfo(path: string, options: { noFollow?: boolean; fd?: number } = {}): FileFacts | number {
  const buffer = new Uint8Array(STATX_SIZE);
  const flags = (options.noFollow ? AT_SYMLINK_NOFOLLOW : 0) | (options.fd !== undefined ? AT_EMPTY_PATH : 0);
  if (sys(SYSCALLS.statx, options.fd ?? AT_FDCWD, cString(path), flags, STATX_BASIC_STATS, buffer) !== 0) {
    return lastErrno();
  }
  const { kind, uid, mode, size, nlink } = decodeStatx(buffer);
  return { kind, uid, mode, size, nlink };
}

const O_WRONLY = 0o1, O_CREAT = 0o100, O_EXCL = 0o200, O_APPEND = 0o2000, O_NOFOLLOW = 0o400000, EEXIST = 17;

/** Creates a folder; true when it exists now (made or already there). */
function makeFolder(path: string, mode: number): boolean {
  return sys(SYSCALLS.mkdirat, AT_FDCWD, cString(path), mode) === 0 || lastErrno() === EEXIST;
}

/**
 * Appends bytes to a file in one write, creating it with `mode`, never through a symlink; `check` judges
 * the file opened before anything is written. Returns why not, or undefined.
 */
function appendToFile(path: string, bytes: Uint8Array, mode: number, check: (facts: FileFacts) => string | undefined) {
  const fd = sys(
    SYSCALLS.openat,
    AT_FDCWD,
    cString(path),
    O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
    mode,
  );
  if (fd < 0) return errnoText(lastErrno());
  try {
    const facts = pathInfo("", { fd });
    if (typeof facts === "number") return errnoText(facts);
    const problem = check(facts);
    if (problem !== undefined) return problem;
    const written = sys(SYSCALLS.write, fd, bytes, bytes.length);
    return written === bytes.length ? undefined : written < 0 ? errnoText(lastErrno()) : "short write";
  } finally {
    closeHandle(fd);
  }
}

/** The real path of a path as root sees it (no symlinks, no `..`), or the errno. */
function rootRealPath(path: string): string | number {
  const fd = sys(SYSCALLS.openat, AT_FDCWD, cString(path), O_PATH | O_CLOEXEC, 0);
  if (fd < 0) return lastErrno();
  try {
    return handlePath(fd) ?? ENOENT;
  } finally {
    closeHandle(fd);
  }
}

/** The path the kernel knows an open descriptor by (a real path: no symlinks, no `..`). */
function handlePath(fd: number): string | undefined {
  const buffer = new Uint8Array(4097);
  const length = sys(SYSCALLS.readlinkat, AT_FDCWD, cString(`/proc/thread-self/fd/${fd}`), buffer, buffer.length);
  if (length <= 0 || length >= buffer.length) return undefined;
  const path = exactText(buffer.slice(0, length)); // a name that is not UTF-8 is judged unreachable
  return typeof path === "string" && isCleanAbsolute(path) && !path.endsWith(" (deleted)") ? path : undefined;
}

/** Whether the caller (inside `asCaller`) may read, write or search what a descriptor holds. */
function mayAccess(fd: number, mode: number): boolean {
  const result = sys(SYSCALLS.faccessat2, fd, cString(""), mode, AT_EMPTY_PATH | AT_EACCESS);
  if (result !== 0 && lastErrno() === ENOSYS) {
    refuse("installation", "this kernel lacks faccessat2 (Linux 5.8 or later); socker cannot check paths as you");
  }
  return result === 0;
}

const RESOLVE_NO_MAGICLINKS = 0x02, RESOLVE_NO_SYMLINKS = 0x04, RESOLVE_BENEATH = 0x08;
const ELOOP = 40;

/**
 * openat2(2): opens `path` (relative to `dirfd`) under the `resolve` rules. Returns the descriptor, or -1
 * with errno set (ELOOP when a rule was broken). Linux 5.6 and later; socker needs 5.8 (faccessat2).
 */
function openResolved(dirfd: number, path: string, flags: number, resolve: number, mode = 0): number {
  const how = new BigUint64Array([BigInt(flags), BigInt(mode), BigInt(resolve)]);
  const fd = sys(SYSCALLS.openat2, dirfd, cString(path), how, how.byteLength);
  if (fd < 0 && lastErrno() === ENOSYS) {
    refuse("installation", "this kernel lacks openat2 (Linux 5.6 or later); socker cannot check paths as you");
  }
  return fd;
}

/**
 * Judges the mount of an open descriptor before anything looks into it (set once per run by readRunPaths,
 * from the mount table read first and `user_filesystems`); undefined (no judgement) outside a run.
 */
let mountJudge: ((fd: number) => string | undefined) | undefined;

/**
 * The mount id of an open descriptor, from /proc/thread-self/fdinfo: the kernel answers from the
 * descriptor itself, without asking its filesystem (statx would ask a FUSE daemon, and could hang).
 */
function mountIdOf(fd: number): number | undefined {
  const match = /^mnt_id:\s*(\d+)$/m.exec(readText(`/proc/thread-self/fdinfo/${fd}`) ?? "");
  return match ? boundedInt(match[1], 0, 2 ** 31) : undefined;
}

/** A judge of mounts from the table read before any path was touched and the administrator's setting. */
function judgeMounts(table: ReadonlyMap<number, MountEntry>, allow: boolean): (fd: number) => string | undefined {
  let current = table;
  return (fd) => {
    const id = mountIdOf(fd);
    if (id === undefined) return UNREACHABLE;
    // A mount made since the table was read (socker's own staging binds, or a user's new FUSE): read the
    // table again, which names it without asking any filesystem; still unknown, it is judged a user's.
    if (!current.has(id)) current = parseMountTable(readText(MOUNTINFO_PATH) ?? "");
    // In a chroot the mount that holds this process's root lies outside it, so the table never lists it:
    // that mount is the administrator's (only root can chroot), never a user's.
    if (!current.has(id) && id === rootMountId()) return undefined;
    return userFilesystemProblem(current.get(id), allow);
  };
}

/** The mount id of this process's root folder (read once). */
let cachedRootMountId: number | undefined | null = null;
function rootMountId(): number | undefined {
  if (cachedRootMountId !== null) return cachedRootMountId;
  const fd = sys(SYSCALLS.openat, AT_FDCWD, cString("/"), O_PATH | O_CLOEXEC, 0);
  cachedRootMountId = fd < 0 ? undefined : mountIdOf(fd);
  if (fd >= 0) closeHandle(fd);
  return cachedRootMountId;
}

/** The most symlinks one walk follows, as the kernel's own path walk. */
const WALK_LINKS_MAX = 40;

/**
 * Resolves an absolute path as the caller (call inside `asCaller`), one component at a time, the way the
 * kernel would, but judging the mount of every object reached (`mountJudge`) before looking into it or
 * asking its filesystem anything: a user's FUSE filesystem is refused at its mount point, never entered.
 * Symlinks are followed (at most WALK_LINKS_MAX); one on /proc (a magic link) is THROUGH_PROC_LINK.
 * Returns an O_PATH descriptor of what the path names, or why not.
 */
function walkJudged(path: string): number | string {
  const judge = mountJudge ?? (() => undefined);
  const parts = (text: string) => text.split("/").filter((part) => part !== "" && part !== ".");
  let fd = openResolved(AT_FDCWD, "/", O_PATH | O_CLOEXEC, 0);
  if (fd < 0) return UNREACHABLE;
  const rootProblem = judge(fd);
  if (rootProblem !== undefined) return closeHandle(fd), rootProblem;
  let todo = parts(path);
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    const next = openResolved(fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC, RESOLVE_NO_MAGICLINKS);
    if (next < 0) {
      const errno = lastErrno();
      closeHandle(fd);
      return errno === ELOOP ? THROUGH_PROC_LINK : UNREACHABLE;
    }
    const problem = judge(next);
    if (problem !== undefined) {
      closeHandle(next);
      closeHandle(fd);
      return problem;
    }
    const info = statHandle(next);
    if (info === undefined) {
      closeHandle(next);
      closeHandle(fd);
      return UNREACHABLE;
    }
    if ((info.mode & S_IFMT) !== S_IFLNK) {
      closeHandle(fd);
      fd = next;
      continue;
    }
    const buffer = new Uint8Array(4097);
    const length = sys(SYSCALLS.readlinkat, next, cString(""), buffer, buffer.length);
    const target = length > 0 && length < buffer.length ? exactText(buffer.slice(0, length)) : undefined;
    const onProc = handlePath(next)?.startsWith("/proc/") === true;
    closeHandle(next);
    if (onProc || ++links > WALK_LINKS_MAX || target === undefined || typeof target !== "string") {
      closeHandle(fd);
      return onProc || links > WALK_LINKS_MAX ? THROUGH_PROC_LINK : UNREACHABLE;
    }
    todo = [...parts(target), ...todo];
    if (target.startsWith("/")) {
      closeHandle(fd);
      fd = openResolved(AT_FDCWD, "/", O_PATH | O_CLOEXEC, 0);
      if (fd < 0) return UNREACHABLE;
    }
  }
  return fd;
}

/**
 * Opens a path as the caller (call inside `asCaller`) and asks the kernel what they may do with the
 * object it leads to. Everything the caller cannot reach gets the one answer UNREACHABLE, so that no
 * message tells them what exists inside a folder closed to them. The descriptor stays open for the mount.
 */
function probePath(path: string): PathProbe | string {
  const fd = walkJudged(path);
  if (typeof fd === "string") return fd;
  const info = statHandle(fd);
  const realPath = handlePath(fd);
  if (info === undefined || realPath === undefined) {
    closeHandle(fd);
    return UNREACHABLE;
  }
  return {
    realPath,
    kind: info.kind,
    owner: info.uid,
    device: info.device,
    inode: info.inode,
    readable: mayAccess(fd, R_OK),
    writable: mayAccess(fd, W_OK),
    searchable: info.kind === "dir" && mayAccess(fd, X_OK),
    handle: fd,
  };
}

function closeHandle(fd: number): void {
  if (fd >= 0) sys(SYSCALLS.close, fd);
}

const EACCES = 13, EPERM = 1, ENOTDIR = 20;

/**
 * Walks from a folder's descriptor down `below` as the caller (call inside `asCaller`), never through a
 * symlink or out of the folder; with `create`, makes each missing folder (and, when `kind` is "file", the
 * last part as an empty file) as the caller, else stops at the first missing part. `shown` names the
 * folder in messages; `keep` receives the descriptor of what the walk reached, left open. Returns why not,
 * or undefined.
 */
function walkAndCreate(
  start: number,
  below: readonly string[],
  kind: "dir" | "file",
  shown: string,
  create: boolean,
  keep?: { fd: number },
): string | undefined {
  const opened: number[] = [];
  const rules = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH;
  try {
    let folder = start;
    for (const [index, name] of below.entries()) {
      const last = index === below.length - 1;
      const want = last ? kind : "dir";
      const here = printable(`${shown}/${below.slice(0, index + 1).join("/")}`);
      let fd = openResolved(folder, name, O_PATH | O_CLOEXEC, rules);
      if (fd < 0 && lastErrno() === ENOENT && !create) return undefined; // checked as far as it exists
      if (fd < 0 && lastErrno() === ENOENT) {
        const made = want === "dir" ? sys(SYSCALLS.mkdirat, folder, cString(name), 0o755) === 0 : closeCreated(
          sys(SYSCALLS.openat, folder, cString(name), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644),
        );
        if (!made && lastErrno() !== EEXIST) {
          const errno = lastErrno();
          return `cannot create ${here} as you: ${
            errno === EACCES || errno === EPERM || errno === EROFS ? "you may not create it" : errnoText(errno)
          }`;
        }
        fd = openResolved(folder, name, O_PATH | O_CLOEXEC, rules);
      }
      if (fd < 0) {
        const errno = lastErrno();
        if (errno === ELOOP || errno === EXDEV) {
          return `${here} is a symlink, which the engine would follow as root inside the container: name the ` +
            "folder it leads to";
        }
        return `${here} ${errno === ENOTDIR ? "is not a folder" : UNREACHABLE}`;
      }
      opened.push(fd);
      const judged = mountJudge?.(fd); // before anything asks the filesystem there
      if (judged !== undefined) return `${here} ${judged}`;
      const kindThere = statHandle(fd)?.kind;
      if (kindThere !== want) return `${here} exists and is not a ${want === "dir" ? "folder" : "file"}`;
      folder = fd;
    }
    if (keep !== undefined && opened.length === below.length && opened.length > 0) keep.fd = opened.pop()!;
    return undefined;
  } finally {
    opened.forEach(closeHandle);
  }
}

/** Closes a descriptor just created; whether there was one. */
function closeCreated(fd: number): boolean {
  if (fd < 0) return false;
  closeHandle(fd);
  return true;
}

/** The image's shell (see IMAGE_SHELLS), read from its layers; undefined when it has none. */
function imageShell(layers: readonly string[]): string | undefined {
  return IMAGE_SHELLS.find((shell) => {
    const found = imageEntryAt(
      shell.split("/").filter(Boolean),
      layers.length,
      (layer, path) => layerEntry(`${layers[layer]}${path}`),
    );
    return found === "other" || found === "symlink";
  });
}

/** What an image layer folder holds at `path` (lstat: a symlink is never followed). */
function layerEntry(path: string): LayerEntry {
  const buffer = new Uint8Array(STATX_SIZE);
  if (sys(SYSCALLS.statx, AT_FDCWD, cString(path), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, buffer) !== 0) {
    return lastErrno() === ENOENT || lastErrno() === ENOTDIR ? "missing" : "other";
  }
  const { mode, rdev } = decodeStatx(buffer);
  const type = mode & S_IFMT;
  if (type === S_IFLNK) return "symlink";
  if (type === S_IFCHR && rdev.major === 0 && rdev.minor === 0) return "whiteout";
  if (type !== S_IFDIR) return "other";
  const value = new Uint8Array(8);
  const length = sys(SYSCALLS.lgetxattr, cString(path), cString("trusted.overlay.opaque"), value, value.length);
  return length === 1 && value[0] === 0x79 /* y */ ? "opaque" : "dir";
}

const MS_BIND = 4096, MNT_DETACH = 2;

const MS_REMOUNT = 32, MS_RDONLY = 1, MS_PRIVATE = 1 << 18, MS_REC = 1 << 14;

/**
 * Binds `source` at `target`, with every mount below it (as the engine's own binds do): a plain bind would
 * show what a mount on the host covers, which the caller cannot see there.
 */
function bindTree(source: string, target: string): string | undefined {
  if (sys(SYSCALLS.mount, cString(source), cString(target), null, MS_BIND | MS_REC, null) === 0) return undefined;
  return errnoText(lastErrno());
}

/** Binds exactly the object an open descriptor holds at `target` (no path is looked up again). */
function bindHandle(fd: number, target: string): string | undefined {
  return bindTree(`/proc/thread-self/fd/${fd}`, target);
}

/**
 * Makes the mount at `target` and every mount below it private: mounts made inside them later never
 * propagate to the host's view, and a bind of them is private too.
 */
function keepPrivate(target: string): string | undefined {
  const flags = MS_REC | MS_PRIVATE;
  return sys(SYSCALLS.mount, null, cString(target), null, flags, null) === 0 ? undefined : errnoText(lastErrno());
}

/** Makes the bind mount at `target` read-only. */
function makeReadOnly(target: string): string | undefined {
  const flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
  return sys(SYSCALLS.mount, null, cString(target), null, flags, null) === 0 ? undefined : errnoText(lastErrno());
}

/** Detaches whatever is mounted at `target`; true when something was. */
function unmount(target: string): boolean {
  return sys(SYSCALLS.umount2, cString(target), MNT_DETACH) === 0;
}

const RLIM_INFINITY = 0xffffffffffffffffn;

/** This process's limits, from the kernel. */
function currentLimits(): Limits {
  const limits: Limits = {};
  const buffer = new BigUint64Array(2);
  for (const row of LIMIT_ROWS) {
    if (sys(SYSCALLS.prlimit64, 0, row.resource, null, buffer) !== 0) continue;
    const value = (n: bigint) => (n === RLIM_INFINITY ? Infinity : Number(n));
    limits[row.name] = { soft: value(buffer[0]), hard: value(buffer[1]) };
  }
  return limits;
}

function setLimit(resource: number, soft: number, hard: number): string | undefined {
  const value = (n: number) => (n === Infinity ? RLIM_INFINITY : BigInt(n));
  const buffer = new BigUint64Array([value(soft), value(hard)]);
  return sys(SYSCALLS.prlimit64, 0, resource, buffer, null) === 0 ? undefined : errnoText(lastErrno());
}

export const OOM_SCORE_ADJ_MIN = -1000, OOM_SCORE_ADJ_MAX = 1000;

/** The memory cgroup of a cgroup v1 process, from /proc/self/cgroup; undefined on cgroup v2. */
export function memoryCgroupV1(procSelfCgroup: string): string | undefined {
  const line = procSelfCgroup.split("\n").find((item) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(item));
  return line === undefined ? undefined : line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1);
}

/**
 * Keeps the kernel's OOM killer off socker. Inside a job socker shares the step's memory limit with its
 * container, and the OOM killer takes the largest process there, which a container of small processes
 * makes the supervisor. oom_score_adj -1000 does it, where root has CAP_SYS_RESOURCE; on cgroup v1 socker
 * can instead leave the step's memory cgroup for the root one (it stays in the step's freezer cgroup, so
 * Slurm still signals it; its ~45 MB are then not charged to the job). Called after /proc/self/cgroup was
 * read. Returns whether either held.
 */
function protectFromOomKiller(procSelfCgroup: string): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/oom_score_adj", String(OOM_SCORE_ADJ_MIN));
    if (readText("/proc/self/oom_score_adj")?.trim() === String(OOM_SCORE_ADJ_MIN)) return true;
  } catch { /* any error: this is best effort (no CAP_SYS_RESOURCE, say); the memory cgroup is tried next */ }
  const memory = memoryCgroupV1(procSelfCgroup);
  if (memory === undefined || memory === "/") return memory === "/";
  try {
    Deno.writeTextFileSync("/sys/fs/cgroup/memory/cgroup.procs", String(Deno.pid));
    return memoryCgroupV1(readText("/proc/self/cgroup") ?? "") === "/";
  } catch { // any error: best effort; false only says that the supervisor is not protected
    return false;
  }
}

/**
 * Asks the kernel for SIGHUP when the parent (sudo) dies, so that a container never outlives its caller's
 * command. (Job-control stops and the file-size signal are ignored by the entry point, before Deno starts:
 * the caller could otherwise stop the supervisor with a SIGTSTP relayed by their own sudo.)
 */
function hangUpWithParent(): void {
  const PR_SET_PDEATHSIG = 1;
  // A sudo killed before this line runs has left socker to init, and watching init would never hang it
  // up: so the parent watched is the one the entry point named (its own parent), and a caller's run goes
  // on only while that parent is sudo (killed before the entry point even started, it never was).
  const first = watchedParent === undefined;
  watchedParent ??= boundedInt(Deno.env.get("SOCKER_PARENT") ?? "", 1, PID_MAX) ?? Deno.ppid;
  sys(SYSCALLS.prctl, PR_SET_PDEATHSIG, SIGHUP_NUMBER);
  // The parent may have died before the request took: then the signal is due now.
  const orphaned = Deno.ppid !== watchedParent ||
    (first && Deno.uid() === 0 && Deno.env.get("SUDO_UID") !== undefined && !isSudo(Deno.ppid));
  if (orphaned) Deno.kill(Deno.pid, "SIGHUP");
}

/** Whether a process runs sudo (the program sudo, wherever installed). */
function isSudo(pid: number): boolean {
  try {
    return /\/sudo$/.test(Deno.readLinkSync(`/proc/${pid}/exe`));
  } catch {
    // Any error is fine here: whatever keeps the link from being read (the process gone, a kernel thread,
    // no permission) means that it cannot be known to be sudo, and "not sudo" is the safe answer.
    return false;
  }
}

const SIGHUP_NUMBER = 1;
/** The kernel's largest process id (pid_max can be at most 2^22). */
const PID_MAX = 4_194_304;
/** The parent hangUpWithParent watches; the kernel forgets the request when credentials change. */
let watchedParent: number | undefined;

/** Asks again for the parent-death signal after a credential change (setfsuid) cleared it. */
function rearmParentWatch(): void {
  if (watchedParent !== undefined) hangUpWithParent();
}

/** Sends one datagram to the system log's socket; false when there is no system log (best effort). */
function sendToSyslog(datagram: string): boolean {
  const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_CLOEXEC = 0o2000000;
  const fd = sys(SYSCALLS.socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  try {
    const address = new Uint8Array(110); // struct sockaddr_un: family, then the path
    new DataView(address.buffer).setUint16(0, AF_UNIX, true);
    address.set(encoder.encode("/dev/log"), 2);
    if (sys(SYSCALLS.connect, fd, address, address.length) !== 0) return false;
    const message = encoder.encode(datagram);
    return sys(SYSCALLS.sendto, fd, message, message.length, 0, null, 0) === message.length;
  } finally {
    closeHandle(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The engine's API, spoken over its socket by this (root) process. One small HTTP/1.1 client does both
// plain requests and the attach, where the engine takes the connection over: Deno's fetch would cost
// ~15 ms of wall and CPU time on every run (measured: the lazy start of its streams), a third of what
// socker may add to a run. Every call has a time bound, except the long waits a run itself needs.

/** What the engine answered: the status, the headers, and the body once the engine closed it. */
export type EngineAnswer = { status: number; body: string };

/** The head of an HTTP/1.x response: status, headers (lower-case names) and where the body starts. */
export function parseResponseHead(
  bytes: Uint8Array,
): { status: number; headers: Map<string, string>; length: number } | undefined {
  const end = indexOfSequence(bytes, [13, 10, 13, 10]);
  if (end < 0) return undefined;
  const lines = decoder.decode(bytes.subarray(0, end)).split("\r\n");
  const status = boundedInt(/^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0])?.[1], 100, 599);
  if (status === undefined) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status, headers, length: end + 4 };
}

function indexOfSequence(bytes: Uint8Array, sequence: number[], from = 0): number {
  outer: for (let i = from; i <= bytes.length - sequence.length; i++) {
    for (let j = 0; j < sequence.length; j++) if (bytes[i + j] !== sequence[j]) continue outer;
    return i;
  }
  return -1;
}

function concatBytes(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const all = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/**
 * Decodes a chunked HTTP body incrementally: `push` bytes as they arrive, get back the payload bytes that
 * are complete; `done` once the last chunk was seen. Malformed input throws.
 */
export function chunkDecoder(): { push: (bytes: Uint8Array) => Uint8Array; done: () => boolean } {
  let pending: Uint8Array = new Uint8Array(0);
  let remaining = 0; // bytes of the current chunk still to come, then its CRLF
  let finished = false;
  return {
    done: () => finished,
    push(bytes) {
      pending = concatBytes([pending, bytes]);
      const out: Uint8Array[] = [];
      while (!finished) {
        if (remaining > 0) {
          const take = Math.min(remaining, pending.length);
          if (take === 0) break;
          out.push(pending.subarray(0, take));
          pending = pending.subarray(take);
          remaining -= take;
          if (remaining > 0) break;
          remaining = -2; // the CRLF after the chunk
        }
        if (remaining === -2) {
          if (pending.length < 2) break;
          pending = pending.subarray(2);
          remaining = 0;
        }
        const lineEnd = indexOfSequence(pending, [13, 10]);
        if (lineEnd < 0) {
          if (pending.length > 1024) throw new Error("unreadable chunk header");
          break;
        }
        const size = parseInt(decoder.decode(pending.subarray(0, lineEnd)).split(";")[0], 16);
        if (!Number.isSafeInteger(size) || size < 0 || size > 1 << 30) throw new Error("unreadable chunk size");
        pending = pending.subarray(lineEnd + 2);
        if (size === 0) finished = true;
        else remaining = size;
      }
      return concatBytes(out);
    },
  };
}

/** How long socker waits for the engine's answer to one request. */
export const ENGINE_TIMEOUT_MS = 30_000;
/**
 * How long a container's start may take: the engine mounts its layers, sets up its network and runs runc,
 * which on a loaded node (many ranks starting at once) can take far longer than an ordinary request.
 */
const ENGINE_START_TIMEOUT_MS = 120_000;
/** How long one pull may take: a large image over a slow link; the pull lock keeps others waiting meanwhile. */
const ENGINE_PULL_TIMEOUT_MS = 3_600_000;
/** How long the engine may take to ask a registry about an image (a round trip over the network). */
const REGISTRY_QUERY_TIMEOUT_MS = 20_000;
/**
 * How long a sweep (cleanup, the watcher, doctor, removal of orphans) waits for one engine request: short,
 * so that a stalled engine cannot hold a sweep past the Epilog's bound (CLEANUP_BOUND_MS).
 */
const SWEEP_ENGINE_TIMEOUT_MS = 10_000;
/** How long a container may take to be gone after its removal is asked (a force removal kills it first). */
const REMOVAL_TIMEOUT_MS = 30_000;
/** How long `socker stop` waits for a container to be gone (its socker removes it, or socker does). */
const STOP_TIMEOUT_MS = 15_000;
/** How long a sweep waits for a job's or step's slurmstepd to end before leaving Slurm's folders alone. */
const STEPD_EXIT_WAIT_MS = 10_000;

/** An open request to the engine: its status and headers, and its body as it arrives. */
type EngineStream = {
  status: number;
  headers: Map<string, string>;
  /** The body's next bytes (chunked encoding removed), or null at its end. */
  read: () => Promise<Uint8Array | null>;
  close: () => void;
};

/** The engine a process talks to, from socker.conf: its kind and socket, and why its socket is not trusted. */
export type EngineChoice = { kind: EngineKind; socket: string; problem?: string };

/** The engine named in the settings, on its default socket unless `socket` names another. */
export function engineChoice(settings: Pick<Settings, "engine" | "socket">): EngineChoice {
  return {
    kind: settings.engine,
    socket: settings.socket ?? (settings.engine === "podman" ? PODMAN_SOCKET : DOCKER_SOCKET),
  };
}

/** The engine's name as people know it. */
export function engineTitle(kind: EngineKind): string {
  return kind === "podman" ? "Podman" : "Docker";
}

/** What socker reads of an engine's socket: the socket (statx, symlinks followed) and each folder above it. */
export type SocketFacts = { path: string; socket: { uid: number; mode: number } | string; folders: Ownership[] };

const S_IFSOCK = 0o140000;

/**
 * Why socker must not talk to the engine over this socket, or undefined. Whoever answers on it is trusted
 * with every run, so it must be root's: a socket owned by root, in folders only root can change (else a
 * user could put a socket of their own in its place). Docker's socket may be its group's (`docker`, root's
 * equal by Docker's design) but never everyone's; Podman's, which install.sh makes, only root's: never a
 * socket another user could connect to. A socket that is not there is no problem here: connecting says so.
 */
export function engineSocketProblem(kind: EngineKind, facts: SocketFacts): string | undefined {
  const { socket, path } = facts;
  if (typeof socket === "string") return undefined;
  if ((socket.mode & S_IFMT) !== S_IFSOCK) return `${path} is not a socket`;
  if (socket.uid !== 0) return `${path} is not owned by root (owner uid ${socket.uid})`;
  const mode = (socket.mode & 0o7777).toString(8).padStart(4, "0");
  if ((socket.mode & 0o006) !== 0) return `${path} may be used by anyone (mode ${mode})`;
  if (kind === "podman" && (socket.mode & 0o060) !== 0) {
    return `${path} may be used by its group (mode ${mode}); Podman's socket must be root's alone`;
  }
  return untrustedReason([{ path, uid: 0, mode: 0, kind: "file" }, ...facts.folders]);
}

/**
 * Doctor's judgement of the engine's socket and service: the socket as engineSocketProblem judges it, and on
 * Podman its service found running as root on that socket (`service`: its command line) with the cgroupfs
 * manager (the only one that honours a cgroup parent inside a Slurm step).
 */
export function engineServiceProblem(
  engine: EngineChoice,
  socket: SocketFacts,
  service: string | undefined,
): string | undefined {
  if (typeof socket.socket === "string") return undefined; // the engine's own row says it is not reachable
  const problem = engineSocketProblem(engine.kind, socket);
  if (problem !== undefined) return problem;
  if (engine.kind !== "podman") return undefined;
  if (service === undefined) {
    return `no Podman service of root's runs on ${engine.socket} (podman system service): run install.sh --engine podman`;
  }
  const args = service.split("\0");
  const manager = args.find((arg) => arg.startsWith("--cgroup-manager="))?.slice("--cgroup-manager=".length) ??
    args[args.indexOf("--cgroup-manager") + 1];
  if (manager !== "cgroupfs") {
    return `the Podman service runs without --cgroup-manager=cgroupfs: socker's cgroup parent inside a Slurm step ` +
      "would not be honoured; run install.sh --engine podman";
  }
  return undefined;
}

/**
 * Whether the tasks of a step share a container (see planShare): socker.conf's `share`, but never on Podman,
 * whose exec API (the step containers' path) socker has not been checked against: each task its own.
 */
export function stepSharing(settings: Pick<Settings, "share" | "engine">): Settings["share"] {
  return settings.engine === "podman" ? "none" : settings.share;
}

/** The engine this process talks to: chosen once in main, from socker.conf (Docker until then). */
let engineInUse: EngineChoice = engineChoice(DEFAULT_SETTINGS);

/** "the Docker engine" or "the Podman engine": the engine in use, as messages name it. */
function theEngine(capital = false): string {
  return `${capital ? "The" : "the"} ${engineTitle(engineInUse.kind)} engine`;
}

async function engineConnect(): Promise<Deno.UnixConn> {
  const { socket, problem } = engineInUse;
  if (problem !== undefined) refuse("installation", `refusing to use ${theEngine()}'s socket: ${problem}`);
  try {
    return await Deno.connect({ transport: "unix", path: socket });
  } catch (error) {
    return refuse("engine", `${theEngine()} is not reachable at ${socket}: ${errorText(error)}`);
  }
}

/** Closes an engine connection that may be closed already (by the time bound, or by its reader). */
function closeConnection(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error; // already closed
  }
}

/** The bytes of one HTTP/1.1 request to the engine: its head and its JSON body, if any. */
export function engineRequestBytes(
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string> },
): Uint8Array {
  const body = options.body === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(options.body));
  const headers = { Host: "docker", Connection: "close", ...options.headers };
  const head = `${method} ${ENGINE_API}${path} HTTP/1.1\r\n` +
    Object.entries(headers).map(([key, value]) => `${key}: ${value}\r\n`).join("") +
    (options.body === undefined ? "" : `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n`) +
    "\r\n";
  return concatBytes([encoder.encode(head), body]);
}

/** Reads until the answer's head is complete (bounded at 1 MiB): the head, and what came after it. */
async function readAnswerHead(
  conn: Deno.Conn,
  buffer: Uint8Array,
): Promise<{ head: NonNullable<ReturnType<typeof parseResponseHead>>; rest: Uint8Array }> {
  let received: Uint8Array = new Uint8Array(0);
  let parsed: ReturnType<typeof parseResponseHead>;
  while ((parsed = parseResponseHead(received)) === undefined) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("the engine closed the connection without an answer");
    received = concatBytes([received, buffer.subarray(0, n)]);
    if (received.length > 1 << 20) throw new Error("the engine's answer has no end of headers");
  }
  return { head: parsed, rest: received.subarray(parsed.length) };
}

/**
 * Sends one request and returns once the engine's head has arrived. `timeoutMs` bounds the whole exchange
 * (0: no bound, for waits that last as long as a container).
 */
async function engineOpen(
  method: "GET" | "POST" | "DELETE",
  path: string,
  options: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<EngineStream> {
  const conn = await engineConnect();
  const timeoutMs = options.timeoutMs ?? ENGINE_TIMEOUT_MS;
  let timedOut = false;
  const cancelTimer = timeoutMs > 0
    ? after(timeoutMs, () => {
      timedOut = true;
      closeConnection(conn);
    })
    : undefined;
  const close = () => {
    cancelTimer?.();
    closeConnection(conn);
  };
  const failed = (error: unknown): never => {
    close();
    if (error instanceof Refusal || isBug(error)) throw error;
    return refuse(
      "engine",
      timedOut
        ? `${theEngine()} did not answer ${method} ${path.split("?")[0]} within ${timeoutMs / 1000} s`
        : `lost the connection to ${theEngine()}: ${errorText(error)}`,
    );
  };
  try {
    await writeAll(conn, engineRequestBytes(method, path, options));
    const buffer = new Uint8Array(65536);
    const { head, rest } = await readAnswerHead(conn, buffer);
    const chunked = /chunked/i.test(head.headers.get("transfer-encoding") ?? "");
    const read = bodyReader(conn, buffer, rest, chunked ? chunkDecoder() : undefined);
    return {
      status: head.status,
      headers: head.headers,
      close,
      read: () => read().catch(failed),
    };
  } catch (error) {
    return failed(error);
  }
}

/**
 * The reader of an answer's body: what came with the head first, then the connection's bytes, decoded
 * when chunked; null at its end.
 */
function bodyReader(
  conn: Deno.Conn,
  buffer: Uint8Array,
  first: Uint8Array | undefined,
  decode: ReturnType<typeof chunkDecoder> | undefined,
): () => Promise<Uint8Array | null> {
  return async () => {
    for (;;) {
      let bytes: Uint8Array;
      if (first !== undefined) {
        bytes = first;
        first = undefined;
      } else {
        if (decode?.done()) return null;
        const n = await conn.read(buffer);
        if (n === null) return null;
        bytes = buffer.slice(0, n);
      }
      const payload = decode ? decode.push(bytes) : bytes;
      if (payload.length > 0) return payload;
      if (decode?.done()) return null;
    }
  };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) offset += await conn.write(bytes.subarray(offset));
}

/** Sends one request and collects the whole answer (at most 64 MiB). */
export async function engineCall(
  method: "GET" | "POST" | "DELETE",
  path: string,
  options: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<EngineAnswer> {
  const stream = await engineOpen(method, path, options);
  try {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (let chunk = await stream.read(); chunk !== null; chunk = await stream.read()) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > 64 << 20) refuse("engine", `${theEngine()}'s answer is larger than 64 MiB`);
    }
    return { status: stream.status, body: decoder.decode(concatBytes(chunks)) };
  } finally {
    stream.close();
  }
}

/** The engine's message in an error answer. */
export function engineMessage(body: string, max = 200): string {
  try {
    return printable(String((JSON.parse(body) as { message?: unknown } | null)?.message ?? body), max);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error; // not JSON
    return printable(body, max);
  }
}

function engineJson(answer: EngineAnswer, what: string): unknown {
  if (answer.status < 200 || answer.status > 299) {
    refuse("engine", `${theEngine()} answered ${answer.status} to ${what}: ${engineMessage(answer.body)}`);
  }
  try {
    return JSON.parse(answer.body);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error; // not JSON
    return refuse("engine", `${theEngine()} gave an unreadable answer to ${what}`);
  }
}

/** A name (an id, a reference) as one segment of an engine URL's path: every reserved character escaped. */
const urlSegment = (name: string) => encodeURIComponent(name);

/** GET /info: the engine's version, cgroup driver and version, runc. */
async function engineInfo(timeoutMs?: number): Promise<Record<string, unknown>> {
  return engineJson(await engineCall("GET", "/info", { timeoutMs }), "info") as Record<string, unknown>;
}

/** GET /version: the versions of the engine's parts (containerd among them). */
async function engineVersion(): Promise<Record<string, unknown>> {
  return engineJson(await engineCall("GET", "/version"), "version") as Record<string, unknown>;
}

/** What socker reads of the engine's record of an image: its id, digests and storage layers. */
export type ImageRecord = {
  Id?: string;
  RepoDigests?: string[];
  GraphDriver?: { Name?: unknown; Data?: Record<string, unknown> };
  Config?: { Entrypoint?: unknown; Cmd?: unknown; Env?: unknown };
};

/** The image's own entrypoint (argv), from the engine's record; none when it has none. */
export function imageEntrypoint(image: ImageRecord | undefined): string[] {
  const entrypoint = image?.Config?.Entrypoint;
  return Array.isArray(entrypoint) && entrypoint.every((item) => typeof item === "string") ? entrypoint : [];
}

/** The image's own CMD (argv), from the engine's record; none when it has none. */
export function imageCmd(image: ImageRecord | undefined): string[] {
  const cmd = image?.Config?.Cmd;
  return Array.isArray(cmd) && cmd.every((item) => typeof item === "string") ? cmd : [];
}

/**
 * What the container starts, as Docker decides it: the image's ENTRYPOINT, or `--entrypoint PROG` (`""`:
 * none); then the COMMAND given, else the image's CMD, unless --entrypoint was given (Docker drops the CMD
 * then). Refused when that is nothing at all.
 */
export function startCommand(
  image: ImageRecord | undefined,
  entrypoint: string | undefined,
  argv: readonly string[],
  imageText: string,
): { entrypoint: string[]; cmd: string[] } {
  const chosen = entrypoint === undefined ? imageEntrypoint(image) : entrypoint === "" ? [] : [entrypoint];
  const cmd = argv.length > 0 ? [...argv] : entrypoint !== undefined ? [] : imageCmd(image);
  if (chosen.length === 0 && cmd.length === 0) {
    refuse("usage", `image ${printable(imageText)} has no CMD or ENTRYPOINT of its own: give a COMMAND`);
  }
  return { entrypoint: chosen, cmd };
}

/**
 * The names under which an engine may hold an allowlisted image (its canonical reference), in the order
 * asked. Docker files an image loaded as `name:tag` under `docker.io/library/name:tag` (`docker.io/a/b` for
 * `a/b`), the canonical name itself. Podman files it under `localhost/name:tag` (`localhost/a/b`): on Podman
 * a Docker Hub reference is asked for as it is first (a pulled image), then as Podman names a loaded one.
 * No other registry ever maps to `localhost/`, so an entry never matches an image of another registry.
 */
export function engineImageNames(canonical: string, kind: EngineKind): string[] {
  if (kind !== "podman" || !canonical.startsWith("docker.io/")) return [canonical];
  const path = canonical.slice("docker.io/".length);
  return [canonical, `localhost/${path.startsWith("library/") ? path.slice("library/".length) : path}`];
}

/** The name the engine holds each canonical reference under, as engineImage found it (see engineCreate). */
const engineImageName = new Map<string, string>();

/** GET /images/NAME/json: the local image, or undefined when the engine does not hold it. */
async function engineImage(reference: string): Promise<ImageRecord | undefined> {
  for (const name of engineImageNames(reference, engineInUse.kind)) {
    const answer = await engineCall("GET", `/images/${urlSegment(name)}/json`);
    if (answer.status === 404) continue;
    engineImageName.set(reference, name);
    return engineJson(answer, `image ${reference}`) as ImageRecord;
  }
  return undefined;
}

/** A container as the engine lists it. */
export type ListedContainer = {
  Id: string;
  Names?: string[];
  Image?: string;
  Command?: string;
  Created?: number;
  State?: string;
  Labels?: Record<string, string>;
};

/** GET /containers/json: every container (running or not) that carries all these labels. */
export async function engineList(labels: readonly string[], timeoutMs?: number): Promise<ListedContainer[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: labels }));
  const listed = engineJson(
    await engineCall("GET", `/containers/json?all=1&filters=${filters}`, { timeoutMs }),
    "list",
  );
  if (!Array.isArray(listed)) refuse("engine", `${theEngine()}'s container list is not a list`);
  return (listed as ListedContainer[]).filter((item) => typeof item?.Id === "string" && CONTAINER_ID.test(item.Id));
}

/** GET /containers/ID/json: the container's state, or undefined when it does not exist. */
async function engineInspect(
  id: string,
  timeoutMs?: number,
): Promise<{ Id: string; State?: { Running?: boolean; Status?: string } } | undefined> {
  const answer = await engineCall("GET", `/containers/${urlSegment(id)}/json`, { timeoutMs });
  if (answer.status === 404) return undefined;
  return engineJson(answer, `container ${id}`) as { Id: string };
}

/** POST /containers/ID/kill: sends a signal; false when the container is not running. */
async function engineKill(id: string, signal: string, timeoutMs?: number): Promise<boolean> {
  const answer = await engineCall("POST", `/containers/${urlSegment(id)}/kill?signal=${signal}`, { timeoutMs });
  return answer.status === 204;
}

/** DELETE /containers/ID?force=1: kills and removes it; true when it is gone. */
async function engineRemove(id: string, timeoutMs?: number): Promise<boolean> {
  const answer = await engineCall("DELETE", `/containers/${urlSegment(id)}?force=1`, { timeoutMs });
  return answer.status === 204 || answer.status === 404;
}

/** POST /containers/create?name=NAME: the new container's id. */
async function engineCreate(name: string, spec: Record<string, unknown>): Promise<string> {
  // The image by the name this engine holds it under (engineImageNames), as engineImage found it.
  const image = engineImageName.get(String(spec.Image)) ?? spec.Image;
  // On Podman the container's record is kept after its end, for its exit code (podmanWait): its socker
  // removes it (ensureGone), or the watcher, the reaper or the Epilog when socker was killed.
  // Its limits within the service's own, which its runc cannot raise (ulimitsWithin).
  const hostConfig = spec.HostConfig as Record<string, unknown> | undefined;
  const serviceLimits = engineInUse.kind === "podman" ? readPodmanServiceLimits(engineInUse.socket) : undefined;
  const kept = engineInUse.kind === "podman" && hostConfig !== undefined
    ? {
      HostConfig: {
        ...hostConfig,
        AutoRemove: false,
        ...(Array.isArray(hostConfig.Ulimits) && serviceLimits !== undefined
          ? { Ulimits: ulimitsWithin(hostConfig.Ulimits, serviceLimits) }
          : {}),
      },
    }
    : {};
  const body = { ...spec, Image: image, ...kept };
  const answer = await engineCall("POST", `/containers/create?name=${urlSegment(name)}`, { body });
  if (answer.status === 404) {
    refuse("engine", `image '${spec.Image}' is no longer on this node: ${engineMessage(answer.body)}`);
  }
  const created = engineJson(answer, "create") as { Id?: unknown };
  return typeof created.Id === "string" && CONTAINER_ID.test(created.Id)
    ? created.Id
    : refuse("engine", `${theEngine()} gave no container id`);
}

/**
 * Whether a process's command line (NUL-separated) is Podman's API service on this socket:
 * `podman [options] system service [options] unix://SOCKET`.
 */
export function isPodmanService(cmdline: string, socket: string): boolean {
  const args = cmdline.split("\0");
  const system = args.indexOf("system");
  return /(^|\/)podman$/.test(args[0]) && system > 0 && args[system + 1] === "service" &&
    args.includes(`unix://${socket}`);
}

/** The pid of root's Podman service on this socket, if one runs (its limits and options are read). */
function podmanServicePid(socket: string): number | undefined {
  for (const name of listNames("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = readText(`/proc/${name}/cmdline`);
    if (cmdline !== undefined && isPodmanService(cmdline, socket) && isRootProcess(readText(`/proc/${name}/status`))) {
      return Number(name);
    }
  }
  return undefined;
}

/** The Podman service's own limits, which its runc inherits; undefined when it cannot be found. */
function readPodmanServiceLimits(socket: string): Limits | undefined {
  const pid = podmanServicePid(socket);
  const text = pid === undefined ? undefined : readText(`/proc/${pid}/limits`);
  try {
    return text === undefined ? undefined : parseProcLimits(text);
  } catch (error) {
    if (!(error instanceof Refusal)) throw error;
    return undefined; // unreadable: the engine says what it cannot set
  }
}

/** POST /containers/ID/start; the engine's reason when it could not start it. */
async function engineStart(id: string): Promise<string | undefined> {
  const answer = await engineCall("POST", `/containers/${urlSegment(id)}/start`, {
    timeoutMs: ENGINE_START_TIMEOUT_MS,
  });
  return answer.status === 204 || answer.status === 304 ? undefined : engineMessage(answer.body);
}

/**
 * POST /containers/ID/wait?condition=removed, once the engine has registered the wait (its head arrives
 * at once; the body when the container is gone, with its exit code).
 */
async function engineWait(id: string): Promise<(streamEnded: Promise<void>) => Promise<number | string>> {
  if (engineInUse.kind === "podman") return (streamEnded) => podmanWait(id, streamEnded);
  const stream = await engineOpen("POST", `/containers/${urlSegment(id)}/wait?condition=removed`, { timeoutMs: 0 });
  if (stream.status !== 200) {
    stream.close();
    refuse("engine", `${theEngine()} answered ${stream.status} to wait`);
  }
  return async () => {
    const chunks: Uint8Array[] = [];
    try {
      for (let chunk = await stream.read(); chunk !== null; chunk = await stream.read()) chunks.push(chunk);
    } catch (error) {
      return error instanceof Refusal ? error.reason : errorText(error);
    } finally {
      stream.close();
    }
    try {
      const result = JSON.parse(decoder.decode(concatBytes(chunks))) as { StatusCode?: unknown } | null;
      if (result === null) throw new SyntaxError("null"); // no object to read the status from
      const code = boundedNumber(result.StatusCode, 0, 255);
      return code ?? `the engine reported exit status ${printable(String(result.StatusCode))}`;
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error; // not JSON
      return "the engine's wait ended without an exit status";
    }
  };
}

/** How often socker asks Podman whether a container whose attach stream ended (a detach) has ended too. */
export const PODMAN_WAIT_POLL_MS = 500;

/**
 * Podman's wait: its `/wait` (4.3) polls the container's state in the service and can burn a CPU for as long
 * as the container runs, so socker waits on what it has anyway, the attach stream, which conmon ends when
 * the container's process exits; then the container's record (kept: see engineCreate) says its exit
 * code. A stream that ended while the container still runs (a detach) is followed by a slow poll.
 */
async function podmanWait(id: string, streamEnded: Promise<void>): Promise<number | string> {
  await streamEnded.catch(() => undefined); // any end of the stream, an error included, is its end
  for (let asked = 0;; asked++) {
    let found: Awaited<ReturnType<typeof engineInspect>>;
    try {
      found = await engineInspect(id);
    } catch (error) {
      if (isBug(error)) throw error;
      return error instanceof Refusal ? error.reason : errorText(error);
    }
    const status = podmanExitStatus(found);
    if (status !== undefined) return status;
    await sleep(asked < 20 ? 25 : PODMAN_WAIT_POLL_MS); // the state follows the stream's end within ms
  }
}

/**
 * A container's exit status from Podman's record of it: its code once it is no longer running, a reason
 * when it is gone (nothing says how it ended), undefined while it runs.
 */
export function podmanExitStatus(
  found: { State?: { Running?: boolean; Status?: string; ExitCode?: unknown } } | undefined,
): number | string | undefined {
  if (found === undefined) return "the container was removed before its exit code was read";
  const state = found.State;
  if (state?.Running === true || state?.Status === "running" || state?.Status === "paused") return undefined;
  if (state?.Status === "created" || state?.Status === "configured" || state?.Status === "initialized") {
    return undefined; // not started yet
  }
  const code = boundedNumber(state?.ExitCode, 0, 255);
  return code ?? `the engine reported exit status ${printable(String(state?.ExitCode))}`;
}

/**
 * POST /containers/ID/attach: the engine takes the connection over (HTTP 101) and streams the container's
 * stdin, stdout and stderr on it, multiplexed when there is no terminal. Returns the connection and any
 * stream bytes that came with the engine's head.
 */
async function engineAttach(id: string, stdin: boolean): Promise<{ conn: Deno.UnixConn; initial: Uint8Array }> {
  const query = `stream=1&stdout=1&stderr=1&stdin=${stdin ? 1 : 0}&detachKeys=${encodeURIComponent(DETACH_KEYS)}`;
  return await engineUpgrade(`/containers/${urlSegment(id)}/attach?${query}`, undefined, "attach");
}

/**
 * POST PATH with an optional JSON body on a connection of its own, which the engine takes over (HTTP 101)
 * for a raw stream (attach, exec start): the connection and any stream bytes that came with the head.
 */
async function engineUpgrade(
  target: string,
  body: unknown | undefined,
  what: string,
): Promise<{ conn: Deno.UnixConn; initial: Uint8Array }> {
  const conn = await engineConnect();
  try {
    const headers = { Connection: "Upgrade", Upgrade: "tcp" };
    await writeAll(conn, engineRequestBytes("POST", target, { body, headers }));
    const { head, rest } = await readAnswerHead(conn, new Uint8Array(65536));
    if (head.status !== 101 && head.status !== 200) {
      // Podman says here why runc could not create the container (its reason comes last): kept whole.
      const message = rest.length > 0 ? `: ${engineMessage(decoder.decode(rest), 800)}` : "";
      refuse("engine", `${theEngine()} answered ${head.status} to ${what}${message}`);
    }
    return { conn, initial: rest.slice() };
  } catch (error) {
    closeConnection(conn);
    if (error instanceof Refusal || isBug(error)) throw error;
    return refuse("engine", `${theEngine()} closed the ${what} connection: ${errorText(error)}`);
  }
}

/** POST /containers/ID/resize: the terminal's size. */
async function engineResize(id: string, rows: number, columns: number): Promise<void> {
  await engineCall("POST", `/containers/${urlSegment(id)}/resize?h=${rows}&w=${columns}`, { timeoutMs: 5000 }).catch(
    () => undefined,
  );
}

/**
 * POST /images/create: pulls exactly this reference with the site's credentials for its registry (never
 * the user's), calling `progress` with each status line. Throws the engine's reason when the pull fails
 * (the engine reports failures inside the stream, with status 200).
 */
async function enginePull(ref: ImageRef, auth: string | undefined, progress: (line: Record<string, unknown>) => void) {
  const query = `fromImage=${encodeURIComponent(`${ref.domain}/${ref.path}`)}&tag=${
    encodeURIComponent(ref.digest ?? ref.tag ?? "latest")
  }`;
  const stream = await engineOpen("POST", `/images/create?${query}`, {
    headers: auth === undefined ? {} : { "X-Registry-Auth": auth },
    timeoutMs: ENGINE_PULL_TIMEOUT_MS,
  });
  try {
    if (stream.status !== 200) {
      const chunks: Uint8Array[] = [];
      for (let chunk = await stream.read(); chunk !== null; chunk = await stream.read()) chunks.push(chunk);
      refuse(
        "engine",
        `the pull of ${canonicalImage(ref)} failed: ${engineMessage(decoder.decode(concatBytes(chunks)))}`,
      );
    }
    let text = "";
    for (let chunk = await stream.read(); chunk !== null; chunk = await stream.read()) {
      text += decoder.decode(chunk);
      const lines = text.split("\n");
      text = lines.pop() ?? "";
      for (const line of lines.filter((l) => l.trim() !== "")) {
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line);
        } catch (error) {
          if (!(error instanceof SyntaxError)) throw error;
          continue; // not JSON: not a status line
        }
        if (parsed.error !== undefined) {
          refuse("engine", `the pull of ${canonicalImage(ref)} failed: ${printable(String(parsed.error))}`);
        }
        progress(parsed);
      }
    }
  } finally {
    stream.close();
  }
}

/** GET /distribution/NAME/json: asks the registry, through the engine's settings, whether it has the image. */
async function engineDistribution(reference: string, auth: string | undefined): Promise<string | undefined> {
  const answer = await engineCall("GET", `/distribution/${urlSegment(reference)}/json`, {
    headers: auth === undefined ? {} : { "X-Registry-Auth": auth },
    timeoutMs: REGISTRY_QUERY_TIMEOUT_MS,
  });
  return answer.status === 200 ? undefined : `${answer.status}: ${engineMessage(answer.body)}`;
}

/**
 * Makes sure a container no longer exists: removes it (force: kills it first) and waits until the engine
 * no longer knows it. With `remove` false it only waits, asking briefly each time (the container's own
 * socker removes it). Returns false if it is still there after the timeout.
 */
async function ensureGone(id: string, timeoutMs = REMOVAL_TIMEOUT_MS, remove = true): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const left = Math.max(1000, deadline - Date.now());
      if (await engineInspect(id, remove ? left : 5000) === undefined) return true;
      if (remove) await engineRemove(id, left);
    } catch {
      // Any error is fine here: this removes a container (or waits for its removal) and must go on until
      // the deadline whatever happens; the engine may be restarting.
    }
    await sleep(50);
  }
  return false;
}

/**
 * Calls `action` after `ms` unless cancelled first (the returned function). Not setTimeout: Deno's global
 * timers cost ~13 ms of wall and CPU time on first use (measured), AbortSignal.timeout ~1 ms.
 */
function after(ms: number, action: () => void): () => void {
  let cancelled = false;
  AbortSignal.timeout(ms).addEventListener("abort", () => cancelled || action(), { once: true });
  return () => {
    cancelled = true;
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => after(ms, resolve));

// ---------------------------------------------------------------------------------------------------------
// Supervision: what signals do, how the container's streams come apart, and what socker exits with

/** Signals that end the container, and the ones passed on to it. Numbers are Linux's. */
/** SIGXCPU: socker's own CPU time is nearly used up (see planOwnLimits); it ends the run like SIGTERM. */
export const TERMINATING_SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15, SIGXCPU: 24 } as const;
export const FORWARDED_SIGNALS = { SIGQUIT: 3, SIGUSR1: 10, SIGUSR2: 12 } as const;

/** What the supervisor does when a signal arrives. */
export function signalAction(signal: string): { kind: "terminate" | "forward"; number: number } | undefined {
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
 * socker's exit code: 128+N after socker itself was told to stop by signal N; otherwise the container's
 * own code (128+N when it died of signal N, 126/127 when its command could not be run).
 */
export function exitCodeFor(containerCode: number, terminatedBy: number | undefined): number {
  return terminatedBy !== undefined ? 128 + terminatedBy : containerCode;
}

/**
 * Splits the engine's multiplexed attach stream (no terminal): frames of an 8-byte header (stream 1 for
 * stdout, 2 for stderr, then a big-endian length) and the payload. `push` bytes as they arrive; get back
 * the complete pieces in order.
 */
export function streamDemuxer(): (bytes: Uint8Array) => { stream: 1 | 2; payload: Uint8Array }[] {
  let pending: Uint8Array = new Uint8Array(0);
  return (bytes) => {
    pending = pending.length === 0 ? bytes : concatBytes([pending, bytes]);
    const pieces: { stream: 1 | 2; payload: Uint8Array }[] = [];
    while (pending.length >= 8) {
      const size = new DataView(pending.buffer, pending.byteOffset, 8).getUint32(4);
      if (pending.length < 8 + size) break;
      const stream = pending[0];
      if (stream === 1 || stream === 2) pieces.push({ stream, payload: pending.slice(8, 8 + size) });
      pending = pending.subarray(8 + size);
    }
    if (pending.length > 0) pending = pending.slice();
    return pieces;
  };
}

// ---------------------------------------------------------------------------------------------------------
// The audit log: every run, refusal, pull, stop and cleanup as one line of JSON. The record of truth is a
// root-owned file no user can write (anyone can write to syslog, so syslog cannot be the truth); the
// system log gets a copy when one runs, and its absence never stops a run.

/** One audit record; undefined fields are left out. */
export type AuditRecord = { event: string; [field: string]: unknown };

/**
 * The order of fields in a line: the short ones a reader scans for first, so that no cut can lose the
 * outcome; then the long ones, the command last.
 */
export const AUDIT_FIELD_ORDER = [
  "event",
  "time",
  "host",
  "user",
  "uid",
  "pid",
  "job",
  "step",
  "outcome",
  "rule",
  "image",
  "image_id",
  "repo_digest",
  "container",
  "container_id",
  "duration_ms",
  "network",
  "workdir",
  "devices",
  "mounts",
  "env",
  "containers",
  "command_length",
  "command_sha256",
  "command_cut",
  "command",
];

/** Largest line in the audit file, and in its system-log copy (rsyslog drops what exceeds 8 KB). */
export const AUDIT_LINE_MAX = 65536;
export const SYSLOG_LINE_MAX = 4000;

/**
 * The record as one line of JSON of at most `max` bytes, fields in AUDIT_FIELD_ORDER. When the whole
 * record does not fit, the command keeps as many whole arguments as fit, and `command_length` (its bytes
 * in all), `command_sha256` (of its JSON, `commandDigest`) and `command_cut` say what was cut; then long
 * lists and strings are shortened. The short fields, the outcome among them, are never cut.
 */
export function auditLine(record: AuditRecord, max: number, commandDigest?: string): string {
  const ordered = (fields: Record<string, unknown>) => {
    const keys = [
      ...AUDIT_FIELD_ORDER.filter((key) => key in fields),
      ...Object.keys(fields).filter((key) => !AUDIT_FIELD_ORDER.includes(key)).sort(),
    ];
    return escapeUnsafe(
      JSON.stringify(
        Object.fromEntries(keys.filter((key) => fields[key] !== undefined).map((k) => [k, fields[k]])),
      ),
      "json",
    );
  };
  const whole = ordered(record);
  if (encoder.encode(whole).length <= max) return whole;
  const fields: Record<string, unknown> = { ...record };
  const command = Array.isArray(record.command) ? record.command.map(String) : undefined;
  if (command !== undefined) {
    Object.assign(fields, {
      command: [],
      command_cut: true,
      command_length: command.reduce((sum, arg) => sum + encoder.encode(arg).length, 0),
      command_sha256: commandDigest,
    });
    const room = max - encoder.encode(ordered(fields)).length;
    const kept: string[] = [];
    let used = 0;
    for (const arg of command) {
      const cost = encoder.encode(escapeUnsafe(JSON.stringify(arg), "json")).length + 1;
      if (used + cost > room) {
        const left = Math.floor((room - used) / 6) - 8;
        if (left > 16) kept.push(`${arg.slice(0, left)}...`);
        break;
      }
      kept.push(arg);
      used += cost;
    }
    fields.command = kept;
  }
  let line = ordered(fields);
  for (let limit = 1024; encoder.encode(line).length > max && limit >= 16; limit = Math.floor(limit / 2)) {
    for (const [key, value] of Object.entries(fields)) {
      if (AUDIT_FIELD_ORDER.indexOf(key) < AUDIT_FIELD_ORDER.indexOf("image")) continue; // never the short ones
      if (key.startsWith("command_")) continue; // nor what says how the command was cut
      if (typeof value === "string" && value.length > limit) fields[key] = `${value.slice(0, limit)}...`;
      if (Array.isArray(value)) {
        fields[key] = value.slice(0, Math.max(1, limit / 16)).map((item) =>
          typeof item === "string" && item.length > limit ? `${item.slice(0, limit)}...` : item
        );
      }
    }
    line = ordered(fields);
  }
  return line;
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

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Why the audit folder or file cannot be trusted, or undefined. Both must be root's and closed to others. */
export function auditFileProblem(info: FileFacts | number, folder: boolean): string | undefined {
  const what = folder ? AUDIT_DIR : AUDIT_LOG;
  if (typeof info === "number") return `cannot look at ${what}: ${errnoText(info)}`;
  if (info.kind !== (folder ? "dir" : "file")) return `${what} is not a ${folder ? "folder" : "regular file"}`;
  if (info.uid !== 0) return `${what} is not owned by root`;
  if ((info.mode & 0o077) !== 0) return `${what} is open to others (mode must be ${folder ? "0700" : "0600"})`;
  if (!folder && info.nlink !== 1) return `${what} has other names (hard links)`;
  return undefined;
}

/** Appends one line to the audit file, creating its folder (0700) and file (0600) when missing. */
function appendAuditFile(line: string): string | undefined {
  if (!makeFolder(AUDIT_DIR, 0o700)) return `cannot make ${AUDIT_DIR}: ${errnoText(lastErrno())}`;
  const folderProblem = auditFileProblem(pathInfo(AUDIT_DIR, { noFollow: true }), true);
  if (folderProblem !== undefined) return folderProblem;
  return appendToFile(AUDIT_LOG, encoder.encode(`${line}\n`), 0o600, (facts) => auditFileProblem(facts, false));
}

/**
 * The longest line a record may take in the audit file. A refusal changes nothing and any user can cause
 * one as often as they like, so it gets the system log's bound (its command is cut, with its length and
 * digest kept), not a run's: a flood of refusals cannot grow the file faster than runs do.
 */
export function auditLineLimit(event: unknown): number {
  return event === "refused" ? SYSLOG_LINE_MAX : AUDIT_LINE_MAX;
}

/**
 * Writes one record: to the audit file (the record of truth) and a copy to the system log when one runs
 * (best effort). Returns why the file did not take it, or undefined.
 */
async function appendAudit(record: AuditRecord, facility: string): Promise<string | undefined> {
  const stamped = { ...record, time: new Date().toISOString() };
  const limit = auditLineLimit(record.event);
  let line = auditLine(stamped, limit);
  const needsDigest = encoder.encode(auditLine(stamped, Infinity)).length > SYSLOG_LINE_MAX;
  const digest = needsDigest ? await sha256Hex(JSON.stringify(record.command ?? null)) : undefined;
  if (digest !== undefined) line = auditLine(stamped, limit, digest);
  // A finite file-size limit (the caller's, passed on by sudo, where root may not raise it) would let the
  // kernel cut the line short: a partial record that the next one, anyone's, is glued onto, and a limit
  // near the file's size would tell the caller how big the log is. So the file takes no record then,
  // whatever its size: a refusal (the only record a caller with such a limit gets: a run needs it
  // unlimited) goes to the system log alone, anything else is a problem.
  const fileSizeBounded = currentLimits().fsize?.soft !== Infinity;
  const problem = !fileSizeBounded
    ? appendAuditFile(line)
    : record.event === "refused"
    ? undefined
    : "socker's file-size limit (ulimit -f) is not unlimited";
  sendToSyslog(syslogDatagram(facility, Deno.pid, new Date(), auditLine(record, SYSLOG_LINE_MAX, digest)));
  return problem;
}

/** Writes a record before acting (a run's start): a failure is an audit Refusal, nothing runs unlogged. */
async function writeAudit(record: AuditRecord, facility: string): Promise<void> {
  const problem = await appendAudit(record, facility);
  if (problem !== undefined) {
    refuse(
      "audit",
      `cannot write the audit log ${AUDIT_LOG} (${problem}); refusing to run unlogged, ask your administrator`,
    );
  }
}

/** Writes a record after the fact (an outcome, a refusal): a failure is reported, never hidden. */
async function writeAuditAfter(record: AuditRecord, facility: string): Promise<void> {
  try {
    const problem = await appendAudit(record, facility);
    if (problem !== undefined) {
      console.error(
        `socker: warning: the audit log ${AUDIT_LOG} did not take the ${printable(String(record.event))} record ` +
          `(${problem}); ask your administrator`,
      );
    }
  } catch (error) {
    console.error(
      `socker: warning: the ${printable(String(record.event))} record was not written: ${errorText(error)}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reading the system: the small readers every command's read phase uses. They gather facts and decide
// nothing; what cannot be read becomes a fact too (an error value), for the decide phase to judge.

/**
 * Runs a read that may fail; a failure becomes a value (a Refusal) for the decide phase to judge. A bug
 * (isBug) is no fact about the system: it is thrown on, to be reported as an internal error.
 */
export async function attempt<T>(read: () => T | Promise<T>): Promise<T | Refusal> {
  try {
    return await read();
  } catch (error) {
    if (isBug(error)) throw error;
    return error instanceof Refusal ? error : new Refusal("installation", errorText(error));
  }
}

/**
 * attempt, for cleanup's sweeps: a bug becomes a problem of its sweep as well, so that the other sweeps
 * still run (the Epilog's cleanup is the backstop of every run; it must not stop at its first surprise).
 */
export async function attemptSweep<T>(read: () => T | Promise<T>): Promise<T | Refusal> {
  try {
    return await attempt(read);
  } catch (error) {
    return new Refusal("installation", `internal error: ${errorText(error)}`);
  }
}

/**
 * The value, or the refusal (or error) it turned out to be, thrown now. A read phase's facts are typed
 * `T | Refusal`; doctor keeps its facts in one map of unknowns, so there the caller names the type.
 */
function certain<T>(value: T | Refusal): T;
function certain<T>(value: unknown): T;
function certain<T>(value: unknown): T {
  if (value instanceof Refusal || value instanceof Error) throw value;
  return value as T;
}

function ownership(path: string, shownAs = path): Ownership {
  const info = pathInfo(path);
  if (typeof info === "number") throw new Error(`cannot look at ${path}: ${errnoText(info)}`);
  return { path: shownAs, uid: info.uid, mode: info.mode, kind: info.kind };
}

/** Reads a configuration file and the ownership of everything above it, along the written and real paths. */
function readConfigFile(path: string): ConfigFile {
  const realPath = rootRealPath(path);
  if (typeof realPath === "number") {
    return realPath === ENOENT ? { path, missing: true } : { path, problem: errnoText(realPath) };
  }
  try {
    const real = pathChain(realPath).map((item, index) => ownership(item, index === 0 ? path : item));
    const written = pathChain(path).map((item) => ownership(item));
    const bytes = real[0].kind === "file" ? readAtMost(realPath, CONFIG_MAX_BYTES + 1) : new Uint8Array();
    return { path, bytes, written, real };
  } catch (error) {
    if (isBug(error)) throw error;
    return { path, problem: errorText(error) };
  }
}

function readAtMost(path: string, max: number): Uint8Array {
  const file = Deno.openSync(path);
  try {
    const buffer = new Uint8Array(max);
    let length = 0;
    for (
      let n = file.readSync(buffer.subarray(length));
      n !== null && n > 0;
      n = file.readSync(buffer.subarray(length))
    ) {
      length += n;
      if (length === max) break;
    }
    return buffer.slice(0, length);
  } finally {
    file.close();
  }
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch { // any error means "cannot be read" (gone, closed, a process ended): every caller handles it, and
    // this reader serves supervision and cleanup, where no error of a file may end the run
    return undefined;
  }
}

let cachedHostName: string | undefined;
function hostName(): string {
  cachedHostName ??= (readText("/proc/sys/kernel/hostname") ?? "unknown").trim();
  return cachedHostName;
}

function sudoEnvironment() {
  return {
    SUDO_UID: Deno.env.get("SUDO_UID"),
    SUDO_GID: Deno.env.get("SUDO_GID"),
    SUDO_USER: Deno.env.get("SUDO_USER"),
  };
}

function readSudoIdentity(): SudoIdentity {
  return parseSudoIdentity(sudoEnvironment(), Deno.uid() ?? -1);
}

/**
 * The caller's folder, as bytes: the entry point starts socker in / (a folder on a stalled filesystem must
 * not hang it), so it is read from the parent's (sudo's, which kept the caller's folder) /proc entry; the
 * kernel names it without asking the filesystem. Undefined when it no longer exists; NotText when its
 * name is not UTF-8 (runCommand refuses: it would be silently not mounted, or another folder).
 */
function currentFolder(): string | NotText | undefined {
  const buffer = new Uint8Array(4097);
  const length = sys(SYSCALLS.readlinkat, AT_FDCWD, cString(`/proc/${Deno.ppid}/cwd`), buffer, buffer.length);
  if (length <= 0 || length >= buffer.length) return undefined;
  const path = exactText(buffer.slice(0, length));
  if (typeof path !== "string") return path;
  return isCleanAbsolute(path) && !path.endsWith(" (deleted)") ? path : undefined;
}

function exists(path: string): boolean {
  return typeof pathInfo(path) !== "number";
}

/** At most this much of the caller's environment is read. */
const CALLER_ENV_MAX_BYTES = 4 << 20;

/**
 * The caller's environment: sudo reset socker's own, but sudo (the parent, started with the caller's
 * environment) still holds it. Read only when the parent really is sudo. It is the caller's data: it only
 * ever reaches the container.
 */
function callerEnvironment(): Record<string, string | NotText> | undefined {
  if (!isSudo(Deno.ppid)) return undefined;
  try {
    // As bytes: a value that is not UTF-8 stays NotText (containerEnvironment refuses it if it would pass).
    const bytes = readAtMost(`/proc/${Deno.ppid}/environ`, CALLER_ENV_MAX_BYTES);
    const env: Record<string, string | NotText> = {};
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 0) continue;
      const item = bytes.subarray(start, i);
      start = i + 1;
      const equals = item.indexOf(0x3d);
      if (equals <= 0) continue;
      const name = exactText(item.subarray(0, equals));
      if (typeof name !== "string" || Object.hasOwn(env, name)) continue; // no variable name is such bytes
      env[name] = exactText(item.subarray(equals + 1));
    }
    return env;
  } catch (error) {
    // sudo ended meanwhile (ESRCH reads as NotFound), or its environment is closed to socker
    if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied)) throw error;
    return undefined;
  }
}

/** /proc/<pid>/stat, or undefined when there is no such process. */
function procStat(pid: number): string | undefined {
  return readText(`/proc/${pid}/stat`);
}

/** This process's supervisor id (`<pid>:<start>`), as the reaper will judge it. */
function ownSupervisorId(): string {
  return supervisorId(Deno.pid, procStat(Deno.pid) ?? "") ??
    refuse("installation", "cannot read this process's start time from /proc");
}

/** The limits socker started with (the caller's, passed on by the entry point), and its own now. */
type LimitFacts = { caller: Limits; current: Limits; canRaiseHard: boolean };

function readLimitFacts(): LimitFacts {
  const passed = Deno.env.get("SOCKER_LIMITS");
  const current = currentLimits();
  const status = readText("/proc/self/status") ?? "";
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? "0";
  const CAP_SYS_RESOURCE = 24n;
  return {
    caller: passed !== undefined ? parseProcLimits(passed) : current,
    current,
    canRaiseHard: ((BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) === 1n,
  };
}

/** Raises socker's own limits as planned (see planOwnLimits); returns the caller's, for the container. */
function takeOwnLimits(): Limits {
  const facts = readLimitFacts();
  let changes: ReturnType<typeof planOwnLimits>;
  try {
    changes = planOwnLimits(facts.current, SUPERVISOR_NEEDS, facts.canRaiseHard);
  } catch (refusal) {
    // Refused: soft limits up to the hard ones all the same, so that the refusal's record can be written.
    for (const row of LIMIT_ROWS) {
      const limit = facts.current[row.name];
      if (row.name !== "stack" && limit !== undefined && limit.soft < limit.hard) {
        setLimit(row.resource, limit.hard, limit.hard);
      }
    }
    throw refusal;
  }
  for (const change of changes) {
    const problem = setLimit(change.resource, change.soft, change.hard);
    if (problem !== undefined) refuse("policy", `cannot set socker's own ${change.name} limit: ${problem}`);
  }
  return facts.caller;
}

/**
 * Whether the engine may be handed a real path as text: root's own lookup of it reaches the very object
 * the caller's lookup judged (same mount, device and inode: a path the kernel named in another mount
 * namespace does not), and only root can change what it names (every folder above it is root's and
 * closed to writes by others). Otherwise the mount is staged from the judged descriptor.
 */
function fixedByRoot(realPath: string, judged: number): boolean {
  const fd = openResolved(AT_FDCWD, realPath, O_PATH | O_CLOEXEC, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) return false;
  try {
    // Same mount first, asked of the descriptors alone: a filesystem mounted over the path since it was
    // judged (a user's FUSE, perhaps stalled) is never asked anything (statx would ask its daemon).
    const mount = mountIdOf(fd);
    if (mount === undefined || mount !== mountIdOf(judged)) return false;
    if (!sameObject(fd, judged)) return false;
    return pathChain(realPath).slice(1).every((dir) => {
      const info = pathInfo(dir, { noFollow: true });
      return typeof info !== "number" && info.kind === "dir" && info.uid === 0 && (info.mode & 0o022) === 0;
    });
  } finally {
    closeHandle(fd);
  }
}

/** How long a tool socker spawns may run: visudo and scontrol answer in well under a second when healthy. */
const TOOL_TIMEOUT_MS = 20_000;

/** Runs one of the few tools socker spawns (visudo, scontrol): fixed path, empty environment, a time bound. */
async function runTool(
  tool: string,
  args: string[],
  timeoutMs = TOOL_TIMEOUT_MS,
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const child = new Deno.Command(tool, {
    args,
    clearEnv: true,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" },
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const cancel = after(timeoutMs, () => child.kill("SIGKILL"));
  try {
    const output = await child.output();
    return { ok: output.success, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
  } finally {
    cancel();
  }
}

/** The registry login of the site for an image's registry: the engine's X-Registry-Auth header, if any. */
export function registryAuth(configJson: string | undefined, domain: string): string | undefined {
  if (configJson === undefined) return undefined;
  let auths: Record<string, { auth?: unknown; identitytoken?: unknown }>;
  try {
    const parsed = JSON.parse(configJson) as { auths?: typeof auths } | null;
    if (parsed === null) throw new SyntaxError("null"); // no object to read logins from
    auths = parsed.auths ?? {};
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error; // not JSON
    return refuse("installation", `${REGISTRY_AUTH_PATH} is not valid JSON; ask your administrator`);
  }
  const keys = domain === "docker.io"
    ? ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    : [domain, `https://${domain}`, `http://${domain}`];
  const entry = keys.map((key) => auths[key]).find((value) => value !== undefined);
  if (entry === undefined) return undefined;
  let config: Record<string, string> = { serveraddress: domain };
  if (typeof entry.identitytoken === "string") config.identitytoken = entry.identitytoken;
  else if (typeof entry.auth === "string") {
    const plain = atob(entry.auth);
    const colon = plain.indexOf(":");
    if (colon < 0) refuse("installation", `${REGISTRY_AUTH_PATH}: the login of ${domain} is unreadable`);
    config = { ...config, username: plain.slice(0, colon), password: plain.slice(colon + 1) };
  } else return undefined;
  return btoa(JSON.stringify(config)).replaceAll("+", "-").replaceAll("/", "_");
}

// ---------------------------------------------------------------------------------------------------------
// Commands. Each command is four phases, in this order: read the facts, decide in one pure exported
// function (a plan or a refusal), act, report (the audit record and the console line).

// ---- run: read

type RunInvocation = Extract<Invocation, { command: "run" }>;

/** Everything `planRun` decides from: what the system, the engine and the kernel (as the caller) said. */
export type RunFacts = {
  processUid: number;
  sudo: { SUDO_UID?: string; SUDO_GID?: string; SUDO_USER?: string };
  allowlist: ConfigFile;
  settings: ConfigFile;
  procSelfCgroup: string;
  user: UserRecord | string;
  /** The caller's current folder, as the kernel names it (bytes that are not text: refused, see callerFolder). */
  cwd?: string | NotText;
  callerEnv?: Record<string, string | NotText>;
  callerLimits: Limits;
  stdinIsTerminal: boolean;
  stdoutIsTerminal: boolean;
  hostName: string;
  random: Uint8Array;
  supervisor: string;
  /** The engine's record of the matched image: present, absent (undefined), or why it could not be asked. */
  image: ImageRecord | undefined | Refusal;
  /** Inside a job: the engine's info (cgroup driver and version). */
  engineInfo?: Record<string, unknown> | Refusal;
  /** With `network = host`: the engine's versions (containerd's among them). */
  engineVersion?: Record<string, unknown> | Refusal;
  /** With --gpus inside a job: Slurm's JSON records of the jobs (`squeue --json`). */
  jobRecord?: unknown | Refusal;
  /** Inside a job: slurm.conf. */
  slurmConf?: ConfigFile;
  /** What the kernel said about each path, asked as the caller, by the path as given. */
  probes: Map<string, PathProbe | string>;
  /** By the path as given: whether the engine may take its real path as text (see fixedByRoot). */
  fixed: Map<string, boolean>;
  /** The caller's own containers on this node, with their supervisors' /proc/<pid>/stat. */
  ownContainers: { container: ListedContainer; supervisorStat?: string }[] | Refusal;
  /** Staging folders under STAGING_DIR, with their supervisors' /proc/<pid>/stat. */
  staging: { name: string; supervisorStat?: string }[];
  /** Which of the shared GPU control devices exist on this node. */
  gpuControlDevices: string[];
  /** Inside a v1 job: Slurm's cgroup.conf (ConstrainDevices). */
  cgroupConf?: ConfigFile;
  /** Inside a v1 job: whether socker-runc is installed (DEVICE_RUNTIME_PATH). */
  deviceRuntimeInstalled?: boolean;
  /** With --gpus inside a v1 job: the step's devices.list, when it could be read. */
  stepDevicesList?: string;
  /** With --gpus inside a job: the indices of this node's /dev/nvidia<N> the kernel refuses socker, a process of the step. */
  gpusRefused?: number[];
  /** Whether socker keeps the OOM killer off itself (see protectFromOomKiller); unknown: absent. */
  oomProtected?: boolean;
  /** Inside a job: the job's memory limit in bytes, from its cgroup (undefined: none, or unreadable). */
  memoryLimit?: number;
};

/** What the process set-up of a run leaves for the read: the cgroups as socker started in them, and OOM. */
type RunSetUp = { procSelfCgroup: string; oomProtected: boolean };

/** The facts read before the read knows what else to ask for (see planProbes). */
type RunBaseFacts = ReturnType<typeof readRunBase>;

/**
 * Gathers the facts of a run: the base facts, then what planProbes (planRun's own first rules) says to ask
 * for. When those rules refuse, nothing more is read: planRun refuses the same facts at the same rule.
 */
async function readRunFacts(invocation: RunInvocation, callerLimits: Limits, setUp: RunSetUp): Promise<RunFacts> {
  const base = readRunBase(callerLimits, setUp);
  const wanted = unlessRefused(() => planProbes(invocation, base));
  const records = await readRunRecords(wanted);
  const job = wanted?.job;
  const slurmConf = job !== undefined ? readConfigFile(SLURM_CONF_PATH) : undefined;
  return {
    ...base,
    ...records,
    slurmConf,
    ...readRunPaths(wanted, base, slurmConf),
    staging: listNames(STAGING_DIR).map((name) => withSupervisorStat({ name }, parseStagingName(name).supervisor)),
    gpuControlDevices: GPU_CONTROL_DEVICES.filter(exists),
    ...(job?.version === 1
      ? { cgroupConf: readConfigFile(CGROUP_CONF_PATH), deviceRuntimeInstalled: exists(DEVICE_RUNTIME_PATH) }
      : {}),
    ...(job !== undefined && wanted?.gpus === true
      ? { stepDevicesList: job.version === 1 ? stepDevicesList(job) : undefined, gpusRefused: gpusRefusedHere() }
      : {}),
    memoryLimit: job !== undefined ? readJobMemoryLimit(job) : undefined,
  };
}

/** A decision the read needs, or undefined when planRun will refuse it (then there is nothing more to read). */
function unlessRefused<T>(decide: () => T): T | undefined {
  try {
    return decide();
  } catch (error) {
    if (error instanceof Refusal) return undefined;
    throw error;
  }
}

/** The facts that need no decision: sudo's variables, the configuration files, the caller's folder, etc. */
function readRunBase(callerLimits: Limits, setUp: RunSetUp) {
  const sudo = sudoEnvironment();
  const processUid = Deno.uid() ?? -1;
  const lookup = unlessRefused(() => planUserLookup(sudo, processUid));
  return {
    processUid,
    sudo,
    allowlist: readConfigFile(ALLOWLIST_PATH),
    settings: readConfigFile(SETTINGS_PATH),
    procSelfCgroup: setUp.procSelfCgroup,
    user: lookup !== undefined ? userRecord(lookup) : "no caller",
    cwd: currentFolder(),
    callerEnv: callerEnvironment(),
    callerLimits,
    stdinIsTerminal: Deno.stdin.isTerminal(),
    stdoutIsTerminal: Deno.stdout.isTerminal(),
    hostName: hostName(),
    random: crypto.getRandomValues(new Uint8Array(6)),
    supervisor: ownSupervisorId(),
    oomProtected: setUp.oomProtected,
  };
}

/** The engine's and Slurm's answers the probes ask for (each kept as the refusal it met, see certain). */
async function readRunRecords(wanted: RunProbes | undefined) {
  const job = wanted?.job;
  const uid = wanted?.caller.uid;
  const [image, engineInfoFact, engineVersionFact, jobRecord, ownContainers] = await Promise.all([
    wanted !== undefined ? attempt(() => engineImage(wanted.entry.canonical)) : undefined,
    job !== undefined ? attempt(() => engineInfo()) : undefined,
    wanted?.settings.network === "host" ? attempt(() => engineVersion()) : undefined,
    job !== undefined && wanted?.gpus === true
      ? attempt(async () => {
        const result = await runTool("/usr/bin/squeue", ["--json", `--jobs=${job.jobId}`]);
        if (!result.ok) refuse("installation", `squeue --json failed: ${printable(result.stderr.trim())}`);
        return JSON.parse(result.stdout);
      })
      : undefined,
    uid !== undefined
      ? attempt(() => engineList([`${LABEL.managed}=true`, `${LABEL.uid}=${uid}`, `${LABEL.node}=${hostName()}`]))
      : [],
  ]);
  return {
    image,
    engineInfo: engineInfoFact,
    engineVersion: engineVersionFact,
    jobRecord,
    ownContainers: ownContainers instanceof Refusal
      ? ownContainers
      : ownContainers.map((container) => withSupervisorStat({ container }, container.Labels?.[LABEL.supervisor])),
  };
}

/** An item with its supervisor's /proc/<pid>/stat, when the supervisor id names a pid. */
function withSupervisorStat<T extends object>(item: T, supervisor: string | undefined) {
  const pid = boundedInt(/^(\d+):/.exec(supervisor ?? "")?.[1], 1, PID_MAX);
  return { ...item, supervisorStat: pid === undefined ? undefined : procStat(pid) };
}

/**
 * What the kernel says of each path planProbes names (and of the step's PMIx folder, known only from
 * slurm.conf), asked as the caller; and which real paths the engine may take as text (see fixedByRoot).
 */
function readRunPaths(wanted: RunProbes | undefined, base: RunBaseFacts, slurmConf: ConfigFile | undefined) {
  // The mount table, read before any of the caller's paths is touched: every walk judges each mount it
  // reaches against it (a filesystem a user mounted, or one mounted since, is never looked into).
  const settings = wanted?.settings ?? DEFAULT_SETTINGS;
  mountJudge = judgeMounts(parseMountTable(readText(MOUNTINFO_PATH) ?? ""), settings.userFilesystems === "allow");
  const probes = new Map<string, PathProbe | string>();
  const fixed = new Map<string, boolean>();
  if (wanted === undefined) return { probes, fixed };
  const paths = new Set(wanted.paths);
  const pmix = wanted.job !== undefined
    ? unlessRefused(() => planPmix({ slurmConf, hostName: base.hostName, probes }, wanted.job, wanted.caller).pmix)
    : undefined;
  if (pmix !== undefined) paths.add(pmix);
  if (paths.size > 0 && base.processUid === 0) {
    asCaller(wanted.caller, () => paths.forEach((p) => probes.set(p, probePath(p))));
  }
  for (const [path, probe] of probes) {
    if (typeof probe !== "string") fixed.set(path, fixedByRoot(probe.realPath, probe.handle));
  }
  return { probes, fixed };
}

/** The devices.list of a v1 step's cgroup (the devices hierarchy's mount point from mountinfo). */
function stepDevicesList(job: JobStep): string | undefined {
  const mount = cgroupMounts(readText(MOUNTINFO_PATH) ?? "").find((item) => item.controllers.includes("devices"));
  return mount === undefined ? undefined : readText(`${mount.path}${job.parent}/devices.list`);
}

/**
 * The GPUs of this node (/dev/nvidia<N>) that the kernel refuses socker to read and write: socker runs in
 * the step's cgroup, and faccessat2 applies the devices cgroup's rules (EPERM) without opening the device.
 */
function gpusRefusedHere(): number[] {
  return listNames("/dev")
    .map((name) => /^nvidia(\d{1,4})$/.exec(name)?.[1])
    .map((index) => boundedInt(index, 0, GPU_INDEX_MAX))
    .filter((index): index is number => index !== undefined)
    .filter((index) =>
      sys(SYSCALLS.faccessat2, AT_FDCWD, cString(`/dev/nvidia${index}`), R_OK | W_OK, AT_EACCESS) !== 0 &&
      lastErrno() === EPERM
    )
    .sort((a, b) => a - b);
}

/** The job's memory limit: the memory cgroup files from the step's folder up to the job's (see memoryLimitOf). */
function readJobMemoryLimit(job: JobStep): number | undefined {
  const mounts = cgroupMounts(readText(MOUNTINFO_PATH) ?? "");
  const mount = mounts.find((item) =>
    job.version === 1 ? item.version === 1 && item.controllers.includes("memory") : item.version === 2
  );
  if (mount === undefined) return undefined;
  const texts: (string | undefined)[] = [];
  const parts = job.parent.split("/");
  for (let end = parts.length; end > 1; end--) {
    const folder = parts.slice(0, end).join("/");
    texts.push(readText(`${mount.path}${folder}/${job.version === 1 ? "memory.limit_in_bytes" : "memory.max"}`));
    if (/^job_\d+$/.test(parts[end - 1])) break;
  }
  return memoryLimitOf(texts);
}

/**
 * The entries of a folder, or none when it cannot be read. Any error means "none": this serves
 * supervision and cleanup, where no folder may end the run or keep a sweep from the next one.
 */
function folderEntries(folder: string): Deno.DirEntry[] {
  try {
    return [...Deno.readDirSync(folder)];
  } catch {
    /* any error: see above */
    return [];
  }
}

/** The names in a folder, or none when it does not exist. */
function listNames(folder: string): string[] {
  return folderEntries(folder).map((entry) => entry.name);
}

// ---- run: decide

/** Containerd releases with the fix for CVE-2020-15257 (host networking let containers reach the shim). */
export function containerdFixed(version: string): boolean | undefined {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!match) return undefined;
  const [major, minor, patch] = match.slice(1).map(Number);
  if (major !== 1) return major > 1;
  if (minor !== 3 && minor !== 4) return minor > 4;
  return minor === 3 ? patch >= 9 : patch >= 3;
}

/** The containerd version in the engine's /version answer. */
export function containerdVersion(version: Record<string, unknown>): string | undefined {
  const components = Array.isArray(version.Components) ? version.Components : [];
  const containerd = components.find((c: { Name?: unknown }) => c?.Name === "containerd") as
    | { Version?: unknown }
    | undefined;
  return typeof containerd?.Version === "string" ? containerd.Version : undefined;
}

/** The facts planRun's first rules decide from (planRequest): all read before anything else. */
export type RequestFacts = Pick<
  RunFacts,
  "processUid" | "sudo" | "user" | "allowlist" | "settings" | "procSelfCgroup" | "cwd"
>;

/** Whose record the read looks up: the user sudo names; none for root (checkCaller refuses root first). */
export function planUserLookup(sudo: RunFacts["sudo"], processUid: number): string | undefined {
  const identity = parseSudoIdentity(sudo, processUid);
  return identity.uid === 0 ? undefined : identity.user;
}

/** Who asks, for which allowlisted image, under which settings, in which job, with which volumes. */
export function planRequest(invocation: RunInvocation, facts: RequestFacts) {
  const folder = callerFolder(facts.cwd); // first: before any rule, as when the read refused it
  const caller = planCaller(facts);
  const entry = allowedImage(allowlistFrom(facts.allowlist), invocation.image);
  const settings = settingsFrom(facts.settings);
  const job = planJob(facts, caller, settings);
  const volumeRequests = invocation.options.volumes.map((spec) => withCallerFolder(parseVolume(spec), folder));
  if (invocation.options.workdir !== undefined) chooseWorkdir(invocation.options.workdir, undefined, []);
  return { caller, entry, settings, job, volumeRequests, folder };
}

/** The caller's current folder as given: socker mounts it as itself, so its name must be UTF-8 text. */
export function callerFolder(cwd: string | NotText | undefined): string | undefined {
  if (cwd !== undefined && typeof cwd !== "string") {
    refuse(
      "usage",
      `your current folder's name ('${showBytes(cwd.notText)}') is not UTF-8 text: socker cannot mount it ` +
        `as itself; cd to another folder`,
    );
  }
  return cwd;
}

/** What the read asks for beyond the base facts (see readRunFacts). */
export type RunProbes = ReturnType<typeof planProbes>;

/**
 * What the read looks at, decided by planRun's own first rules (planRequest): the paths to judge as the
 * caller (the mount sources and the caller's folder; the step's PMIx folder is known only from slurm.conf,
 * see readRunPaths), and whether the job's GPUs are asked for.
 */
export function planProbes(invocation: RunInvocation, facts: RequestFacts) {
  const request = planRequest(invocation, facts);
  const { caller, settings, job, volumeRequests, folder } = request;
  const paths = new Set<string>();
  for (const item of defaultMountRequests(settings, caller.home, folder)) paths.add(item.source);
  for (const item of volumeRequests) paths.add(item.source);
  if (folder !== undefined) paths.add(folder);
  return {
    ...request,
    paths: [...paths],
    gpus: (invocation.options.gpus || settings.defaultGpus) && job !== undefined,
  };
}

/**
 * Decides everything about one run from its facts, in the order of the data, refusing at the first rule
 * broken: who, which image, which settings and job, which engine, mounts (a user's mount must pass every
 * rule; a default mount the user cannot use is left out), working directory, environment, devices,
 * limits, namespaces, terminal, labels; and which of the caller's orphans to remove first.
 */
export function planRun(invocation: RunInvocation, facts: RunFacts): RunPlan {
  const request = planRequest(invocation, facts);
  const { caller, entry, settings, job } = request;
  const { image, runtime } = planEngine(facts, job, settings, entry);
  const environment = planEnvironment(invocation, facts, caller, settings, job, image);
  const slurm = planPmix(facts, job, caller);
  const { mounts, cwd } = planMounts(facts, request, slurm.pmixRequest);
  const storage = planMountPoints(invocation, facts, settings, image, mounts, cwd);
  const devices = planDevices(invocation, facts, caller, settings, job, slurm.node);
  // What the container starts: known now when the image is here, else from the pulled image (see planAndActRun).
  const start = image !== undefined
    ? startCommand(image, invocation.options.entrypoint, invocation.argv, entry.text)
    : { entrypoint: [], cmd: [...invocation.argv] };
  const name = containerName(caller.uid, facts.random);
  const hints = planHints(facts, settings, job, slurm);
  const orphans = planRunOrphans(facts, caller);
  return {
    caller,
    entry,
    imageId: image?.Id,
    argv: invocation.argv,
    containerName: name,
    staging: stagingName(name, job?.jobId, facts.supervisor),
    tty: !invocation.options.noTty && facts.stdinIsTerminal && facts.stdoutIsTerminal,
    stdin: !invocation.options.noStdin,
    labels: planLabels(facts, caller, job),
    cgroupParent: job?.parent,
    ...storage,
    imageEntrypoint: start.entrypoint,
    cmd: start.cmd,
    entrypointOption: invocation.options.entrypoint,
    ...environment,
    ...planNamespaces(settings, facts),
    devices,
    ...(runtime !== undefined ? { runtime } : {}),
    ulimits: containerUlimits(facts.callerLimits),
    oomScoreAdj: facts.oomProtected === false ? OOM_SCORE_ADJ_MAX : undefined,
    orphans,
    hints,
    job,
    logFacility: settings.logFacility,
    share: stepSharing(settings),
  };
}

/** Who the container runs as: the caller sudo names (never root), checked against the user database. */
export function planCaller(facts: Pick<RunFacts, "sudo" | "processUid" | "user">): Caller {
  const sudo = parseSudoIdentity(facts.sudo, facts.processUid);
  const caller = checkCaller(sudo, facts.user); // first: never as root
  if (facts.processUid !== 0) {
    refuse("installation", "this program must be started through sudo by the 'socker' launcher");
  }
  return caller;
}

/** The caller's Slurm step, from the kernel's cgroup of socker; required where the settings say so. */
export function planJob(
  facts: Pick<RunFacts, "procSelfCgroup">,
  caller: Caller,
  settings: Settings,
): JobStep | undefined {
  const job = jobStepFromCgroup(facts.procSelfCgroup, caller.uid);
  if (job === undefined && settings.requireJob) {
    refuse("policy", "this node runs containers only inside Slurm jobs; use srun, sbatch or salloc");
  }
  return job;
}

/**
 * Whether this engine fits the run: its cgroups fit the job's, containerd is fixed for host networking,
 * the image is here or may be pulled. The image's record (undefined: to be pulled) and the runtime.
 */
export function planEngine(facts: RunFacts, job: JobStep | undefined, settings: Settings, entry: AllowlistEntry) {
  const image = certain(facts.image);
  if (job !== undefined) {
    const problem = engineCgroupProblem(certain(facts.engineInfo) ?? {}, job);
    if (problem !== undefined) refuse("installation", `cannot run inside this Slurm job: ${problem}`);
  }
  const runtime = containerRuntime(
    job,
    facts.cgroupConf !== undefined && constrainsDevices(trustedText(facts.cgroupConf, false)),
    (certain(facts.engineInfo) as Record<string, unknown> | undefined)?.Runtimes,
    facts.deviceRuntimeInstalled === true,
  );
  if (runtime !== undefined && settings.engine === "podman") {
    const runs = (certain(facts.engineInfo) as Record<string, unknown> | undefined)?.DefaultRuntime;
    if (runs !== DEVICE_RUNTIME) {
      refuse(
        "installation",
        `this node confines Slurm jobs to their devices (ConstrainDevices=yes) and the Podman service runs ` +
          `'${printable(String(runs))}', not ${DEVICE_RUNTIME} (Podman 4.3 ignores a container's own runtime): ` +
          "ask your administrator to run socker's install.sh --engine podman on this node",
      );
    }
  }
  if (settings.network === "host" && settings.engine !== "podman") {
    const version = containerdVersion(certain(facts.engineVersion) ?? {});
    if (version === undefined || containerdFixed(version) !== true) {
      refuse(
        "installation",
        `network = host needs containerd 1.3.9, 1.4.3 or later (CVE-2020-15257); this engine has ` +
          `${printable(version ?? "an unknown version")}: ask your administrator`,
      );
    }
  }
  if (image === undefined && settings.pull !== "missing") {
    refuse(
      "installation",
      `image '${entry.text}' is allowed but not present on node ${facts.hostName}; ask your administrator to ` +
        "load it (socker pulls only when the administrator sets pull = missing)",
    );
  }
  return { image, runtime };
}

/**
 * The container's environment. The image's ENV names win over inherited ones: after a pull they are known
 * only from the pulled image's record, so runCommand decides again from it.
 */
export function planEnvironment(
  invocation: RunInvocation,
  facts: RunFacts,
  caller: Caller,
  settings: Settings,
  job: JobStep | undefined,
  image: ImageRecord | undefined,
): { env: string[] } {
  const more: MoreEnvironment = {
    imageNames: imageEnvNames(image),
    derived: settings.rendezvousVariables && job !== undefined
      ? rendezvousVariables(textVariables(facts.callerEnv))
      : {},
  };
  const inJob = job !== undefined;
  return { env: containerEnvironment(invocation.options.env, facts.callerEnv, caller, settings, inJob, more) };
}

/** The Slurm node's name, the step's PMIx folder, and its mount when the folder is the caller's. */
export function planPmix(
  facts: Pick<RunFacts, "slurmConf" | "hostName" | "probes">,
  job: JobStep | undefined,
  caller: Caller,
) {
  const slurmConfText = facts.slurmConf !== undefined ? trustedText(facts.slurmConf, false) : undefined;
  const slurmConf = slurmConfText !== undefined ? parseSlurmConf(slurmConfText) : undefined;
  const node = job !== undefined && slurmConf !== undefined
    ? slurmNodeName(job, slurmConf, facts.hostName)
    : facts.hostName;
  const pmix = job !== undefined && slurmConf !== undefined
    ? pmixFolder(job, slurmConf, node, facts.hostName)
    : undefined;
  const pmixProbe = pmix !== undefined ? facts.probes.get(pmix) : undefined;
  const pmixRequest: MountRequest[] =
    pmix !== undefined && typeof pmixProbe === "object" && pmixProbe.owner === caller.uid
      ? [{ source: pmix, destination: pmix, readOnly: false, origin: "the step's PMIx folder", by: "socker" }]
      : [];
  return { node, pmix, pmixRequest };
}

/**
 * Mounts: the user's must pass every rule; a default or socker's own mount the user cannot use is left out.
 * Also the caller's folder as the kernel resolved it (undefined when it cannot be the working folder).
 */
export function planMounts(
  facts: RunFacts,
  request: { caller: Caller; settings: Settings; volumeRequests: readonly MountRequest[]; folder?: string },
  pmixRequest: readonly MountRequest[],
): { mounts: Mount[]; cwd: string | undefined } {
  const { caller, settings, volumeRequests, folder } = request;
  const cwdProbe = folder !== undefined ? facts.probes.get(folder) : undefined;
  if (typeof cwdProbe === "string" && cwdProbe.includes("(user_filesystems)")) {
    refuse("policy", `your current folder ${printable(folder!)} ${cwdProbe}; cd to another folder`);
  }
  const cwd = typeof cwdProbe === "object" && cwdProbe.kind === "dir" && cwdProbe.searchable
    ? cwdProbe.realPath
    : undefined;
  const requests = [...mountRequests(defaultMountRequests(settings, caller.home, cwd), volumeRequests), ...pmixRequest];
  const mounts: Mount[] = [];
  for (const item of requests) {
    const probedAs = item.source === cwd ? folder! : item.source;
    const probe = facts.probes.get(probedAs);
    const fixed = typeof probe === "object" && facts.fixed.get(probedAs) === true;
    const decided = decideMount(item, probe, settings, fixed);
    if (typeof decided === "string") {
      if (item.by === "user") refuse("policy", decided);
      continue;
    }
    if (mounts.some((mount) => mount.destination === decided.destination)) continue;
    mounts.push(decided);
  }
  return { mounts, cwd };
}

/**
 * The working folder, the --tmpfs mounts, and where the engine would create mount points (checked in the
 * image's layers when the image is here, see prepareMountPoints).
 */
export function planMountPoints(
  invocation: RunInvocation,
  facts: RunFacts,
  settings: Settings,
  image: ImageRecord | undefined,
  mounts: Mount[],
  cwd: string | undefined,
) {
  const workdir = chooseWorkdir(invocation.options.workdir, cwd, mounts);
  const tmpfs = tmpfsMounts(invocation.options.tmpfs ?? [], settings, facts.memoryLimit, mounts);
  const points = mountPoints(mounts, workdir);
  const workdirPoint = workdir === undefined ? undefined : points[points.length - 1];
  const workdirInMount = workdirPoint?.holder !== undefined && workdirPoint.below.length > 0;
  // The engine makes each --tmpfs mount point in the image: checked as the mounts' points are.
  points.push(...tmpfs.map((item): MountPoint => ({
    destination: item.destination,
    kind: "dir",
    why: `--tmpfs ${item.destination}`,
    below: item.destination.split("/").filter((part) => part !== ""),
    checkImage: mounts.length > 0,
  })));
  const checkImage = points.some((point) => point.checkImage);
  // A -w outside every mount must be in the image: the engine would create it there, root's.
  const workdirInImage = invocation.options.workdir !== undefined && workdirPoint?.holder === undefined &&
    workdirPoint !== undefined && workdirPoint.below.length > 0 &&
    !tmpfs.some((item) => isUnder(workdirPoint.destination, item.destination));
  const layers = image !== undefined && (checkImage || workdirInMount || workdirInImage)
    ? imageLayers(image)
    : undefined;
  if (typeof layers === "string" && checkImage) {
    refuse("installation", `cannot check the mount points in the image: ${layers}`);
  }
  return {
    mounts,
    mountPoints: points,
    imageLayers: typeof layers === "string" ? undefined : layers,
    mountRoutes: mountRoutes(mounts, points),
    workdirInMount,
    workdirInImage,
    workdir,
    tmpfs,
  };
}

/** Devices: only what Slurm allocated to this job on this node. */
export function planDevices(
  invocation: RunInvocation,
  facts: RunFacts,
  caller: Caller,
  settings: Settings,
  job: JobStep | undefined,
  node: string,
): string[] {
  if (invocation.options.gpus) {
    if (job === undefined) refuse("policy", "--gpus works only inside a Slurm job with GPUs allocated");
    const gpus = gpusFromJobRecord(certain(facts.jobRecord), job.jobId, caller.uid, node);
    if (typeof gpus === "string") refuse("policy", `--gpus: cannot tell the GPUs of job ${job.jobId}: ${gpus}`);
    if (gpus.length === 0) refuse("policy", `--gpus: no GPU is allocated to job ${job.jobId} on node ${node}`);
    // The step may hold fewer GPUs than the job (srun --gres within an allocation): only the step's.
    const denied = stepDeniedGpus(gpus, facts.stepDevicesList, facts.gpusRefused ?? []);
    const usable = gpus.filter((gpu) => !denied.includes(gpu));
    if (usable.length === 0) {
      refuse(
        "policy",
        `--gpus: this step of job ${job.jobId} may use none of the job's GPUs on node ${node} (${gpus.join(",")}); ` +
          "give the step GPUs with srun --gres=gpu:N",
      );
    }
    return gpuDeviceNodes(usable, (device) => facts.gpuControlDevices.includes(device));
  } else if (settings.defaultGpus && job !== undefined) {
    // default_gpus: the step's GPUs on this node, from the same record; none when it has none (no refusal).
    const record = facts.jobRecord;
    const gpus = record === undefined || record instanceof Refusal
      ? []
      : gpusFromJobRecord(record, job.jobId, caller.uid, node);
    if (typeof gpus !== "string") {
      const denied = stepDeniedGpus(gpus, facts.stepDevicesList, facts.gpusRefused ?? []);
      const usable = gpus.filter((gpu) => !denied.includes(gpu));
      if (usable.length > 0) return gpuDeviceNodes(usable, (device) => facts.gpuControlDevices.includes(device));
    }
  }
  return [];
}

/** The one-line hints for the caller: a step without a PMIx server, MPI across private namespaces. */
export function planHints(
  facts: RunFacts,
  settings: Settings,
  job: JobStep | undefined,
  slurm: { pmix?: string; pmixRequest: readonly MountRequest[] },
): string[] {
  const hints = slurm.pmix !== undefined && slurm.pmixRequest.length === 0 && facts.callerEnv?.PMI_FD !== undefined
    ? ["hint: this step has no PMIx server; for MPI inside containers start it with srun --mpi=pmix"]
    : [];
  const mpiHint = job !== undefined ? mpiNamespaceHint(textVariables(facts.callerEnv), settings) : undefined;
  if (mpiHint !== undefined) hints.push(mpiHint);
  return hints;
}

/** The caller's containers and staging folders on this node whose supervisor died: removed first. */
export function planRunOrphans(facts: RunFacts, caller: Caller): Orphan[] {
  const orphanContainers = certain(facts.ownContainers)
    .filter((item) => item.container.Labels?.[LABEL.supervisor] !== undefined)
    .filter((item) => !supervisorAlive(item.container.Labels?.[LABEL.supervisor], item.supervisorStat))
    .map((item) => ({
      container: item.container.Id,
      name: item.container.Names?.[0]?.replace(/^\//, ""),
      job: item.container.Labels?.[LABEL.job],
    }));
  const orphanStaging = facts.staging
    .filter((item) => parseStagingName(item.name).container.startsWith(`socker-${caller.uid}-`))
    .filter((item) => parseStagingName(item.name).supervisor !== undefined)
    .filter((item) => !supervisorAlive(parseStagingName(item.name).supervisor, item.supervisorStat))
    .map((item) => ({ staging: item.name }));
  return [...orphanContainers, ...orphanStaging];
}

/** The container's labels: socker's, whose, where, which supervisor, which job step. */
export function planLabels(facts: RunFacts, caller: Caller, job: JobStep | undefined): Record<string, string> {
  return {
    [LABEL.managed]: "true",
    [LABEL.uid]: String(caller.uid),
    [LABEL.user]: caller.user,
    [LABEL.node]: facts.hostName,
    [LABEL.supervisor]: facts.supervisor,
    ...(job !== undefined ? { [LABEL.job]: job.jobId, [LABEL.step]: job.stepId } : {}),
  };
}

/** The administrator's namespaces, and /dev/shm's size with a private IPC namespace. */
export function planNamespaces(settings: Settings, facts: RunFacts) {
  return {
    shmBytes: settings.ipc === "private" ? shmBytes(settings.shmSize, facts.memoryLimit) : undefined,
    network: settings.network,
    ipc: settings.ipc,
    pid: settings.pid,
    uts: settings.uts,
  };
}

// ---- run: act

/** What a run ended with: socker's exit code, the engine's id of the container, or why it failed. */
type RunOutcome = {
  exitCode: number;
  containerId?: string;
  failure?: Refusal;
  logged: boolean;
  /** The signal that made socker end the run, if one did. */
  stoppedBy?: number;
};

/**
 * The supervisor's signal handling, in place before socker changes anything: SIGTERM, SIGINT and SIGHUP
 * end the container (before it exists: the run is undone and nothing starts); SIGQUIT, SIGUSR1 and
 * SIGUSR2 are passed on once; SIGWINCH resizes the container's terminal.
 */
function superviseSignals() {
  let terminatedBy: number | undefined;
  let markTerminated = () => {};
  /** Settles when a terminating signal arrived: output then stops being written (see pumpOutput). */
  const terminated = new Promise<void>((resolve) => markTerminated = resolve);
  let container: string | undefined;
  let tty = false;
  let ended = false;
  const lastForwarded = new Map<string, number>();
  let started = false;
  // Killing a started container lets the engine's --rm remove it at once (a forced remove on top of that
  // only slows the engine down); one that never started is removed. Repeated until the wait has returned.
  const removeUntilEnded = async () => {
    while (!ended) {
      if (container !== undefined && started) await engineKill(container, "SIGKILL", 5000).catch(() => false);
      else if (container !== undefined) await engineRemove(container, 5000).catch(() => false);
      await sleep(started ? 1000 : 100);
    }
  };
  // One resize at a time, always of the latest size: a flood of SIGWINCH (a caller resizing their own
  // terminal in a loop) costs at most one engine call in flight, never one per signal.
  let resizing = false;
  let resizeAgain = false;
  const resize = async () => {
    if (!tty || container === undefined) return;
    if (resizing) {
      resizeAgain = true;
      return;
    }
    resizing = true;
    try {
      do {
        resizeAgain = false;
        const size = terminalSize();
        if (size !== undefined) await engineResize(container, size.rows, size.columns);
      } while (resizeAgain && !ended);
    } catch { // any error: a resize is best effort and must never end the supervision
      /* no terminal size to pass on, or the engine did not take it */
    } finally {
      resizing = false;
    }
  };
  const onSignal = (signal: Deno.Signal) => () => {
    if (signal === "SIGWINCH") return void resize();
    const action = signalAction(signal);
    if (action?.kind === "terminate" && terminatedBy === undefined) {
      terminatedBy = action.number;
      markTerminated();
      void removeUntilEnded();
    } else if (action?.kind === "forward" && container !== undefined) {
      if (isSignalRepeat(lastForwarded.get(signal), performance.now())) return;
      lastForwarded.set(signal, performance.now());
      void engineKill(container, signal, 5000).catch(() => false);
    }
  };
  const signals = [...Object.keys(TERMINATING_SIGNALS), ...Object.keys(FORWARDED_SIGNALS), "SIGWINCH"] as Deno.Signal[];
  const listeners = signals.map((signal) => [signal, onSignal(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  return {
    terminatedBy: () => terminatedBy,
    terminated,
    /** The container exists (`running`: and was started), for the handlers to act on. */
    watch(id: string, hasTty: boolean, running: boolean) {
      container = id;
      tty = hasTty;
      started = running;
      if (running) resize();
    },
    /** Stops the handling; call once the container is gone. */
    release() {
      ended = true;
      for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    },
  };
}

/** Copies the container's output to socker's stdout and stderr until the engine ends the stream. */
async function pumpOutput(
  conn: Deno.UnixConn,
  initial: Uint8Array,
  tty: boolean,
  onStdoutGone: () => void,
  terminated: Promise<void>,
  progress: OutputProgress,
) {
  const demux = tty ? undefined : streamDemuxer();
  const sinks = { 1: Deno.stdout, 2: Deno.stderr };
  const gone = new Set<number>();
  // Once socker is told to stop, a reader that does not read (a full pipe, a stopped pager) may no longer
  // hold it up: output is dropped, and the engine's stream drained, so that the engine can end the
  // container. A write still pending then stays behind, unawaited.
  // Nothing per chunk may hang on a promise that lives for the run (each Promise.race against `terminated`
  // would leave a reaction on it until the run ends: ~300 bytes a chunk, a gigabyte an hour of a chatty
  // job): the stop reaches the one write in flight through `wake`, a callback replaced per write.
  let stopping = false;
  let wake: ((written: number) => void) | undefined;
  void terminated.then(() => {
    stopping = true;
    wake?.(-1);
  });
  const write = async (stream: 1 | 2, bytes: Uint8Array) => {
    if (gone.has(stream) || stopping) return;
    try {
      progress.writing = true;
      for (let offset = 0; offset < bytes.length;) {
        const pending = sinks[stream].write(bytes.subarray(offset));
        const written = await new Promise<number>((resolve, reject) => {
          wake = resolve;
          // A write left behind after the stop may fail later, unheard (the promise has settled then).
          pending.then(resolve, reject);
        }).finally(() => wake = undefined);
        if (written < 0) return;
        offset += written;
        progress.last = performance.now();
      }
    } catch {
      // The reader went away (a closed pipe): as in a shell pipeline, the writer learns of it by SIGPIPE.
      gone.add(stream);
      if (stream === 1) onStdoutGone();
    } finally {
      progress.writing = false;
    }
  };
  const handle = async (bytes: Uint8Array) => {
    if (demux === undefined) return await write(1, bytes);
    for (const piece of demux(bytes)) await write(piece.stream, piece.payload);
  };
  if (initial.length > 0) await handle(initial);
  const buffer = new Uint8Array(1 << 16);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch { // any error: the connection is lost, which ends the copy like its end (the supervisor goes on)
      break;
    }
    if (n === null) break;
    progress.last = performance.now();
    await handle(buffer.subarray(0, n));
  }
}

/** What pumpOutput is doing: writing to the caller (whose reader may be slow), and when bytes last moved. */
type OutputProgress = { writing: boolean; last: number };

/** How long after the container's exit its output stream may stay silent before socker stops waiting. */
const OUTPUT_SILENCE_MS = 10_000;

/**
 * Waits until every byte the container wrote has reached the caller, however slowly the caller reads (a
 * pager, a slow pipe). Only an engine stream that stays silent after the container is gone (nothing to
 * write, nothing arriving) ends the wait, with a line saying so.
 */
async function drainOutput(output: Promise<void>, progress: OutputProgress): Promise<void> {
  // As in pumpOutput, no race against the long-pending `output`: its end wakes the one wait in flight.
  let done = false;
  let wake = () => {};
  output.finally(() => {
    done = true;
    wake();
  }).catch(() => {}); // heard below
  while (!done) {
    await new Promise<void>((resolve) => {
      wake = resolve;
      after(250, resolve);
    });
    if (!done && !progress.writing && performance.now() - progress.last > OUTPUT_SILENCE_MS) {
      console.error("socker: the container's output stream stayed open after it ended; stopped reading it");
      return;
    }
  }
}

/** Copies socker's stdin to the container's until it ends, then closes the container's stdin. */
async function pumpStdin(conn: Deno.UnixConn): Promise<void> {
  const buffer = new Uint8Array(1 << 16);
  try {
    for (let n = await Deno.stdin.read(buffer); n !== null; n = await Deno.stdin.read(buffer)) {
      await writeAll(conn, buffer.subarray(0, n));
    }
  } catch { /* any error: the container's stdin was closed, or socker's cannot be read; the copy just ends */ }
  try {
    await conn.closeWrite();
  } catch { /* any error: already closed, or the peer is gone; nothing more is to be sent */ }
}

/** Removes orphans: containers and staging folders whose supervising socker is gone. Returns what it removed. */
async function removeOrphans(orphans: readonly Orphan[]): Promise<string[]> {
  const removed: string[] = [];
  await Promise.all(orphans.map(async (orphan) => {
    if (orphan.container !== undefined && await ensureGone(orphan.container, SWEEP_ENGINE_TIMEOUT_MS)) {
      removed.push(orphan.name ?? orphan.container.slice(0, 12));
    }
    if (orphan.staging !== undefined) {
      unstage(orphan.staging);
      removed.push(orphan.staging);
    }
  }));
  for (const name of listNames(STAGING_DIR)) {
    const parsed = parseStagingName(name);
    if (orphans.some((orphan) => orphan.name === parsed.container)) unstage(name);
  }
  return removed;
}

/**
 * Stages the mounts as mountRoutes decided and returns, per mount, the path the engine binds (undefined for
 * a mount socker made itself inside another). A staged mount is the checked object bound from the
 * descriptor the caller's own lookup opened, at a root-owned path: what is mounted is exactly what was
 * judged, whatever the caller renames or swaps afterwards. A mount inside another is bound by socker onto
 * its mount point inside the holder's staged copy, reached from there as the caller without following a
 * symlink: the engine, which would follow symlinks as root, never sees that mount point's path. Every
 * staged copy is private and binds every mount below it, like the engine's own binds.
 */
function stageMounts(plan: RunPlan): (string | undefined)[] {
  const routes = plan.mountRoutes;
  if (routes.every((route) => route === "path")) return plan.mounts.map((mount) => mount.source);
  Deno.mkdirSync(STAGING_DIR, { recursive: true, mode: 0o700 });
  Deno.chmodSync(STAGING_DIR, 0o700);
  const folder = `${STAGING_DIR}/${plan.staging}`;
  Deno.mkdirSync(folder, { mode: 0o700 });
  const trees = new Map<number, number>(); // mount index -> a descriptor of its staged copy
  const sources: (string | undefined)[] = plan.mounts.map((mount) => mount.source);
  try {
    plan.mounts.forEach((mount, index) => {
      if (routes[index] !== "staged") return;
      const target = `${folder}/${index}`;
      if (mount.kind === "dir") Deno.mkdirSync(target, { mode: 0o700 });
      else Deno.writeFileSync(target, new Uint8Array(), { mode: 0o600 });
      const problem = bindHandle(mount.handle, target) ?? keepPrivate(target);
      if (problem !== undefined) refuse("installation", `cannot mount ${printable(mount.source)}: ${problem}`);
      sources[index] = target;
      if (mount.kind === "dir") {
        trees.set(index, sys(SYSCALLS.openat, AT_FDCWD, cString(target), O_PATH | O_CLOEXEC | O_NOFOLLOW, 0));
      }
    });
    const inside = plan.mounts.map((_, index) => index).filter((index) => routes[index] === "inside")
      .sort((a, b) => plan.mounts[a].destination.length - plan.mounts[b].destination.length);
    for (const index of inside) {
      const mount = plan.mounts[index];
      const point = plan.mountPoints[index];
      const holder = plan.mounts[point.holder!];
      const tree = trees.get(point.holder!);
      if (tree === undefined || tree < 0) {
        refuse("installation", `cannot mount ${printable(mount.source)} inside ${holder.source}`);
      }
      // The mount's own copy first, at a root-owned path no rename of the caller's can redirect: private
      // (so nothing mounted in it, or bound from it, ever reaches the host's view) and read-only when
      // asked, before anything of it is bound where the caller's folders lead. No mount is ever changed
      // through a path the caller could reach.
      const prepared = `${folder}/src${index}`;
      if (mount.kind === "dir") Deno.mkdirSync(prepared, { mode: 0o700 });
      else Deno.writeFileSync(prepared, new Uint8Array(), { mode: 0o600 });
      const ready = bindHandle(mount.handle, prepared) ?? keepPrivate(prepared) ??
        (mount.readOnly ? makeReadOnly(prepared) : undefined);
      if (ready !== undefined) refuse("installation", `cannot mount ${printable(mount.source)}: ${ready}`);
      // Walked to as the caller; bound as root (mounting needs root's capabilities), onto that very point.
      const target = { fd: -1 };
      const walked = asCaller(
        plan.caller,
        () => walkAndCreate(tree, point.below, point.kind, holder.source, true, target),
      );
      try {
        const problem = walked ?? bindTree(prepared, `/proc/thread-self/fd/${target.fd}`);
        if (problem !== undefined) refuse("policy", `${point.why}: ${problem}`);
      } finally {
        closeHandle(target.fd);
      }
      sources[index] = undefined;
      if (mount.kind === "dir") {
        const again = { fd: -1 };
        asCaller(plan.caller, () => walkAndCreate(tree, point.below, "dir", holder.source, false, again));
        trees.set(index, again.fd);
      }
    }
  } finally {
    for (const fd of trees.values()) closeHandle(fd);
  }
  return sources;
}

/** Undoes stageMounts for one staging folder: unmounts and removes each staging path, never recursively. */
function unstage(staging: string): void {
  const folder = `${STAGING_DIR}/${staging}`;
  for (const name of listNames(folder)) {
    const target = `${folder}/${name}`;
    unmount(target);
    removeIfPossible(target); // fails, harmlessly, while something is still mounted there: left for cleanup
  }
  removeIfPossible(folder);
}

/**
 * Makes sure the engine creates no mount point and no working directory as root on the host (see
 * mountPoints): in a mounted folder, each is walked to and created as the caller, never through a
 * symlink; in the image, no folder on the way may be a symlink that could lead into a mount. Act checks
 * here on purpose, at use: each walk starts from the descriptor the caller's own lookup opened, and the
 * walk that creates a point checks it again, so a folder swapped since planRun (or between the two
 * passes) is refused, never followed.
 */
function prepareMountPoints(plan: RunPlan, layers: readonly string[] | undefined): void {
  for (const point of plan.mountPoints) {
    if (point.holder !== undefined || !point.checkImage || layers === undefined) continue;
    const link = imageSymlinkOn(point.below, layers.length, (layer, path) => layerEntry(`${layers[layer]}${path}`));
    if (link !== undefined) {
      refuse(
        "policy",
        `${point.why}: ${printable(link)} is a symlink in image ${plan.entry.text}, which the engine would follow ` +
          "into another mount: name the folder it leads to",
      );
    }
  }
  const inMounts = plan.mountPoints.filter((point) => point.holder !== undefined && point.below.length > 0);
  if (inMounts.length === 0) return;
  // Every point is checked before any is created: a refusal leaves nothing behind.
  for (const create of [false, true]) {
    const problems = asCaller(plan.caller, () =>
      inMounts.flatMap((point) => {
        const holder = plan.mounts[point.holder!];
        const problem = walkAndCreate(holder.handle, point.below, point.kind, holder.source, create);
        return problem === undefined ? [] : [`${point.why}: ${problem}`];
      }));
    if (problems.length > 0) refuse("policy", problems[0]);
  }
}

/** The signal handling of a run in its own container (see superviseSignals). */
type SignalSupervisor = ReturnType<typeof superviseSignals>;

/** What actRun's steps leave for its clean-up and its outcome. */
type RunState = { containerId?: string; logged: boolean; rawTerminal: boolean };

/**
 * Runs the plan (its image is here: runCommand pulled it first): removes the caller's orphans, creates what
 * the engine would create as root, logs the start (never unlogged), stages the mounts, then creates,
 * attaches to, starts and supervises the container until the engine has removed it.
 */
async function actRun(plan: RunPlan, signals: SignalSupervisor, verbose: boolean): Promise<RunOutcome> {
  const state: RunState = { logged: false, rawTerminal: false };
  const ended = (exitCode: number): RunOutcome => ({
    exitCode,
    containerId: state.containerId,
    logged: state.logged,
    stoppedBy: signals.terminatedBy(),
  });
  try {
    await removeOrphans(plan.orphans);
    checkWorkdirInImage(plan);
    prepareMountPoints(plan, plan.imageLayers);
    await reportRunStart(plan);
    state.logged = true;
    const started = await createAndStart(plan, signals, verbose, state);
    if (started === undefined) return ended(128 + signals.terminatedBy()!);
    const status = await superviseContainer(plan, signals, started, state);
    return ended(exitCodeFor(status, signals.terminatedBy()));
  } catch (error) {
    if (error instanceof Refusal) {
      return { exitCode: EXIT.REFUSED, containerId: state.containerId, failure: error, logged: state.logged };
    }
    throw error;
  } finally {
    if (state.rawTerminal) leaveRawMode();
    const gone = state.containerId === undefined || await ensureGone(state.containerId);
    unstage(plan.staging);
    if (!gone) console.error(`socker: container ${plan.containerName} could not be removed; ask your administrator`);
  }
}

/**
 * A -w in the image must be a folder there. Act reads the image's layer folders for it, as
 * prepareMountPoints does: which entries to look at follows from planRun's mount points.
 */
function checkWorkdirInImage(plan: RunPlan): void {
  const layers = plan.imageLayers;
  if (!plan.workdirInImage || layers === undefined) return;
  // A symlink on the way is the image's own: prepareMountPoints judges it; the engine follows it.
  const point = plan.mountPoints[plan.mountPoints.length - 1 - plan.tmpfs.length];
  const entry = (layer: number, path: string) => layerEntry(`${layers[layer]}${path}`);
  if (imageSymlinkOn(point.below, layers.length, entry) === undefined) {
    const found = imageEntryAt(point.below, layers.length, entry);
    const problem = workdirProblem(plan.workdir!, found, plan.entry.text);
    if (problem !== undefined) refuse("usage", problem);
  }
}

/**
 * Stages the mounts, then creates, attaches to and starts the container; undefined when a terminating
 * signal came first (looked at before each step, so that nothing more is started).
 */
async function createAndStart(plan: RunPlan, signals: SignalSupervisor, verbose: boolean, state: RunState) {
  const stopping = () => signals.terminatedBy() !== undefined;
  if (stopping()) return undefined;
  const start = {
    shell: plan.workdirInMount && plan.imageLayers !== undefined ? imageShell(plan.imageLayers) : undefined,
    entrypoint: plan.imageEntrypoint,
    cmd: plan.cmd,
    env: plan.env,
  };
  const spec = containerSpec(plan, stageMounts(plan), start);
  if (verbose) {
    console.error(`socker: POST ${ENGINE_API}/containers/create?name=${plan.containerName} ${JSON.stringify(spec)}`);
  }
  if (stopping()) return undefined;
  const id = state.containerId = await engineCreate(plan.containerName, spec);
  signals.watch(id, plan.tty, false);
  if (stopping()) return undefined;
  const [attached, waited] = await Promise.all([engineAttach(id, plan.stdin), engineWait(id)]);
  const problem = await engineStart(id);
  if (problem !== undefined) {
    attached.conn.close();
    if (stopping()) return undefined;
    refuse("engine", `${theEngine()} could not start the container: ${problem}`);
  }
  signals.watch(id, plan.tty, true);
  return { id, attached, waited };
}

/**
 * Passes the caller's streams to a started container or exec: the terminal in raw mode (noted in `state`, to
 * be put back), its output copied out, its stdin in; `onPipe` runs once, when a reader of socker's output
 * went away (the container's process learns of it by SIGPIPE, as in a shell pipeline).
 */
function passStreams(
  plan: RunPlan,
  attached: { conn: Deno.UnixConn; initial: Uint8Array },
  state: { rawTerminal: boolean },
  terminated: Promise<void>,
  onPipe: () => void,
): { output: Promise<void>; progress: OutputProgress } {
  if (plan.tty && plan.stdin && Deno.stdin.isTerminal()) {
    Deno.stdin.setRaw(true);
    state.rawTerminal = true;
  }
  let pipeSignalled = false;
  const progress: OutputProgress = { writing: false, last: performance.now() };
  const output = pumpOutput(
    attached.conn,
    attached.initial,
    plan.tty,
    () => {
      if (!pipeSignalled) onPipe();
      pipeSignalled = true;
    },
    terminated,
    progress,
  );
  if (plan.stdin) void pumpStdin(attached.conn);
  return { output, progress };
}

/** Passes the caller's terminal and streams to the started container until it ends: its exit status. */
async function superviseContainer(
  plan: RunPlan,
  signals: SignalSupervisor,
  started: NonNullable<Awaited<ReturnType<typeof createAndStart>>>,
  state: RunState,
): Promise<number> {
  const { id, attached, waited } = started;
  const { output, progress } = passStreams(plan, attached, state, signals.terminated, () => {
    void engineKill(id, "SIGPIPE", 5000).catch(() => false);
  });
  const status = await waited(output);
  // All output the container wrote reaches the caller before socker returns.
  progress.last = performance.now();
  await drainOutput(output, progress);
  attached.conn.close();
  if (typeof status === "string" && signals.terminatedBy() === undefined) {
    refuse("engine", `lost the container's exit status: ${status}`);
  }
  return typeof status === "number" ? status : 0;
}

// ---- run: step containers (one container per step and node, shared by the step's tasks)
//
// Inside a numbered Slurm step with more than one task on the node, the tasks that would build the same
// container (same caller, job, step, cgroup, image, mounts, devices, limits, namespaces) share one: the
// first creates it, with a holder process that needs nothing of the image, and every task (the first
// included) runs its own command in it through the engine's exec API. The last task to end removes it.
// Who shares is decided from the plan only (the cgroup path and the uid are the kernel's), never from the
// caller's environment: the environment's task count only lets a lone task skip sharing.

/** Where the holder lives on the host (install.sh puts a static busybox there) and in the container. */
export const HOLDER_DIR = `${PREFIX}/libexec/socker/holder`;
export const HOLDER_MOUNT = "/dev/.socker-holder";
/** The holder's command: sleeps until the container is removed (busybox's sleep takes no `infinity`). */
export const HOLDER_COMMAND = [`${HOLDER_MOUNT}/busybox`, "sleep", "2147483647"];
/** Who is running in each step container: `<SHARE_DIR>/<container>/<pid>-<start>`, one file per task. */
export const SHARE_DIR = "/run/socker-share";
/** The label of a step container: the digest of the plan it was built from. */
export const SHARE_LABEL = "socker.share";
/** How long a task waits for its step container's lock before it refuses. */
export const SHARE_LOCK_WAIT_MS = 60_000;

/**
 * The task count on this node that the caller's environment claims (`SLURM_STEP_TASKS_PER_NODE`, e.g.
 * `8(x2)` or `9,7`; else `SLURM_NTASKS`): a hint only, used to let a step of one task skip sharing.
 */
export function tasksHint(env: Readonly<Record<string, string>> | undefined): number | undefined {
  const text = env?.SLURM_STEP_TASKS_PER_NODE ?? env?.SLURM_NTASKS;
  if (text === undefined) return undefined;
  const counts = [...text.matchAll(/(\d+)(?:\(x\d+\))?/g)].map((match) => Number(match[1]));
  return counts.length === 0 ? undefined : Math.max(...counts);
}

/**
 * Whether this run joins its step's container: only with `share = step`, inside a numbered step (not the
 * batch, extern or interactive step, never outside Slurm), for a command socker can name (the exec API
 * takes no image default), once the image is here. A hint of one task per node only skips sharing.
 */
export function planShare(
  plan: RunPlan,
  share: Settings["share"],
  hint: number | undefined,
): boolean {
  return share === "step" && plan.job !== undefined && /^\d+$/.test(plan.job.stepId) &&
    plan.imageId !== undefined &&
    plan.imageEntrypoint.length + (plan.argv.length > 0 ? plan.argv : plan.cmd).length > 0 &&
    (hint === undefined || hint > 1);
}

/**
 * The container-level plan, as canonical text: what must be equal for two tasks to share a container.
 * Per-task things (the command, the environment, the terminal, stdin) are not in it: each exec has its own.
 */
export function shareSpecText(plan: RunPlan, node: string): string {
  return JSON.stringify({
    uid: plan.caller.uid,
    gid: plan.caller.gid,
    groups: [...plan.caller.groups].sort((a, b) => a - b),
    job: plan.job?.jobId,
    step: plan.job?.stepId,
    cgroup: plan.cgroupParent,
    node,
    image: plan.entry.canonical,
    imageId: plan.imageId,
    mounts: plan.mounts.map((m) => [m.source, m.destination, m.readOnly, m.kind]),
    workdir: plan.workdir,
    devices: plan.devices,
    ulimits: plan.ulimits,
    namespaces: [plan.network, plan.ipc, plan.pid, plan.uts],
    oom: plan.oomScoreAdj ?? null,
  });
}

/** The step container's name: fixed by the plan's digest, so that every task finds it without a list. */
export function sharedContainerName(uid: number, key: string): string {
  return `socker-${uid}-${key.slice(0, 24)}`;
}

/** The step container's labels: the run's, with the plan's digest and without a supervisor (see SHARE_DIR). */
export function sharedLabels(plan: RunPlan, key: string): Record<string, string> {
  const labels: Record<string, string> = { ...plan.labels, [SHARE_LABEL]: key };
  delete labels[LABEL.supervisor];
  return labels;
}

/** The step container's create request: the run's, with the holder as its only process. */
export function sharedContainerSpec(
  plan: RunPlan,
  key: string,
  sources: readonly (string | undefined)[],
  start: { shell?: string },
): Record<string, unknown> {
  const spec = containerSpec(plan, sources, { ...start, entrypoint: [] });
  const host = spec.HostConfig as Record<string, unknown>;
  return {
    ...spec,
    Entrypoint: HOLDER_COMMAND,
    Cmd: [],
    Env: [],
    Labels: sharedLabels(plan, key),
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    HostConfig: {
      ...host,
      Mounts: [
        ...(host.Mounts as unknown[]),
        { Type: "bind", Source: HOLDER_DIR, Target: HOLDER_MOUNT, ReadOnly: true },
      ],
    },
  };
}

/** The engine's view of a container, as far as socker checks it before a task joins. */
export type InspectedContainer = {
  Id?: string;
  Name?: string;
  Image?: string;
  State?: { Running?: boolean; Pid?: number };
  Config?: { User?: string; Image?: string; Labels?: Record<string, string> };
  HostConfig?: {
    CgroupParent?: string;
    Privileged?: boolean;
    GroupAdd?: string[] | null;
    NetworkMode?: string;
    PidMode?: string;
    IpcMode?: string;
    CapDrop?: string[] | null;
  };
  Mounts?: { Destination?: string; RW?: boolean; Source?: string }[];
};

/**
 * Why a container found under the step container's name must not be joined, or undefined: it must carry
 * socker's labels for exactly this plan, and the engine's own view (user, groups, cgroup, image, mounts,
 * namespaces, no privilege) must be the plan's.
 */
export function sharedContainerProblem(
  found: InspectedContainer,
  plan: RunPlan,
  key: string,
  name: string,
): string | undefined {
  const labels = found.Config?.Labels ?? {};
  const expected = sharedLabels(plan, key);
  for (const [label, value] of Object.entries(expected)) {
    if (labels[label] !== value) return `label ${label} is '${printable(String(labels[label]))}'`;
  }
  if (found.Name !== `/${name}`) return `its name is ${printable(String(found.Name))}`;
  if (found.Config?.User !== `${plan.caller.uid}:${plan.caller.gid}`) return "it runs as another user";
  if (found.Config?.Image !== plan.entry.canonical || found.Image !== plan.imageId) return "it has another image";
  const host = found.HostConfig ?? {};
  if ((host.CgroupParent ?? "") !== (plan.cgroupParent ?? "")) return "it is in another cgroup";
  if (host.Privileged !== false || !(host.CapDrop ?? []).includes("ALL")) return "it has privileges";
  const groups = (list: readonly (string | number)[]) => list.map(String).sort().join(",");
  if (groups(host.GroupAdd ?? []) !== groups(plan.caller.groups)) return "it has other groups";
  if ((host.NetworkMode ?? "") !== plan.network) return "it has another network";
  if ((host.PidMode === "host" ? "host" : "private") !== plan.pid) return "it has another pid namespace";
  const mounts = found.Mounts ?? [];
  const wanted = [...plan.mounts.map((m) => [m.destination, !m.readOnly] as const), [HOLDER_MOUNT, false] as const];
  if (mounts.length !== wanted.length) return "it has other mounts";
  for (const [destination, rw] of wanted) {
    if (!mounts.some((m) => m.Destination === destination && m.RW === rw)) return `it has no mount ${destination}`;
  }
  if (found.State?.Running !== true) return "it is not running";
  return undefined;
}

/** The supplementary groups in /proc/<pid>/status, sorted; undefined when unreadable. */
export function statusGroups(status: string | undefined): number[] | undefined {
  const line = /^Groups:\t?(.*)$/m.exec(status ?? "");
  if (!line) return undefined;
  return line[1].trim().split(/\s+/).filter((g) => g !== "").map(Number).sort((a, b) => a - b);
}

/** Whether a process runs as the caller: uid and gid (real, effective, saved, fs) and exactly their groups. */
export function runsAsCaller(status: string | undefined, caller: Caller): boolean {
  const ids = (field: string) => new RegExp(`^${field}:\\s+(.*)$`, "m").exec(status ?? "")?.[1].trim().split(/\s+/);
  const [uids, gids, groups] = [ids("Uid"), ids("Gid"), statusGroups(status)];
  const others = (list: readonly number[]) => [...new Set(list)].filter((g) => g !== caller.gid).sort((a, b) => a - b);
  return uids !== undefined && uids.length === 4 && uids.every((id) => id === String(caller.uid)) &&
    gids !== undefined && gids.length === 4 && gids.every((id) => id === String(caller.gid)) &&
    groups !== undefined && others(groups).join(",") === others(caller.groups).join(",");
}

/** The exec request of one task: its command, environment, folder, terminal, as the caller, unprivileged. */
export function execRequest(plan: RunPlan, shell: string | undefined): Record<string, unknown> {
  const entered = plan.workdirInMount && shell !== undefined;
  // No command given: the image's CMD, as `docker run` (see startCommand).
  const command = [...plan.imageEntrypoint, ...(plan.argv.length > 0 ? plan.argv : plan.cmd)];
  return {
    User: `${plan.caller.uid}:${plan.caller.gid}`,
    Privileged: false,
    Tty: plan.tty,
    AttachStdin: plan.stdin,
    AttachStdout: true,
    AttachStderr: true,
    DetachKeys: DETACH_KEYS,
    Env: plan.env,
    WorkingDir: entered ? "/" : plan.workdir ?? "",
    Cmd: entered ? [shell, "-c", ENTER_WORKDIR, "socker-workdir", plan.workdir, ...command] : command,
  };
}

/** The live tasks of a step container from its registry's names (`<pid>-<start>`) and their /proc stat. */
export function liveTasks(entries: readonly { name: string; stat?: string }[]): string[] {
  return entries.filter((entry) => {
    const match = /^(\d+)-(\d+)$/.exec(entry.name);
    return match !== null && supervisorAlive(`${match[1]}:${match[2]}`, entry.stat);
  }).map((entry) => entry.name);
}

// The acts of sharing.

/**
 * Removes a file or an empty folder of root's own (a lock, a registry entry or folder). Any error is fine
 * here: it is gone already, a task registered meanwhile (a folder not empty), or it stays for `socker
 * cleanup`, which sweeps the registry again; a removal must never end a supervision or a cleanup.
 */
function removeIfPossible(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* any error: see above */ }
}

/**
 * Signals a process root found in a container's cgroup. Any error is fine here: it ended meanwhile
 * (ESRCH), or the kernel refused (a security module); the caller's next round, or the engine's own kill
 * and removal, goes on.
 */
function signalIfPossible(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch { /* any error: see above */ }
}

/**
 * Takes the exclusive lock of one step container (a file under LOCK_DIR), waiting at most
 * SHARE_LOCK_WAIT_MS (takeLock, the one way socker waits for a lock). A lock file removed by its last
 * holder while this one waited is taken again.
 */
async function shareLock(key: string): Promise<{ release: (remove?: boolean) => void }> {
  Deno.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
  const lockPath = `${LOCK_DIR}/share-${key.slice(0, 32)}.lock`;
  const deadline = Date.now() + SHARE_LOCK_WAIT_MS;
  for (;;) {
    const fd = await takeLock(lockPath, Math.max(0, deadline - Date.now()));
    if (fd === undefined) {
      refuse("engine", `the step container is busy: waited ${SHARE_LOCK_WAIT_MS / 1000} s for its lock; try again`);
    }
    let current: number | undefined;
    try {
      current = Deno.statSync(lockPath).ino ?? undefined;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error; // removed meanwhile by its last holder
    }
    if (current !== undefined && current === (statHandle(fd)?.inode)) {
      return {
        release: (remove = false) => {
          if (remove) removeIfPossible(lockPath);
          closeHandle(fd);
        },
      };
    }
    closeHandle(fd);
  }
}

/** The registry entries of one step container, with their processes' /proc stat. */
function registryEntries(name: string): { name: string; stat?: string }[] {
  return listNames(`${SHARE_DIR}/${name}`).map((entry) => {
    const pid = boundedInt(/^(\d+)-/.exec(entry)?.[1], 1, PID_MAX);
    return { name: entry, stat: pid === undefined ? undefined : procStat(pid) };
  });
}

/** The pids of the live tasks of a step container (for `socker stop`). */
function sharedTaskPids(name: string): number[] {
  return liveTasks(registryEntries(name)).map((entry) => Number(entry.split("-")[0]));
}

/** Kills every process in a container's cgroup (with `pid = host`, stopping the container leaves execs). */
async function killContainerProcesses(id: string, parent: string | undefined): Promise<void> {
  if (parent === undefined) return;
  const folders = cgroupMounts(readText(MOUNTINFO_PATH) ?? "")
    .filter((m) => m.version === 2 || m.controllers.some((c) => ["pids", "freezer", "memory", "cpuacct"].includes(c)))
    .map((m) => `${m.path}${parent}/${id}`);
  for (let round = 0; round < 50; round++) {
    const pids = new Set<number>();
    for (const folder of folders) {
      for (const line of (readText(`${folder}/cgroup.procs`) ?? "").split("\n")) {
        const pid = boundedInt(line, 2, PID_MAX);
        if (pid !== undefined) pids.add(pid);
      }
    }
    if (pids.size === 0) return;
    for (const pid of pids) signalIfPossible(pid, "SIGKILL");
    await sleep(20);
  }
}

/** Removes a step container: every process in it, then the container, then its registry. */
async function removeSharedContainer(id: string, name: string, parent: string | undefined): Promise<boolean> {
  await killContainerProcesses(id, parent);
  const gone = await ensureGone(id);
  for (const entry of listNames(`${SHARE_DIR}/${name}`)) removeIfPossible(`${SHARE_DIR}/${name}/${entry}`);
  removeIfPossible(`${SHARE_DIR}/${name}`);
  return gone;
}

/**
 * Removes the registry folders of step containers none of whose tasks runs any more (their sockers were
 * killed; the Epilog or the reaper removed the container): dead entries first, then the folder, which
 * stays if a task registered meanwhile. Called by `socker cleanup`.
 */
function sweepShareRegistry(): void {
  sweepShareEntries();
  sweepShareLocks();
}

/** The registry part of sweepShareRegistry. */
function sweepShareEntries(): void {
  for (const name of listNames(SHARE_DIR)) {
    const entries = registryEntries(name);
    if (liveTasks(entries).length > 0) continue;
    for (const entry of entries) removeIfPossible(`${SHARE_DIR}/${name}/${entry.name}`);
    removeIfPossible(`${SHARE_DIR}/${name}`); // stays if a task registered meanwhile
  }
}

/**
 * Removes the lock files of step containers that have no registry folder any more (a step cancelled: the
 * watcher, the Epilog or the reaper removed its container without its lock), unless a task holds one now;
 * a task that opened one before it went takes a fresh one (see shareLock).
 */
function sweepShareLocks(): void {
  const registries = listNames(SHARE_DIR);
  for (const file of listNames(LOCK_DIR)) {
    const prefix = /^share-([0-9a-f]{32})\.lock$/.exec(file)?.[1];
    if (prefix === undefined || registries.some((name) => name.endsWith(`-${prefix.slice(0, 24)}`))) continue;
    const path = `${LOCK_DIR}/${file}`;
    const fd = sys(SYSCALLS.openat, AT_FDCWD, cString(path), O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0) continue;
    try {
      if (sys(FLOCK, fd, LOCK_EX | LOCK_NB) === 0) removeIfPossible(path);
    } finally {
      closeHandle(fd);
    }
  }
}

/** GET /containers/NAME/json: the engine's whole view of a container, or undefined when there is none. */
async function engineContainer(name: string): Promise<InspectedContainer | undefined> {
  const answer = await engineCall("GET", `/containers/${urlSegment(name)}/json`);
  if (answer.status === 404) return undefined;
  return engineJson(answer, `container ${name}`) as InspectedContainer;
}

/** POST /containers/ID/exec: the new exec's id. */
async function engineExecCreate(id: string, request: Record<string, unknown>): Promise<string> {
  const created = engineJson(
    await engineCall("POST", `/containers/${urlSegment(id)}/exec`, { body: request }),
    "exec",
  ) as { Id?: unknown };
  return typeof created.Id === "string" && CONTAINER_ID.test(created.Id)
    ? created.Id
    : refuse("engine", `${theEngine()} gave no exec id`);
}

/** POST /exec/ID/start, attached: the engine takes the connection over and streams the exec's stdio on it. */
async function engineExecStart(execId: string, tty: boolean): Promise<{ conn: Deno.UnixConn; initial: Uint8Array }> {
  return await engineUpgrade(`/exec/${urlSegment(execId)}/start`, { Detach: false, Tty: tty }, "exec start");
}

/** GET /exec/ID/json: whether the exec runs, its host pid and its exit code. */
async function engineExecInspect(
  execId: string,
): Promise<{ Running?: boolean; Pid?: number; ExitCode?: number | null }> {
  return engineJson(
    await engineCall("GET", `/exec/${urlSegment(execId)}/json`, { timeoutMs: SWEEP_ENGINE_TIMEOUT_MS }),
    "exec inspect",
  ) as {
    Running?: boolean;
  };
}

/** An exec's process and all its descendants, from /proc (the engine has no way to kill an exec). */
function processTree(root: number): number[] {
  const parents = new Map<number, number>();
  for (const name of listNames("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = procStat(Number(name));
    const ppid = stat === undefined ? undefined : Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid !== undefined) parents.set(Number(name), ppid);
  }
  const tree = new Set([root]);
  for (let grown = true; grown;) {
    grown = false;
    for (const [pid, ppid] of parents) {
      if (tree.has(ppid) && !tree.has(pid)) {
        tree.add(pid);
        grown = true;
      }
    }
  }
  return [...tree];
}

/**
 * Signals an exec's process (and, for SIGKILL, everything it started), once the host pid is known and
 * is still in this container's cgroup (a pid the kernel reused is never signalled).
 */
function signalExec(pid: number | undefined, containerId: string, signal: Deno.Signal): void {
  if (pid === undefined || !(readText(`/proc/${pid}/cgroup`) ?? "").includes(containerId)) return;
  for (const target of signal === "SIGKILL" ? processTree(pid) : [pid]) {
    if (target !== pid && !(readText(`/proc/${target}/cgroup`) ?? "").includes(containerId)) continue;
    signalIfPossible(target, signal);
  }
}

/**
 * Finds or creates this step's container under its lock, registers this task in it, and writes the start
 * record: the container is joined only when it is exactly the one the plan describes and running; one
 * that is not running (its tasks were killed) is removed and made anew. Returns its id and whether this
 * task created it. The lock is held only across the engine's calls and root's own files.
 */
async function joinStepContainer(
  plan: RunPlan,
  key: string,
  supervisor: string,
  start: { shell?: string },
  verbose: boolean,
  state: { logged: boolean },
): Promise<{ id: string; created: boolean }> {
  const name = plan.containerName;
  const lock = await shareLock(key);
  const registry = `${SHARE_DIR}/${name}`;
  const entry = `${registry}/${supervisor.replace(":", "-")}`;
  let registered = false;
  try {
    Deno.mkdirSync(SHARE_DIR, { recursive: true, mode: 0o700 });
    Deno.mkdirSync(registry, { recursive: true, mode: 0o700 });
    Deno.writeFileSync(entry, new Uint8Array(), { mode: 0o600 });
    registered = true;
    const found = await engineContainer(name);
    if (found !== undefined) {
      const problem = sharedContainerProblem(found, plan, key, name);
      const holderOk = problem === undefined && runsAsCaller(readText(`/proc/${found.State?.Pid}/status`), plan.caller);
      if (problem === undefined && holderOk) {
        await writeAudit({ ...runRecord(plan, plan.imageId), event: "start", share: "joined" }, plan.logFacility);
        state.logged = true;
        return { id: found.Id!, created: false };
      }
      // Socker's own step container for this plan that no longer runs: removed, then made anew.
      if (found.Config?.Labels?.[SHARE_LABEL] !== key) {
        refuse("engine", `container ${name} exists but is not this step's (${problem ?? "its holder is not yours"})`);
      }
      await removeSharedContainer(found.Id!, name, plan.cgroupParent);
      Deno.mkdirSync(registry, { recursive: true, mode: 0o700 });
      Deno.writeFileSync(entry, new Uint8Array(), { mode: 0o600 });
    }
    await writeAudit({ ...runRecord(plan, plan.imageId), event: "start", share: "created" }, plan.logFacility);
    state.logged = true;
    const sources = stageMounts(plan);
    const spec = sharedContainerSpec(plan, key, sources, start);
    if (verbose) console.error(`socker: POST ${ENGINE_API}/containers/create?name=${name} ${JSON.stringify(spec)}`);
    const id = await engineCreate(name, spec);
    const problem = await engineStart(id);
    const started = problem === undefined ? await engineContainer(id) : undefined;
    const why = problem ?? (started === undefined ? "it is gone" : sharedContainerProblem(started, plan, key, name)) ??
      (runsAsCaller(readText(`/proc/${started?.State?.Pid}/status`), plan.caller)
        ? undefined
        : "its holder is not yours");
    if (why !== undefined) {
      await removeSharedContainer(id, name, plan.cgroupParent);
      refuse("engine", `${theEngine()} could not start the step container: ${why}`);
    }
    return { id, created: true };
  } catch (error) {
    if (registered) removeIfPossible(entry);
    throw error;
  } finally {
    lock.release();
  }
}

/** Unregisters this task; the last one removes the container (under the lock, so no task joins it dying). */
async function leaveStepContainer(plan: RunPlan, key: string, id: string, supervisor: string): Promise<boolean> {
  const name = plan.containerName;
  const lock = await shareLock(key);
  let last = false;
  try {
    removeIfPossible(`${SHARE_DIR}/${name}/${supervisor.replace(":", "-")}`);
    if (liveTasks(registryEntries(name)).length > 0) return true;
    last = true;
    return await removeSharedContainer(id, name, plan.cgroupParent);
  } finally {
    lock.release(last);
  }
}

/**
 * The caller's terminal's size, or none. Any error means "none": Deno says "no terminal" with a plain
 * Error, and a size is only ever passed on as a courtesy.
 */
function terminalSize(): { rows: number; columns: number } | undefined {
  try {
    return Deno.consoleSize();
  } catch {
    /* any error: see above */
    return undefined;
  }
}

/** Puts the caller's terminal back from raw mode (it may be gone by now). */
function leaveRawMode(): void {
  try {
    Deno.stdin.setRaw(false);
  } catch { /* any error: the terminal is gone, and there is nothing left to put back */ }
}

/** What a task's run in its step container has reached, for its signal handlers, clean-up and outcome. */
type ExecRun = {
  containerId?: string;
  execId?: string;
  /** The exec's host pid, once asked (see superviseExecSignals). */
  execPid?: number;
  /** From here on a signal must find the process, even while the start is answered. */
  execStarted: boolean;
  ended: boolean;
  logged: boolean;
  rawTerminal: boolean;
  joined: boolean;
  failure?: Refusal;
  terminatedBy?: number;
};

/**
 * Runs one task in its step's container: as actRun, but the command is an exec in the shared container.
 * Signals end this task's process only; its exit code is the exec's.
 */
async function actSharedRun(plan: RunPlan, key: string, verbose: boolean): Promise<RunOutcome> {
  const supervisor = plan.labels[LABEL.supervisor];
  for (const hint of plan.hints) console.error(`socker: ${hint}`);
  const run: ExecRun = { execStarted: false, ended: false, logged: false, rawTerminal: false, joined: false };
  const signals = superviseExecSignals(plan, run);
  const ended = (exitCode: number) => ({
    exitCode,
    containerId: run.containerId,
    logged: run.logged,
    stoppedBy: run.terminatedBy,
  });
  try {
    await removeOrphans(plan.orphans);
    prepareMountPoints(plan, plan.imageLayers);
    const shell = plan.workdirInMount && plan.imageLayers !== undefined ? imageShell(plan.imageLayers) : undefined;
    if (run.terminatedBy !== undefined) return ended(128 + run.terminatedBy);
    const audit = { logged: false };
    const step = await joinStepContainer(plan, key, supervisor, { shell }, verbose, audit)
      .finally(() => run.logged = audit.logged);
    run.containerId = step.id;
    run.joined = true;
    if (run.terminatedBy !== undefined) return ended(128 + run.terminatedBy);
    const request = execRequest(plan, shell);
    if (verbose) console.error(`socker: POST ${ENGINE_API}/containers/${step.id}/exec ${JSON.stringify(request)}`);
    run.execId = await engineExecCreate(step.id, request);
    if (run.terminatedBy !== undefined) return ended(128 + run.terminatedBy);
    run.execStarted = true; // from here on a signal must find the process, even while the start is answered
    const attached = await engineExecStart(run.execId, plan.tty);
    const code = await superviseExec(plan, run, signals, attached);
    return ended(exitCodeFor(code, run.terminatedBy));
  } catch (error) {
    if (error instanceof Refusal) {
      return { exitCode: EXIT.REFUSED, containerId: run.containerId, failure: error, logged: run.logged };
    }
    throw error;
  } finally {
    if (run.rawTerminal) leaveRawMode();
    run.ended = true;
    const pid = run.execPid;
    if (pid !== undefined && run.containerId !== undefined) signalExec(pid, run.containerId, "SIGKILL");
    const gone = !run.joined ||
      await leaveStepContainer(plan, key, run.containerId!, supervisor).catch(() => false);
    signals.release();
    unstage(plan.staging);
    if (!gone) console.error(`socker: container ${plan.containerName} could not be removed; ask your administrator`);
  }
}

/**
 * A task's signal handling in its step container: SIGTERM, SIGINT and SIGHUP kill the task's process and
 * what it started (never the container, which the step's other tasks share); SIGQUIT, SIGUSR1 and SIGUSR2
 * are passed on to it once; SIGWINCH resizes its terminal.
 */
function superviseExecSignals(plan: RunPlan, run: ExecRun) {
  let markTerminated = () => {};
  const terminated = new Promise<void>((resolve) => markTerminated = resolve);
  const lastForwarded = new Map<string, number>();
  // The exec's host pid, asked once it was started (the engine sets it as the process starts); none
  // once the process has ended (its exit code is set).
  let pidAsked: Promise<number | undefined> | undefined;
  const execPidOf = () =>
    !run.execStarted || run.execId === undefined ? Promise.resolve(undefined) : pidAsked ??= (async () => {
      for (let round = 0; round < 200 && !run.ended; round++) {
        const state = await engineExecInspect(run.execId!).catch(() => undefined);
        const pid = boundedInt(String(state?.Pid ?? ""), 1, PID_MAX);
        if (pid !== undefined) return run.execPid = pid;
        if (typeof state?.ExitCode === "number") return undefined;
        await sleep(round < 10 ? 10 : 50);
      }
      return undefined;
    })();
  const killUntilEnded = async () => {
    while (!run.ended) {
      const pid = run.execId !== undefined ? await execPidOf() : undefined;
      if (run.containerId !== undefined) signalExec(pid, run.containerId, "SIGKILL");
      await sleep(200);
    }
  };
  let resizing = false;
  const onSignal = (signal: Deno.Signal) => () => {
    if (signal === "SIGWINCH") {
      if (!plan.tty || run.execId === undefined || resizing) return;
      resizing = true;
      const { rows, columns } = terminalSize() ?? { rows: 0, columns: 0 };
      void engineCall("POST", `/exec/${urlSegment(run.execId)}/resize?h=${rows}&w=${columns}`, { timeoutMs: 5000 })
        .catch(() => undefined).finally(() => resizing = false);
      return;
    }
    const action = signalAction(signal);
    if (action?.kind === "terminate" && run.terminatedBy === undefined) {
      run.terminatedBy = action.number;
      markTerminated();
      void killUntilEnded();
    } else if (action?.kind === "forward" && run.containerId !== undefined && run.execId !== undefined) {
      if (isSignalRepeat(lastForwarded.get(signal), performance.now())) return;
      lastForwarded.set(signal, performance.now());
      const id = run.containerId;
      void execPidOf().then((pid) => signalExec(pid, id, signal));
    }
  };
  const signals = [...Object.keys(TERMINATING_SIGNALS), ...Object.keys(FORWARDED_SIGNALS), "SIGWINCH"] as Deno.Signal[];
  const listeners = signals.map((signal) => [signal, onSignal(signal)] as const);
  for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
  return {
    terminated,
    execPidOf,
    release: () => listeners.forEach(([signal, listener]) => Deno.removeSignalListener(signal, listener)),
  };
}

/**
 * Passes the caller's terminal and streams to the started exec until its process ends: its exit code
 * (0 when a terminating signal ended it; see exitCodeFor).
 */
async function superviseExec(
  plan: RunPlan,
  run: ExecRun,
  signals: ReturnType<typeof superviseExecSignals>,
  attached: Awaited<ReturnType<typeof engineExecStart>>,
): Promise<number> {
  const { terminated, execPidOf } = signals;
  const id = run.containerId!;
  const execId = run.execId!;
  // The exec runs as the caller with the container's groups (the engine adds GroupAdd to every exec):
  // checked from the kernel's view of its process; a mismatch ends it at once.
  const checked = execPidOf().then((pid) => {
    if (pid === undefined || run.ended) return;
    const status = readText(`/proc/${pid}/status`);
    if (
      status !== undefined && (readText(`/proc/${pid}/cgroup`) ?? "").includes(id) &&
      !runsAsCaller(status, plan.caller)
    ) {
      run.failure = new Refusal("engine", `${theEngine()} ran the task with other ids or groups; it was stopped`);
      signalExec(pid, id, "SIGKILL");
    }
  });
  if (plan.tty) {
    const size = terminalSize(); // none: the exec keeps the engine's size
    if (size !== undefined) {
      void engineCall("POST", `/exec/${urlSegment(execId)}/resize?h=${size.rows}&w=${size.columns}`, {
        timeoutMs: 5000,
      }).catch(() => undefined);
    }
  }
  const { output, progress } = passStreams(plan, attached, run, terminated, () => {
    void execPidOf().then((pid) => signalExec(pid, id, "SIGPIPE"));
  });
  // The stream ends when the exec's process has ended and its output is out (or, after a terminating
  // signal, once its processes were killed: then what is left of the stream is given a moment).
  await Promise.race([output, terminated.then(() => Promise.race([output, sleep(2000)]))]);
  await drainOutput(Promise.race([output, terminated.then(() => sleep(2000))]), progress);
  attached.conn.close();
  await checked;
  return await execExitCode(run, execId);
}

/** The exec's exit code, once the engine says its process ended (asked a while; a stopped container has none). */
async function execExitCode(run: ExecRun, execId: string): Promise<number> {
  let state: { Running?: boolean; ExitCode?: number | null } | undefined;
  for (let round = 0; round < 100; round++) {
    state = await engineExecInspect(execId).catch(() => undefined);
    if (state?.Running === false || run.terminatedBy !== undefined) break;
    await sleep(round < 10 ? 5 : 50);
  }
  if (run.failure !== undefined) throw run.failure;
  const code = boundedNumber(state?.ExitCode, 0, 255);
  if (code === undefined && run.terminatedBy === undefined) {
    refuse("engine", "lost the task's exit status (its step container was stopped)");
  }
  return code ?? 0;
}

/**
 * The hook of sharing in `socker run`: the plan of this task's step container (its name and labels) and
 * its key, or undefined when this run gets its own container.
 */
async function stepContainerPlan(
  plan: RunPlan,
  callerEnv: Record<string, string> | undefined,
): Promise<{ plan: RunPlan; key: string } | undefined> {
  if (!planShare(plan, plan.share, tasksHint(callerEnv))) return undefined;
  const key = await sha256Hex(shareSpecText(plan, hostName()));
  const name = sharedContainerName(plan.caller.uid, key);
  return {
    plan: { ...plan, containerName: name, staging: stagingName(name, plan.job?.jobId, plan.labels[LABEL.supervisor]) },
    key,
  };
}

// ---- run: report

/** The fields every record of a run carries. */
function runRecord(plan: RunPlan, imageId: string | undefined): AuditRecord {
  return {
    event: "run",
    host: hostName(),
    user: plan.caller.user,
    uid: plan.caller.uid,
    pid: Deno.pid,
    job: plan.job?.jobId,
    step: plan.job?.stepId,
    image: plan.entry.canonical,
    image_id: imageId,
    container: plan.containerName,
    network: plan.network,
    workdir: plan.workdir,
    devices: plan.devices.length > 0 ? plan.devices : undefined,
    mounts: plan.mounts.map((m) => `${m.source}:${m.destination}${m.readOnly ? ":ro" : ""}`),
    env: environmentNames(plan.env),
    tmpfs: plan.tmpfs.length > 0 ? plan.tmpfs.map((item) => `${item.destination}:size=${item.bytes}`) : undefined,
    shm_size: plan.shmBytes,
    command: plan.argv.length > 0 ? plan.argv : plan.cmd,
    entrypoint: plan.entrypointOption !== undefined ? plan.imageEntrypoint : undefined,
  };
}

/** The start record, written before the container is created (a run never starts unlogged), and the hints. */
async function reportRunStart(plan: RunPlan): Promise<void> {
  for (const hint of plan.hints) console.error(`socker: ${hint}`);
  await writeAudit({ ...runRecord(plan, plan.imageId), event: "start" }, plan.logFacility);
}

/**
 * The report of a run, whatever its outcome: refused before it had a plan (the command line and sudo's
 * word, see reportRefusal); refused before its start record (a refusal record; none when the refusal is
 * that the log cannot be written); else the end record: the exit code or the failure, and how long it took.
 */
async function reportRun(
  invocation: RunInvocation,
  plan: RunPlan | undefined,
  outcome: RunOutcome,
  started: number,
): Promise<void> {
  if (plan === undefined || !outcome.logged) {
    if (outcome.failure !== undefined && plan === undefined) {
      await reportRefusal(invocation.argv, invocation, outcome.failure);
    } else if (outcome.failure !== undefined && outcome.failure.kind !== "audit") {
      await writeAuditAfter(
        { ...runRecord(plan!, plan!.imageId), event: "refused", rule: outcome.failure.reason },
        plan!.logFacility,
      );
    }
    if (outcome.failure !== undefined) console.error(refusalLine(outcome.failure));
    return;
  }
  if (outcome.stoppedBy === TERMINATING_SIGNALS.SIGXCPU) {
    console.error(
      "socker: your CPU-time limit (ulimit -t) ran out while socker supervised the container; the container " +
        `was stopped (exit ${outcome.exitCode})`,
    );
  }
  await writeAuditAfter({
    ...runRecord(plan, plan.imageId),
    event: "end",
    outcome: outcome.failure !== undefined ? `refused: ${outcome.failure.reason}` : `exit ${outcome.exitCode}`,
    container_id: outcome.containerId,
    duration_ms: Math.round(performance.now() - started),
  }, plan.logFacility);
  if (outcome.failure !== undefined) console.error(refusalLine(outcome.failure));
}

/** `socker run`: set up, read, decide, act, report; every outcome (a refusal at any phase) goes to reportRun. */
async function runCommand(invocation: RunInvocation, callerLimits: Limits): Promise<number> {
  const started = performance.now();
  hangUpWithParent();
  // The job's cgroups as socker started in them: read before protectFromOomKiller may move it to another.
  const procSelfCgroup = readText("/proc/self/cgroup") ?? "";
  const setUp = { procSelfCgroup, oomProtected: protectFromOomKiller(procSelfCgroup) };
  let facts: RunFacts | undefined;
  let ran: { plan?: RunPlan; outcome: RunOutcome };
  try {
    facts = await readRunFacts(invocation, callerLimits, setUp);
    ran = await planAndActRun(invocation, facts);
  } catch (error) {
    if (!(error instanceof Refusal)) throw error;
    ran = { outcome: { exitCode: EXIT.REFUSED, failure: error, logged: false } };
  } finally {
    for (const probe of facts?.probes.values() ?? []) if (typeof probe === "object") closeHandle(probe.handle);
  }
  await reportRun(invocation, ran.plan, ran.outcome, started);
  return ran.outcome.exitCode;
}

/**
 * Decides the run and acts on it. An image to pull first is a cycle of its own: pull it (and record the
 * pull), take the engine's record of it as the image fact, decide again (a refusal then is the run's
 * outcome). A run that pulled gets its own container (step containers are shared only by runs that found
 * the image here, see planShare); its signals are handled from before the pull.
 */
async function planAndActRun(
  invocation: RunInvocation,
  facts: RunFacts,
): Promise<{ plan: RunPlan; outcome: RunOutcome }> {
  let plan = planRun(invocation, facts);
  const step = await stepContainerPlan(plan, textVariables(facts.callerEnv));
  if (step !== undefined) {
    return { plan: step.plan, outcome: await actSharedRun(step.plan, step.key, invocation.verbose) };
  }
  const signals = superviseSignals();
  try {
    if (plan.imageId === undefined) {
      try {
        const pulled = await pullImage(plan.entry);
        await reportPull(plan.entry, pulled, plan.logFacility);
        plan = planRun(invocation, { ...facts, image: pulled.image });
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        return { plan, outcome: { exitCode: EXIT.REFUSED, failure: error, logged: false } };
      }
    }
    return { plan, outcome: await actRun(plan, signals, invocation.verbose) };
  } finally {
    signals.release();
  }
}

// ---- images: read, decide, report

/** The allowlist and, per entry, what the engine holds for it. */
export type ImagesFacts = {
  allowlist: ConfigFile;
  images: Map<string, ImageRecord | undefined>;
};

async function readImagesFacts(): Promise<ImagesFacts> {
  const allowlist = readConfigFile(ALLOWLIST_PATH);
  const entries = allowlistFrom(allowlist);
  const images = new Map<string, ImageRecord | undefined>();
  await Promise.all(entries.map(async (entry) => images.set(entry.canonical, await engineImage(entry.canonical))));
  return { allowlist, images };
}

/** The digest an image is known by: the repository digest of its repository, else its image id, labelled so. */
export function imageDigest(entry: AllowlistEntry, image: ImageRecord | undefined) {
  if (image === undefined) return "-";
  const repository = `${entry.ref.domain}/${entry.ref.path}`;
  const shortRepository = entry.ref.domain === "docker.io" ? entry.ref.path.replace(/^library\//, "") : repository;
  const repoDigest = (image.RepoDigests ?? []).find((digest) =>
    [repository, shortRepository].includes(digest.slice(0, digest.indexOf("@")))
  );
  return repoDigest !== undefined ? repoDigest.slice(repoDigest.indexOf("@") + 1) : `image id ${image.Id ?? "?"}`;
}

/** The rows `socker images` prints: each allowlisted entry, present or missing on this node, and its digest. */
export function planImages(facts: ImagesFacts): string[][] {
  const entries = allowlistFrom(facts.allowlist);
  return [
    ["IMAGE", "NORMALISED", "ON THIS NODE", "DIGEST"],
    ...entries.map((entry) => {
      const image = facts.images.get(entry.canonical);
      return [entry.text, entry.canonical, image === undefined ? "missing" : "present", imageDigest(entry, image)];
    }),
  ];
}

/** Prints rows as aligned columns. */
function printTable(rows: readonly string[][]): void {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => (row[column] ?? "").length)));
  for (const row of rows) {
    console.log(escapeUnsafe(row.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd(), "text"));
  }
}

async function imagesCommand(): Promise<number> {
  const rows = planImages(await readImagesFacts());
  printTable(rows);
  if (rows.length === 1) console.error(`socker: no images are allowed yet (${ALLOWLIST_PATH} lists none)`);
  return 0;
}

// ---- pull: read, decide, act, report

/** The entries `socker pull` pulls: the one named (it must be allowlisted), or all. Root only. */
export function planPull(
  image: string | undefined,
  allowlist: readonly AllowlistEntry[],
  rootCaller: boolean,
): AllowlistEntry[] {
  if (!rootCaller) refuse("policy", "'pull' is for root (images come to a node from the administrator)");
  return image === undefined ? [...allowlist] : [allowedImage(allowlist, image)];
}

/**
 * How long a run or `socker pull` waits for another pull of the same image on this node before giving up
 * with one line (125). A pull holds its lock only while the engine pulls: never across the caller's
 * terminal, so no user can hold it longer than the engine's own pull takes.
 */
export const PULL_LOCK_WAIT_MS = 300_000;
/** How often a wait for a lock looks again. */
const LOCK_POLL_MS = 100;
const FLOCK = Deno.build.arch === "aarch64" ? 32n : 73n;
const LOCK_EX = 2, LOCK_NB = 4, O_RDWR = 0o2, O_NONBLOCK = 0o4000, O_NOCTTY = 0o400, EAGAIN = 11, EINTR = 4;

/** What a wait for a lock does next: take it, look again later, or give up (its deadline passed). */
export function lockWaitStep(taken: boolean, startedMs: number, nowMs: number, limitMs: number) {
  return taken ? "taken" : nowMs - startedMs >= limitMs ? "give up" : "wait";
}

/**
 * Takes an exclusive lock on a root-owned lock file, polling (flock with LOCK_NB, so that socker itself is
 * never blocked and its signals are heard): the descriptor (closing it releases the lock), or undefined
 * when the lock stayed taken for `limitMs`.
 */
async function takeLock(path: string, limitMs: number): Promise<number | undefined> {
  const fd = sys(SYSCALLS.openat, AT_FDCWD, cString(path), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600);
  if (fd < 0) refuse("installation", `cannot open the lock ${path}: ${errnoText(lastErrno())}`);
  const started = performance.now();
  for (let pause = 2;;) {
    const taken = sys(FLOCK, fd, LOCK_EX | LOCK_NB) === 0;
    const errno = taken ? 0 : lastErrno();
    if (!taken && errno !== EAGAIN && errno !== EINTR) {
      closeHandle(fd);
      refuse("installation", `cannot lock ${path}: ${errnoText(errno)}`);
    }
    const step = lockWaitStep(taken, started, performance.now(), limitMs);
    if (step === "taken") return fd;
    if (step === "give up") {
      closeHandle(fd);
      return undefined;
    }
    // Short first looks: a step container's lock is held for milliseconds by each of its tasks.
    await sleep(pause);
    pause = Math.min(pause * 2, LOCK_POLL_MS);
  }
}

/** The progress line to show for one status line of the engine's pull, or undefined (nothing new). */
export function pullProgressLine(line: Record<string, unknown>, shown: Map<string, string>): string | undefined {
  const id = String(line.id ?? "");
  const status = String(line.status ?? "");
  if (shown.get(id) === status) return undefined;
  if (shown.size >= 1024 && !shown.has(id)) return undefined; // bounded, whatever a registry sends
  shown.set(id, status);
  return `socker: ${printable(id ? `${id}: ${status}` : status)}\n`;
}

/**
 * Progress lines to the caller's terminal that never block socker: written through socker's own
 * non-blocking open of that terminal (the caller's open file, shared with their shell, is left as it is);
 * a line the terminal cannot take now (stopped with Ctrl-S, a full buffer) is dropped. Undefined when
 * stderr is no terminal (then there is no progress).
 */
function terminalProgress(): { show: (text: string) => void; close: () => void } | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const fd = sys(
    SYSCALLS.openat,
    AT_FDCWD,
    cString("/proc/self/fd/2"),
    O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
    0,
  );
  if (fd < 0) return undefined;
  return {
    show(text: string) {
      const bytes = encoder.encode(text);
      sys(SYSCALLS.write, fd, bytes, bytes.length);
    },
    close: () => closeHandle(fd),
  };
}

/**
 * Pulls an allowlisted image unless the engine holds it, once per node however many runs ask at the same
 * time (an exclusive lock per image, taken only when the image is missing, waited for at most
 * PULL_LOCK_WAIT_MS; who waited finds it present). Progress goes to stderr when it is a terminal, never
 * blocking; the pull and the digest that arrived are recorded.
 */
async function pullImage(entry: AllowlistEntry): Promise<PullResult> {
  const before = await engineImage(entry.canonical);
  if (before?.Id !== undefined) {
    return { id: before.Id, pulled: false, digest: imageDigest(entry, before), image: before };
  }
  Deno.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
  const lockPath = `${LOCK_DIR}/pull-${(await sha256Hex(entry.canonical)).slice(0, 32)}.lock`;
  const lock = await takeLock(lockPath, PULL_LOCK_WAIT_MS);
  if (lock === undefined) {
    refuse(
      "engine",
      `another pull of ${entry.canonical} on this node has not ended in ${PULL_LOCK_WAIT_MS / 1000} s; try again later`,
    );
  }
  const progress = terminalProgress();
  try {
    const present = await engineImage(entry.canonical);
    if (present?.Id !== undefined) {
      return { id: present.Id, pulled: false, digest: imageDigest(entry, present), image: present };
    }
    progress?.show(`socker: pulling ${entry.canonical}\n`);
    const shown = new Map<string, string>();
    const started = performance.now();
    await enginePull(entry.ref, registryAuth(readRegistryAuthText(), entry.ref.domain), (line) => {
      if (progress === undefined) return;
      const text = pullProgressLine(line, shown);
      if (text !== undefined) progress.show(text);
    });
    const pulled = await engineImage(entry.canonical);
    if (pulled?.Id === undefined) refuse("engine", `the pull of ${entry.canonical} ended without the image`);
    const durationMs = Math.round(performance.now() - started);
    return { id: pulled.Id, pulled: true, digest: imageDigest(entry, pulled), image: pulled, durationMs };
  } finally {
    progress?.close();
    closeHandle(lock);
  }
}

/** What a pull ended with: the image's id, record and digest; whether it was pulled (else present), and how long it took. */
type PullResult = { id: string; pulled: boolean; digest: string; image: ImageRecord; durationMs?: number };

/** The record of a pull that pulled (a pull that found the image present records nothing). */
async function reportPull(entry: AllowlistEntry, result: PullResult, facility: string): Promise<void> {
  if (!result.pulled) return;
  await writeAuditAfter({
    event: "pull",
    host: hostName(),
    user: Deno.env.get("SUDO_USER") ?? "root",
    uid: boundedInt(Deno.env.get("SUDO_UID"), 0, ID_MAX) ?? 0,
    outcome: "pulled",
    image: entry.canonical,
    image_id: result.id,
    repo_digest: result.digest,
    duration_ms: result.durationMs,
  }, facility);
}

function readRegistryAuthText(): string | undefined {
  const file = readConfigFile(REGISTRY_AUTH_PATH);
  return "missing" in file ? undefined : trustedText(file, false);
}

async function pullCommand(image: string | undefined): Promise<number> {
  const allowlist = allowlistFrom(readConfigFile(ALLOWLIST_PATH));
  const facility = settingsFrom(readConfigFile(SETTINGS_PATH)).logFacility;
  const entries = planPull(image, allowlist, isRootItself(readSudoIdentity(), Deno.uid() ?? -1));
  let failures = 0;
  for (const entry of entries) {
    try {
      const result = await pullImage(entry);
      await reportPull(entry, result, facility);
      console.log(`${entry.canonical}: ${result.pulled ? "pulled" : "present"} (${result.digest})`);
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      failures++;
      console.error(refusalLine(error));
    }
  }
  return failures === 0 ? 0 : EXIT.REFUSED;
}

// ---- ps and stop: a user's own containers on this node

/** socker's containers on this node that the caller may see (root: everyone's), with their supervisors. */
export type OwnContainersFacts = {
  caller: SudoIdentity;
  rootCaller: boolean;
  now: number;
  containers: { container: ListedContainer; supervisorStat?: string }[];
};

async function readOwnContainers(): Promise<OwnContainersFacts> {
  const caller = readSudoIdentity();
  const rootCaller = isRootItself(caller, Deno.uid() ?? -1);
  const labels = [
    `${LABEL.managed}=true`,
    `${LABEL.node}=${hostName()}`,
    ...(rootCaller ? [] : [`${LABEL.uid}=${caller.uid}`]),
  ];
  const listed = await engineList(labels);
  return {
    caller,
    rootCaller,
    now: Date.now() / 1000,
    containers: listed.map((container) => {
      const pid = boundedInt(/^(\d+):/.exec(container.Labels?.[LABEL.supervisor] ?? "")?.[1], 1, PID_MAX);
      return { container, supervisorStat: pid === undefined ? undefined : procStat(pid) };
    }),
  };
}

/** Only the caller's own containers, whatever the engine returned (root sees all). */
function visibleContainers(facts: OwnContainersFacts) {
  return facts.containers.filter((item) =>
    facts.rootCaller || item.container.Labels?.[LABEL.uid] === String(facts.caller.uid)
  );
}

/** A duration as `ps` shows it: `42s`, `5m`, `3h`, `2d`. */
export function ageText(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  return s < 60
    ? `${s}s`
    : s < 3600
    ? `${Math.floor(s / 60)}m`
    : s < 86400
    ? `${Math.floor(s / 3600)}h`
    : `${Math.floor(s / 86400)}d`;
}

/** The rows of `socker ps`: name, image, command, age, job (and, for root, the user). */
export function planPs(facts: OwnContainersFacts): string[][] {
  const rows = visibleContainers(facts).map(({ container }) => {
    const labels = container.Labels ?? {};
    const created = boundedNumber(container.Created, 0, Number.MAX_SAFE_INTEGER);
    const row = [
      (container.Names?.[0] ?? container.Id.slice(0, 12)).replace(/^\//, ""),
      printable(container.Image ?? "?", 60),
      printable((container.Command ?? "").replace(/^\/sbin\/docker-init -- /, ""), 40),
      created === undefined ? "?" : ageText(facts.now - created),
      labels[LABEL.job] ?? "-",
    ];
    return facts.rootCaller ? [...row, labels[LABEL.user] ?? "?"] : row;
  });
  return [["NAME", "IMAGE", "COMMAND", "AGE", "JOB", ...(facts.rootCaller ? ["USER"] : [])], ...rows];
}

async function psCommand(): Promise<number> {
  printTable(planPs(await readOwnContainers()));
  return 0;
}

/**
 * Which container `socker stop TARGET` stops: one of the caller's own (root: anyone's) named TARGET, or
 * whose id starts with TARGET (at least 4 hex digits, and only one match). A container of another user
 * gets the same answer as one that does not exist. Returns it with its supervisor, when that still runs.
 */
export function planStop(
  target: string,
  facts: OwnContainersFacts,
): { id: string; name: string; supervisorPid?: number } {
  const matches = visibleContainers(facts).filter(({ container }) =>
    (container.Names ?? []).some((name) => name.replace(/^\//, "") === target) ||
    (/^[0-9a-f]{4,64}$/.test(target) && container.Id.startsWith(target))
  );
  if (matches.length === 0) {
    refuse("policy", `no container of yours named '${printable(target)}' on this node (see 'socker ps')`);
  }
  if (matches.length > 1) {
    refuse("usage", `'${printable(target)}' names ${matches.length} of your containers; give more of the id`);
  }
  const { container, supervisorStat } = matches[0];
  const supervisor = container.Labels?.[LABEL.supervisor];
  const alive = supervisorAlive(supervisor, supervisorStat);
  return {
    id: container.Id,
    name: (container.Names?.[0] ?? container.Id.slice(0, 12)).replace(/^\//, ""),
    supervisorPid: alive ? Number(supervisor!.split(":")[0]) : undefined,
  };
}

/**
 * Stops a container the way a SIGTERM to its socker does: the supervising socker is sent SIGTERM (it kills
 * the container and exits 143); a container whose supervisor is gone is removed directly.
 */
async function stopCommand(target: string): Promise<number> {
  const facts = await readOwnContainers();
  const plan = planStop(target, facts);
  if (plan.supervisorPid !== undefined) Deno.kill(plan.supervisorPid, "SIGTERM");
  // A step container has no one supervisor: each of its tasks' sockers is stopped; the last removes it.
  const tasks = plan.supervisorPid === undefined ? sharedTaskPids(plan.name) : [];
  for (const pid of tasks) {
    try {
      Deno.kill(pid, "SIGTERM");
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error; // it ended meanwhile (ESRCH)
    }
  }
  if (tasks.length > 0) plan.supervisorPid = tasks[0];
  // Its socker removes it; socker does only when there is none.
  const gone = await ensureGone(plan.id, STOP_TIMEOUT_MS, plan.supervisorPid === undefined);
  if (plan.supervisorPid === undefined) {
    for (const name of listNames(STAGING_DIR)) if (parseStagingName(name).container === plan.name) unstage(name);
  }
  const settings = await attempt(() => settingsFrom(readConfigFile(SETTINGS_PATH)));
  await writeAuditAfter({
    event: "stop",
    host: hostName(),
    user: facts.caller.user,
    uid: facts.caller.uid,
    container: plan.name,
    container_id: plan.id,
    outcome: gone
      ? (plan.supervisorPid !== undefined ? "stopped through its socker" : "removed (its socker was gone)")
      : "NOT stopped",
  }, settings instanceof Refusal ? DEFAULT_SETTINGS.logFacility : settings.logFacility);
  if (!gone) refuse("engine", `container ${plan.name} is still there after ${STOP_TIMEOUT_MS / 1000} s`);
  console.log(`socker: stopped ${plan.name}`);
  return 0;
}

// ---- cleanup: what a finished job or a dead supervisor left behind

/** What a finished job left on this node, and the engine's list of its containers (or why not). */
export type JobCleanupFacts = {
  jobId: string;
  leftovers: { mount: CgroupMount; containers: string[]; jobFolders: string[]; slurmFolders: string[] }[];
  labelled: ListedContainer[] | Refusal;
  staging: string[];
};

/**
 * What cleanup does, in sweeps that each run whatever the others met: the containers, their cgroup folders
 * and socker's job folders, Slurm's job folders once Slurm is done with the job, the staging folders.
 */
export type CleanupPlan = {
  jobId?: string;
  containers: string[];
  folders: string[];
  slurmFolders: string[];
  staging: string[];
};

/**
 * Plans the cleanup of a finished job: every container found by label or by a cgroup folder named by its
 * id (which does not depend on labels), every folder of those containers and the job folders that are
 * socker's to remove (see jobLeftovers), deepest first, and the job's staging folders.
 */
export function planJobCleanup(facts: JobCleanupFacts): CleanupPlan {
  const ids = new Set<string>();
  for (const { containers } of facts.leftovers) {
    for (const folder of containers) {
      const id = containerIdOfFolder(folder.slice(folder.lastIndexOf("/") + 1));
      if (id !== undefined) ids.add(id);
    }
  }
  if (!(facts.labelled instanceof Refusal)) { for (const container of facts.labelled) ids.add(container.Id); }
  const deepestFirst = (folders: string[]) => folders.sort((a, b) => b.split("/").length - a.split("/").length);
  const folders = deepestFirst(facts.leftovers.flatMap(({ containers, jobFolders }) => [...containers, ...jobFolders]));
  const slurmFolders = deepestFirst(facts.leftovers.flatMap(({ slurmFolders }) => slurmFolders));
  const staging = facts.staging.filter((name) => parseStagingName(name).jobId === facts.jobId);
  return { jobId: facts.jobId, containers: [...ids], folders, slurmFolders, staging };
}

/** The names of the folders in a folder, or none when it cannot be read. */
function listDirs(path: string): string[] {
  return folderEntries(path).filter((entry) => entry.isDirectory).map((entry) => entry.name);
}

/** How long one cleanup may take in all (the Epilog hook bounds it again, and always exits 0). */
const CLEANUP_BOUND_MS = 25_000;

async function readJobCleanupFacts(jobId: string): Promise<JobCleanupFacts> {
  const mounts = cgroupMounts(readText(MOUNTINFO_PATH) ?? "");
  const v2Node = mounts.every((mount) => mount.version === 2);
  return {
    jobId,
    leftovers: mounts.map((mount) => ({ mount, ...jobLeftovers(mount, jobId, listDirs, v2Node) })),
    labelled: await attemptSweep(() => engineList([`${LABEL.job}=${jobId}`], SWEEP_ENGINE_TIMEOUT_MS)),
    staging: listNames(STAGING_DIR),
  };
}

/** Removes a cgroup folder, retrying briefly while it is busy (a process leaving it, Slurm tearing down). */
async function removeCgroupFolder(folder: string, deadline: number): Promise<string | undefined> {
  for (;;) {
    try {
      Deno.removeSync(folder);
      return undefined;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      if (!(error instanceof Deno.errors.Busy) || Date.now() > deadline) return errorText(error);
    }
    await sleep(100);
  }
}

/** Whether a slurmstepd of this job still runs on this node (its process title is `slurmstepd: [J.S]`). */
function stepdRuns(jobId: string, step?: string): boolean {
  const title = step === undefined ? `slurmstepd: [${jobId}.` : `slurmstepd: [${jobId}.${step}]`;
  for (const name of listNames("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    // Any user can give a process this title (exec -a): only root's processes count (slurmstepd runs as root,
    // all four of its uids 0), so that no user can hold cleanup or the watcher off Slurm's folders.
    if (readText(`/proc/${name}/cmdline`)?.startsWith(title) && isRootProcess(readText(`/proc/${name}/status`))) {
      return true;
    }
  }
  return false;
}

/** Whether a process's /proc/PID/status says that all its uids (real, effective, saved, filesystem) are 0. */
export function isRootProcess(status: string | undefined): boolean {
  const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$/m.exec(status ?? "");
  return uids !== null && uids.slice(1).every((uid) => uid === "0");
}

/** Waits until `done` holds or the deadline passes; returns whether it held. */
async function waitUntil(done: () => boolean, deadline: number): Promise<boolean> {
  for (;;) {
    if (done()) return true;
    if (Date.now() > deadline) return false;
    await sleep(200);
  }
}

/** One sweep's outcome, for the console and the audit record. */
type SweepOutcome = { sweep: string; done: number; problems: string[]; removed?: string[] };

/** Runs the three sweeps of a plan, each on its own, each bounded in time. */
async function actCleanup(plan: CleanupPlan, engineProblem: string | undefined): Promise<SweepOutcome[]> {
  const deadline = Date.now() + CLEANUP_BOUND_MS;
  const containers: SweepOutcome = {
    sweep: "containers",
    done: 0,
    problems: engineProblem ? [engineProblem] : [],
    removed: [],
  };
  await Promise.all(plan.containers.map(async (id) => {
    if (await ensureGone(id, Math.max(1000, Math.min(SWEEP_ENGINE_TIMEOUT_MS, deadline - Date.now())))) {
      containers.done++;
      containers.removed!.push(id.slice(0, 12));
    } else containers.problems.push(`container ${id.slice(0, 12)} NOT removed`);
  }));
  const folders: SweepOutcome = { sweep: "cgroup folders", done: 0, problems: [] };
  for (const folder of plan.folders) {
    const problem = await removeCgroupFolder(folder, Math.min(deadline, Date.now() + 2000));
    if (problem === undefined) folders.done++;
    else folders.problems.push(`cannot remove ${folder}: ${problem}`);
  }
  // Slurm's own folders: only once no slurmstepd of the job runs (it may still be tearing a step down),
  // and only those Slurm could not remove itself because a container was inside.
  const slurms: SweepOutcome = { sweep: "Slurm's folders", done: 0, problems: [] };
  if (plan.slurmFolders.length > 0 && plan.jobId !== undefined) {
    const done = await waitUntil(() => !stepdRuns(plan.jobId!), Math.min(deadline, Date.now() + STEPD_EXIT_WAIT_MS));
    if (!done) slurms.problems.push(`a slurmstepd of job ${plan.jobId} still runs: Slurm's folders left`);
    for (const folder of done ? plan.slurmFolders : []) {
      const problem = await removeCgroupFolder(folder, Math.min(deadline, Date.now() + 2000));
      if (problem === undefined) slurms.done++;
      else slurms.problems.push(`cannot remove ${folder}: ${problem}`);
    }
  }
  const staging: SweepOutcome = { sweep: "staging", done: 0, problems: [] };
  for (const name of plan.staging) {
    unstage(name);
    if (exists(`${STAGING_DIR}/${name}`)) staging.problems.push(`cannot remove ${STAGING_DIR}/${name}`);
    else staging.done++;
  }
  return [containers, folders, slurms, staging];
}

/** Prints one line per sweep and records the cleanup; exit 0 only when every sweep succeeded. */
async function reportCleanup(what: Record<string, unknown>, sweeps: SweepOutcome[], verbose: boolean): Promise<number> {
  const problems = sweeps.flatMap((sweep) => sweep.problems);
  const label = typeof what.job === "string" ? `job ${what.job}` : "orphans";
  for (const sweep of sweeps) {
    if (verbose || sweep.problems.length > 0 || sweep.sweep === "containers") {
      console.log(escapeUnsafe(
        `socker: ${label}: ${sweep.sweep}: ${sweep.done} removed${
          sweep.problems.length ? `, ${sweep.problems.length} problem(s): ${sweep.problems.join("; ")}` : ""
        }`,
        "text",
      ));
    }
  }
  const settings = await attempt(() => settingsFrom(readConfigFile(SETTINGS_PATH)));
  await writeAuditAfter({
    event: "cleanup",
    host: hostName(),
    ...what,
    outcome: problems.length === 0 ? "ok" : `${problems.length} problem(s): ${problems.join("; ")}`,
    containers: sweeps[0].removed,
  }, settings instanceof Refusal ? DEFAULT_SETTINGS.logFacility : settings.logFacility);
  return problems.length === 0 ? 0 : 1;
}

/** socker's containers and staging folders on this node, with their supervisors' /proc/<pid>/stat. */
export type OrphanFacts = {
  /** `liveTasks`: for a step container (SHARE_LABEL), how many of its registered tasks still run. */
  containers: { container: ListedContainer; supervisorStat?: string; liveTasks?: number }[] | Refusal;
  staging: { name: string; supervisorStat?: string }[];
};

/**
 * The orphans on this node: socker's containers whose supervising socker is gone (a reused pid has
 * another start time), and staging folders whose supervisor is gone. Containers without a supervisor
 * label are never judged here (the Epilog and the administrator handle them).
 */
export function planOrphans(facts: OrphanFacts): CleanupPlan {
  const containers = facts.containers instanceof Refusal
    ? []
    : facts.containers.filter((item) =>
      item.container.Labels?.[SHARE_LABEL] !== undefined
        ? item.liveTasks === 0 // a step container: an orphan once none of its tasks runs
        : item.container.Labels?.[LABEL.supervisor] !== undefined &&
          !supervisorAlive(item.container.Labels?.[LABEL.supervisor], item.supervisorStat)
    );
  const staging = facts.staging.filter((item) => {
    const supervisor = parseStagingName(item.name).supervisor;
    return supervisor !== undefined && !supervisorAlive(supervisor, item.supervisorStat);
  });
  return {
    containers: containers.map((item) => item.container.Id),
    folders: [],
    slurmFolders: [],
    staging: staging.map((item) => item.name),
  };
}

async function readOrphanFacts(): Promise<OrphanFacts> {
  const stat = (supervisor: string | undefined) => {
    const pid = boundedInt(/^(\d+):/.exec(supervisor ?? "")?.[1], 1, PID_MAX);
    return pid === undefined ? undefined : procStat(pid);
  };
  const listed = await attemptSweep(() =>
    engineList([`${LABEL.managed}=true`, `${LABEL.node}=${hostName()}`], SWEEP_ENGINE_TIMEOUT_MS)
  );
  return {
    containers: listed instanceof Refusal ? listed : listed.map((container) => ({
      container,
      supervisorStat: stat(container.Labels?.[LABEL.supervisor]),
      liveTasks: container.Labels?.[SHARE_LABEL] === undefined
        ? undefined
        : liveTasks(registryEntries((container.Names?.[0] ?? "").replace(/^\//, ""))).length,
    })),
    staging: listNames(STAGING_DIR).filter((name) => !name.endsWith(".lock")).map((name) => ({
      name,
      supervisorStat: stat(parseStagingName(name).supervisor),
    })),
  };
}

/**
 * `socker cleanup --job ID` (Slurm's Epilog) and `socker cleanup --orphans` (the reaper): for root only,
 * a user could otherwise end another user's job.
 */
async function cleanupCommand(scope: { job: string } | { orphans: true }, verbose: boolean): Promise<number> {
  if (!isRootItself(readSudoIdentity(), Deno.uid() ?? -1)) {
    refuse("policy", "'cleanup' is for root and Slurm's Epilog only");
  }
  if ("job" in scope) {
    const facts = await readJobCleanupFacts(scope.job);
    const sweeps = await actCleanup(
      planJobCleanup(facts),
      facts.labelled instanceof Refusal ? facts.labelled.reason : undefined,
    );
    sweepShareRegistry();
    return await reportCleanup({ job: scope.job }, sweeps, verbose);
  }
  const facts = await readOrphanFacts();
  const sweeps = await actCleanup(
    planOrphans(facts),
    facts.containers instanceof Refusal ? facts.containers.reason : undefined,
  );
  sweepShareRegistry();
  return await reportCleanup({ scope: "orphans" }, sweeps, verbose);
}

// ---- watch: the node's watcher, which ends a container the moment its supervisor dies
//
// Slurm ends a step with SIGKILL (scancel JOB.STEP, --kill-on-bad-exit, the step's KillWait), and the OOM
// killer or root's kill -9 end a supervisor the same way: socker cannot clean up after itself then, and its
// container sits in a child cgroup of the step that Slurm neither signals nor waits for. One root process
// per node (`socker watch`, kept alive like the reaper) tracks socker's containers from the engine's list
// and its event stream, looks at their supervisors (pid and start time, /proc/PID/stat) four times a
// second, and removes a container whose supervisor is gone, with what the step left of its cgroups. Why
// one watcher per node rather than one per run: a per-run watcher would have to live outside the step's
// cgroups (else Slurm kills it with the step), which only a root daemon can arrange anyway; one process
// costs the same for 1 or 1000 runs. It is bounded (WATCH_MAX_TRACKED containers, a full resync every
// WATCH_RESYNC_MS, no lock ever), never touches a container whose supervisor lives, and fails safe: when
// it is gone, runs still work, the Epilog and the reaper still clean up, and `socker doctor` says so.

/** What the watcher tracks of one container: from its labels only. */
export type WatchedContainer = {
  id: string;
  name?: string;
  supervisor?: string;
  job?: string;
  step?: string;
  /** A step container (SHARE_LABEL): it has no supervisor, but registered tasks (see SHARE_DIR). */
  shared?: boolean;
};

/** How many containers the watcher tracks at most (a node runs a few dozen); the reaper covers the rest. */
export const WATCH_MAX_TRACKED = 1024;
/** How often the watcher looks at the supervisors, and how often it lists every container again. */
export const WATCH_TICK_MS = 250;
export const WATCH_RESYNC_MS = 30_000;
/** Where the watcher says it runs (its pid and start time), for doctor. */
export const WATCH_PID_FILE = `${LOCK_DIR}/watch.pid`;

/** The containers the watcher tracks, from the engine's list of socker's containers on this node. */
export function watchedContainers(listed: readonly ListedContainer[], max = WATCH_MAX_TRACKED): WatchedContainer[] {
  return listed.slice(0, max).map((container) => ({
    id: container.Id,
    name: container.Names?.[0]?.replace(/^\//, ""),
    supervisor: container.Labels?.[LABEL.supervisor],
    job: container.Labels?.[LABEL.job],
    step: container.Labels?.[LABEL.step],
    ...(container.Labels?.[SHARE_LABEL] !== undefined ? { shared: true } : {}),
  }));
}

/**
 * The containers to remove now: those whose recorded supervisor is gone (`stats` maps each supervisor
 * label to its /proc/PID/stat, undefined when no such process exists; a reused pid has another start
 * time). A step container is removed once none of its registered tasks lives (`tasks` maps its name to
 * their count; a name without a count is left alone). A container without a supervisor label, or whose
 * supervisor lives, is never touched.
 */
export function planWatchOrphans(
  containers: readonly WatchedContainer[],
  stats: ReadonlyMap<string, string | undefined>,
  tasks: ReadonlyMap<string, number> = new Map(),
): WatchedContainer[] {
  // A killed supervisor stays in /proc as a zombie until its parent reaps it (under load, seconds): dead.
  const living = (stat: string | undefined) =>
    stat !== undefined && !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  return containers.filter((container) =>
    container.shared
      ? container.name !== undefined && tasks.get(container.name) === 0
      : container.supervisor !== undefined && stats.has(container.supervisor) &&
        !(supervisorAlive(container.supervisor, stats.get(container.supervisor)) &&
          living(stats.get(container.supervisor)))
  );
}

/** The cgroup folders of one step of a job, deepest first, from the job's folders (see jobLeftovers). */
export function stepFolders(folders: readonly string[], step: string): string[] {
  if (!/^(\d+|batch|extern|interactive)$/.test(step)) return [];
  return folders.filter((folder) => folder.split("/").includes(`step_${step}`))
    .sort((a, b) => b.split("/").length - a.split("/").length);
}

/** Whether a slurmstepd of this step still runs on this node (its process title is `slurmstepd: [J.S]`). */

/**
 * Removes one orphan as the reaper would (kill and remove, its staging folder), then, once Slurm is done
 * with the step, the step's cgroup folders that the container kept Slurm from removing; recorded as a
 * cleanup of scope "watch".
 */
async function removeWatchedOrphan(orphan: WatchedContainer): Promise<void> {
  if (orphan.shared && orphan.name !== undefined) {
    // Every process in it (with pid = host, the container's end does not end its tasks' execs).
    const parent = (await engineContainer(orphan.id).catch(() => undefined))?.HostConfig?.CgroupParent;
    await removeSharedContainer(orphan.id, orphan.name, parent);
    sweepShareLocks();
  }
  const staging = listNames(STAGING_DIR).filter((name) => parseStagingName(name).container === orphan.name);
  const sweeps = await actCleanup(
    { containers: [orphan.id], folders: [], slurmFolders: [], staging },
    undefined,
  );
  if (orphan.job !== undefined && orphan.step !== undefined && boundedInt(orphan.job, 1, ID_MAX) !== undefined) {
    const job = orphan.job, step = orphan.step;
    const folders: SweepOutcome = { sweep: "step cgroup folders", done: 0, problems: [] };
    if (await waitUntil(() => !stepdRuns(job, step), Date.now() + STEPD_EXIT_WAIT_MS)) {
      const mounts = cgroupMounts(readText(MOUNTINFO_PATH) ?? "");
      const v2Node = mounts.every((mount) => mount.version === 2);
      for (const mount of mounts) {
        const left = jobLeftovers(mount, job, listDirs, v2Node);
        for (const folder of stepFolders([...left.containers, ...left.jobFolders, ...left.slurmFolders], step)) {
          const problem = await removeCgroupFolder(folder, Date.now() + 2000);
          if (problem === undefined) folders.done++;
          else folders.problems.push(`cannot remove ${folder}: ${problem}`);
        }
      }
    }
    sweeps.push(folders);
  }
  await reportCleanup(
    { scope: "watch", ...(orphan.job === undefined ? {} : { job: orphan.job, step: orphan.step }) },
    sweeps,
    false,
  );
}

/**
 * Follows the engine's event stream of socker's containers (created, destroyed) and calls `changed` on
 * each: the watcher lists again at its next tick. Reconnects after a second when the stream ends.
 */
async function followContainerEvents(changed: () => void): Promise<never> {
  const filters = encodeURIComponent(
    JSON.stringify({ type: ["container"], event: ["create", "destroy"], label: [`${LABEL.managed}=true`] }),
  );
  for (;;) {
    try {
      const stream = await engineOpen("GET", `/events?filters=${filters}`, { timeoutMs: 0 });
      try {
        changed(); // anything may have happened while the stream was down
        while (await stream.read() !== null) changed();
      } finally {
        stream.close();
      }
    } catch { /* any error: the engine restarts, or the stream broke; the watcher must go on: try again */ }
    await sleep(1000);
  }
}

/** `socker watch`: the node's watcher (root only; started by the service install.sh sets up). */
async function watchCommand(): Promise<number> {
  if (!isRootItself(readSudoIdentity(), Deno.uid() ?? -1)) refuse("policy", "'watch' is for root only");
  Deno.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(WATCH_PID_FILE, `${ownSupervisorId()}\n`, { mode: 0o644 });
  let tracked: WatchedContainer[] = [];
  let resyncDue = true;
  let lastResync = 0;
  const removing = new Set<string>();
  void followContainerEvents(() => resyncDue = true);
  for (;; await sleep(WATCH_TICK_MS)) {
    try {
      if (resyncDue || performance.now() - lastResync > WATCH_RESYNC_MS) {
        resyncDue = false;
        lastResync = performance.now();
        const listed = await attempt(() =>
          engineList([`${LABEL.managed}=true`, `${LABEL.node}=${hostName()}`], SWEEP_ENGINE_TIMEOUT_MS)
        );
        if (!(listed instanceof Refusal)) tracked = watchedContainers(listed);
      }
      // Fail safe: where this process cannot see its own /proc entry (no /proc mounted, another pid
      // namespace), every supervisor would look dead; nothing is judged then.
      if (procStat(Deno.pid) === undefined) continue;
      const stats = new Map<string, string | undefined>();
      for (const container of tracked) {
        const pid = boundedInt(/^(\d+):/.exec(container.supervisor ?? "")?.[1], 1, PID_MAX);
        if (container.supervisor !== undefined && pid !== undefined) stats.set(container.supervisor, procStat(pid));
      }
      const tasks = new Map<string, number>();
      for (const container of tracked) {
        if (container.shared && container.name !== undefined) {
          tasks.set(container.name, liveTasks(registryEntries(container.name)).length);
        }
      }
      for (const orphan of planWatchOrphans(tracked, stats, tasks)) {
        if (removing.has(orphan.id)) continue;
        removing.add(orphan.id);
        void removeWatchedOrphan(orphan).catch(() => {}).finally(() => {
          removing.delete(orphan.id);
          resyncDue = true;
        });
      }
    } catch (error) {
      // One bad tick (the engine restarting, /proc racing) must not end the watcher: the next one looks again.
      console.error(`socker: watch: ${errorText(error)}`);
    }
  }
}

// ---- doctor: the administrator's check of a node, one line per check

/** One check's verdict: ok, or what is wrong and how to fix it. */
export type Verdict = { name: string; ok: boolean; detail: string };

/**
 * One row of doctor's table: what it checks, which rows it needs to have passed (else it says "skipped:
 * needs X" instead of failing a second time), how it reads its fact (`probe`: I/O only; a failure becomes
 * the fact), and how it judges it (`judge`: pure, one or more verdicts).
 */
export type DoctorRow = {
  name: string;
  needs: string[];
  probe: (facts: ReadonlyMap<string, unknown>) => unknown;
  judge: (fact: unknown, facts: ReadonlyMap<string, unknown>) => Verdict | Verdict[];
};

/** A verdict from a rule that throws its refusal (the pure rules above do). */
function judged(name: string, rule: () => string): Verdict {
  try {
    return { name, ok: true, detail: rule() };
  } catch (error) {
    return { name, ok: false, detail: error instanceof Refusal ? error.reason : errorText(error) };
  }
}

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

const INSTALLED_FILES = [
  `${PREFIX}/bin/socker`,
  ENTRY_POINT,
  `${PREFIX}/lib/socker/socker.ts`,
  `${PREFIX}/lib/socker/deno`,
];

/** The ownership of an installed file and of every folder above it, along its written and real paths. */
function installedFileFact(path: string) {
  const realPath = Deno.realPathSync(path);
  return {
    real: pathChain(realPath).map((item, index) => ownership(item, index === 0 ? path : item)),
    written: pathChain(path).map((item) => ownership(item)),
    mode: Deno.statSync(path).mode ?? 0,
  };
}

/** doctor's table, in the order its lines print. */
export const DOCTOR_ROWS: readonly DoctorRow[] = [
  ...INSTALLED_FILES.map((path): DoctorRow => ({
    name: `installed ${path}`,
    needs: [],
    probe: () => installedFileFact(path),
    judge: (value) =>
      judged(`installed ${path}`, () => {
        const { real, written, mode } = certain<ReturnType<typeof installedFileFact>>(value);
        const reason = untrustedReason(real) ?? untrustedReason([real[0], ...written.slice(1)]);
        if (reason !== undefined) refuse("installation", `${reason}: rerun install.sh`);
        if ((mode & 0o6000) !== 0) {
          refuse("installation", `${path} is set-id; remove the bit (chmod ug-s): never run a Deno program set-id`);
        }
        return "root-owned, not writable by others, not set-id";
      }),
  })),
  {
    name: "allowlist",
    needs: [],
    probe: () => readConfigFile(ALLOWLIST_PATH),
    judge: (value) =>
      judged(`allowlist ${ALLOWLIST_PATH}`, () => {
        const entries = allowlistFrom(certain<ConfigFile>(value));
        return `${entries.length} image(s)`;
      }),
  },
  {
    name: "settings",
    needs: [],
    probe: () => readConfigFile(SETTINGS_PATH),
    judge: (value) =>
      judged(`settings ${SETTINGS_PATH}`, () => {
        const file = certain<ConfigFile>(value);
        const settings = settingsFrom(file);
        return "missing" in file
          ? "absent (defaults apply)"
          : `valid (network ${settings.network}, pull ${settings.pull})`;
      }),
  },
  {
    name: "/dev/shm and --tmpfs",
    needs: ["settings"],
    probe: () => readConfigFile(SETTINGS_PATH),
    judge: (value) =>
      judged("/dev/shm and --tmpfs", () => {
        const settings = settingsFrom(certain<ConfigFile>(value));
        const mib = (bytes: number) => `${Math.round(bytes / (1 << 20))} MiB`;
        const shm = settings.ipc === "host"
          ? "/dev/shm is the node's own (ipc = host)"
          : "percent" in settings.shmSize
          ? `/dev/shm ${settings.shmSize.percent}% of the job's memory limit (at least ${mib(SHM_MIN_BYTES)}; ` +
            `${mib(SHM_MIN_BYTES)} without one)`
          : `/dev/shm ${mib(settings.shmSize.bytes)} (at most the job's memory limit)`;
        return `${shm}; --tmpfs ${mib(TMPFS_DEFAULT_BYTES)} unless size= says (at most the job's memory ` +
          "limit); both charged to the job's memory";
      }),
  },
  {
    name: "sudoers rule",
    needs: [],
    probe: async () => {
      const info = Deno.statSync("/etc/sudoers.d/socker");
      return {
        info,
        text: Deno.readTextFileSync("/etc/sudoers.d/socker"),
        visudo: await runTool("/usr/sbin/visudo", ["-cf", "/etc/sudoers.d/socker"]),
      };
    },
    judge: (value) =>
      judged("sudoers rule /etc/sudoers.d/socker", () => {
        const { info, text, visudo } = certain<
          { info: Deno.FileInfo; text: string; visudo: { ok: boolean; stderr: string } }
        >(value);
        if (info.uid !== 0 || ((info.mode ?? 0) & 0o777) !== 0o440) {
          refuse("installation", "must be root-owned, mode 0440: rerun install.sh");
        }
        if (!text.includes(ENTRY_POINT)) {
          refuse("installation", `does not name ${ENTRY_POINT}: rerun install.sh`);
        }
        if (!/env_reset/.test(text)) refuse("installation", "does not reset the environment: rerun install.sh");
        if (!visudo.ok) refuse("installation", `visudo rejects it: ${printable(visudo.stderr.trim())}`);
        return "valid, environment reset";
      }),
  },
  {
    name: "kernel",
    needs: [],
    probe: () => {
      const result = Number(
        sys(SYSCALLS.faccessat2, AT_FDCWD, cString("/"), R_OK, AT_EACCESS),
      );
      return result === 0 || lastErrno() !== ENOSYS;
    },
    judge: (value) =>
      judged("kernel checks paths as the caller", () => {
        if (!certain<boolean>(value)) {
          refuse("installation", "the kernel lacks faccessat2: socker needs Linux 5.8 or later");
        }
        return "faccessat2 present";
      }),
  },
  {
    name: "audit log",
    needs: [],
    probe: () => writeAudit({ event: "doctor", host: hostName() }, DEFAULT_SETTINGS.logFacility).then(() => true),
    judge: (value) =>
      judged(`audit log ${AUDIT_LOG}`, () => {
        certain<boolean>(value);
        return "writable, root's alone";
      }),
  },
  {
    name: "engine socket",
    needs: [],
    probe: () => {
      const pid = engineInUse.kind === "podman" ? podmanServicePid(engineInUse.socket) : undefined;
      return {
        engine: engineInUse,
        socket: readSocketFacts(engineInUse.socket),
        service: pid === undefined ? undefined : readText(`/proc/${pid}/cmdline`),
      };
    },
    judge: (value) =>
      judged("engine socket", () => {
        const fact = certain<{ engine: EngineChoice; socket: SocketFacts; service?: string }>(value);
        const problem = engineServiceProblem(fact.engine, fact.socket, fact.service);
        if (problem !== undefined) refuse("installation", problem);
        return `${engineTitle(fact.engine.kind)} on ${fact.engine.socket} (root's${
          fact.engine.kind === "podman" ? " alone; its service runs as root with --cgroup-manager=cgroupfs" : ""
        })`;
      }),
  },
  {
    name: "the Docker engine",
    needs: [],
    probe: () => engineInfo(SWEEP_ENGINE_TIMEOUT_MS),
    judge: (value) =>
      judged(`${engineTitle(engineInUse.kind)} engine`, () => {
        const info = certain<Record<string, unknown>>(value);
        if (engineInUse.kind === "podman") {
          if (info.CgroupDriver !== "cgroupfs") {
            refuse(
              "installation",
              `the Podman service uses the ${printable(String(info.CgroupDriver))} cgroup manager: socker needs ` +
                "cgroupfs (run install.sh --engine podman)",
            );
          }
          return `Podman ${printable(String(info.ServerVersion))} (Docker API 1.41), cgroup manager cgroupfs, ` +
            `cgroup v${printable(String(info.CgroupVersion))}, default runtime ${
              printable(String(info.DefaultRuntime))
            }; step containers (share) are off on Podman`;
        }
        return `version ${printable(String(info.ServerVersion))}, cgroup driver ${
          printable(String(info.CgroupDriver))
        }, cgroup v${printable(String(info.CgroupVersion))}`;
      }),
  },
  {
    name: "storage driver",
    needs: ["the Docker engine"],
    probe: (facts) => facts.get("the Docker engine"),
    judge: (value) =>
      judged("engine storage driver", () => {
        const driver = String(certain<Record<string, unknown>>(value).Driver ?? "unknown");
        if (!OVERLAY_DRIVERS.includes(driver)) {
          refuse(
            "installation",
            `${printable(driver)}: socker checks mount points inside images only on overlay2, and refuses runs ` +
              "with more than one mount elsewhere: use the overlay2 storage driver",
          );
        }
        return `${driver} (socker can check mount points inside images)`;
      }),
  },
  {
    name: "runc",
    needs: ["the Docker engine"],
    probe: (facts) => facts.get("the Docker engine"),
    judge: (value) =>
      judged("runc free of CVE-2024-21626", () => {
        const id = String(
          (certain<Record<string, unknown>>(value).RuncCommit as { ID?: string } | undefined)?.ID ?? "",
        );
        const fixed = runcFixed(id);
        if (fixed === undefined) {
          refuse("installation", `cannot tell runc's version from '${printable(id)}': make sure it is 1.1.12 or later`);
        }
        if (!fixed) {
          refuse("installation", `runc ${printable(id)} is vulnerable: upgrade runc to 1.1.12 or later`);
        }
        return `runc ${printable(id)}`;
      }),
  },
  {
    name: "containerd",
    needs: ["the Docker engine", "settings"],
    probe: () => engineVersion(),
    judge: (value, facts) =>
      judged("containerd free of CVE-2020-15257", () => {
        const version = containerdVersion(certain<Record<string, unknown>>(value)) ?? "unknown";
        const settings = settingsFrom(certain<ConfigFile>(facts.get("settings")));
        if (containerdFixed(version) !== true && settings.network === "host") {
          refuse(
            "installation",
            `containerd ${
              printable(version)
            } with network = host: upgrade containerd to 1.4.3 or later, or set network = bridge`,
          );
        }
        return `containerd ${printable(version)}${settings.network === "host" ? " (host networking)" : ""}`;
      }),
  },
  {
    name: "images",
    needs: ["the Docker engine", "allowlist", "settings"],
    probe: async (facts) => {
      const entries = allowlistFrom(certain<ConfigFile>(facts.get("allowlist")));
      return await Promise.all(entries.map(async (entry) => ({ entry, image: await engineImage(entry.canonical) })));
    },
    judge: (value, facts) => {
      const settings = settingsFrom(certain<ConfigFile>(facts.get("settings")));
      return certain<{ entry: AllowlistEntry; image: unknown }[]>(value).map(({ entry, image }) => ({
        name: `image ${entry.text}`,
        ok: image !== undefined || settings.pull === "missing",
        detail: image !== undefined
          ? "present"
          : settings.pull === "missing"
          ? "not present yet (pulled on first use: pull = missing)"
          : "not present on this node: docker load it, run 'socker pull', or set pull = missing",
      }));
    },
  },
  {
    name: "registries",
    needs: ["the Docker engine", "allowlist", "settings"],
    probe: async (facts) => {
      if (settingsFrom(certain<ConfigFile>(facts.get("settings"))).pull !== "missing") return [];
      const entries = allowlistFrom(certain<ConfigFile>(facts.get("allowlist")));
      const auth = readRegistryAuthText();
      return await Promise.all(entries.map(async (entry) => ({
        entry,
        problem: await engineDistribution(entry.canonical, registryAuth(auth, entry.ref.domain)).catch((e) =>
          errorText(e)
        ),
      })));
    },
    judge: (value) =>
      certain<{ entry: AllowlistEntry; problem?: string }[]>(value).map(({ entry, problem }) => ({
        name: `registry of ${entry.text}`,
        ok: problem === undefined,
        detail: problem === undefined
          ? `${entry.ref.domain} answers`
          : `${entry.ref.domain} does not answer for it: ${problem}`,
      })),
  },
  {
    name: "Slurm",
    needs: [],
    probe: () => readConfigFile(SLURM_CONF_PATH),
    judge: (value) => {
      const file = certain<ConfigFile>(value);
      if ("missing" in file) return { name: "Slurm", ok: true, detail: `no ${SLURM_CONF_PATH} (not a Slurm node)` };
      return judged(`Slurm configuration ${SLURM_CONF_PATH}`, () => {
        const problems = slurmConfProblems(parseSlurmConf(trustedText(file, true)!), EPILOG_HOOK);
        if (problems.length > 0) refuse("installation", problems.join("; "));
        return "proctrack/cgroup, task/cgroup, socker's Epilog";
      });
    },
  },
  {
    name: "Slurm's cgroups",
    needs: ["the Docker engine", "Slurm"],
    probe: () => cgroupMounts(readText(MOUNTINFO_PATH) ?? ""),
    judge: (value, facts) =>
      judged("engine fits Slurm's cgroups", () => {
        const info = certain<Record<string, unknown>>(facts.get("the Docker engine"));
        const mounts = certain<CgroupMount[]>(value);
        const version = mounts.some((mount) => mount.version === 1) ? 1 : 2;
        const problem = engineCgroupProblem(info, { version, jobId: "1", stepId: "0", parent: "/" });
        if (problem !== undefined) refuse("installation", problem);
        return `cgroupfs driver, cgroup v${version}`;
      }),
  },
  {
    name: "device rules",
    needs: ["the Docker engine", "Slurm's cgroups"],
    probe: () => ({ cgroupConf: readConfigFile(CGROUP_CONF_PATH), installed: exists(DEVICE_RUNTIME_PATH) }),
    judge: (value, facts) =>
      judged("device rules in jobs", () => {
        const { cgroupConf, installed } = certain<{ cgroupConf: ConfigFile; installed: boolean }>(value);
        const v1 = certain<CgroupMount[]>(facts.get("Slurm's cgroups")).some((mount) =>
          mount.controllers.includes("devices")
        );
        if (!v1) return "n/a: no cgroup v1 devices controller on this node";
        const constrained = constrainsDevices(trustedText(cgroupConf, false));
        if (!constrained) return `n/a: ConstrainDevices is not yes in ${CGROUP_CONF_PATH}`;
        const job: JobStep = { version: 1, jobId: "1", stepId: "0", parent: "/" };
        const runtimes = certain<Record<string, unknown>>(facts.get("the Docker engine")).Runtimes;
        containerRuntime(job, true, runtimes, installed);
        return `ConstrainDevices=yes on cgroup v1: containers in jobs use the runtime ${DEVICE_RUNTIME} (${DEVICE_RUNTIME_PATH})`;
      }),
  },
  {
    name: "step containers",
    needs: ["settings"],
    probe: () => ({ file: readConfigFile(SETTINGS_PATH), holder: pathInfo(`${HOLDER_DIR}/busybox`) }),
    judge: (value) =>
      judged("step containers", () => {
        const { file, holder } = certain<{ file: ConfigFile; holder: FileFacts | number }>(value);
        if (settingsFrom(file).share === "none") return "off (share = none): every task gets its own container";
        if (stepSharing(settingsFrom(file)) === "none") {
          return "off on Podman (its exec API is not checked against socker's guarantees): every task gets its own container";
        }
        if (typeof holder === "number" || holder.kind !== "file" || holder.uid !== 0 || (holder.mode & 0o022) !== 0) {
          refuse("installation", `share = step needs the holder ${HOLDER_DIR}/busybox (root's): rerun install.sh`);
        }
        return "share = step: the tasks of a step on a node share one container";
      }),
  },
  {
    name: "reaper",
    needs: [],
    probe: () => ({
      systemd: exists("/run/systemd/system"),
      timer: exists("/etc/systemd/system/socker-reaper.timer"),
      cron: exists("/usr/sbin/cron") || exists("/usr/sbin/crond"),
      cronEntry: exists("/etc/cron.d/socker-reaper"),
    }),
    judge: (value) =>
      judged("orphan reaper", () => {
        const { systemd, timer, cron, cronEntry } = certain<Record<string, boolean>>(value);
        if (timer || cronEntry) {
          return timer ? "systemd timer socker-reaper.timer" : "cron entry /etc/cron.d/socker-reaper";
        }
        if (systemd || cron) refuse("installation", "no reaper timer or cron entry: rerun install.sh");
        return "no systemd or cron on this node: run 'socker cleanup --orphans' from your own scheduler";
      }),
  },
  {
    name: "watcher",
    needs: [],
    probe: () => {
      const recorded = readText(WATCH_PID_FILE)?.trim();
      const pid = boundedInt(/^(\d+):/.exec(recorded ?? "")?.[1], 1, PID_MAX);
      return { recorded, stat: pid === undefined ? undefined : procStat(pid) };
    },
    judge: (value) => judged("watcher", () => watcherVerdict(certain<{ recorded?: string; stat?: string }>(value))),
  },
];

/**
 * Doctor's view of the watcher (`socker watch`): running, or what is lost without it (runs still work; the
 * Epilog and the reaper remain the backstop).
 */
export function watcherVerdict(fact: { recorded?: string; stat?: string }): string {
  if (supervisorAlive(fact.recorded, fact.stat)) {
    return `socker watch runs (pid ${fact.recorded!.split(":")[0]}): a killed step's container goes within a second`;
  }
  return refuse(
    "installation",
    "socker watch does not run: a container whose socker was killed (scancel JOB.STEP, kill -9) stays until " +
      "the job's Epilog or the reaper; rerun install.sh (service socker-watch)",
  );
}

/**
 * Judges doctor's facts row by row: a row whose needed row failed is skipped and says so; every other
 * row gives its verdicts. Returns the lines and the exit code (0 only when nothing needs a fix).
 */
export function doctorReport(
  rows: readonly DoctorRow[],
  facts: ReadonlyMap<string, unknown>,
): { lines: string[]; exitCode: number } {
  const failed = new Set<string>();
  const lines: string[] = [];
  let fixes = 0;
  let passed = 0;
  for (const row of rows) {
    const missing = row.needs.filter((need) => failed.has(need));
    if (missing.length > 0) {
      failed.add(row.name);
      lines.push(`skip ${row.name}: skipped: needs ${missing.join(" and ")}`);
      continue;
    }
    let verdicts: Verdict[];
    try {
      verdicts = [row.judge(facts.get(row.name), facts)].flat();
    } catch (error) {
      verdicts = [{ name: row.name, ok: false, detail: error instanceof Refusal ? error.reason : errorText(error) }];
    }
    if (verdicts.some((verdict) => !verdict.ok)) failed.add(row.name);
    for (const verdict of verdicts) {
      if (verdict.ok) passed++;
      else fixes++;
      const line = `${verdict.ok ? "ok  " : "FIX "} ${verdict.name}${verdict.detail ? `: ${verdict.detail}` : ""}`;
      lines.push(escapeUnsafe(line, "text")); // a detail may quote the engine, a file or a user's text
    }
  }
  lines.push(fixes === 0 ? `all ${passed} checks passed` : `${fixes} of ${fixes + passed} checks need a fix`);
  return { lines, exitCode: fixes === 0 ? 0 : 1 };
}

/** Reads every row's fact, in table order (a row's probe may use the facts of the rows it needs). */
async function readDoctorFacts(rows: readonly DoctorRow[]): Promise<Map<string, unknown>> {
  const facts = new Map<string, unknown>();
  const failedProbe = new Set<string>();
  for (const row of rows) {
    if (row.needs.some((need) => failedProbe.has(need))) {
      failedProbe.add(row.name);
      continue;
    }
    const value = await attempt(() => row.probe(facts));
    if (value instanceof Refusal) failedProbe.add(row.name);
    facts.set(row.name, value);
  }
  return facts;
}

/** `socker doctor`: checks the installation, the engine and Slurm's configuration, one line each. Root only. */
async function doctorCommand(): Promise<number> {
  if (!isRootItself(readSudoIdentity(), Deno.uid() ?? -1)) refuse("policy", "'doctor' is for root");
  const report = doctorReport(DOCTOR_ROWS, await readDoctorFacts(DOCTOR_ROWS));
  for (const line of report.lines) console.log(line);
  return report.exitCode;
}

// ---------------------------------------------------------------------------------------------------------
// Help

export const HELP = `NAME
    socker - run an allowlisted Docker image as yourself, inside your Slurm job

SYNOPSIS
    socker [--version] [-h|--help] [-v|--verbose] COMMAND
    socker images
    socker [-v] run [RUN OPTIONS] IMAGE [COMMAND [ARG...]]
    socker ps
    socker stop NAME|ID
    socker pull IMAGE|--all                (root only)
    socker cleanup --job ID | --orphans    (root, Slurm's Epilog and the reaper only)
    socker doctor                          (root only)

DESCRIPTION
    socker runs a container from an image the administrator allowed, as your own user and groups, never
    as root, with no capabilities, your own resource limits and no way to add container options. Inside
    a Slurm job the container is placed in the job step's cgroup, so the job's CPU, memory and device
    limits hold, it gets the step's Slurm, PMI and PMIx variables (MPI works across nodes), and it is
    killed when the job ends or is cancelled. stdin, stdout, stderr and the exit code pass through.

OPTIONS
    -h, --help      Print this help and exit.
    --version       Print socker's version and exit.
    -v, --verbose   Also print the container's specification socker sends the engine, on stderr.

RUN OPTIONS
    -v, --volume SRC:DST[:ro]
                    Bind SRC (a folder or file you can read, under a folder your administrator lets
                    users mount; ./SRC and ../SRC are from your current folder) at DST. Read-only with :ro, or when you cannot write SRC. DST may not
                    cover /, /etc, /usr, /proc, /sys, /dev, /var and the like.
    -w, --workdir DIR
                    Working directory in the container (never under /proc, /sys or /dev); created as
                    you when it is in a mounted folder, else it must exist in the image. Default:
                    your current folder when it is mounted, else the image's.
    -e, --env NAME[=VALUE]
                    Set NAME in the container; a bare NAME takes your own value. HOME, USER and
                    LOGNAME are always yours and cannot be set. Your environment passes by default
                    (not PATH, LD_*, SHELL, ...); the image's ENV wins over it, -e over both.
    --entrypoint PROG
                    Run PROG instead of the image's entrypoint (and drop its CMD); "" for none.
    --tmpfs DST[:size=N]
                    A private scratch folder at DST (default 64m), charged to the job's memory.
    --no-tty        Never attach a terminal, even from a terminal.
    --no-stdin      Do not pass stdin on.
    --gpus          Give the container the GPUs Slurm allocated to your job on this node (and no
                    other).
    --verbose       As -v before 'run'.

COMMANDS
    images          List the allowed images: present or missing on this node, and their digests.
    run IMAGE [COMMAND [ARG...]]
                    Run COMMAND (default: the image's CMD) in a new container of IMAGE. Everything after IMAGE is the container's
                    command, passed on untouched. A terminal is attached when stdin and stdout are both
                    terminals. The container is removed when it ends.
    ps              List your own containers on this node: name, image, command, age, job.
    stop NAME|ID    Stop one of your own containers as a SIGTERM to its socker would; that socker
                    then exits 143.
    pull IMAGE|--all
                    Pull allowlisted images onto this node (for administrators and boot scripts).
    cleanup --job ID | --orphans
                    Remove every container of Slurm job ID (the Epilog), or every container whose
                    socker died (the reaper), with their cgroup folders and staged mounts.
    doctor          Check the installation, the engine and Slurm's configuration: one line per check,
                    ok, FIX with how to fix it, or skip. Exit 0 only when nothing needs a fix.

EXAMPLES
    socker images
    socker run centos cat /etc/system-release
    socker run ubuntu:22.04 sh -c 'echo $HOME; exit 3'
    socker run -v /scratch/$USER/in:/in:ro -e OMP_NUM_THREADS=4 myimage ./solve /in
    srun socker run myimage ./simulate --steps 100      (in a batch script: srun or exec, see README)
    srun --mpi=pmix -N2 -n8 socker run mpi-image ./app  (MPI across nodes, see README)

FILES
    ${ALLOWLIST_PATH}
                    The allowed images, one reference per line; root-owned, not group/other-writable.
    ${SETTINGS_PATH}
                    Optional settings (mounts, namespaces, environment, pull, require_job); same checks.
    ${AUDIT_LOG}
                    The audit log: one JSON line per run, refusal, pull, stop and cleanup (root only).

EXIT STATUS
    0-124, 126-255  The container's own exit code; 128+N when it or socker was stopped by signal N;
                    126/127 when the container's command could not be run.
    125             socker refused (bad usage, image not allowed, a path or option against policy,
                    resource limits too low for socker, unsafe installation, engine down, audit log
                    unwritable), or the engine could not start the container. Nothing was started.
`;

// ---------------------------------------------------------------------------------------------------------
// Main

/**
 * Records a refusal (or a bug: its rule says "internal error" and holds the stack), with who asked and
 * what (the command line, bounded). Nothing is recorded when the refusal is that the log cannot be
 * written, or when this process is not root (it cannot write the log).
 */
async function reportRefusal(
  args: readonly string[],
  invocation: Invocation | undefined,
  refusal: Refusal | { kind: "internal"; reason: string },
): Promise<void> {
  if (refusal.kind === "audit" || Deno.uid() !== 0) return;
  const settings = await attempt(() => settingsFrom(readConfigFile(SETTINGS_PATH)));
  await writeAuditAfter({
    event: "refused",
    host: hostName(),
    user: Deno.env.get("SUDO_USER") ?? "root",
    uid: boundedInt(Deno.env.get("SUDO_UID"), 0, ID_MAX) ?? 0,
    pid: Deno.pid,
    rule: refusal.reason,
    image: invocation?.command === "run" ? invocation.image : undefined,
    command: invocation?.command === "run" ? invocation.argv : args,
  }, settings instanceof Refusal ? DEFAULT_SETTINGS.logFacility : settings.logFacility);
}

/**
 * The engine socker.conf names, with its socket judged (engineSocketProblem). A socker.conf that cannot be
 * read leaves Docker on its socket: each command's own read of the settings then refuses or says so.
 */
function readEngineChoice(): EngineChoice {
  let settings: Settings;
  try {
    settings = settingsFrom(readConfigFile(SETTINGS_PATH));
  } catch (error) {
    if (!(error instanceof Refusal)) throw error;
    return engineChoice(DEFAULT_SETTINGS);
  }
  const choice = engineChoice(settings);
  return { ...choice, problem: engineSocketProblem(choice.kind, readSocketFacts(choice.socket)) };
}

/** The socket's and its folders' owners and modes, along its real path (symlinks such as /var/run resolved). */
function readSocketFacts(path: string): SocketFacts {
  const real = rootRealPath(path);
  if (typeof real === "number") return { path, socket: errnoText(real), folders: [] };
  const info = pathInfo(real);
  if (typeof info === "number") return { path, socket: errnoText(info), folders: [] };
  try {
    return {
      path,
      socket: { uid: info.uid, mode: info.mode },
      folders: pathChain(real).slice(1).map((f) => ownership(f)),
    };
  } catch (error) {
    if (isBug(error)) throw error;
    return {
      path,
      socket: { uid: info.uid, mode: info.mode },
      folders: [{ path: real, uid: -1, mode: 0, kind: "other" }],
    };
  }
}

/** Refuses unless this process is root (started through sudo by the launcher, or by root itself). */
function requireRootProcess(): void {
  if (Deno.uid() !== 0) refuse("installation", "this program must be started through sudo by the 'socker' launcher");
}

/** Runs socker with these arguments and returns its exit code; refusals are printed and recorded, never thrown. */
export async function main(args: readonly string[], exact?: readonly (string | NotText)[]): Promise<number> {
  let invocation: Invocation | undefined;
  try {
    const notText = exact === undefined ? undefined : notTextProblem(exact);
    if (notText !== undefined) refuse("usage", notText);
    invocation = parseCommandLine(args);
    if (invocation.command === "help") {
      console.log(HELP);
      return 0;
    }
    if (invocation.command === "version") {
      console.log(`socker ${SOCKER_VERSION}`);
      return 0;
    }
    const callerLimits = takeOwnLimits();
    if (Deno.uid() === 0) engineInUse = readEngineChoice();
    if (invocation.command === "run") return await runCommand(invocation, callerLimits);
    requireRootProcess();
    switch (invocation.command) {
      case "images":
        return await imagesCommand();
      case "ps":
        return await psCommand();
      case "stop":
        return await stopCommand(invocation.target);
      case "pull":
        return await pullCommand(invocation.image);
      case "cleanup":
        return await cleanupCommand(invocation.scope, invocation.verbose);
      case "doctor":
        return await doctorCommand();
      case "watch":
        return await watchCommand();
    }
  } catch (error) {
    if (error instanceof Refusal) {
      await reportRefusal(args, invocation, error);
      console.error(refusalLine(error));
      return EXIT.REFUSED;
    }
    // A bug: one line for the caller, its stack for the administrator; never blamed on the installation.
    try {
      await reportRefusal(args, invocation, { kind: "internal", reason: internalErrorRule(error) });
    } catch { /* any error is fine here: recording a bug must never hide it; the line below still says it */ }
    console.error(internalErrorLine(error));
    return EXIT.REFUSED;
  }
}

/** The arguments as bytes from /proc/self/cmdline: Deno.args has decoded them (U+FFFD for stray bytes). */
function readExactArguments(): (string | NotText)[] {
  const exact = exactArguments(readAtMost("/proc/self/cmdline", 8 << 20), Deno.args.length);
  // At most 6 MiB (the kernel caps arguments at 3/4 of 8 MiB). Each argument that is text must be Deno's
  // own: else the items read were not socker's arguments.
  const same = exact?.every((arg, index) => typeof arg !== "string" || arg === Deno.args[index]);
  if (exact === undefined || !same) {
    refuse("installation", "cannot read socker's own arguments from /proc/self/cmdline");
  }
  return exact;
}

if (import.meta.main) {
  let exact: (string | NotText)[] | Refusal;
  try {
    exact = readExactArguments();
  } catch (error) {
    if (isBug(error)) {
      console.error(internalErrorLine(error));
      Deno.exit(EXIT.REFUSED);
    }
    exact = error instanceof Refusal ? error : new Refusal("installation", errorText(error));
  }
  if (exact instanceof Refusal) {
    console.error(refusalLine(exact));
    Deno.exit(EXIT.REFUSED);
  }
  Deno.exit(await main(Deno.args, exact));
}
