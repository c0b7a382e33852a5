import { TollgateError } from "../core/errors.js";
import type { PromptShape } from "../core/metering/tokens.js";

/**
 * Readers for client JSON that refuse what a provider would misread: a wrong type, a negative or
 * fractional token count, a number JSON cannot hold exactly. Each names the field it refused.
 */
export function invalid(param: string, message: string): TollgateError {
  return new TollgateError("invalid_request", `${param}: ${message}`, { param });
}

export function asObject(value: unknown, param: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw invalid(param, "expected an object");
  return value as Record<string, unknown>;
}

export function optString(obj: Record<string, unknown>, key: string, param = key): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw invalid(param, "expected a string");
  return v;
}

export function optBool(obj: Record<string, unknown>, key: string, param = key): boolean | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalid(param, "expected true or false");
  return v;
}

/** A whole number >= min; refuses 1e400 (Infinity), 2.5, -1 and strings. */
export function optCount(obj: Record<string, unknown>, key: string, min = 0, param = key): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw invalid(param, "expected a whole number");
  if (v < min) throw invalid(param, `expected a whole number of at least ${min}`);
  return v;
}

export function optArray(obj: Record<string, unknown>, key: string, param = key): unknown[] | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw invalid(param, "expected an array");
  return v;
}

/** Unicode code points: zero-width and combining padding count like any other character. */
export function codePoints(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xdc00 && c <= 0xdfff && i > 0) {
      const p = text.charCodeAt(i - 1);
      if (p >= 0xd800 && p <= 0xdbff) n--;
    }
  }
  return n;
}

/**
 * A definition the provider renders into the prompt and bills (a tool, a legacy function, an output
 * schema): its JSON joins the estimate, and its characters, returned, join the prompt caps. The
 * JSON is made once and serves both.
 */
export function addDefinition(prompt: PromptShape, definition: unknown): number {
  const json = JSON.stringify(definition);
  prompt.toolDefinitions.push(json);
  return codePoints(json);
}

/** Decoded size of base64 text (or a data: URL) without decoding it. */
export function base64Bytes(data: string): number {
  const comma = data.startsWith("data:") ? data.indexOf(",") : -1;
  const b64 = comma >= 0 ? data.slice(comma + 1) : data;
  let len = b64.length;
  while (len > 0 && /\s/.test(b64[len - 1]!)) len--;
  let pad = 0;
  if (b64[len - 1] === "=") pad++;
  if (b64[len - 2] === "=") pad++;
  return Math.max(0, Math.floor((len * 3) / 4) - pad);
}

/**
 * A token count from a provider's usage: undefined when not reported; NaN when reported but not a
 * non-negative safe integer (1e308, -5, 2.5, "12"), so settlement can tell a count it must not
 * trust from one that never came. NaN survives the sums and `??` the readers do.
 */
export function usageCount(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : NaN;
}

/** What a reading says when the provider answered with an error; its own text is never kept. */
export const UPSTREAM_ERROR = "the provider answered with an error";

/**
 * A provider answer that is not an object, or carries an error object: some OpenAI-compatible
 * backends answer HTTP 200 with `{"error": …}` (Anthropic's shape adds `type: "error"`), and
 * its message can hold the provider key. It is an upstream_error whatever the status.
 */
export function answerIsError(body: unknown): boolean {
  if (body === null || typeof body !== "object" || Array.isArray(body)) return true;
  const b = body as { error?: unknown; type?: unknown };
  return (b.error !== undefined && b.error !== null && b.error !== false) || b.type === "error";
}
