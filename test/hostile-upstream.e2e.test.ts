import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterEach, describe, expect, it } from "vitest";
import { catalogPrice, costOf, configPrice } from "../src/core/metering/prices.js";
import type { UsageRecord } from "../src/core/usage-record.js";
import { type MockBehavior } from "../src/testing/mock-upstream.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * Upstreams that misbehave on purpose (SPEC §5.2, §6, §7.8): an error object in a 200 answer that
 * echoes the provider key, usage that cannot be true, a model other than the one asked for, and
 * silence. Each goes through a real `tollgate serve` and the official SDKs.
 */

const UPSTREAM_KEY = "sk-proj-hostile-0123456789abcdef";
const LEAK = `Incorrect API key provided: Bearer ${UPSTREAM_KEY}. You can find your API key at https://platform.openai.com/account/api-keys.`;
const CALLER = "tg_hostile_alice";
const TIGHT = "tg_hostile_tight";
const CLAMP = 100;
const HOUSE_PRICE = { input: 1, output: 2 };

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    server: { idle_timeout: "1s" },
    providers: {
      up: openaiUpstream(mock, "env:UPSTREAM_KEY"),
      anth: { type: "anthropic", base_url: mock.url, api_key: "env:UPSTREAM_KEY" },
    },
    models: {
      house: { provider: "up", upstream: "gpt-4o-mini", price: HOUSE_PRICE },
      premium: { provider: "up", upstream: "gpt-4o", price: { input: 2.5, output: 10 } },
      claude: { provider: "anth", upstream: "claude-haiku-4-5", price: HOUSE_PRICE },
      embed: { provider: "up", upstream: "text-embedding-3-small", price: { input: 0.02, output: 0 } },
    },
    plans: {
      free: { models: ["house", "premium", "claude", "embed"], budget: { daily: 10 } },
      // About four reservations of a short prompt with 100 output tokens at $1/$2 per 1M.
      tight: { models: ["house", "claude", "embed"], budget: { daily: 0.001 } },
    },
    keys: [
      { key: CALLER, user: "alice", plan: "free" },
      { key: TIGHT, user: "tina", plan: "tight" },
      ...Object.keys(bodies).map((_, i) => ({ key: `${TIGHT}_${i}`, user: `tight-${i}`, plan: "tight" })),
    ],
    routes: { api: { path: "/api", plans: ["free", "tight"], default_model: "house", input: { max_output_tokens: CLAMP } } },
  }),
  env: { UPSTREAM_KEY },
  upstream: { reset: false },
});
afterEach(() => {
  mock.reset();
  // Whatever a test made the upstream say, the key never reached a log line.
  expect(gw.stdout).not.toContain(UPSTREAM_KEY);
  expect(gw.stderr).not.toContain(UPSTREAM_KEY);
});

const openai = (apiKey = CALLER) => new OpenAI({ baseURL: `${gw.url}/api/v1`, apiKey, maxRetries: 0, logLevel: "off" });
const anthropic = (apiKey = CALLER) => new Anthropic({ baseURL: `${gw.url}/api`, apiKey, maxRetries: 0, logLevel: "off" });
const messages = [{ role: "user" as const, content: "Say hello" }];

const bodies = {
  "/v1/chat/completions": { model: "house", messages },
  "/v1/responses": { model: "house", input: "Say hello" },
  "/v1/messages": { model: "claude", max_tokens: 50, messages },
  "/v1/embeddings": { model: "embed", input: "Say hello" },
} as const;

async function post(path: keyof typeof bodies, extra: object = {}, key = CALLER): Promise<{ res: Response; text: string; record: UsageRecord }> {
  const res = await fetch(`${gw.url}/api${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ ...bodies[path], ...extra }),
  });
  const text = await res.text();
  return { res, text, record: await gw.recordFor(res.headers.get("x-tollgate-request-id")) };
}

function expectNoLeak(res: Response, text: string): void {
  expect(text).not.toContain(UPSTREAM_KEY);
  expect(text).not.toContain("Incorrect API key");
  expect(JSON.stringify([...res.headers])).not.toContain(UPSTREAM_KEY);
}

describe("an error object in a 200 answer is an upstream_error, and its body goes nowhere", () => {
  for (const [i, path] of (Object.keys(bodies) as (keyof typeof bodies)[]).entries()) {
    it(`non-streaming ${path}: 502 upstream_error, nothing charged, the reservation released`, async () => {
      mock.setBehavior({ errorIn200: LEAK });
      const { res, text, record } = await post(path, {}, `${TIGHT}_${i}`);
      expectNoLeak(res, text);
      expect(res.status).toBe(502);
      const body = JSON.parse(text);
      expect(path === "/v1/messages" ? body.error.code : body.error.code).toBe("upstream_error");
      if (path === "/v1/messages") expect(body.type).toBe("error");
      expect(record).toMatchObject({ ended: "upstream_error", code: "upstream_error", cost_usd: 0, output_tokens: 0 });

      // Released, not held until the lease expires: more failures than the $0.001 budget has room
      // for reservations are all answered 502, never 402, and the budget still serves afterwards.
      for (let n = 0; n < 12; n++) expect((await post(path, {}, `${TIGHT}_${i}`)).res.status).toBe(502);
      mock.setBehavior({});
      const ok = await post(path, {}, `${TIGHT}_${i}`);
      expect(ok.res.status).toBe(200);
      expect(Number(ok.res.headers.get("x-tollgate-budget-remaining"))).toBeCloseTo(0.001 - ok.record.estimated_cost_usd, 6);
    });
  }

  it("the official SDKs raise a 502 APIError and never see the provider's message", async () => {
    mock.setBehavior({ errorIn200: LEAK });
    const chat = await openai().chat.completions.create({ model: "house", messages }).catch((e: unknown) => e);
    expect(chat).toBeInstanceOf(OpenAI.APIError);
    expect((chat as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    expect((chat as InstanceType<typeof OpenAI.APIError>).code).toBe("upstream_error");
    expect(String((chat as Error).message)).not.toContain(UPSTREAM_KEY);
    const claude = await anthropic().messages.create({ model: "claude", max_tokens: 50, messages }).catch((e: unknown) => e);
    expect(claude).toBeInstanceOf(Anthropic.APIError);
    expect((claude as InstanceType<typeof Anthropic.APIError>).status).toBe(502);
    expect(JSON.stringify((claude as InstanceType<typeof Anthropic.APIError>).error)).not.toContain(UPSTREAM_KEY);
  });

  for (const path of ["/v1/chat/completions", "/v1/responses", "/v1/messages"] as const) {
    it(`streaming ${path}: an error event before any token is a 502; after tokens the stream ends in tollgate's own error`, async () => {
      mock.setBehavior({ errorIn200: LEAK, outputTokens: 0 });
      const first = await post(path, { stream: true });
      expectNoLeak(first.res, first.text);
      expect(first.res.status).toBe(502);
      expect(first.record).toMatchObject({ ended: "upstream_error", cost_usd: 0 });

      mock.setBehavior({ errorIn200: LEAK, outputTokens: 3 });
      const mid = await post(path, { stream: true });
      expectNoLeak(mid.res, mid.text);
      expect(mid.text).toContain("upstream_error");
      expect(mid.record).toMatchObject({ ended: "upstream_error", usage_source: "counted" });
      // Counted from the stream: exact with an OpenAI tokenizer, an estimate for Claude.
      if (path === "/v1/messages") expect(mid.record.output_tokens).toBeGreaterThanOrEqual(3);
      else expect(mid.record.output_tokens).toBe(3);
      expect(mid.record.cost_usd).toBeGreaterThan(0);
    });
  }

  it("the SDK stream helpers raise on the error event without the provider's message", async () => {
    mock.setBehavior({ errorIn200: LEAK, outputTokens: 2 });
    const stream = await openai().chat.completions.create({ model: "house", messages, stream: true });
    const seen: string[] = [];
    const failure = await (async () => {
      for await (const chunk of stream) seen.push(chunk.choices[0]?.delta?.content ?? "");
    })().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(OpenAI.APIError);
    expect(String((failure as Error).message)).not.toContain(UPSTREAM_KEY);
    expect(seen.join("")).toBe("hello world");

    const claude = anthropic().messages.stream({ model: "claude", max_tokens: 50, messages });
    const err = await claude.finalMessage().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect(String((err as Error).message)).not.toContain(UPSTREAM_KEY);
  });
});

describe("usage that cannot be true is charged as the reservation, recorded and logged", () => {
  const implausible: [string, MockBehavior["reportUsage"]][] = [
    ["1e308 output tokens", { output: 1e308 }],
    ["negative output tokens", { output: -5 }],
    ["fractional output tokens", { output: 2.5 }],
    ["a string of output tokens", { output: "12" }],
    [`more output than the clamp of ${CLAMP}`, { output: CLAMP * 50 }],
    ["1e308 input tokens", { input: 1e308 }],
    ["negative input tokens", { input: -1 }],
    ["a billion input tokens for a short prompt", { input: 1_000_000_000 }],
  ];
  for (const [what, reportUsage] of implausible) {
    for (const path of ["/v1/chat/completions", "/v1/messages"] as const) {
      it(`${path} reporting ${what}`, async () => {
        mock.setBehavior({ reportUsage });
        const { res, record } = await post(path);
        expect(res.status).toBe(200);
        const reservedOutput = path === "/v1/messages" ? bodies[path].max_tokens : CLAMP;
        expect(record).toMatchObject({ usage_source: "reserved", ended: "complete", output_tokens: reservedOutput });
        expect(record.cost_usd).toBe(record.estimated_cost_usd);
        await expect.poll(() => gw.stderr, { timeout: 10_000 }).toContain(record.request_id);
        expect(gw.stderr).toMatch(/implausible usage/);
      });
    }
  }

  it("streamed usage too: a stream whose final usage is absurd is charged its reservation", async () => {
    mock.setBehavior({ reportUsage: { output: 1e308 } });
    const { res, record } = await post("/v1/chat/completions", { stream: true });
    expect(res.status).toBe(200);
    expect(record).toMatchObject({ usage_source: "reserved", ended: "complete" });
    expect(record.cost_usd).toBe(record.estimated_cost_usd);
  });

  it("a tiny budget stops an upstream that reports absurd usage: every served request is recorded and charged", async () => {
    mock.setBehavior({ reportUsage: { output: 1e308 } });
    const spendBefore = await tightSpend();
    const results: { status: number; record: UsageRecord }[] = [];
    for (let i = 0; i < 8; i++) {
      const { res, record } = await post("/v1/chat/completions", {}, TIGHT);
      results.push({ status: res.status, record });
    }
    const served = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 402);
    expect(served.length + refused.length).toBe(8);
    const perRequest = served[0]!.record.estimated_cost_usd;
    // What fits the $0.001 budget at the reservation, and no more.
    expect(served).toHaveLength(Math.floor(1000 / Math.round(perRequest * 1e6)));
    expect(refused.length).toBeGreaterThan(0);
    for (const r of served) expect(r.record).toMatchObject({ usage_source: "reserved", cost_usd: perRequest });
    const spent = served.reduce((s, r) => s + Math.round(r.record.cost_usd * 1e6), 0);
    expect(spent).toBeLessThanOrEqual(1000);

    expect((await tightSpend()) - spendBefore).toBeCloseTo(spent / 1e6, 6);
  });

  /** The tight plan's spend on the house model, as /metrics reports it. */
  async function tightSpend(): Promise<number> {
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    const line = metrics.split("\n").find((l) => l.startsWith("tollgate_spend_usd_total") && l.includes('plan="tight"') && l.includes('model="house"'));
    return line ? Number(line.split(" ").at(-1)) : 0;
  }
});

describe("an upstream that answers another model", () => {
  it("is charged at the answered model's price when that is higher, and logged", async () => {
    // A short answer, so the dearer price stays inside the reservation and is charged whole.
    mock.setBehavior({ answerModel: "gpt-4o", outputTokens: 4 });
    const { res, text, record } = await post("/v1/chat/completions");
    expect(res.status).toBe(200);
    const usage = JSON.parse(text).usage;
    const tokens = { inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens };
    const asked = costOf(configPrice(HOUSE_PRICE), tokens);
    const answered = costOf(catalogPrice("gpt-4o", "openai")!, tokens);
    expect(answered).toBeGreaterThan(asked);
    expect(Math.round(record.cost_usd * 1e6)).toBe(answered);
    expect(record.usage_source).toBe("provider");
    await expect.poll(() => gw.stderr, { timeout: 10_000 }).toMatch(/answered with model gpt-4o/);
  });

  it("streamed: the model named in the chunks is priced the same way", async () => {
    mock.setBehavior({ answerModel: "gpt-4o" });
    const { res, text, record } = await post("/v1/chat/completions", { stream: true, stream_options: { include_usage: true } });
    expect(res.status).toBe(200);
    const usage = text.split("\n\n").map((e) => e.slice("data: ".length)).filter((d) => d.startsWith("{")).map((d) => JSON.parse(d)).find((c) => c.usage)!.usage;
    const answered = costOf(catalogPrice("gpt-4o", "openai")!, { inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens });
    const asked = costOf(configPrice(HOUSE_PRICE), { inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens });
    // Past the reservation the budgets were checked against, the dearer price stops (SPEC §7.1).
    const reserved = Math.round(record.estimated_cost_usd! * 1e6);
    expect(answered).toBeGreaterThan(reserved);
    expect(Math.round(record.cost_usd * 1e6)).toBe(Math.max(asked, reserved));
    await expect.poll(() => gw.stderr, { timeout: 10_000 }).toMatch(/charged its higher price up to the reservation/);
  });

  it("is charged at the asked price when the answered model is cheaper", async () => {
    mock.setBehavior({ answerModel: "gpt-4o-mini" });
    const { res, text, record } = await post("/v1/chat/completions", { model: "premium" });
    expect(res.status).toBe(200);
    const usage = JSON.parse(text).usage;
    const expected = costOf(configPrice({ input: 2.5, output: 10 }), { inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens });
    expect(Math.round(record.cost_usd * 1e6)).toBe(expected);
  });

  it("a dated snapshot of the asked model is the same model: no extra charge", async () => {
    mock.setBehavior({ answerModel: "gpt-4o-mini-2024-07-18" });
    const { text, record } = await post("/v1/chat/completions");
    const usage = JSON.parse(text).usage;
    expect(Math.round(record.cost_usd * 1e6)).toBe(costOf(configPrice(HOUSE_PRICE), { inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens }));
  });
});

describe("an upstream that goes silent", () => {
  it("a stream that stalls after 3 tokens is cut at idle_timeout and charged what it delivered", async () => {
    mock.setBehavior({ stallAfterChunks: 3, outputTokens: 20 });
    const started = Date.now();
    const { res, text, record } = await post("/v1/chat/completions", { stream: true });
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(text).toContain("upstream_timeout");
    expect(record).toMatchObject({ ended: "timeout", output_tokens: 3, usage_source: "counted" });
    expect(record.cost_usd).toBeGreaterThan(0);
  });

  it("a stream that opens and goes silent before any token is a 504 upstream_timeout at idle_timeout", async () => {
    mock.setBehavior({ stallAfterChunks: 0 });
    const { res, text, record } = await post("/v1/messages", { stream: true });
    expect(res.status).toBe(504);
    expect(JSON.parse(text)).toMatchObject({ type: "error", error: { code: "upstream_timeout" } });
    expect(record).toMatchObject({ ended: "timeout", output_tokens: 0 });
  });

  it("a whole reply that stalls halfway through its body is a 504, charged its reservation since what ran upstream is unknown", async () => {
    mock.setBehavior({ stallAfterChunks: 0 });
    const { res, text, record } = await post("/v1/chat/completions");
    expect(res.status).toBe(504);
    expect(JSON.parse(text).error.code).toBe("upstream_timeout");
    expect(record).toMatchObject({ ended: "timeout", usage_source: "reserved" });
    expect(record.cost_usd).toBe(record.estimated_cost_usd);
  });
});
