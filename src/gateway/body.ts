import type { IncomingMessage } from "node:http";
import { TollgateError } from "../core/errors.js";

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

function tooLarge(size: number, max: number, atLeast = false): TollgateError {
  return new TollgateError("input_too_large", `the request body is ${atLeast ? "over " : ""}${atLeast ? max : size} bytes; this gateway allows ${max} (max_body_bytes)`, {
    limit: "max_body_bytes",
  });
}

/** Parses JSON after a linear scan that refuses excessive nesting (a stack-exhaustion vector). */
export function parseJson(buf: Buffer): unknown {
  const text = buf.toString("utf8");
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) {
      if (++depth > MAX_JSON_DEPTH) throw new TollgateError("invalid_request", `the request body nests deeper than ${MAX_JSON_DEPTH} levels`);
    } else if (c === 93 || c === 125) depth--;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new TollgateError("invalid_request", "the request body is not valid JSON");
  }
}
