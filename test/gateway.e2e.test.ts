import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

const UPSTREAM_KEY = "sk-upstream-SECRET-do-not-leak-42";
const CALLER_KEY = "tg_test_alice_key";

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    providers: { up: openaiUpstream(mock, "env:UPSTREAM_KEY") },
    models: { "gpt-4o-mini": { provider: "up" }, "house-model": { provider: "up", upstream: "house-v2", price: { input: 0.5, output: 1.5 } } },
    plans: { free: { models: ["gpt-4o-mini", "house-model"], budget: { daily: 1 } } },
    keys: [{ key: CALLER_KEY, user: "alice", plan: "free" }],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "gpt-4o-mini", input: { max_output_tokens: 50 } } },
  }),
  env: { UPSTREAM_KEY },
});

const client = (apiKey = CALLER_KEY) => new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey, maxRetries: 0 });

describe("gateway: OpenAI chat completions through every gate", () => {
  it("serves a completion with the provider's key, never the caller's, and records its usage", async () => {
    const { data, response } = await client()
      .chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello" }] })
      .withResponse();
    expect(data.choices[0]!.message.content).toMatch(/\w/);
    expect(response.headers.get("x-tollgate-request-id")).toMatch(/[0-9a-f-]{36}/);
    expect(response.headers.get("x-tollgate-model")).toBe("gpt-4o-mini");
    expect(mock.requests).toHaveLength(1);
    const upstream = mock.requests[0]!;
    expect(upstream.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(JSON.stringify(upstream.headers)).not.toContain(CALLER_KEY);
    // The route's cap went upstream although the client asked for nothing.
    expect(upstream.body.max_tokens).toBe(50);

    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({
      user: "alice",
      route: "chat",
      plan: "free",
      endpoint: "chat_completions",
      model_requested: "gpt-4o-mini",
      model: "gpt-4o-mini",
      decision: "allow",
      code: null,
      input_tokens: data.usage!.prompt_tokens,
      output_tokens: data.usage!.completion_tokens,
      usage_source: "provider",
      stream: false,
      ended: "complete",
      request_id: response.headers.get("x-tollgate-request-id"),
    });
    expect(rec!.cost_usd).toBeGreaterThan(0);
    expect(rec!.estimated_cost_usd).toBeGreaterThanOrEqual(rec!.cost_usd);
    for (const field of ["ts", "key_id", "ip", "tool_calls", "run_id", "run_step", "docs_retrieved", "attachments", "duration_ms", "ttft_ms", "signals", "clamped"]) {
      expect(rec).toHaveProperty(field);
    }
  });

  it("streams through the SDK and strips the usage chunk the client did not ask for", async () => {
    const { data: stream, response } = await client()
      .chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Stream please" }], stream: true })
      .withResponse();
    let text = "";
    let usageChunks = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usageChunks++;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(usageChunks).toBe(0);
    expect(mock.requests[0]!.body.stream_options).toEqual({ include_usage: true });
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ stream: true, ended: "complete", usage_source: "provider", output_tokens: 20 });
    expect(rec!.ttft_ms).not.toBeNull();
  });

  it("keeps the usage chunk when the client asked for it", async () => {
    const stream = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true, stream_options: { include_usage: true } });
    let usage;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    expect(usage).toMatchObject({ completion_tokens: 20 });
  });

  it("sends the provider the re-serialised request, never the caller's own spelling of it (SPEC §7.7)", async () => {
    // The same request as a hand-written client might spell it: indented, escapes JSON.stringify does not use, 1.0 for 1.
    const raw = '{\n  "model" : "gpt-4o-mini",\n  "messages": [{"role": "user", "content": "\\u0041 \\/ caf\\u00E9"}],\n  "temperature": 1.0\n}\n';
    const res = await fetch(`${gw.url}/chat/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${CALLER_KEY}`, "content-type": "application/json" }, body: raw });
    expect(res.status).toBe(200);
    const sent = mock.requests[0]!.rawBody;
    expect(sent).toBe(JSON.stringify(JSON.parse(sent)));
    expect(JSON.parse(sent)).toMatchObject({ model: "gpt-4o-mini", messages: [{ role: "user", content: "A / café" }], temperature: 1 });

    // What an SDK sends is already in that form: it goes as it came, with the route's cap added.
    await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: 'say "hi" \\ é' }] });
    const second = mock.requests[1]!.rawBody;
    expect(second).toBe(JSON.stringify(JSON.parse(second)));
    expect(JSON.parse(second)).toMatchObject({ messages: [{ content: 'say "hi" \\ é' }], max_tokens: 50 });
  });

  it("resolves an alias to the provider's model id", async () => {
    await client().chat.completions.create({ model: "house-model", messages: [{ role: "user", content: "hi" }] });
    expect(mock.requests[0]!.body.model).toBe("house-v2");
  });

  it("refuses a bad key with 401 unauthorized in OpenAI's format", async () => {
    const err = await client("tg_wrong").chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err.status).toBe(401);
    expect(err.code).toBe("unauthorized");
    expect(err.error).toMatchObject({ type: "authentication_error", code: "unauthorized" });
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses an unknown model with 403 model_not_allowed before anything goes upstream", async () => {
    const err = await client().chat.completions.create({ model: "gpt-5-pro", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(err.code).toBe("model_not_allowed");
    expect(err.param).toBe("model");
    expect(mock.requests).toHaveLength(0);
    const rec = await gw.recordFor(err.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ decision: "deny", code: "model_not_allowed", model_requested: "gpt-5-pro", cost_usd: 0 });
  });

  it("turns an upstream 500 into 502 upstream_error without echoing the provider", async () => {
    mock.setBehavior({ status: 500, errorBody: JSON.stringify({ error: { message: `internal failure at ${mock.url} key ${UPSTREAM_KEY}` } }) });
    const err = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(err.status).toBe(502);
    expect(err.code).toBe("upstream_error");
    const body = JSON.stringify(err.error);
    expect(body).not.toContain(UPSTREAM_KEY);
    expect(body).not.toContain(mock.url);
    expect(body).not.toContain("127.0.0.1");
  });

  it("turns malformed SSE into 502 upstream_error", async () => {
    mock.setBehavior({ malformedSse: true });
    const err = await client()
      .chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true })
      .then(async (s) => {
        for await (const _ of s);
      })
      .catch((e) => e);
    expect(err.status).toBe(502);
    expect(err.code).toBe("upstream_error");
  });

  it("answers 404 in OpenAI's format for an unknown endpoint and serves /healthz", async () => {
    const res = await fetch(`${gw.url}/chat/v1/nope`, { method: "POST", headers: { authorization: `Bearer ${CALLER_KEY}` } });
    expect(res.status).toBe(404);
    expect((await res.json()).error.code).toBe("not_found");
    expect(res.headers.get("x-tollgate-request-id")).toMatch(/[0-9a-f-]{36}/);
    const health = await fetch(`${gw.url}/healthz`);
    expect(await health.json()).toMatchObject({ status: "ok", store: { ok: true } });
  });

  it("lists the models the caller's plan may use", async () => {
    const list = await client().models.list();
    expect(list.data.map((m) => m.id).sort()).toEqual(["gpt-4o-mini", "house-model"]);
  });

  it("never prints a provider key or a tollgate key", () => {
    expect(gw.stdout + gw.stderr).not.toContain(UPSTREAM_KEY);
    expect(gw.stdout + gw.stderr).not.toContain(CALLER_KEY);
  });
});
