import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool, wrapLanguageModel } from "ai";
import express from "express";
import OpenAI from "openai";
import { mkdtempSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTollgate, type Gate, type Tollgate, type UsageRecord } from "../src/index.js";
import "../src/entry/ai-sdk.js";
import "../src/entry/express.js";
import { MockUpstream } from "../src/testing/mock-upstream.js";
import { GatewayProcess } from "./gateway-process.js";

let mock: MockUpstream;
let tg: Tollgate;
let server: Server;
let base = "";
let configPath = "";
const records: UsageRecord[] = [];

const config = (upstream: string, store: string) => ({
  store,
  providers: { up: { type: "openai", base_url: `${upstream}/v1`, api_key: "sk-up" } },
  models: { "gpt-4o-mini": { provider: "up" } },
  plans: { free: { models: ["gpt-4o-mini"], budget: { daily: 0.002 } } },
  keys: [
    { key: "tg_lib_key", user: "lia", plan: "free" },
    { key: "tg_lib_tools", user: "tom", plan: "free" },
    { key: "tg_lib_spender", user: "sue", plan: "free" },
  ],
  routes: {
    chat: { path: "/chat", plans: ["free"], default_model: "gpt-4o-mini" },
    agent: { path: "/agent", plans: ["free"], default_model: "gpt-4o-mini", input: { max_docs: 6, max_output_tokens: 200 }, runs: { max_steps: 5, max_tool_calls: 100 } },
    tools: { path: "/tools", plans: ["free"], input: { max_output_tokens: 200 }, runs: { max_steps: 50, max_tool_calls: 5 } },
    shared: { path: "/shared", plans: ["free"], default_model: "gpt-4o-mini", input: { max_output_tokens: 200 }, limits: [{ per: "user", requests: 3, window: "1m" }] },
    summarize: { path: "/summarize", plans: ["free"], limits: [{ per: "user", files: 2, window: "1h" }], input: { max_output_tokens: 200, max_attachments: 1, max_attachment_bytes: 5_242_880 } },
  },
});

type Req = express.Request & { tollgate: Gate };

beforeAll(async () => {
  mock = await MockUpstream.start();
  const dir = mkdtempSync(join(tmpdir(), "tg-lib-"));
  configPath = join(dir, "tollgate.yaml");
  writeFileSync(configPath, stringify(config(mock.url, `sqlite:${join(dir, "shared.db")}`)));
  tg = await createTollgate({ config: configPath, onRecord: (r) => records.push(r) });

  const openai = createOpenAI({ baseURL: `${mock.url}/v1`, apiKey: "sk-up" });
  const app = express();
  const agent = async (req: express.Request, res: express.Response) => {
    const gate = (req as Req).tollgate;
    const model = wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: gate.aiSdk() });
    const result = await generateText({
      model,
      prompt: "research this",
      tools: {
        search: tool({
          inputSchema: jsonSchema<{ q?: string }>({ type: "object", properties: { q: { type: "string" } } }),
          execute: async () => `found ${gate.retrieval(50)} documents`,
        }),
      },
      stopWhen: stepCountIs(50),
      maxRetries: 0,
      abortSignal: gate.signal,
    });
    res.json({ steps: result.steps.length, docs: gate.record.docs_retrieved });
  };
  app.post("/api/agent", tg.express({ route: "agent" }), agent);
  app.post("/api/tools", tg.express({ route: "tools" }), agent);
  app.post("/api/chat", tg.express({ route: "agent" }), async (req, res) => {
    const gate = (req as Req).tollgate;
    const model = wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: gate.aiSdk() });
    const result = streamText({ model, prompt: "tell me a long story", maxRetries: 0, abortSignal: gate.signal, onError: () => {} });
    result.pipeTextStreamToResponse(res);
  });
  app.post("/api/summarize", tg.express({ route: "summarize" }), express.raw({ type: "*/*", limit: "20mb" }), async (req, res) => {
    const gate = (req as Req).tollgate;
    await gate.upload({ size: (req.body as Buffer).length, name: "doc.pdf" });
    res.json({ ok: true });
  });
  app.post("/api/shared", tg.express({ route: "shared" }), (_req, res) => {
    res.json({ ok: true });
  });
  app.post("/api/retrieve", tg.express({ route: "agent" }), (req, res) => {
    res.json({ k: (req as Req).tollgate.retrieval(50) });
  });
  app.post("/api/sdk", tg.express({ route: "agent" }), express.json(), async (req, res) => {
    const gate = (req as Req).tollgate;
    const client = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: "sk-up", fetch: gate.fetch(), maxRetries: 0 });
    if (req.body.stream) {
      const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "go" }], max_tokens: 5000, stream: true });
      let text = "";
      for await (const c of stream) text += c.choices[0]?.delta?.content ?? "";
      res.json({ text });
    } else {
      const out = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "go" }], max_tokens: 5000 });
      res.json({ usage: out.usage });
    }
  });
  app.use(tg.expressErrors());
  server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const addr = server.address() as { port: number };
  base = `http://127.0.0.1:${addr.port}`;
});

afterAll(async () => {
  server?.close();
  await tg?.close();
  await mock?.close();
});
beforeEach(() => mock.reset());

const post = (path: string, key: string, body: BodyInit = "{}", init: RequestInit = {}) =>
  fetch(`${base}${path}`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body, ...init });

const recordFor = async (pred: (r: UsageRecord) => boolean) => {
  for (let i = 0; i < 200; i++) {
    const r = records.find(pred);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error("no such usage record");
};

describe("library mode: Express + the AI SDK", () => {
  it("stops an agent loop that would run 50 steps at the configured 5, and the usage record says so", async () => {
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: "{}" }] });
    const res = await post("/api/agent", "tg_lib_key", "{}", { headers: { authorization: "Bearer tg_lib_key", "x-tollgate-run": "loop-1" } });
    expect(res.status).toBe(429);
    expect((await res.json()).error.code).toBe("run_limit_exceeded");
    expect(mock.requests).toHaveLength(5);
    // The app request's record: the run's counters and how it ended, no cost of its calls (SPEC §6).
    const rec = await recordFor((r) => r.run_id === "loop-1" && r.endpoint === "app");
    expect(rec).toMatchObject({ route: "agent", user: "lia", decision: "deny", code: "run_limit_exceeded", ended: "refused", run_step: 5, tool_calls: 5, cost_usd: 0, parent_id: null });
    // Each model call wrote its own record, tied to the app request.
    await recordFor((r) => records.filter((c) => c.parent_id === rec.request_id).length === 5);
    const calls = records.filter((c) => c.parent_id === rec.request_id);
    for (const c of calls) {
      expect(c).toMatchObject({ model: "gpt-4o-mini", user: "lia", run_id: "loop-1", decision: "allow", ended: "complete", usage_source: "provider" });
      expect(c.output_tokens).toBeGreaterThan(0);
      expect(c.cost_usd).toBeGreaterThan(0);
    }
    expect(calls.map((c) => c.run_step).sort()).toEqual([1, 2, 3, 4, 5]);
    // The output cap went upstream on every step.
    expect(mock.requests.every((r) => r.body.max_tokens === 200)).toBe(true);
  });

  it("refuses the sixth tool call", async () => {
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: "{}" }, { name: "search", arguments: "{}" }] });
    const res = await post("/api/tools", "tg_lib_tools", "{}", { headers: { authorization: "Bearer tg_lib_tools", "x-tollgate-run": "tools-1" } });
    expect(res.status).toBe(429);
    const body = await res.json();
    expect(body.error.code).toBe("run_limit_exceeded");
    expect(body.error.message).toMatch(/max_tool_calls of 5/);
    expect(mock.requests).toHaveLength(3);
    const rec = await recordFor((r) => r.run_id === "tools-1" && r.endpoint === "app");
    expect(rec).toMatchObject({ tool_calls: 5, ended: "refused", code: "run_limit_exceeded" });
  });

  it("meters an app's own openai SDK calls through gate.fetch(): clamped upstream, settled from usage, capped streams", async () => {
    const plain = await post("/api/sdk", "tg_lib_key", JSON.stringify({ stream: false }));
    expect(plain.status).toBe(200);
    const { usage } = await plain.json();
    expect(mock.requests[0]!.body.max_tokens).toBe(200);
    const rec = await recordFor((r) => r.request_id === plain.headers.get("x-request-id") || (r.model === "gpt-4o-mini" && r.input_tokens === usage.prompt_tokens && r.output_tokens === usage.completion_tokens));
    expect(rec.usage_source).toBe("provider");

    mock.reset();
    mock.setBehavior({ outputTokens: 400, ignoreMaxTokens: true });
    const streamed = await post("/api/sdk", "tg_lib_key", JSON.stringify({ stream: true }));
    expect(streamed.status).toBe(200);
    const { text } = await streamed.json();
    // The provider ignored max_tokens; the metered fetch cut the stream at the route's 200.
    expect(text.split(" ").filter(Boolean).length).toBeLessThanOrEqual(200);
    await mock.waitForClose(mock.requests[0]!, 2_000);
    expect(mock.requests[0]!.chunksSent).toBeLessThan(400);
  });

  it("gate.fetch(): a 200 answer carrying an error object is a failed call, its body not passed on, nothing charged", async () => {
    mock.setBehavior({ errorIn200: "Incorrect API key provided: Bearer sk-up-leaked" });
    const res = await post("/api/sdk", "tg_lib_key", JSON.stringify({ stream: false }));
    expect(res.status).toBeGreaterThanOrEqual(500);
    expect(await res.text()).not.toContain("sk-up-leaked");
    const rec = await recordFor((r) => r.endpoint === "chat_completions" && r.ended === "upstream_error");
    expect(rec).toMatchObject({ code: "upstream_error", cost_usd: 0 });
  });

  it("feeds the same Prometheus metrics as the gateway", async () => {
    const { contentType, body } = await tg.metrics();
    expect(contentType).toMatch(/text\/plain/);
    expect(body).toMatch(/tollgate_requests_total\{route="agent",endpoint="[a-z_]+",decision="deny",code="run_limit_exceeded"\} [1-9]/);
    expect(body).toMatch(/tollgate_spend_usd_total\{route="agent",model="gpt-4o-mini",plan="free"\} 0\.\d*[1-9]/);
  });

  it("retrieval(50) returns the route's max_docs", async () => {
    const res = await post("/api/retrieve", "tg_lib_key");
    expect(await res.json()).toEqual({ k: 6 });
  });

  it("refuses a 6 MB upload with 413 and the third file within an hour with 429", async () => {
    const six = await post("/api/summarize", "tg_lib_key", Buffer.alloc(6 * 1024 * 1024), { headers: { authorization: "Bearer tg_lib_key", "content-type": "application/pdf" } });
    expect(six.status).toBe(413);
    expect((await six.json()).error.code).toBe("input_too_large");
    const small = () => post("/api/summarize", "tg_lib_key", Buffer.alloc(1000), { headers: { authorization: "Bearer tg_lib_key", "content-type": "application/pdf" } });
    expect((await small()).status).toBe(200);
    expect((await small()).status).toBe(200);
    const third = await small();
    expect(third.status).toBe(429);
    expect((await third.json()).error.code).toBe("rate_limited");
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThan(0);
  });

  it("aborts gate.signal and the model call when the client disconnects", async () => {
    mock.setBehavior({ outputTokens: 500, ignoreMaxTokens: true, tokenIntervalMs: 20 });
    const ac = new AbortController();
    const res = await post("/api/chat", "tg_lib_key", "{}", { signal: ac.signal });
    const reader = res.body!.getReader();
    await reader.read();
    // Mid-stream: tokens have been flowing, however slowly a loaded machine sends them.
    await expect.poll(() => mock.requests[0]?.chunksSent ?? 0, { timeout: 10_000, interval: 10 }).toBeGreaterThanOrEqual(10);
    const gone = performance.now();
    ac.abort();
    const closedAt = await mock.waitForClose(mock.requests[0]!, 2_000);
    expect(closedAt - gone).toBeLessThan(200);
    const rec = await recordFor((r) => r.route === "agent" && r.ended === "client_disconnect" && r.parent_id !== null);
    expect(rec.output_tokens).toBeGreaterThan(0);
    expect(rec.cost_usd).toBeGreaterThan(0);
  });

  it("refuses a bad key before the handler runs", async () => {
    const res = await post("/api/agent", "tg_nope");
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe("unauthorized");
    expect(mock.requests).toHaveLength(0);
  });

  it("shares budgets and window limits with the gateway when both use the same store", async () => {
    const gw = await GatewayProcess.start(config(mock.url, tg.config.store));
    try {
      mock.setBehavior({ outputTokens: 200 });
      // Spend sue's $0.002 daily budget through the library…
      let status = 200;
      for (let i = 0; i < 40 && status === 200; i++) {
        status = (await post("/api/sdk", "tg_lib_spender", JSON.stringify({ stream: false }))).status;
      }
      // The SDK call was refused through gate.fetch(); the app answered with tollgate's refusal.
      expect(status).toBe(402);
      // …and the gateway sees it spent.
      const r = await fetch(`${gw.url}/chat/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer tg_lib_spender", "content-type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 200 }),
      });
      expect(r.status).toBe(402);
      expect((await r.json()).error.code).toBe("budget_exceeded");

      // Window limits too: 3 requests a minute per user, two taken in the app, one by the gateway.
      expect((await post("/api/shared", "tg_lib_key")).status).toBe(200);
      expect((await post("/api/shared", "tg_lib_key")).status).toBe(200);
      const viaGateway = () =>
        fetch(`${gw.url}/shared/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: "Bearer tg_lib_key", "content-type": "application/json" },
          body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_tokens: 20 }),
        });
      expect((await viaGateway()).status).toBe(200);
      expect((await viaGateway()).status).toBe(429);
      expect((await post("/api/shared", "tg_lib_key")).status).toBe(429);
    } finally {
      await gw.stop();
    }
  }, 60_000);
});
