import { TollgateError } from "../core/errors.js";
import type { Ended } from "../core/usage-record.js";
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
      await call.fail(err);
      throw err;
    }
    if (!res.ok || !res.body) {
      await call.fail(new TollgateError("upstream_error", `the provider answered HTTP ${res.status}`));
      return res;
    }
    if (!String(res.headers.get("content-type")).includes("text/event-stream")) {
      const json = await res.json().catch(() => undefined);
      call.meter.response(json);
      await call.finish("complete");
      return new Response(JSON.stringify(json), { status: res.status, headers: res.headers });
    }
    return new Response(meterStream(res.body, call, upstreamAbort, gate), { status: res.status, headers: res.headers });
  };
}

function meterStream(body: ReadableStream<Uint8Array>, call: ModelCall, upstreamAbort: AbortController, gate: Gate): ReadableStream<Uint8Array> {
  const events = parseSse(body)[Symbol.asyncIterator]();
  const encoder = new TextEncoder();
  let finished: Promise<void> | undefined;
  const finish = (ended: Ended) => (finished ??= call.finish(ended));
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let next;
      try {
        next = await events.next();
      } catch (err) {
        await finish(gate.signal.aborted ? "client_disconnect" : "upstream_error");
        controller.error(err);
        return;
      }
      if (next.done) {
        await finish("complete");
        controller.close();
        return;
      }
      const { forward } = call.meter.event(next.value);
      if (call.meter.capped) {
        upstreamAbort.abort();
        await events.return?.(undefined);
        await finish("output_cap");
        controller.close();
        return;
      }
      if (forward || next.value.data === "[DONE]") controller.enqueue(encoder.encode(formatSse(next.value)));
    },
    async cancel() {
      upstreamAbort.abort();
      await events.return?.(undefined).catch(() => {});
      await finish("client_disconnect");
    },
  });
}
