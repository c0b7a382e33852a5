import { context, isSpanContextValid, ProxyTracerProvider, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from "@opentelemetry/api";
import type { ResolvedConfig } from "../config/resolve.js";
import { ERROR_CODES } from "../core/errors.js";
import type { UsageRecord } from "../core/usage-record.js";

/**
 * One span per request with the OpenTelemetry GenAI semantic-convention attributes plus tollgate's
 * decision and cost. Only `@opentelemetry/api` is used: until the host registers an SDK (for the
 * CLI, `node --import ./otel.js …`) every call here is a no-op on the API's own no-op tracer.
 *
 * The gateway opens the span when a request arrives, so the provider call (and any HTTP
 * instrumentation under it) nests inside; the usage record closes it with its attributes. A record
 * with no open span (the library adapters) gets a span built from the record's own times.
 */
export class Tracing {
  private readonly tracer: Tracer = trace.getTracer("tollgate");
  private readonly open = new Map<string, Span>();

  constructor(private readonly config: ResolvedConfig) {}

  /**
   * Runs `fn` inside the request's span; ends the span if no record did (a bug path). `settle`
   * hands over the records still waiting for their sinks (Observability runs them after the
   * answer), so the request's own record has closed its span by then.
   */
  around<T>(requestId: string, route: string, fn: () => Promise<T>, settle?: () => void): Promise<T> {
    // Without an SDK, fn's own promise: no async frame of ours around every request.
    if (!sdkRegistered()) return fn();
    return this.inSpan(requestId, route, fn, settle);
  }

  private async inSpan<T>(requestId: string, route: string, fn: () => Promise<T>, settle?: () => void): Promise<T> {
    const span = this.tracer.startSpan("tollgate.request", { kind: SpanKind.CLIENT, attributes: { "tollgate.request_id": requestId, "tollgate.route": route } });
    // A span that neither records nor carries a context to propagate needs no map or context switch.
    if (!span.isRecording() && !isSpanContextValid(span.spanContext())) return fn();
    this.open.set(requestId, span);
    try {
      return await context.with(trace.setSpan(context.active(), span), fn);
    } finally {
      if (this.open.has(requestId)) settle?.();
      if (this.open.delete(requestId)) span.end();
    }
  }

  record(r: UsageRecord): void {
    let span = this.open.get(r.request_id);
    if (span) this.open.delete(r.request_id);
    else if (!sdkRegistered()) return;
    else span = this.tracer.startSpan("tollgate.request", { kind: SpanKind.CLIENT, startTime: Date.parse(r.ts) });
    // A span that is not recording (no SDK, or sampled out) ignores names, attributes and status.
    if (!span.isRecording()) return span.end();
    const operation = r.endpoint === "embeddings" ? "embeddings" : "chat";
    span.updateName(`${operation} ${r.model ?? r.model_requested ?? "unknown"}`);
    span.setAttributes(this.attributes(r, operation));
    if (r.code !== null) {
      span.setAttribute("error.type", r.code);
      if (ERROR_CODES[r.code] >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: r.code });
    } else if (r.ended === "upstream_error" || r.ended === "timeout") {
      span.setAttribute("error.type", r.ended);
      span.setStatus({ code: SpanStatusCode.ERROR, message: r.ended });
    }
    span.end(Date.parse(r.ts) + r.duration_ms);
  }

  private attributes(r: UsageRecord, operation: string): Attributes {
    const model = r.model !== null ? this.config.models[r.model] : undefined;
    const provider = model ? this.config.providers[model.provider]?.type : undefined;
    const a: Attributes = {
      "gen_ai.operation.name": operation,
      "tollgate.request_id": r.request_id,
      "tollgate.route": r.route ?? undefined,
      "tollgate.endpoint": r.endpoint ?? undefined,
      "tollgate.plan": r.plan ?? undefined,
      "tollgate.user": r.user ?? undefined,
      "tollgate.key_id": r.key_id ?? undefined,
      "client.address": r.ip ?? undefined,
      "tollgate.decision": r.decision,
      "tollgate.code": r.code ?? undefined,
      "tollgate.cost_usd": r.cost_usd,
      "tollgate.estimated_cost_usd": r.estimated_cost_usd,
      "tollgate.usage_source": r.usage_source ?? undefined,
      "tollgate.ended": r.ended ?? undefined,
      "tollgate.stream": r.stream,
      "tollgate.signals": r.signals,
      "tollgate.run_id": r.run_id ?? undefined,
    };
    if (provider) {
      // gen_ai.system is the older name of gen_ai.provider.name; backends still read either.
      a["gen_ai.system"] = provider;
      a["gen_ai.provider.name"] = provider;
    }
    if (r.model_requested !== null) a["gen_ai.request.model"] = r.model_requested;
    if (model && r.ended !== null) a["gen_ai.response.model"] = model.upstream;
    if (r.usage_source !== null) {
      a["gen_ai.usage.input_tokens"] = r.input_tokens;
      a["gen_ai.usage.output_tokens"] = r.output_tokens;
    }
    if (r.ttft_ms !== null) a["tollgate.ttft_ms"] = r.ttft_ms;
    return a;
  }
}

/**
 * Whether a host registered an OTel SDK (checked per request, so one registered after startup is
 * picked up). Without one every span is the API's no-op, and even making it showed in the profile.
 */
function sdkRegistered(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer("tollgate") !== undefined;
}
