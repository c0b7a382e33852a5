import { isDeepStrictEqual } from "node:util";
import type { Inspection, RequestFormat, StreamTail } from "../core/format.js";

/**
 * Seeded generators of stream-event JSON for the tests that prove a format's fast path reads
 * exactly what JSON.parse reads: plain values, strings as providers encode them, and the small
 * damage (spacing, leading zeros, bad escapes, raw control characters, repeated keys, a cut end)
 * that must send an event to JSON.parse instead.
 */
export interface JsonFuzz {
  /** An integer in [0, n). */
  next(n: number): number;
  pick<T>(xs: readonly T[]): T;
  /** A JSON string literal of a text as a provider may encode it (escapes, \u sequences, raw unicode). */
  text(): string;
  /** The event's JSON, damaged now and then so that it is read another way or refused. */
  damage(json: string): string;
}

/** Texts a delta carries: escapes, control characters, unicode, surrogates (lone ones too), quotes. */
const TEXTS = ["", " tok", "Hello", 'say "hi"', "a\\b", "line\nnext", "tab\tx", "\u0000\u001f", "caf\u00e9 \u6f22", "\ud83d\ude00", "lone \ud800", "</script>", '{"json":1}', ',"delta":"x', "\\u0041"];

export function jsonFuzz(seed: number): JsonFuzz {
  // The high bits of an LCG: its low bits repeat with short periods.
  const next = (n: number) => Math.floor(((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * n);
  const pick = <T>(xs: readonly T[]): T => xs[next(xs.length)]!;
  const text = () => {
    const s = JSON.stringify(pick(TEXTS));
    if (next(4) !== 0) return s;
    // Non-ASCII as \u escapes, in either case of hex digit.
    return s.replace(/[\u0080-\uffff]/g, (c) => {
      const hex = c.charCodeAt(0).toString(16).padStart(4, "0");
      return `\\u${next(2) ? hex : hex.toUpperCase()}`;
    });
  };
  const damage = (json: string): string => {
    switch (next(24)) {
      case 0:
        return json.replace(",", ", ");
      case 1:
        return json.replace(/":"/, '":"\n');
      case 2:
        return json.slice(0, -1);
      case 3:
        return json.replace(/":(\d)/, '":0$1');
      case 4:
        return json.replace(/":"/, '":"\\q');
      case 5:
        return json.replace(/":"/, '":"\\u12');
      case 6:
        return `${json.slice(0, -1)},"extra":1}`;
      case 7:
        return `${json} `;
      case 8:
        return json.replace(/":(\d+)/, '":$1.0');
      default:
        return json;
    }
  };
  return { next, pick, text, damage };
}

/** Where reading an event the fast way first differed from JSON.parse's reading. */
export interface Mismatch {
  data: string;
  what: "reading" | "state" | "end";
  quick: unknown;
  full: unknown;
}

/**
 * Reads `streams` generated streams of `length` events through `format.readEvent` twice: as they
 * are, and with a leading space (JSON whitespace, which no fast path matches, so JSON.parse reads
 * it), comparing the readings, the format's stream state after each event and the end it would
 * write. Returns how many events `recognise` took the fast way, and the first difference.
 */
export function readBothWays(o: {
  format: RequestFormat;
  inspection: Inspection;
  event: () => string;
  recognise: (data: string) => unknown;
  streams: number;
  length: number;
}): { recognised: number; mismatch?: Mismatch } {
  let recognised = 0;
  // Its pending change is named rather than compared as a function.
  const state = (t: StreamTail) => ({ ...(t.state as object), pending: typeof (t.state as { pending?: unknown } | undefined)?.pending });
  // The end's timestamp is the clock's, not the stream's.
  const end = (t: StreamTail) => o.format.endStream("output_cap", t, "").map((e) => ({ ...e, data: e.data.replace(/"created_at":\d+/, "") }));
  const same = (a: unknown, b: unknown) => isDeepStrictEqual(a, b);
  for (let s = 0; s < o.streams; s++) {
    const quick: StreamTail = {};
    const full: StreamTail = {};
    let data = "";
    for (let e = 0; e < o.length; e++) {
      data = o.event();
      if (o.recognise(data) !== undefined) recognised++;
      const a = o.format.readEvent({ event: "x", data }, o.inspection, quick);
      const b = o.format.readEvent({ event: "x", data: ` ${data}` }, o.inspection, full);
      if (!same(a, b)) return { recognised, mismatch: { data, what: "reading", quick: a, full: b } };
      if (!same(state(quick), state(full))) return { recognised, mismatch: { data, what: "state", quick: state(quick), full: state(full) } };
    }
    if (!same(end(quick), end(full))) return { recognised, mismatch: { data, what: "end", quick: end(quick), full: end(full) } };
  }
  return { recognised };
}
