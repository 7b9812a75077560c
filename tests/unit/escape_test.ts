// Unit tests of the one escaping of text a user controls (issue 17.4): every family of characters that can
// move a terminal or a reader's eye (C0, DEL, C1, bidirectional overrides and isolates, line separators,
// lone surrogates) is escaped in every field where it lands: the audit line (and its system-log copy),
// refusal lines, `ps`, doctor.
import assert from "node:assert/strict";
import {
  AUDIT_LINE_MAX,
  auditLine,
  doctorReport,
  escapeUnsafe,
  planPs,
  printable,
  Refusal,
  refusalLine,
  SYSLOG_LINE_MAX,
} from "../../socker.ts";

/** One sample of each family, as a user would type it into a command, a folder name or an image name. */
export const FAMILIES: Record<string, string> = {
  "C0 (ESC, an erase-line sequence)": "\x1b[2K",
  "C0 (BEL, CR, LF, NUL)": "\x07\r\n\x00",
  "DEL": "\x7f",
  "C1 CSI (U+009B)": "\u009b2K",
  "C1 OSC (U+009D, a window title)": "\u009d0;forged\u009c",
  "C1 NEL (U+0085)": "\u0085",
  "bidi override RLO (U+202E)": "\u202eexe.txt",
  "bidi embedding LRE (U+202A)": "\u202a",
  "bidi isolate FSI (U+2068) and PDI (U+2069)": "\u2068x\u2069",
  "line separator U+2028": "\u2028",
  "paragraph separator U+2029": "\u2029",
  "lone high surrogate": "\ud800",
  "lone low surrogate": "\udc00",
};

// deno-lint-ignore no-control-regex
const RAW = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufffd]/;

/** The bytes as they land in a file: a lone surrogate would become U+FFFD, which RAW also catches. */
const landed = (text: string) => new TextDecoder().decode(new TextEncoder().encode(text));

Deno.test("each family is escaped in text: no unsafe character is left, and the escape names it", () => {
  for (const [family, sample] of Object.entries(FAMILIES)) {
    const shown = escapeUnsafe(`a${sample}b`, "text");
    assert.doesNotMatch(landed(shown), RAW, family);
    assert.ok(shown.startsWith("a") && shown.endsWith("b"), family);
  }
  assert.equal(escapeUnsafe("\x1b\x7f\u009b\u202e\u2028\ud800", "text"), "\\x1b\\x7f\\x9b\\u202e\\u2028\\ud800");
});

Deno.test("ordinary text, accents, CJK, emoji and tabs-free punctuation pass through unchanged", () => {
  for (const text of ["plain ascii ~!@#$%^&*()", "é ü ñ ß", "日本語", "😀 a pair stays a pair", "\u00a0nbsp"]) {
    assert.equal(escapeUnsafe(text, "text"), text);
    assert.equal(escapeUnsafe(text, "json"), text);
  }
});

Deno.test("json mode keeps the JSON the same string while its bytes hold no unsafe character", () => {
  for (const [family, sample] of Object.entries(FAMILIES)) {
    const line = escapeUnsafe(JSON.stringify({ v: `a${sample}b` }), "json");
    assert.doesNotMatch(landed(line), RAW, family);
    assert.equal(JSON.parse(line).v, `a${sample}b`, family);
  }
});

const FIELDS = ["command", "workdir", "mounts", "image", "rule", "outcome"] as const;

function recordWith(field: (typeof FIELDS)[number], text: string) {
  const record: { event: string; [key: string]: unknown } = {
    event: "start",
    user: "alice",
    uid: 2001,
    image: "docker.io/library/busybox:1",
    workdir: "/home/alice",
    mounts: ["/home/alice:/home/alice"],
    command: ["echo", "hi"],
  };
  record[field] = field === "command" || field === "mounts" ? [text] : text;
  return record;
}

Deno.test("each family in each audit field: the audit line and its system-log copy carry none raw", () => {
  for (const field of FIELDS) {
    for (const [family, sample] of Object.entries(FAMILIES)) {
      const text = `x${sample}y`;
      for (const max of [AUDIT_LINE_MAX, SYSLOG_LINE_MAX]) {
        const line = auditLine(recordWith(field, text), max);
        assert.doesNotMatch(landed(line), RAW, `${family} in ${field}`);
        const value = JSON.parse(line)[field];
        assert.equal(Array.isArray(value) ? value[0] : value, text, `${family} in ${field} reads back`);
      }
    }
  }
});

Deno.test("a long command full of C1 controls stays within the bound once escaped", () => {
  const command = Array.from({ length: 400 }, () => "\u009b".repeat(20));
  const line = auditLine({ event: "refused", command }, SYSLOG_LINE_MAX, "0".repeat(64));
  assert.ok(new TextEncoder().encode(line).length <= SYSLOG_LINE_MAX);
  assert.doesNotMatch(line, RAW);
  assert.equal(JSON.parse(line).command_cut, true);
});

Deno.test("each family in a refusal line, cut or not, is escaped and the cut never splits an escape", () => {
  for (const [family, sample] of Object.entries(FAMILIES)) {
    const line = refusalLine(new Refusal("usage", `-v '${sample}${"z".repeat(10)}'`));
    assert.doesNotMatch(landed(line), RAW, family);
    for (let max = 1; max < 30; max++) {
      const cut = printable(`${"a".repeat(5)}${sample}${sample}`, max);
      assert.doesNotMatch(landed(cut), RAW, `${family} cut at ${max}`);
      assert.doesNotMatch(cut, /\\(x[0-9a-f]?|u[0-9a-f]{0,3})?\.\.\.$/, `${family} cut at ${max}: ${cut}`);
    }
  }
});

Deno.test("each family in ps's image and command columns is escaped", () => {
  for (const [family, sample] of Object.entries(FAMILIES)) {
    const rows = planPs(
      {
        caller: { uid: 2001, gid: 2001, user: "alice" },
        rootCaller: false,
        now: 100,
        containers: [{
          container: {
            Id: "a".repeat(64),
            Names: ["/socker-2001-aaaaaaaaaaaa"],
            Image: `img${sample}`,
            Command: `echo ${sample}`,
            Created: 50,
            Labels: { "socker.user": "alice", "socker.uid": "2001" },
          },
        }],
      } as unknown as Parameters<typeof planPs>[0],
    );
    assert.doesNotMatch(landed(rows.flat().join(" ")), RAW, family);
  }
});

Deno.test("each family in a doctor verdict's detail is escaped by the line doctor prints", () => {
  for (const [family, sample] of Object.entries(FAMILIES)) {
    const report = doctorReport(
      [{
        name: "row",
        needs: [],
        probe: () => undefined,
        judge: () => ({ name: "row", ok: false, detail: `engine says ${sample}` }),
      }] as unknown as Parameters<typeof doctorReport>[0],
      new Map(),
    );
    assert.doesNotMatch(
      landed(report.lines.join(" ")),
      RAW,
      family,
    );
  }
});
