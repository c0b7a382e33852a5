import { errors as undiciErrors, type Dispatcher } from "undici";
import type { CallSignal } from "../core/cancel.js";
import { TollgateError } from "../core/errors.js";
import type { SseEvent } from "../core/format.js";
import type { BatchedEvents, UpstreamResult } from "../core/provider.js";
import { MAX_EVENT_BYTES, SseParser } from "./sse.js";

/** Events parsed ahead of the consumer before the socket is paused (the backpressure bound). */
const HIGH_WATER_EVENTS = 64;
/** An error body is drained so the connection can be reused, up to this many bytes. */
const MAX_DRAIN_BYTES = 128 * 1024;
/**
 * A whole non-streaming answer is buffered to read its usage, so a hostile or broken upstream
 * could otherwise grow one request's memory without bound. 32 MiB holds any chat, Responses or
 * embeddings answer a provider sends today (images come as URLs or a few MiB of base64).
 */
export const MAX_ANSWER_BYTES = 32 * 1024 * 1024;

type Waiter = { resolve: (r: IteratorResult<SseEvent>) => void; reject: (err: Error) => void; batch: false } | { resolve: (r: IteratorResult<SseEvent[], undefined>) => void; reject: (err: Error) => void; batch: true };
const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * One upstream call as an undici dispatch handler: the answer's bytes go straight from the socket
 * into a buffer (JSON) or the SSE parser (streams), with no body stream, no promise per read and
 * no generator between the socket and the consumer. It is also the stream's async iterator, so
 * the consumer's `next()` reads the parsed events directly and `return()` closes the socket.
 * undici calls exactly one of onComplete / onError; `done` makes every later signal a no-op.
 */
export class UpstreamHandler implements Dispatcher.DispatchHandler, BatchedEvents {
  readonly promise: Promise<UpstreamResult>;
  private resolveCall!: (r: UpstreamResult) => void;
  private rejectCall!: (err: Error) => void;
  private called = false;
  private mode: "headers" | "json" | "stream" | "drain" = "headers";
  private abortFn: ((err: Error) => void) | undefined;
  private resumeFn: (() => void) | undefined;
  private paused = false;
  private chunks: Buffer[] = [];
  private size = 0;
  private parser: SseParser | undefined;
  private events: SseEvent[] = [];
  private head = 0;
  private waiter: Waiter | undefined;
  private failure: Error | undefined;
  private done = false;
  private wakeQueued = false;
  private readonly wakeLater = (): void => {
    this.wakeQueued = false;
    this.wake();
  };
  private readonly onAbort = (): void => this.abort(upstreamFailure(undefined, this.signal));

  constructor(
    private readonly provider: string,
    private readonly stream: boolean,
    private readonly signal: CallSignal,
  ) {
    this.promise = new Promise((resolve, reject) => {
      this.resolveCall = resolve;
      this.rejectCall = reject;
    });
    // Not `once`: the listener is removed when the call ends, and `done` makes a second abort a no-op.
    signal.addEventListener("abort", this.onAbort);
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.done) abort(new undiciErrors.RequestAbortedError());
    else this.abortFn = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    this.resumeFn = resume;
    if (statusCode >= 400) {
      // Drained without echoing: a provider's error body can name its URL, the org or the key.
      this.mode = "drain";
      this.settleCall(new TollgateError("upstream_error", `the provider ${this.provider} answered HTTP ${statusCode}`));
      return true;
    }
    if (this.stream && contentType(rawHeaders).includes("text/event-stream")) {
      this.mode = "stream";
      // Each event keeps its bytes, so the gateway forwards what the provider sent.
      this.parser = new SseParser((e) => this.events.push(e), true);
      this.settleCall(undefined, { kind: "stream", events: this });
      return true;
    }
    this.mode = "json";
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.done) return true;
    if (this.mode === "stream") {
      if (!this.parser!.feed(chunk)) {
        this.abort(new TollgateError("upstream_error", `the provider ${this.provider} sent a stream event larger than ${MAX_EVENT_BYTES >> 20} MiB`));
        return true;
      }
      // One socket read reaches us as several onData calls (one per HTTP chunk): the reader is
      // woken once, after all of them, so it takes the read's events as one batch.
      if (this.waiter && !this.wakeQueued) {
        this.wakeQueued = true;
        queueMicrotask(this.wakeLater);
      }
      if (this.events.length - this.head >= HIGH_WATER_EVENTS) this.paused = true;
      return !this.paused;
    }
    this.size += chunk.length;
    if (this.mode === "drain") {
      if (this.size > MAX_DRAIN_BYTES) this.abort(new TollgateError("upstream_error", `the provider ${this.provider} sent an oversized error body`));
      return true;
    }
    if (this.size > MAX_ANSWER_BYTES) {
      this.chunks = [];
      this.abort(new TollgateError("upstream_error", `the provider ${this.provider} sent an answer larger than ${MAX_ANSWER_BYTES >> 20} MiB`));
      return true;
    }
    this.chunks.push(chunk);
    return true;
  }

  onComplete(): void {
    if (this.done) return;
    this.signal.removeEventListener("abort", this.onAbort);
    if (this.mode === "stream") {
      this.done = true;
      this.wake();
      return;
    }
    this.done = true;
    if (this.mode !== "json") return;
    const raw = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.chunks = [];
    let body: unknown;
    try {
      body = JSON.parse(raw.toString());
    } catch {
      return this.settleCall(new TollgateError("upstream_error", `the provider ${this.provider} sent a response that is not JSON`));
    }
    this.settleCall(undefined, { kind: "json", body, raw });
  }

  onError(err: Error): void {
    this.fail(upstreamFailure(err, this.signal));
  }

  next(): Promise<IteratorResult<SseEvent>> {
    if (this.head < this.events.length) return Promise.resolve({ value: this.take(), done: false });
    if (this.failure) return Promise.reject(this.failure);
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject, batch: false }));
  }

  nextBatch(): Promise<IteratorResult<SseEvent[], undefined>> {
    if (this.head < this.events.length) return Promise.resolve({ done: false, value: this.takeAll() });
    if (this.failure) return Promise.reject(this.failure);
    if (this.done) return Promise.resolve(DONE);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject, batch: true }));
  }

  /** The consumer stopped reading: close the socket unless the answer was already complete. */
  return(): Promise<IteratorResult<SseEvent>> {
    if (!this.done) this.abort(new TollgateError("upstream_error", "the stream was closed by its reader"));
    this.events = [];
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private take(): SseEvent {
    const e = this.events[this.head++]!;
    if (this.head === this.events.length) this.emptied();
    return e;
  }

  /** Every event parsed and not yet read, in one array the reader keeps. */
  private takeAll(): SseEvent[] {
    const all = this.head === 0 ? this.events : this.events.slice(this.head);
    this.events = [];
    this.emptied();
    return all;
  }

  private emptied(): void {
    // takeAll leaves a fresh array: storing its length would be a runtime call per read for nothing.
    if (this.events.length !== 0) this.events.length = 0;
    this.head = 0;
    if (this.paused) {
      this.paused = false;
      this.resumeFn?.();
    }
  }

  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.head < this.events.length) {
      this.waiter = undefined;
      if (w.batch) w.resolve({ done: false, value: this.takeAll() });
      else w.resolve({ value: this.take(), done: false });
    } else if (this.failure) {
      this.waiter = undefined;
      w.reject(this.failure);
    } else if (this.done) {
      this.waiter = undefined;
      w.resolve(DONE);
    }
  }

  private abort(err: Error): void {
    const abort = this.abortFn;
    this.fail(err);
    abort?.(new undiciErrors.RequestAbortedError());
  }

  private fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.failure = err;
    this.signal.removeEventListener("abort", this.onAbort);
    this.settleCall(err);
    this.wake();
  }

  private settleCall(err: Error | undefined, result?: UpstreamResult): void {
    if (this.called) return;
    this.called = true;
    if (err) this.rejectCall(err);
    else this.resolveCall(result!);
  }
}

function contentType(raw: Buffer[]): string {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 12 && name.toString("latin1").toLowerCase() === "content-type") return raw[i + 1]!.toString("latin1");
  }
  return "";
}

export function upstreamFailure(err: unknown, signal: CallSignal): Error {
  if (signal.aborted) return signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
  if (TollgateError.is(err)) return err;
  if (err instanceof undiciErrors.HeadersTimeoutError) return new TollgateError("upstream_timeout", "the provider did not answer within first_byte_timeout");
  if (err instanceof undiciErrors.BodyTimeoutError) return new TollgateError("upstream_timeout", "the provider went silent for longer than idle_timeout");
  // undici's messages carry the host and port; say only what kind of failure it was.
  const code = (err as { code?: string }).code;
  return new TollgateError("upstream_error", `the provider could not be reached${code ? ` (${code})` : ""}`);
}
