/**
 * A request body as the caller sent it, with where each top-level key's value lies. The upstream
 * body is the caller's with a few top-level fields set (model, the output cap): patching those into
 * the caller's bytes costs a copy, where serialising the parsed object again costs a JSON.stringify
 * of the whole prompt (several times the copy for a short body, more for a long one).
 */
export interface JsonSource {
  bytes: Buffer;
  /** `bytes` decoded; the indices below are into it. */
  text: string;
  /** Per top-level key: its name (unescaped), the index after its closing quote, the index of the `,` or `}` ending its value. */
  keys: (string | number)[];
  /** Index of the `}` closing the top-level object; -1 while unknown or when the body is no object. */
  end: number;
  /**
   * Whether `bytes` are exactly what JSON.stringify writes for the parsed value: no whitespace
   * between tokens, escapes only where JSON.stringify escapes, numbers in their shortest form, no
   * integer-like keys (which JSON.parse moves to the front of an object). Only then are the patched
   * bytes the re-serialised request that SPEC §7.7 promises the provider.
   */
  canonical?: boolean;
}

/**
 * The upstream body: `{ ...body, ...fields }` as JSON.stringify writes it. When the caller's bytes
 * are already in that form (what every SDK sends), the same bytes come from patching them, for a
 * copy instead of a serialisation of the whole prompt; anything else is serialised again.
 */
export function upstreamBody(src: JsonSource | undefined, fields: Record<string, unknown>, rewritten: unknown): Buffer | string {
  return (src?.canonical && patchJson(src, fields)) || JSON.stringify(rewritten);
}

/**
 * The source's bytes with each of `fields` set at the top level: a key the caller sent keeps its
 * place and gets the new value, any other is added at the end. The result parses to what
 * `{ ...body, ...fields }` serialises to, keys in the same order. undefined when the source is not
 * an object (the caller serialises the object instead).
 */
export function patchJson(src: JsonSource, fields: Record<string, unknown>): Buffer | undefined {
  const { keys, text, bytes } = src;
  if (src.end < 0) return undefined;
  // [from, to, replacement] in the order of `from`: fields are few, so an insertion sort.
  const edits: (number | string)[] = [];
  let appended = "";
  for (const name in fields) {
    const json = JSON.stringify(fields[name]);
    // A field set to undefined would drop the key: not a patch.
    if (json === undefined) return undefined;
    let k = 0;
    while (k < keys.length && keys[k] !== name) k += 3;
    if (k === keys.length) {
      appended += `${keys.length > 0 || appended ? "," : ""}${JSON.stringify(name)}:${json}`;
      continue;
    }
    const from = keys[k + 1] as number;
    let at = edits.length;
    while (at > 0 && (edits[at - 3] as number) > from) at -= 3;
    edits.splice(at, 0, from, keys[k + 2] as number, `:${json}`);
  }
  if (text.length <= SMALL_BODY) return patchedText(text, edits, appended, src.end);
  // Pure ASCII (most JSON): an index into the text is an index into the bytes. Otherwise the
  // offsets are asked for in increasing order, so each is counted on from the one before.
  const ascii = bytes.length === text.length;
  let countedTo = 0;
  let countedBytes = 0;
  const byteAt = (i: number): number => {
    if (ascii) return i;
    countedBytes += Buffer.byteLength(text.slice(countedTo, i));
    countedTo = i;
    return countedBytes;
  };
  // [from, to) of the caller's bytes kept, then the string after them; sized first, so the
  // result is one allocation and each piece one copy.
  const ranges: (number | string)[] = [];
  let size = 0;
  let pos = 0;
  for (let e = 0; e < edits.length; e += 3) {
    const from = byteAt(edits[e] as number);
    const json = edits[e + 2] as string;
    ranges.push(pos, from, json);
    size += from - pos + Buffer.byteLength(json);
    pos = byteAt(edits[e + 1] as number);
  }
  if (appended) {
    const end = byteAt(src.end);
    ranges.push(pos, end, appended);
    size += end - pos + Buffer.byteLength(appended);
    pos = end;
  }
  ranges.push(pos, bytes.length, "");
  size += bytes.length - pos;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let r = 0; r < ranges.length; r += 3) {
    at += bytes.copy(out, at, ranges[r] as number, ranges[r + 1] as number);
    const json = ranges[r + 2] as string;
    if (json) at += out.write(json, at);
  }
  return out;
}

/**
 * Up to this many characters, the patched body is built as a string and encoded once: each Buffer
 * copy costs a view and its checks (~2k instructions), more than encoding a short body again.
 * Past it, copying the caller's bytes is cheaper than encoding them (about a third per byte).
 */
const SMALL_BODY = 2048;

function patchedText(text: string, edits: (number | string)[], appended: string, end: number): Buffer {
  let out = "";
  let pos = 0;
  for (let e = 0; e < edits.length; e += 3) {
    out += text.slice(pos, edits[e] as number) + (edits[e + 2] as string);
    pos = edits[e + 1] as number;
  }
  if (appended) {
    out += text.slice(pos, end) + appended;
    pos = end;
  }
  return Buffer.from(out + text.slice(pos));
}
