import { createOpenAI } from "@ai-sdk/openai";
import { jsonSchema, stepCountIs, streamText, tool, wrapLanguageModel, type LanguageModel } from "ai";
import express from "express";
import { mkdtempSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import "../src/entry/ai-sdk.js";
import "../src/entry/express.js";
import { createTollgate, errorMessage, type Gate, type Tollgate, type UsageRecord } from "../src/index.js";
import { MockUpstream } from "../src/testing/mock-upstream.js";
import { GatewayProcess } from "./gateway-process.js";

/**
 * Library mode through the real AI SDK and Express, the way an app's chat or agent route uses it:
 * `streamText` with tools, UI message streams, refusals the end user sees, one record per model call.
 */
let mock: MockUpstream;
let tg: Tollgate;
let server: Server;
let base = "";
let storePath = "";
const records: UsageRecord[] = [];
const crashes: unknown[] = [];
const onCrash = (err: unknown) => crashes.push(err);

const config = (upstream: string, store: string) => ({
  store,
  admin_key: "tg_admin_lib",
  providers: { up: { type: "openai", base_url: `${upstream}/v1`, api_key: "sk-up" } },
  models: { "gpt-4o-mini": { provider: "up" }, "gpt-4o": { provider: "up" } },
  plans: {
    free: { models: ["gpt-4o-mini"], budget: { daily: 0.01 } },
    tight: { models: ["gpt-4o-mini"], budget: { daily: 0.0002 } },
  },
  keys: [{ key: "tg_ai_key", user: "ann", plan: "free" }],
  routes: {
    chat: { path: "/chat", plans: ["free", "tight"], default_model: "gpt-4o-mini", input: { max_output_tokens: 300, max_prompt_chars: 2_000 }, runs: { max_steps: 4, max_tool_calls: 3 } },
  },
});

/** The app's own login: a session cookie naming the user and plan (no tollgate key involved). */
const identify = (req: express.Request) => {
  const m = /session=([a-z0-9]+):([a-z]+)/.exec(req.headers.cookie ?? "");
  return m ? { user: m[1]!, plan: m[2]! } : null;
};

const search = (gate: Gate, confirm: boolean) =>
  tool({
    inputSchema: jsonSchema<{ q?: string }>({ type: "object", properties: { q: { type: "string" } } }),
    execute: async () => {
      // Apps that also count tool calls themselves must not be charged twice for the model's.
      if (confirm) await gate.toolCall("search");
      return `found ${gate.retrieval(3)} documents`;
    },
  });

beforeAll(async () => {
  process.on("unhandledRejection", onCrash);
  process.on("uncaughtException", onCrash);
  mock = await MockUpstream.start();
  storePath = join(mkdtempSync(join(tmpdir(), "tg-aisdk-")), "shared.db");
  tg = await createTollgate({ config: config(mock.url, `sqlite:${storePath}`), onRecord: (r) => records.push(r) });
  const openai = createOpenAI({ baseURL: `${mock.url}/v1`, apiKey: "sk-up" });
  const model = (gate: Gate, id = "gpt-4o-mini"): LanguageModel => wrapLanguageModel({ model: openai.chat(id), middleware: gate.aiSdk() });

  const app = express();
  app.use(express.json());
  const chat = tg.express({ route: "chat", identify });
  app.post("/api/chat", chat, (req, res) => {
    const gate = (req as express.Request & { tollgate: Gate }).tollgate;
    const result = streamText({
      model: model(gate, req.body.model),
      prompt: req.body.prompt ?? "research this",
      tools: { search: search(gate, !!req.body.confirm) },
      stopWhen: stepCountIs(20),
      maxRetries: 0,
      onError: () => {},
    });
    if (req.body.as === "text") return void result.pipeTextStreamToResponse(res);
    result.pipeUIMessageStreamToResponse(res, { onError: errorMessage });
  });
  app.get("/healthz", (_req, res) => void res.json({ ok: true }));
  app.use(tg.expressErrors());
  server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  server?.close();
  await tg?.close();
  await mock?.close();
  process.off("unhandledRejection", onCrash);
  process.off("uncaughtException", onCrash);
});
beforeEach(() => mock.reset());

const chat = (body: Record<string, unknown>, cookie = "session=ann:free", headers: Record<string, string> = {}) =>
  fetch(`${base}/api/chat`, { method: "POST", headers: { "content-type": "application/json", cookie, ...headers }, body: JSON.stringify(body) });

/** The UI message stream's chunks (`data: {...}` lines). */
async function uiChunks(res: Response): Promise<Record<string, unknown>[]> {
  const text = await res.text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("data: {"))
    .map((l) => JSON.parse(l.slice(6)));
}

const appRecord = async (pred: (r: UsageRecord) => boolean) => {
  for (let i = 0; i < 300; i++) {
    const r = records.find((x) => x.endpoint === "app" && pred(x));
    if (r) return r;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error("no such app record");
};
const callsOf = (parent: UsageRecord) => records.filter((r) => r.parent_id === parent.request_id);

describe("library mode: streamText with tools through gate.aiSdk()", () => {
  it("50 concurrent agent streams over max_tool_calls leave the app alive, each client seeing tollgate's error", async () => {
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: "{}" }, { name: "search", arguments: "{}" }] });
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const res = await chat({}, `session=crowd${i}:free`, { "x-tollgate-run": `crowd-${i}` });
        return { status: res.status, chunks: await uiChunks(res) };
      }),
    );
    expect(crashes).toEqual([]);
    for (const r of results) {
      expect(r.status).toBe(200);
      const error = r.chunks.find((c) => c.type === "error");
      expect(error?.errorText).toMatch(/max_tool_calls of 3/);
    }
    // Still serving.
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const rec = await appRecord((r) => r.run_id === "crowd-7");
    expect(rec).toMatchObject({ user: "crowd7", decision: "deny", code: "run_limit_exceeded", ended: "refused", tool_calls: 3, cost_usd: 0 });
  }, 60_000);

  it("a text stream over max_tool_calls ends instead of crashing the process", async () => {
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: "{}" }, { name: "search", arguments: "{}" }] });
    const res = await chat({ as: "text" }, "session=tex:free", { "x-tollgate-run": "text-1" });
    expect(res.status).toBe(200);
    await res.text();
    expect(crashes).toEqual([]);
    expect(await appRecord((r) => r.run_id === "text-1")).toMatchObject({ ended: "refused", code: "run_limit_exceeded" });
  });

  it("cuts the stream at the route's output cap when the provider ignores max_tokens, charged within the reservation", async () => {
    mock.setBehavior({ outputTokens: 1_000, ignoreMaxTokens: true });
    const res = await chat({}, "session=cap:free", { "x-tollgate-run": "cap-1" });
    const chunks = await uiChunks(res);
    const text = chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");
    expect(text.split(" ").filter(Boolean).length).toBeLessThanOrEqual(300);
    await mock.waitForClose(mock.requests[0]!, 2_000);
    expect(mock.requests[0]!.chunksSent).toBeLessThan(1_000);
    const parent = await appRecord((r) => r.run_id === "cap-1");
    const [call] = callsOf(parent);
    expect(call).toMatchObject({ ended: "output_cap", usage_source: "counted" });
    expect(call!.output_tokens).toBeLessThanOrEqual(301);
    expect(call!.cost_usd).toBeLessThanOrEqual(call!.estimated_cost_usd);
  });

  it("answers a refusal known before the first token with its own status: budget 402, model 403, input 413", async () => {
    const model = await chat({ model: "gpt-4o" }, "session=mo:free");
    expect(model.status).toBe(403);
    expect((await model.json()).error.code).toBe("model_not_allowed");

    const big = await chat({ prompt: "x".repeat(3_000) }, "session=big:free");
    expect(big.status).toBe(413);
    expect((await big.json()).error).toMatchObject({ code: "input_too_large", message: expect.stringMatching(/max_prompt_chars/) });

    // tight: $0.0002 a day. The first call reserves ~$0.00018 and spends less; then nothing fits.
    mock.setBehavior({ outputTokens: 250 });
    const first = await chat({}, "session=tim:tight");
    expect(first.status).toBe(200);
    await first.text();
    const broke = await chat({}, "session=tim:tight");
    expect(broke.status).toBe(402);
    expect(broke.headers.get("x-tollgate-request-id")).toBeTruthy();
    expect((await broke.json()).error.code).toBe("budget_exceeded");
    expect(mock.requests).toHaveLength(1);
    expect(crashes).toEqual([]);
  });

  it("a run stopped by max_steps is recorded refused with its code; each step has its own record", async () => {
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: "{}" }] });
    const res = await chat({ confirm: true }, "session=stp:free", { "x-tollgate-run": "steps-1" });
    const error = (await uiChunks(res)).find((c) => c.type === "error");
    expect(error?.errorText).toMatch(/max_(steps of 4|tool_calls of 3)/);
    const parent = await appRecord((r) => r.run_id === "steps-1");
    // 3 tool calls, each confirmed by the app's own gate.toolCall(): counted once each.
    expect(parent).toMatchObject({ decision: "deny", ended: "refused", code: "run_limit_exceeded", tool_calls: 3, cost_usd: 0 });
    const calls = callsOf(parent);
    expect(calls.length).toBeGreaterThanOrEqual(3);
    const spent = calls.reduce((n, c) => n + c.cost_usd, 0);
    expect(spent).toBeGreaterThan(0);
  });

  it("library responses carry the gateway's x-tollgate-* headers", async () => {
    const res = await chat({ prompt: "hi" }, "session=hdr:free");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-tollgate-request-id")).toBeTruthy();
    expect(res.headers.get("x-tollgate-model")).toBe("gpt-4o-mini");
    expect(res.headers.get("x-tollgate-budget-remaining")).toMatch(/^\d+\.\d+$/);
    await res.text();
  });

  it("identify: the app's session names the user; null falls back to the request's key", async () => {
    const viaSession = await chat({ prompt: "hi" }, "session=zoe:free", { "x-tollgate-run": "id-1" });
    await viaSession.text();
    expect(await appRecord((r) => r.run_id === "id-1")).toMatchObject({ user: "zoe", plan: "free", key_id: null });
    const viaKey = await chat({ prompt: "hi" }, "", { authorization: "Bearer tg_ai_key", "x-tollgate-run": "id-2" });
    await viaKey.text();
    expect(await appRecord((r) => r.run_id === "id-2")).toMatchObject({ user: "ann" });
    const nobody = await chat({ prompt: "hi" }, "");
    expect(nobody.status).toBe(401);
    const unknownPlan = await chat({ prompt: "hi" }, "session=eve:gold");
    expect(unknownPlan.status).toBe(403);
  });

  it("a budget override made through the gateway's admin API applies to the library's next call", async () => {
    const gw = await GatewayProcess.start(config(mock.url, `sqlite:${storePath}`));
    try {
      mock.setBehavior({ outputTokens: 250 });
      const spend = await chat({ prompt: "hi" }, "session=ovr:tight");
      expect(spend.status).toBe(200);
      await spend.text();
      expect((await chat({ prompt: "hi" }, "session=ovr:tight")).status).toBe(402);
      const put = await fetch(`${gw.url}/admin/budgets/user/ovr`, { method: "PUT", headers: { authorization: "Bearer tg_admin_lib", "content-type": "application/json" }, body: JSON.stringify({ daily_usd: 1 }) });
      expect(put.status).toBe(200);
      const after = await chat({ prompt: "hi" }, "session=ovr:tight");
      expect(after.status).toBe(200);
      await after.text();
      expect(after.headers.get("x-tollgate-budget-remaining")).toMatch(/^0\.99/);
    } finally {
      await gw.stop();
    }
  }, 60_000);
});
