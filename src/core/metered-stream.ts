import { TollgateError } from "./errors.js";
import type { Ended } from "./usage-record.js";

/** How a metered stream ended: the one terminal event, with the refusal or failure behind it. */
export interface Terminal {
  ended: Ended;
  error?: TollgateError;
}

/**
 * What one part of the provider's answer means: pass these parts on, or the stream ends here
 * (after `forward`, when a part read as a batch ends the stream partway through it).
 */
export type Verdict<T> = { forward: T[] } | { end: Terminal; forward?: T[] };

/** `T` is what the reader gets, `S` what the source gives (the same, unless the reader takes batches). */
export interface MeteredStreamHooks<T, S = T> {
  /** Meters one part; may refuse (a tool call past the run's cap) or cut (the output cap). */
  read(part: S): Verdict<T> | Promise<Verdict<T>>;
  /** Settles the call: called exactly once, whichever terminal event comes first. */
  settle(end: Terminal): Promise<unknown>;
  /** Parts that close a stream ended early (an error part, a finish event in the stream's own format). */
  tail?(end: Terminal): T[];
  /** Stops the provider's generation; called for every terminal but `complete`. */
  stop?(end: Terminal): void;
  /** The request's signal (an AbortSignal or a `Cancel`): a read failing after it fired ends the stream with its reason. */
  signal?: AbortState;
}

/** What the stream reads of the request's signal. */
type AbortState = { readonly aborted: boolean; readonly reason: unknown };

/** The reason an abort signal carries, as the usage record names it. */
export function abortReason(signal: { readonly reason: unknown }): Ended {
  const r = signal.reason as { tollgate?: Ended } | undefined;
  return r?.tollgate ?? "client_disconnect";
}

/** A metered stream read a pull at a time: each `read` gives the parts of one pull, never an empty array. */
export interface PartReader<T> {
  /** The next parts to pass on, or undefined once the stream has closed. */
  read(): Promise<T[] | undefined>;
  /** The reader went away: ends the stream (client disconnect, or the signal's reason). */
  cancel(): Promise<void>;
}

/**
 * The one place a metered model stream ends — the gateway's SSE relay, the library's metered
 * `fetch` and the AI SDK middleware all pass the provider's stream through it. Like undici's
 * decorator handler, it has exactly one terminal event (complete, output cap, client disconnect,
 * upstream error, refusal): whichever comes first settles the call; every later one is ignored.
 * A refusal never escapes as an exception: the stream closes with the tail the hooks give for it.
 *
 * The relay reads it directly (no WHATWG stream: one fewer promise chain per read, and no
 * ReadableStream to build per request); `meteredStream` wraps it for callers that hand a stream on.
 */
export function meteredParts<T, S = T>(source: AsyncIterator<S>, hooks: MeteredStreamHooks<T, S>): PartReader<T> {
  let terminal: Promise<void> | undefined;
  /** The terminal whose tail the reader gets next, once the call has settled. */
  let ending: Terminal | undefined;
  let closed = false;
  const end = (t: Terminal): Promise<void> =>
    (terminal ??= (async () => {
      if (t.ended !== "complete") hooks.stop?.(t);
      // The provider's side ends before we settle, so nothing more is generated unseen.
      if (t.ended !== "complete") await source.return?.().catch(() => {});
      await hooks.settle(t);
    })());
  const tail = async (): Promise<T[] | undefined> => {
    const t = ending!;
    ending = undefined;
    closed = true;
    await terminal;
    const parts = hooks.tail?.(t) ?? [];
    return parts.length ? parts : undefined;
  };
  // The parts before a mid-batch end go out at once; the settle runs meanwhile and the tail follows it.
  const finish = (t: Terminal, forward?: T[]): Promise<T[] | undefined> | T[] => {
    ending = t;
    const settling = end(t);
    if (!forward?.length) return tail();
    settling.catch(() => {}); // the next read awaits it and sees a failure
    return forward;
  };
  return {
    async read() {
      if (ending) return tail();
      if (closed) return undefined;
      // Parts that are metered but not passed on (a usage chunk the caller did not ask for) are
      // read past here, so a read never hands back nothing while the stream is open.
      for (;;) {
        let next: IteratorResult<S>;
        try {
          next = await source.next();
        } catch (err) {
          return terminal ? undefined : finish(failed(err, hooks.signal));
        }
        if (terminal) return undefined;
        if (next.done) return finish({ ended: "complete" });
        let verdict: Verdict<T>;
        try {
          const v = hooks.read(next.value);
          verdict = "then" in v ? await v : v;
        } catch (err) {
          return terminal ? undefined : finish(failed(err, hooks.signal));
        }
        if (terminal) return undefined;
        if ("end" in verdict) return finish(verdict.end, verdict.forward);
        if (verdict.forward.length) return verdict.forward;
      }
    },
    async cancel() {
      closed = true;
      ending = undefined;
      // A reader that gives up because the request's signal fired (a timeout, a stalled client
      // cut off) ends the stream for that reason; otherwise the reader went away.
      await end(hooks.signal?.aborted ? { ended: abortReason(hooks.signal) } : { ended: "client_disconnect" });
    },
  };
}

/** The metered stream as a WHATWG ReadableStream, for callers that return it (metered fetch, AI SDK). */
export function meteredStream<T, S = T>(source: AsyncIterator<S>, hooks: MeteredStreamHooks<T, S>): ReadableStream<T> {
  const parts = meteredParts(source, hooks);
  return new ReadableStream<T>({
    async pull(controller) {
      const next = await parts.read();
      try {
        if (next === undefined) controller.close();
        else for (const part of next) controller.enqueue(part);
      } catch {
        // The reader went away while we settled: nothing is left to tell.
      }
    },
    cancel: () => parts.cancel(),
  });
}

/** The terminal for a read that threw: the request's abort reason, a refusal, or the provider failing. */
function failed(err: unknown, signal: AbortState | undefined): Terminal {
  if (signal?.aborted) return { ended: abortReason(signal) };
  if (TollgateError.is(err)) return { ended: err.code === "upstream_timeout" ? "timeout" : err.status < 500 ? "refused" : "upstream_error", error: err };
  return { ended: "upstream_error", error: new TollgateError("upstream_error", "the provider's stream failed", { cause: err }) };
}

/** Reads a ReadableStream as an iterator whose `return` cancels it (AI SDK streams are not async-iterable everywhere). */
export function readerOf<T>(stream: ReadableStream<T>): AsyncIterator<T> {
  const reader = stream.getReader();
  return {
    async next() {
      const r = await reader.read();
      return r.done ? { done: true, value: undefined } : { done: false, value: r.value };
    },
    async return() {
      await reader.cancel().catch(() => {});
      return { done: true, value: undefined };
    },
  };
}
