import { TollgateError } from "../core/errors.js";
import type { SseEvent } from "../core/format.js";

const LF = 10;
const CR = 13;
const SPACE = 32;
/**
 * The most one event may hold while it is being assembled (an unfinished line plus the data
 * lines so far). A provider's largest real events are a few KiB; without a bound an upstream
 * that never sends a newline would grow the buffer until the process dies.
 */
export const MAX_EVENT_BYTES = 8 * 1024 * 1024;

/**
 * The one SSE parser: bytes from any provider in, events out through a callback, synchronously, so
 * a socket read becomes events without a generator hop per event. Lines are cut on the bytes
 * (a UTF-8 sequence never contains CR or LF) and each line is decoded once.
 *
 * With `raw`, each event also carries its bytes as they came (`SseEvent.raw`: its lines, any
 * comment or id lines among them, and the blank line that ends it), so a relay that does not
 * change an event can write those bytes instead of formatting it again. A block that dispatches
 * nothing (a keep-alive comment) is not kept, so what is held never outgrows one event.
 */
export class SseParser {
  private rest: Buffer | undefined;
  private skipLf = false;
  private started = false;
  private event: string | undefined;
  private data: string | undefined;
  /** Where the current event's bytes start in the buffer being read, and its bytes from earlier reads. */
  private spanStart = 0;
  private spanBefore: Buffer[] = [];
  private spanBytes = 0;

  constructor(
    private readonly onEvent: (e: SseEvent) => void,
    private readonly raw = false,
  ) {}

  /** Parses what it can of `chunk`; false when the event being assembled outgrew MAX_EVENT_BYTES. */
  feed(chunk: Uint8Array | string): boolean {
    let buf = typeof chunk === "string" ? Buffer.from(chunk) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.rest) {
      buf = Buffer.concat([this.rest, buf]);
      this.rest = undefined;
    }
    let pos = 0;
    if (!this.started && buf.length > 0) {
      if (buf.length < 3 && buf[0] === 0xef) {
        this.rest = buf;
        return true;
      }
      this.started = true;
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) pos = 3;
    }
    if (this.skipLf && pos < buf.length) {
      this.skipLf = false;
      if (buf[pos] === LF) pos++;
    }
    // A LF that completes the CRLF a read ended in belongs to what was already emitted: dropped.
    this.spanStart = pos;
    const len = buf.length;
    let lf = buf.indexOf(LF, pos);
    let cr = buf.indexOf(CR, pos);
    while (pos < len) {
      // The blank line that ends an event usually follows its last line at once: no search for it.
      if (lf !== -1 && lf < pos) lf = buf[pos] === LF ? pos : buf.indexOf(LF, pos);
      if (cr !== -1 && cr < pos) cr = buf.indexOf(CR, pos);
      let end: number;
      let next: number;
      if (cr === -1 || (lf !== -1 && lf < cr)) {
        if (lf === -1) break;
        end = lf;
        next = lf + 1;
      } else {
        end = cr;
        next = cr + 1;
        // A CR that ends this read may be the first half of a CRLF split across two reads.
        if (next === len) this.skipLf = true;
        else if (buf[next] === LF) next++;
      }
      if (end === pos) this.dispatch(buf, next);
      else if (isData(buf, pos, end)) this.addData(buf.toString("utf8", buf[pos + 5] === SPACE && pos + 5 < end ? pos + 6 : pos + 5, end));
      else this.line(buf.toString("utf8", pos, end));
      pos = next;
    }
    // The lines of an event not yet ended; the unread part of a line comes back as `rest`.
    if (this.raw && (this.data !== undefined || this.event !== undefined) && this.spanStart < pos) {
      this.spanBefore.push(buf.subarray(this.spanStart, pos));
      this.spanBytes += pos - this.spanStart;
    }
    if (pos < len) this.rest = buf.subarray(pos);
    // An event's kept bytes are about its data again, so they count once: the limit is the event's size.
    return (this.rest?.length ?? 0) + Math.max(this.data?.length ?? 0, this.spanBytes) <= MAX_EVENT_BYTES;
  }

  /** A blank line: the event so far is complete (ending at `next` in `buf`). */
  private dispatch(buf: Buffer, next: number): void {
    const data = this.data;
    const event = this.event;
    this.data = this.event = undefined;
    if (data !== undefined) {
      let e: SseEvent;
      // Built whole, not given `raw` afterwards: every event of a stream has one shape for its readers.
      if (this.raw) {
        // A provider that sends each event in its own HTTP chunk hands us exactly its bytes: kept
        // as they are, with no view made of them.
        const own = this.spanStart === 0 && next === buf.length ? buf : buf.subarray(this.spanStart, next);
        const raw = this.spanBefore.length ? Buffer.concat([...this.spanBefore, own]) : own;
        e = event ? { event, data, raw } : { data, raw };
      } else e = event ? { event, data } : { data };
      this.onEvent(e);
    }
    // Only when something is held: storing an array's length goes through the runtime, per event.
    if (this.spanBefore.length !== 0) this.spanBefore.length = 0;
    this.spanBytes = 0;
    this.spanStart = next;
  }

  private line(l: string): void {
    const colon = l.indexOf(":");
    if (colon === 0) return; // a comment (keep-alive)
    let field: string;
    let value: string;
    if (colon === -1) {
      field = l;
      value = "";
    } else {
      field = l.slice(0, colon);
      value = l.slice(l.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1);
    }
    if (field === "data") this.addData(value);
    else if (field === "event") this.event = value;
    // id and retry matter to a browser reconnecting, not to a proxy that never reconnects.
  }

  private addData(value: string): void {
    this.data = this.data === undefined ? value : this.data + "\n" + value;
  }
}

/**
 * A `data:` line, read on the bytes: nearly every line of a model's stream is one, and its value
 * is decoded alone, without the line's string and its slices (the prefix is ASCII, so the value
 * decodes the same either way).
 */
function isData(buf: Buffer, pos: number, end: number): boolean {
  return end - pos >= 5 && buf[pos] === 0x64 && buf[pos + 1] === 0x61 && buf[pos + 2] === 0x74 && buf[pos + 3] === 0x61 && buf[pos + 4] === 0x3a;
}

/** The parser as an async iterable, for callers that hold a body stream (the metered fetch). */
export async function* parseSse(body: AsyncIterable<Uint8Array | string>): AsyncGenerator<SseEvent> {
  const queue: SseEvent[] = [];
  const parser = new SseParser((e) => queue.push(e));
  for await (const chunk of body) {
    if (!parser.feed(chunk)) throw new TollgateError("upstream_error", `the provider sent a stream event larger than ${MAX_EVENT_BYTES >> 20} MiB`);
    for (let i = 0; i < queue.length; i++) yield queue[i]!;
    queue.length = 0;
  }
}

export function formatSse(e: SseEvent): string {
  // A data payload with newlines must be split across data: lines to stay one event.
  const data = e.data.includes("\n") ? e.data.split("\n").join("\ndata: ") : e.data;
  return e.event ? `event: ${e.event}\ndata: ${data}\n\n` : `data: ${data}\n\n`;
}
