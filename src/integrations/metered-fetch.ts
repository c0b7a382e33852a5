import { toTollgateError } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import { abortReason, meteredStream } from "../core/metered-stream.js";
import type { SseEvent } from "../core/format.js";
import { ENDPOINTS } from "../gateway/endpoints.js";
import type { Gate, ModelCall } from "../library/gate.js";
import { formatSse, parseSse } from "../providers/sse.js";

/**
 * Wraps `fetch` for a provider SDK. A request to a model endpoint (…/chat/completions, …/responses,
 * …/messages, …/embeddings) goes through the gate first — its body is replaced by tollgate's
 * validated one with the clamped output cap — and its response is metered as it passes: a stream
 * past the cap is cut and its upstream request aborted. Anything else passes through untouched.
 */
export function meteredFetch(gate: Gate, base: typeof fetch): typeof fetch {
  return async function tollgateFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const url = new URL(input instanceof Request ? input.url : String(input));
    // "/v1/chat/completions" -> "/chat/completions": SDKs put the /v1 in the base URL or the path.
    const endpoint = Object.keys(ENDPOINTS).find((p) => url.pathname.endsWith(p.slice("/v1".length)));
    if (!endpoint || (init?.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase() !== "POST") return base(input, init);
    const { format } = ENDPOINTS[endpoint]!;
    const raw = init?.body ?? (input instanceof Request ? await input.text() : undefined);
    let body: unknown;
    try {
      body = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw as ArrayBuffer));
    } catch {
      throw new TollgateError("invalid_request", "the request body is not valid JSON");
    }
    let call: ModelCall;
    try {
      call = await gate.model(format, body);
    } catch (err) {
      if (!TollgateError.is(err)) throw err;
      // Answer like the provider would, so the SDK raises its own typed error (and does not retry).
      gate.lastRefusal = err;
      return Response.json(format.errorBody(err), { status: err.status, headers: { "x-should-retry": "false", ...(err.retryAfterSeconds ? { "retry-after": String(err.retryAfterSeconds) } : {}) } });
    }
    const upstreamAbort = new AbortController();
    const signal = AbortSignal.any([gate.signal, upstreamAbort.signal, ...(init?.signal ? [init.signal] : [])]);
    let res: Response;
    try {
      res = await base(input instanceof Request ? input.url : input, { ...init, body: JSON.stringify(call.body), signal });
    } catch (err) {
      await call.end(gate.signal.aborted ? { ended: abortReason(gate.signal) } : { ended: "upstream_error", error: toTollgateError(err, undefined) });
      throw err;
    }
    call.meter.started = res.ok;
    if (!res.ok || !res.body) {
      await call.end({ ended: "upstream_error", error: new TollgateError("upstream_error", `the provider answered HTTP ${res.status}`) });
      return res;
    }
    if (String(res.headers.get("content-type")).includes("text/event-stream")) call.streaming();
    else {
      const json = await res.json().catch(() => undefined);
      call.meter.response(json);
      if (call.meter.error) {
        // An error object in a 2xx answer is a failed call (SPEC §5.2); its body is not passed on.
        const err = new TollgateError("upstream_error", "the provider answered with an error");
        await call.end({ ended: "upstream_error", error: err });
        return Response.json(format.errorBody(err), { status: err.status, headers: { "x-should-retry": "false" } });
      }
      await call.end({ ended: "complete" });
      return new Response(JSON.stringify(json), { status: res.status, headers: res.headers });
    }
    const encoder = new TextEncoder();
    const events = meteredStream<SseEvent>(parseSse(res.body)[Symbol.asyncIterator](), {
      signal: gate.signal,
      read(event) {
        const { forward } = call.meter.event(event);
        if (call.meter.capped) return { end: { ended: "output_cap" } };
        return { forward: forward || event.data === "[DONE]" ? [event] : [] };
      },
      settle: (t) => call.end(t),
      stop: () => upstreamAbort.abort(),
    });
    return new Response(events.pipeThrough(new TransformStream<SseEvent, Uint8Array>({ transform: (e, c) => c.enqueue(encoder.encode(formatSse(e))) })), { status: res.status, headers: res.headers });
  };
}
