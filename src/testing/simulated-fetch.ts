import { ENDPOINTS } from "../gateway/endpoints.js";
import { formatSse } from "../providers/sse.js";
import { SimulatedProvider } from "../providers/simulated.js";

/**
 * A `fetch` that answers OpenAI/Anthropic API calls with tollgate's simulated provider, in process:
 * give it to an SDK (`createOpenAI({ fetch: simulatedFetch() })`, `new OpenAI({ fetch })`) to try
 * library mode with no provider account and no network.
 */
export function simulatedFetch(opts: { tokensPerSecond?: number } = {}): typeof fetch {
  const provider = new SimulatedProvider({ name: "simulated", type: "simulated", headers: {}, tokensPerSecond: opts.tokensPerSecond ?? 200, anthropicVersion: "" });
  return async function simulated(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const suffix = Object.keys(ENDPOINTS).find((p) => url.pathname.endsWith(p));
    if (!suffix) return Response.json({ error: { message: `the simulated provider has no ${url.pathname}`, type: "invalid_request_error" } }, { status: 404 });
    const { format } = ENDPOINTS[suffix]!;
    const body = JSON.parse(String(init?.body ?? (input instanceof Request ? await input.text() : "{}"))) as Record<string, unknown>;
    const inspection = format.inspect(body);
    const requested = Object.values(inspection.outputTokens);
    const signal = init?.signal ?? undefined;
    const result = await provider.call({
      format,
      body,
      plan: { model: String(body.model ?? "simulated"), maxOutputTokens: requested.length ? Math.min(...requested) : 256, reasoning: false },
      stream: inspection.stream,
      signal: signal ?? new AbortController().signal,
      firstByteTimeoutMs: 0,
      idleTimeoutMs: 0,
    });
    if (result.kind === "json") return Response.json(result.body);
    const encoder = new TextEncoder();
    const events = result.events[Symbol.asyncIterator]();
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const next = await events.next();
          if (next.done) controller.close();
          else controller.enqueue(encoder.encode(formatSse(next.value)));
        } catch (err) {
          controller.error(err);
        }
      },
      async cancel() {
        await events.return?.();
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  };
}

