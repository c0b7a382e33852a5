import type { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { LineBatch } from "./line-batch.js";
import type { ResolvedConfig } from "../config/resolve.js";
import { recordJson, type UsageRecord } from "../core/usage-record.js";

/**
 * Two streams, never mixed. The usage stream is the SPEC §6 record, one JSON line per request on
 * stdout, byte for byte what the record is (consumers and the acceptance checks parse each line as
 * a record), so it is JSON.stringify'd directly (or the text its store row just took: recordJson) rather than through pino, whose level/time fields
 * would have to be switched off and whose serialiser plus one write per record took a tenth of a refused request's CPU. Lines
 * are written in batches, one write per turn of the event loop (see LineBatch). The operational
 * stream (stderr) is ordinary pino JSON.
 */
export interface Logs {
  usage(record: UsageRecord): void;
  /** Writes the usage lines batched so far now rather than at the end of the turn. */
  flushUsage(): void;
  ops: Logger;
}

/** Field names whose values are secrets wherever they appear in an operational log object. */
const SECRET_FIELDS = ["authorization", "x-api-key", "api_key", "apiKey", "key", "admin_key", "adminKey", "secret", "token", "password"];

export function createLogs(config: ResolvedConfig, streams: { stdout?: Writable; stderr?: Writable } = {}): Logs {
  const usageLines = new LineBatch(streams.stdout ?? process.stdout);
  const scrub = secretScrubber(config);
  const ops = pino(
    {
      base: { service: "tollgate" },
      redact: { paths: SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`].map((p) => (/^[\w*.]+$/.test(p) ? p : bracket(p)))), censor: "[redacted]" },
      // Redaction by field name cannot see a secret inside a message or an error's text; this pass
      // over every finished line can, so a secret reaches stderr by no path at all.
      hooks: { streamWrite: scrub },
    },
    streams.stderr ?? process.stderr,
  );
  return {
    usage: config.server.log === "usage" ? (record) => usageLines.push(recordJson(record) + "\n") : () => {},
    flushUsage: usageLines.flush,
    ops,
  };
}

/** `*.x-api-key` is not a valid pino path; `*["x-api-key"]` is. */
function bracket(path: string): string {
  const i = path.lastIndexOf(".");
  return i < 0 ? `["${path}"]` : `${path.slice(0, i)}["${path.slice(i + 1)}"]`;
}

/**
 * Replaces every secret the config holds (provider keys, static tollgate keys, the admin key, the
 * JWT secret, the challenge signing keys), any tollgate-shaped key (`tg_…`, the store's keys included), and any bearer
 * credential, with a marker.
 */
export function secretScrubber(config: ResolvedConfig): (line: string) => string {
  const known = [
    ...Object.values(config.providers).map((p) => p.apiKey),
    ...config.keys.map((k) => k.key),
    config.adminKey,
    config.jwt?.secret,
    // What signs proof-of-work challenges (derived from routes.*.challenge.secret, which is not kept).
    ...config.routes.flatMap((r) => (r.challenge ? [r.challenge.signatureSecret, r.challenge.keySecret] : [])),
  ].filter((s): s is string => typeof s === "string" && s.length >= 6);
  // Longest first, so a secret that contains another is replaced whole.
  known.sort((a, b) => b.length - a.length);
  return (line) => {
    let out = line;
    for (const s of known) if (out.includes(s)) out = out.split(s).join("[redacted]");
    return out.replace(/\btg_[A-Za-z0-9_-]{6,}/g, "tg_[redacted]").replace(/(Bearer\s+)[^\s"',]+/gi, "$1[redacted]");
  };
}
