import type { EndpointName } from "./config-types.js";
import type { RequestFormat, SseEvent, UpstreamPlan } from "./format.js";
import type { CallSignal } from "./cancel.js";
import type { JsonSource } from "./json-source.js";

export interface UpstreamCall {
  format: RequestFormat;
  body: Record<string, unknown>;
  /**
   * `body` is the client's bytes (`source`) with `fields` set at the top level: a provider that
   * sends JSON may send those bytes patched (core/json-source.ts) instead of serialising `body`.
   */
  patch?: { source: JsonSource; fields: Record<string, unknown> };
  plan: UpstreamPlan;
  stream: boolean;
  /** Aborts on client disconnect, the wall-clock cap or a cap being reached. */
  signal: CallSignal;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
}

/**
 * A stream that also hands over, in one array, every event already parsed (all that one read of
 * the socket carried): a relay meters and writes them together instead of one promise per event.
 * `nextBatch` is an iterator's `next` over those arrays (done at the end), so a reader takes it as
 * it is, with no promise of its own per read; the iterator's `return` closes the stream either way.
 */
export interface BatchedEvents extends AsyncIterableIterator<SseEvent> {
  nextBatch(): Promise<IteratorResult<SseEvent[], undefined>>;
}

export type UpstreamResult =
  /** `raw` is the answer's bytes as the provider sent them, for forwarding unchanged. */
  | { kind: "json"; body: unknown; raw?: Buffer }
  | { kind: "stream"; events: AsyncIterable<SseEvent> | BatchedEvents };

/**
 * A provider adapter: turns tollgate's validated body into a call and hands back JSON or SSE
 * events. It throws TollgateError(upstream_error | upstream_timeout) and never lets the provider's
 * URL, key or raw error body reach the caller.
 */
export interface Provider {
  readonly name: string;
  supports(endpoint: EndpointName): boolean;
  call(call: UpstreamCall): Promise<UpstreamResult>;
  close(): Promise<void>;
}
