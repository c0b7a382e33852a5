import { AsyncLocalStorage } from "node:async_hooks";
import { context, ROOT_CONTEXT, SpanStatusCode, trace, type Attributes, type Context, type ContextManager, type Span, type SpanOptions, type TimeInput, type Tracer, type TracerProvider } from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../config/resolve.js";
import { configSchema } from "../config/schema.js";
import { emptyUsageRecord, type UsageRecord } from "../core/usage-record.js";
import { Writable } from "node:stream";
import { Observability } from "./index.js";
import { Tracing } from "./tracing.js";

/** Just enough of an OTel SDK to see what tollgate hands it: spans with their attributes. */
class RecordedSpan {
  name: string;
  attributes: Attributes = {};
  status?: { code: SpanStatusCode; message?: string };
  ended?: TimeInput;
  constructor(name: string, readonly options: SpanOptions) {
    this.name = name;
    Object.assign(this.attributes, options.attributes);
  }
  spanContext() {
    return { traceId: "0".repeat(31) + "1", spanId: "0".repeat(15) + "1", traceFlags: 1 };
  }
  setAttribute(k: string, v: unknown) {
    this.attributes[k] = v as never;
    return this;
  }
  setAttributes(a: Attributes) {
    for (const [k, v] of Object.entries(a)) if (v !== undefined) this.attributes[k] = v;
    return this;
  }
  setStatus(s: { code: SpanStatusCode; message?: string }) {
    this.status = s;
    return this;
  }
  updateName(n: string) {
    this.name = n;
    return this;
  }
  end(t?: TimeInput) {
    this.ended = t ?? Date.now();
  }
  isRecording() {
    return true;
  }
  addEvent() {
    return this;
  }
  addLink() {
    return this;
  }
  addLinks() {
    return this;
  }
  recordException() {}
}

const spans: RecordedSpan[] = [];
const provider: TracerProvider = {
  getTracer: (): Tracer => ({
    startSpan: (name: string, options: SpanOptions = {}) => {
      const span = new RecordedSpan(name, options);
      spans.push(span);
      return span as unknown as Span;
    },
    startActiveSpan: (() => {
      throw new Error("unused");
    }) as Tracer["startActiveSpan"],
  }),
};

class AlsContextManager implements ContextManager {
  private als = new AsyncLocalStorage<Context>();
  active() {
    return this.als.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.als.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable() {
    return this;
  }
  disable() {
    return this;
  }
}

const config = resolveConfig(
  configSchema.parse({
    providers: { up: { type: "openai", base_url: "http://127.0.0.1:1/v1", api_key: "sk-x" } },
    models: { mini: { provider: "up", upstream: "gpt-4o-mini" } },
    plans: { free: { models: ["mini"] } },
    routes: { chat: { path: "/chat", plans: ["free"] } },
  }),
);

function served(id: string): UsageRecord {
  return {
    ...emptyUsageRecord(id, new Date(1_700_000_000_000)),
    user: "alice",
    route: "chat",
    plan: "free",
    endpoint: "chat_completions",
    model_requested: "mini",
    model: "mini",
    input_tokens: 12,
    output_tokens: 34,
    cost_usd: 0.000042,
    usage_source: "provider",
    duration_ms: 250,
    ended: "complete",
  };
}

beforeAll(() => {
  context.setGlobalContextManager(new AlsContextManager());
  trace.setGlobalTracerProvider(provider);
});
afterAll(() => {
  trace.disable();
  context.disable();
});

describe("tracing", () => {
  it("opens a span around the request, active inside it, and closes it with GenAI attributes from the record", async () => {
    const tracing = new Tracing(config);
    let active: Span | undefined;
    await tracing.around("req-1", "chat", async () => {
      active = trace.getActiveSpan();
      tracing.record(served("req-1"));
    });
    const span = spans.at(-1)!;
    expect(active).toBe(span);
    expect(span.name).toBe("chat mini");
    expect(span.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.system": "openai",
      "gen_ai.provider.name": "openai",
      "gen_ai.request.model": "mini",
      "gen_ai.response.model": "gpt-4o-mini",
      "gen_ai.usage.input_tokens": 12,
      "gen_ai.usage.output_tokens": 34,
      "tollgate.decision": "allow",
      "tollgate.cost_usd": 0.000042,
      "tollgate.route": "chat",
    });
    expect(span.ended).toBe(1_700_000_000_250);
    expect(span.status).toBeUndefined();
  });

  it("builds a span from a record with no open span, and marks refusals and failures", () => {
    const tracing = new Tracing(config);
    tracing.record({ ...emptyUsageRecord("req-2", new Date(1_700_000_000_000)), route: "chat", decision: "deny", code: "budget_exceeded", model_requested: "mini" });
    const refused = spans.at(-1)!;
    expect(refused.options.startTime).toBe(1_700_000_000_000);
    expect(refused.attributes).toMatchObject({ "error.type": "budget_exceeded", "tollgate.decision": "deny", "tollgate.code": "budget_exceeded" });
    expect(refused.attributes["gen_ai.usage.input_tokens"]).toBeUndefined();
    // A policy refusal is the product working, not an error; a provider failure is.
    expect(refused.status).toBeUndefined();
    tracing.record({ ...served("req-3"), code: "upstream_error", ended: "upstream_error" });
    expect(spans.at(-1)!.status).toEqual({ code: SpanStatusCode.ERROR, message: "upstream_error" });
  });

  it("starts spans for an SDK registered after the gateway started, and makes none before", async () => {
    const tracing = new Tracing(config);
    trace.disable();
    const before = spans.length;
    expect(await tracing.around("req-4", "chat", async () => "answered")).toBe("answered");
    tracing.record(served("req-4"));
    expect(spans.length).toBe(before);
    trace.setGlobalTracerProvider(provider);
    await tracing.around("req-5", "chat", async () => tracing.record(served("req-5")));
    expect(spans.length).toBe(before + 1);
    expect(spans.at(-1)!.attributes["tollgate.request_id"]).toBe("req-5");
  });

  it("closes a gateway request's span with its record's attributes, though the record's sinks run after the answer", async () => {
    const obs = new Observability(config, { stdout: new Writable({ write: (_c, _e, done) => done() }) });
    await obs.request("req-6", "chat", async () => {
      obs.onRecord(served("req-6"));
      // The record waits for the end of the turn; the span must not be given up on before then.
    });
    const span = spans.at(-1)!;
    expect(span.attributes["tollgate.request_id"]).toBe("req-6");
    expect(span.name).toBe("chat mini");
    expect(span.attributes["gen_ai.usage.output_tokens"]).toBe(34);
    expect(span.ended).toBe(1_700_000_000_250);
    obs.close();
  });
});
