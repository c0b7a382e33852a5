/**
 * A script call as the bytes Redis reads (RESP: `*<n>` then `$<bytes>` and the bytes of each
 * part), written straight into one Buffer. ioredis would flatten the argument list
 * (`Array.prototype.flat`, a generic element-by-element copy) and build a string of five
 * concatenations per argument for the socket to encode again; a turn's BATCH call has a few hundred
 * arguments, so that was most of what the client spent per request.
 */

/** Parts up to this many characters are copied byte by byte here; longer ones by Buffer's own encoder (a call into C++). */
const SHORT = 32;

let scratch = Buffer.allocUnsafe(64 * 1024);

/** `name script numkeys keys… args…` (EVALSHA or EVAL) as one RESP command. */
export function encodeScriptCall(name: string, script: string, keys: readonly string[], args: readonly string[]): Buffer {
  // Room for the worst case: every character three UTF-8 bytes, every header its longest.
  let room = 64 + script.length * 3;
  for (const k of keys) room += k.length * 3 + 16;
  for (const a of args) room += a.length * 3 + 16;
  if (scratch.length < room) scratch = Buffer.allocUnsafe(Math.max(room, scratch.length * 2));
  const b = scratch;
  let o = 0;
  b[o++] = 42; // *
  o = writeInt(b, o, 3 + keys.length + args.length);
  b[o++] = 13;
  b[o++] = 10;
  o = writePart(b, o, name);
  o = writePart(b, o, script);
  o = writePart(b, o, String(keys.length));
  for (let i = 0; i < keys.length; i++) o = writePart(b, o, keys[i]!);
  for (let i = 0; i < args.length; i++) o = writePart(b, o, args[i]!);
  // A copy of what was written: the socket may hold on to it while the next call reuses the scratch.
  const out = Buffer.allocUnsafe(o);
  b.copy(out, 0, 0, o);
  return out;
}

function writePart(b: Buffer, o: number, s: string): number {
  const n = s.length;
  if (n <= SHORT && isAscii(s)) {
    b[o++] = 36; // $
    o = writeInt(b, o, n);
    b[o++] = 13;
    b[o++] = 10;
    for (let i = 0; i < n; i++) b[o++] = s.charCodeAt(i);
  } else {
    const bytes = Buffer.byteLength(s, "utf8");
    b[o++] = 36;
    o = writeInt(b, o, bytes);
    b[o++] = 13;
    b[o++] = 10;
    o += b.write(s, o, bytes, "utf8");
  }
  b[o++] = 13;
  b[o++] = 10;
  return o;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 127) return false;
  return true;
}

/** A non-negative integer's decimal digits. */
function writeInt(b: Buffer, o: number, n: number): number {
  if (n < 10) {
    b[o] = 48 + n;
    return o + 1;
  }
  let digits = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
  let x = n;
  for (let i = o + digits - 1; i >= o; i--) {
    b[i] = 48 + (x % 10);
    x = Math.floor(x / 10);
  }
  return o + digits;
}
