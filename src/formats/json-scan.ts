/**
 * Reading the few fields of a stream event without JSON.parse. Nearly every event of a model's
 * stream is a text delta in one compact form; each format matches that form with an anchored
 * pattern built from these pieces and hands anything else to JSON.parse, so what is read here is
 * always exactly what JSON.parse would have read.
 */

/** A JSON string's body whose escapes still need decoding (an invalid one fails in `decodeString`). */
export const STRING_BODY = String.raw`(?:[^"\\\x00-\x1f]|\\.)*`;
/** A JSON string's body with no escapes at all: read as it is. */
export const PLAIN_STRING_BODY = String.raw`[^"\\\x00-\x1f]*`;
/** A non-negative JSON integer (no leading zero) small enough to be exact in a double. */
export const COUNT = String.raw`(?:0|[1-9]\d{0,14})`;

/** A matched string body as JSON.parse reads it, or undefined when an escape is not valid JSON. */
export function decodeString(body: string): string | undefined {
  if (!body.includes("\\")) return body;
  try {
    return JSON.parse(`"${body}"`) as string;
  } catch {
    return undefined;
  }
}

const STRING_AT = new RegExp(`(${STRING_BODY})"`, "y");

/**
 * The value of the last `,"name":` field of an event whose shape a pattern of these pieces has
 * already matched (so an unescaped `,"` only ever starts a field): a string body, a count, or
 * undefined when the event has no such field. Last, because JSON.parse keeps a repeated key's last value.
 */
export function stringField(data: string, field: string): string | undefined {
  const at = data.lastIndexOf(field);
  if (at === -1) return undefined;
  STRING_AT.lastIndex = at + field.length;
  return STRING_AT.exec(data)?.[1];
}

export function countField(data: string, field: string): number | undefined {
  const at = data.lastIndexOf(field);
  if (at === -1) return undefined;
  let n = 0;
  for (let i = at + field.length; i < data.length; i++) {
    const d = data.charCodeAt(i) - 48;
    if (d < 0 || d > 9) break;
    n = n * 10 + d;
  }
  return n;
}
