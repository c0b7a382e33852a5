import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * SPEC §7.8: every field the provider bills counts toward the input caps and the pre-flight
 * estimate, and cost drivers tollgate cannot estimate are refused unless the route allows them.
 * Each case goes through the official SDKs against a real `tollgate serve`.
 */

const KEY = "tg_billed_alice";
const TIGHT = "tg_billed_bob_tight";

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    server: { max_body_bytes: 2_000_000 },
    providers: {
      up: openaiUpstream(mock),
      anth: { type: "anthropic", base_url: mock.url, api_key: "sk-ant-up" },
    },
    models: {
      m: { provider: "up", upstream: "gpt-4o-mini", price: { input: 5, output: 20 } },
      sonnet: { provider: "anth", upstream: "claude-sonnet-4-20250514" },
    },
    plans: { free: { models: ["m", "sonnet"] }, tight: { models: ["m"], budget: { daily: 0.05 } } },
    keys: [
      { key: KEY, user: "alice", plan: "free" },
      { key: TIGHT, user: "bob", plan: "tight" },
    ],
    routes: {
      capped: { path: "/capped", plans: ["free"], input: { max_prompt_chars: 1000, max_output_tokens: 100 } },
      budgeted: { path: "/budgeted", plans: ["tight"], input: { max_output_tokens: 100 } },
      open: { path: "/open", plans: ["free"], input: { max_output_tokens: 100, stored_state: "allow" } },
    },
  }),
});

const openai = (path: string, apiKey = KEY) => new OpenAI({ baseURL: `${gw.url}${path}/v1`, apiKey, maxRetries: 0 });
const anthropic = (path: string) => new Anthropic({ baseURL: `${gw.url}${path}`, apiKey: KEY, maxRetries: 0 });
const messages = [{ role: "user" as const, content: "Say hello" }];

/** About `chars` characters of text that does not compress into few tokens. */
function text(chars: number): string {
  const words: string[] = [];
  let n = 0;
  for (let i = 0; n < chars; i++) {
    const w = `w${(i * 7919) % 99991}`;
    words.push(w);
    n += w.length + 1;
  }
  return words.join(" ").slice(0, chars);
}
const HUGE = text(900_000);

async function refused(call: Promise<unknown>): Promise<{ status: number; code: string; message: string; param?: string }> {
  const err = (await call.then(
    () => {
      throw new Error("expected a refusal");
    },
    (e) => e,
  )) as { status: number; error?: { code?: string; message?: string; param?: string; error?: { code?: string; message?: string } } };
  // openai: err.error is the error object; anthropic: err.error is the whole body.
  const e = err.error?.error ?? err.error ?? {};
  return { status: err.status, code: e.code!, message: e.message!, param: (e as { param?: string }).param };
}

describe("billed fields count toward max_prompt_chars", () => {
  const fn = { name: "lookup", description: HUGE, parameters: { type: "object", properties: {} } };

  it("refuses a 900 KB prediction, nothing goes upstream", async () => {
    const r = await refused(openai("/capped").chat.completions.create({ model: "m", messages, prediction: { type: "content", content: HUGE } }));
    expect(r).toMatchObject({ status: 413, code: "input_too_large" });
    expect(r.message).toMatch(/max_prompt_chars/);
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses a 900 KB response_format schema", async () => {
    const schema = { type: "object", properties: { a: { type: "string", description: HUGE } } };
    const r = await refused(openai("/capped").chat.completions.create({ model: "m", messages, response_format: { type: "json_schema", json_schema: { name: "s", schema } } }));
    expect(r).toMatchObject({ status: 413, code: "input_too_large" });
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses a tool whose description or parameters are 900 KB", async () => {
    const byDescription = await refused(openai("/capped").chat.completions.create({ model: "m", messages, tools: [{ type: "function", function: fn }] }));
    expect(byDescription).toMatchObject({ status: 413, code: "input_too_large" });
    const params = { type: "object", properties: { a: { type: "string", enum: HUGE.split(" ") } } };
    const byParameters = await refused(openai("/capped").chat.completions.create({ model: "m", messages, tools: [{ type: "function", function: { name: "f", parameters: params } }] }));
    expect(byParameters).toMatchObject({ status: 413, code: "input_too_large" });
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses the legacy functions field", async () => {
    const r = await refused(openai("/capped").chat.completions.create({ model: "m", messages, functions: [fn] }));
    expect(r).toMatchObject({ status: 413, code: "input_too_large" });
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses Responses tools and text.format schemas", async () => {
    const client = openai("/capped");
    const tool = await refused(client.responses.create({ model: "m", input: "hi", tools: [{ type: "function", name: "f", description: HUGE, parameters: {}, strict: false }] }));
    expect(tool).toMatchObject({ status: 413, code: "input_too_large" });
    const format = await refused(
      client.responses.create({ model: "m", input: "hi", text: { format: { type: "json_schema", name: "s", schema: { type: "object", description: HUGE } } } }),
    );
    expect(format).toMatchObject({ status: 413, code: "input_too_large" });
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses Anthropic tool definitions", async () => {
    const r = await refused(anthropic("/capped").messages.create({ model: "sonnet", max_tokens: 50, messages, tools: [{ name: "f", description: HUGE, input_schema: { type: "object" } }] }));
    expect(r).toMatchObject({ status: 413, code: "input_too_large" });
    expect(mock.requests).toHaveLength(0);
  });

  it("still serves a request with small tools, schema and prediction", async () => {
    const small = await openai("/capped").chat.completions.create({
      model: "m",
      messages,
      tools: [{ type: "function", function: { name: "f", description: "looks up", parameters: { type: "object" } } }],
      response_format: { type: "json_object" },
      prediction: { type: "content", content: "hello there" },
    });
    expect(small.choices.length).toBe(1);
    expect(mock.requests[0]!.body.prediction).toEqual({ type: "content", content: "hello there" });
  });
});

describe("billed fields are in the pre-flight estimate", () => {
  // 100 output tokens at $20/M is $0.002: small requests fit the $0.05 budget; 200 KB of text does not.
  const BIG = text(200_000);

  it("reserves a prediction at the output rate", async () => {
    expect((await openai("/budgeted", TIGHT).chat.completions.create({ model: "m", messages })).choices.length).toBe(1);
    mock.reset();
    const r = await refused(openai("/budgeted", TIGHT).chat.completions.create({ model: "m", messages, prediction: { type: "content", content: BIG } }));
    expect(r).toMatchObject({ status: 402, code: "budget_exceeded" });
    expect(mock.requests).toHaveLength(0);
  });

  it("reserves a response_format schema as input", async () => {
    const schema = { type: "object", description: BIG };
    const r = await refused(
      openai("/budgeted", TIGHT).chat.completions.create({ model: "m", messages, response_format: { type: "json_schema", json_schema: { name: "s", schema } } }),
    );
    expect(r).toMatchObject({ status: 402, code: "budget_exceeded" });
    expect(mock.requests).toHaveLength(0);
  });
});

describe("cost drivers with no estimate", () => {
  const cases = {
    web_search_options: { web_search_options: {} },
    modalities: { modalities: ["text", "audio"] as ("text" | "audio")[], audio: { voice: "alloy" as const, format: "wav" as const } },
  };

  for (const [param, extra] of Object.entries(cases)) {
    it(`refuses ${param} with param_not_allowed where the route does not allow unseen cost`, async () => {
      const r = await refused(openai("/capped").chat.completions.create({ model: "m", messages, ...extra }));
      expect(r).toMatchObject({ status: 400, code: "param_not_allowed", param });
      expect(mock.requests).toHaveLength(0);
    });

    it(`forwards ${param} where the route sets stored_state: allow`, async () => {
      await openai("/open").chat.completions.create({ model: "m", messages, ...extra });
      expect(mock.requests[0]!.body).toMatchObject(extra);
    });
  }
});
