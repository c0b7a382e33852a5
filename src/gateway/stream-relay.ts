import type { ServerResponse } from "node:http";
import type { Cancel } from "../core/cancel.js";
import { toTollgateError, type Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import type { Exchange } from "../core/exchange.js";
import type { RequestFormat, SseEvent } from "../core/format.js";
import { meteredParts, type Terminal, type Verdict } from "../core/metered-stream.js";
import type { Meter } from "../core/metering/meter.js";
import type { BatchedEvents } from "../core/provider.js";
import { formatSse } from "../providers/sse.js";

/** Framing events held back with the status line until the first one that carries output. */
const MAX_HELD_EVENTS = 16;

/** What the relay writes at once: the bytes of one or more events. */
interface Chunk {
  bytes: Uint8Array | string;
  events: number;
  /** Holds the stream's first output (text or a tool call). */
  output: boolean;
}

export interface RelayOptions {
  engine: Engine;
  ex: Exchange;
  format: RequestFormat;
  meter: Meter;
  /** The request's cancellation: fired by a client leaving or the wall clock, and by the relay to stop the provider. */
  abort: Cancel;
  /** A client that stops reading for this long is cut off. */
  stallMs: number;
  /** Sent as x-tollgate-request-id with the stream's other headers. */
  requestId: string;
}

/**
 * Relays a provider's stream to the client, metered. Each batch of events (all that one read of
 * the provider's socket carried) is metered event by event and written in one piece; an event
 * tollgate does not change leaves as the bytes the provider sent (`SseEvent.raw`), so nothing is
 * formatted again. An event that is withheld (a usage chunk the client did not ask for) is left
 * out of the bytes; the event that would pass the output cap, and everything after it, is never
 * written: the stream closes after the events before it, with the format's own end events.
 *
 * Returns the error to answer with when the stream failed before anything was sent.
 */
export async function relayStream(res: ServerResponse, events: AsyncIterable<SseEvent> | BatchedEvents, o: RelayOptions): Promise<TollgateError | undefined> {
  const { engine, ex, format, meter, abort } = o;
  // The wrapper decides how the stream ended and settles exactly once; this relay only writes.
  let terminal: Terminal | undefined;
  let settleFailure: unknown;
  let sawOutput = false;
  const tail = (t: Terminal): Chunk[] => {
    let ends: SseEvent[] = [];
    if (t.ended === "output_cap") ends = format.endStream("output_cap", meter.ending, "");
    else if (t.ended === "timeout") ends = format.endStream("timeout", meter.ending, "the request ran past the wall-clock cap");
    else if (t.ended === "upstream_error") ends = format.endStream("upstream_error", meter.ending, "the provider's stream failed");
    return ends.length ? [{ bytes: ends.map(formatSse).join(""), events: ends.length, output: false }] : [];
  };
  const parts = meteredParts<Chunk, SseEvent[]>(batchesOf(events), {
    signal: abort,
    read(batch): Verdict<Chunk> {
      const parts: Uint8Array[] = [];
      let size = 0;
      let output = false;
      let end: Terminal | undefined;
      for (const event of batch) {
        const { forward } = meter.event(event);
        if (meter.error) {
          end = { ended: "upstream_error", error: new TollgateError("upstream_error", "the provider sent a malformed or failed stream") };
          break;
        }
        if (meter.capped) {
          end = { ended: "output_cap" };
          break;
        }
        if (!forward) continue;
        if (!sawOutput && (meter.output || meter.toolCalls > 0)) sawOutput = output = true;
        const bytes = event.raw ?? Buffer.from(formatSse(event));
        parts.push(bytes);
        size += bytes.length;
      }
      const forward = parts.length ? [{ bytes: parts.length === 1 ? parts[0]! : Buffer.concat(parts, size), events: parts.length, output }] : [];
      return end ? { end, forward } : { forward };
    },
    async settle(t) {
      terminal = t;
      try {
        await engine.finish(ex, { ended: t.ended, meter });
      } catch (err) {
        settleFailure = err;
      }
    },
    tail,
    stop: (t) => {
      if (!abort.aborted) abort.abort({ tollgate: t.ended });
    },
  });
  // Hold the status line until the first event that carries output: a provider that fails or
  // sends garbage before any content (Anthropic's message_start, then an error) still gets the
  // caller a proper HTTP error instead of a 200 that breaks mid-way. The events before it are
  // framing (a role, a message or item being opened) and leave together with it.
  const held: Chunk[] = [];
  let heldEvents = 0;
  const release = () => {
    // One flat list: node formats it as it is, with no header object built and no name lowercased.
    const list = ["content-type", "text/event-stream", "cache-control", "no-cache", "connection", "keep-alive", "x-tollgate-request-id", o.requestId];
    for (const name in ex.headers) list.push(name, ex.headers[name]!);
    res.writeHead(200, list);
    for (const c of held) write(res, c.bytes);
    held.length = 0;
  };
  try {
    for (let chunks = await parts.read(); chunks; chunks = await parts.read()) {
      for (const chunk of chunks) {
        if (!res.headersSent) {
          held.push(chunk);
          heldEvents += chunk.events;
          // Once the stream has ended, what is held goes out (or becomes the HTTP error) at the close.
          if (chunk.output || (!terminal && heldEvents >= MAX_HELD_EVENTS)) release();
        } else if (!write(res, chunk.bytes)) {
          await drained(res, abort, o.stallMs);
        }
      }
    }
  } catch {
    // The client stalled, left or the clock ran out while we waited to write: the wrapper
    // settles with the signal's reason, and the stream's close is written here.
    await parts.cancel().catch(() => {});
    if (res.headersSent && terminal) for (const c of tail(terminal)) res.write(c.bytes);
  }
  if (settleFailure !== undefined) throw settleFailure;
  if (!res.headersSent) {
    const t = terminal!;
    if (t.ended !== "complete" && t.ended !== "output_cap") return t.error ?? toTollgateError(undefined, abort);
    release();
  }
  res.end();
  return undefined;
}

/** The stream as batches: the provider's own when it has them, else one event at a time. */
function batchesOf(events: AsyncIterable<SseEvent> | BatchedEvents): AsyncIterator<SseEvent[]> {
  if ("nextBatch" in events) {
    return {
      next: () => events.nextBatch(),
      return: async () => {
        await events.return?.();
        return { done: true, value: undefined };
      },
    };
  }
  const it = events[Symbol.asyncIterator]();
  return {
    next: async () => {
      const r = await it.next();
      return r.done ? { done: true, value: undefined } : { done: false, value: [r.value] };
    },
    return: async () => (await it.return?.(), { done: true, value: undefined }),
  };
}

/**
 * Chunks that arrive together leave in one socket write: the response is corked until the
 * promise jobs of this socket read have run (a tick queued from a promise job runs after the
 * whole cascade, the end of the response and its tail included), without an Immediate and an
 * extra turn of the event loop per read.
 */
function write(res: ServerResponse, bytes: Uint8Array | string): boolean {
  if (!res.writableCorked) {
    res.cork();
    process.nextTick(uncork, res);
  }
  return res.write(bytes);
}

function uncork(res: ServerResponse): void {
  res.uncork();
}

/**
 * Waits for the client to drain; a client that stops reading for `stallMs` is cut off. Rejects once
 * the request is cancelled (the client left, the clock ran out) or the response fails, as `once`
 * with a signal would.
 */
function drained(res: ServerResponse, abort: Cancel, stallMs: number): Promise<void> {
  if (abort.aborted) return Promise.reject(abort.reason);
  return new Promise((resolve, reject) => {
    const off = (): void => {
      res.off("drain", onDrain);
      res.off("error", failed);
      abort.removeEventListener("abort", cancelled);
      clearTimeout(stall);
    };
    const onDrain = (): void => (off(), resolve());
    const failed = (err: unknown): void => (off(), reject(err));
    const cancelled = (): void => failed(abort.reason);
    const stall = setTimeout(() => abort.abort({ tollgate: "client_disconnect" }), stallMs);
    res.once("drain", onDrain);
    res.once("error", failed);
    abort.addEventListener("abort", cancelled);
  });
}
