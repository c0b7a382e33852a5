import { isUtf8 } from "node:buffer";
import type { IncomingMessage } from "node:http";
import { TollgateError } from "../core/errors.js";
import type { JsonSource } from "../core/json-source.js";

/** JSON nested deeper than this is refused before JSON.parse can recurse into it. */
export const MAX_JSON_DEPTH = 64;

/**
 * Reads a request body under a hard byte cap, enforced while reading: a Content-Length over the cap
 * is refused before a byte is read, and a body that lies about its length (or is chunked) is cut
 * the moment it passes the cap. A client that sends too slowly is cut at `timeoutMs`.
 */
export function readBody(req: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    req.resume();
    return Promise.reject(tooLarge(declared, maxBytes));
  }
  const whole = bufferedBody(req, declared, maxBytes);
  if (whole !== undefined) return whole;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => fail(new TollgateError("invalid_request", `the request body did not arrive within ${Math.round(timeoutMs / 1000)}s`)), timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onError);
    };
    const fail = (err: Error) => {
      cleanup();
      // Stop reading: the rest of an oversized body is never buffered.
      req.pause();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) return fail(tooLarge(size, maxBytes, true));
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = () => fail(new TollgateError("invalid_request", "the request body was not received completely"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onError);
  });
}

/**
 * The body when node's parser has already taken all of it (a body that came with its headers, the
 * usual case): read from the stream's buffer at once, without the timer, the four listeners and the
 * flowing-mode turns of reading it as it arrives. node marks the message `complete` only a turn of
 * the event loop after it has pushed the last body byte, so a Content-Length body whose bytes are
 * all buffered is whole too: the parser never pushes more than the declared length.
 */
function bufferedBody(req: IncomingMessage, declared: number, maxBytes: number): Promise<Buffer> | undefined {
  if (req.readableFlowing !== null || req.readableDidRead) return undefined;
  const size = req.readableLength;
  if (!req.complete && size !== declared) return undefined;
  if (size > maxBytes) {
    req.resume();
    return Promise.reject(tooLarge(size, maxBytes, true));
  }
  // read() of a paused stream hands over everything buffered, as one Buffer.
  const chunk: Buffer | null = size === 0 ? null : req.read();
  return Promise.resolve(chunk ?? Buffer.alloc(0));
}

/**
 * The whole body when node's parser already holds all of it within the cap, taken at once (as
 * readBody would take it); undefined, with the stream untouched, otherwise.
 */
export function wholeBody(req: IncomingMessage, maxBytes: number): Buffer | undefined {
  const declared = Number(req.headers["content-length"]);
  if (req.readableFlowing !== null || req.readableDidRead || req.readableLength > maxBytes) return undefined;
  if (!req.complete && req.readableLength !== declared) return undefined;
  return req.readableLength === 0 ? Buffer.alloc(0) : (req.read() as Buffer);
}

function tooLarge(size: number, max: number, atLeast = false): TollgateError {
  return new TollgateError("input_too_large", `the request body is ${atLeast ? "over " : ""}${atLeast ? max : size} bytes; this gateway allows ${max} (max_body_bytes)`, {
    limit: "max_body_bytes",
  });
}

/**
 * Parses a JSON body, refusing what JSON.parse would accept but a provider could read differently:
 * bytes that are not UTF-8, excessive nesting (refused by a linear scan before JSON.parse can
 * recurse into it), duplicate keys (JSON.parse keeps the last, another parser the first), a lone
 * surrogate escape (`"\ud800"` is no character; providers reject or mangle it) and numbers JSON
 * cannot hold (`1e400` parses as Infinity and would be re-serialised as null).
 */
export function parseJson(buf: Buffer, source?: JsonSource): unknown {
  // toString would turn broken bytes into U+FFFD silently: what went upstream would not be what was sent.
  if (!isUtf8(buf)) throw new TollgateError("invalid_request", "the request body is not valid UTF-8");
  const text = buf.toString("utf8");
  if (source) source.text = text;
  scanStructure(text, source);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new TollgateError("invalid_request", "the request body is not valid JSON");
  }
  checkNumbers(value, "body");
  return value;
}

interface Frame {
  keys?: Set<string>;
  expectKey: boolean;
}

/**
 * One pass over the text: nesting depth, duplicate object keys and lone surrogate escapes (valid
 * UTF-8 cannot hold a raw surrogate, so escapes are the only way in). Syntax errors are left to
 * JSON.parse. With `source`, where each top-level key's value lies is noted on the way.
 */
function scanStructure(text: string, source?: JsonSource): void {
  const stack: Frame[] = [];
  // Whether the text is what JSON.stringify would write for it (see JsonSource.canonical).
  let canonical = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      const start = i;
      let escaped = false;
      // Where the low half of a pair must start, after a high-surrogate escape.
      let lowAt = -1;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 92 /* \ */) {
          escaped = true;
          const e = text.charCodeAt(i + 1);
          if (e === 117 /* u */) {
            const unit = hex4(text, i + 2);
            if (unit >= 0xdc00 && unit <= 0xdfff && lowAt !== i) throw loneSurrogate();
            if (unit >= 0xd800 && unit <= 0xdbff) {
              const low = text.charCodeAt(i + 7) === 117 && text.charCodeAt(i + 6) === 92 ? hex4(text, i + 8) : -1;
              if (low < 0xdc00 || low > 0xdfff) throw loneSurrogate();
              lowAt = i + 6;
            }
            if (canonical && !stringifyEscapesAs(unit, text, i + 2)) canonical = false;
            i += 5;
          } else {
            // JSON.stringify writes \" \\ \b \f \n \r \t, never \/.
            if (e === 47 /* / */) canonical = false;
            i++;
          }
        } else if (d === 34) break;
      }
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        // An integer-like key moves to the front of the parsed object, so it is written elsewhere.
        const first = text.charCodeAt(start + 1);
        if (first >= 48 && first <= 57) canonical = false;
        const raw = text.slice(start, i + 1);
        let key = raw.slice(1, -1);
        if (escaped) {
          try {
            key = JSON.parse(raw) as string;
          } catch {
            return;
          }
        }
        if (top.keys.has(key)) throw new TollgateError("invalid_request", `the request body repeats the key "${key.slice(0, 64)}"`, { param: key.slice(0, 64) });
        top.keys.add(key);
        top.expectKey = false;
        if (source && stack.length === 1) source.keys.push(key, i + 1);
      }
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (stack.length >= MAX_JSON_DEPTH) throw new TollgateError("invalid_request", `the request body nests deeper than ${MAX_JSON_DEPTH} levels`);
      stack.push(c === 123 ? { keys: new Set(), expectKey: true } : { expectKey: false });
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      if (source && stack.length === 1 && c === 125 && stack[0]!.keys) {
        // The last key's value ends here; an empty object has none.
        if (source.keys.length % 3 === 2) source.keys.push(i);
        source.end = i;
      }
      stack.pop();
    } else if (c === 44 /* , */) {
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
      if (source && stack.length === 1 && top?.keys) source.keys.push(i);
    } else if (c === 45 /* - */ || (c >= 48 && c <= 57)) {
      // A number: canonical when it is the shortest form (`1.0`, `1e2`, `-0` are not).
      let j = i + 1;
      for (; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (!((d >= 48 && d <= 57) || d === 46 || d === 101 || d === 69 || d === 43 || d === 45)) break;
      }
      if (canonical) {
        const token = text.slice(i, j);
        if (String(Number(token)) !== token) canonical = false;
      }
      i = j - 1;
    } else if (c === 32 || c === 10 || c === 13 || c === 9) canonical = false;
  }
  if (source) source.canonical = canonical;
}

/**
 * Whether `\u` + the four hex digits at `at` (the code unit `unit`) is how JSON.stringify writes
 * that unit: only control characters without a short escape, in lowercase hex.
 */
function stringifyEscapesAs(unit: number, text: string, at: number): boolean {
  if (unit >= 0x20 || unit === 8 || unit === 9 || unit === 10 || unit === 12 || unit === 13) return false;
  for (let k = at; k < at + 4; k++) if (text.charCodeAt(k) >= 65 && text.charCodeAt(k) <= 70) return false;
  return true;
}

/** The value of four hex digits at `at`, or -1. */
function hex4(text: string, at: number): number {
  let v = 0;
  for (let k = at; k < at + 4; k++) {
    const h = text.charCodeAt(k);
    const d = h >= 48 && h <= 57 ? h - 48 : h >= 65 && h <= 70 ? h - 55 : h >= 97 && h <= 102 ? h - 87 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

function loneSurrogate(): TollgateError {
  return new TollgateError("invalid_request", "the request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), which is no character");
}

function checkNumbers(value: unknown, path: string): void {
  const bad = nonFiniteAt(value);
  if (!bad) return;
  // The path is spelled only for the refusal: a body's every value is checked, few are refused.
  for (let i = bad.length - 1; i >= 0; i--) {
    const seg = bad[i]!;
    path = typeof seg === "number" ? `${path}[${seg}]` : path === "body" ? seg : `${path}.${seg}`;
  }
  throw new TollgateError("invalid_request", `${path}: a number too large to represent`, { param: path });
}

/** Where a number JSON cannot hold sits, innermost key first; undefined when there is none. */
function nonFiniteAt(value: unknown): (string | number)[] | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : [];
  if (typeof value !== "object" || value === null) return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const bad = nonFiniteAt(value[i]);
      if (bad) return (bad.push(i), bad);
    }
    return undefined;
  }
  for (const k in value) {
    const bad = nonFiniteAt((value as Record<string, unknown>)[k]);
    if (bad) return (bad.push(k), bad);
  }
  return undefined;
}
