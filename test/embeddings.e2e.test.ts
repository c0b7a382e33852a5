import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { countTokens } from "../src/testing/mock-upstream.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

const UPSTREAM_KEY = "sk-upstream-embeddings-SECRET";
const CALLER = "tg_embed_alice";
const BROKE = "tg_embed_bob_broke";

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    providers: { up: openaiUpstream(mock, "env:UPSTREAM_KEY") },
    models: {
      // An output price no embedding model has: a reservation that held output tokens would show it.
      "text-embedding-3-small": { provider: "up", price: { input: 0.02, output: 1 } },
      "gpt-4o-mini": { provider: "up" },
    },
    plans: { free: { models: ["text-embedding-3-small"], budget: { daily: 1 } }, broke: { models: ["text-embedding-3-small"], budget: { daily: 0 } } },
    keys: [
      { key: CALLER, user: "alice", plan: "free" },
      { key: BROKE, user: "bob", plan: "broke" },
    ],
    routes: {
      embed: { path: "/embed", plans: ["free", "broke"], default_model: "text-embedding-3-small", input: { max_embedding_inputs: 3 } },
      chat: { path: "/chat", plans: ["free"], endpoints: ["chat_completions", "messages"] },
    },
  }),
  env: { UPSTREAM_KEY },
});

const client = (opts: { apiKey?: string; path?: string } = {}) => new OpenAI({ baseURL: `${gw.url}${opts.path ?? "/embed"}/v1`, apiKey: opts.apiKey ?? CALLER, maxRetries: 0 });
const recordOf = (response: Response) => gw.recordOf(response);

describe("embeddings: served and metered", () => {
  it("serves embeddings.create (base64, as the SDK asks) and records input tokens only", async () => {
    const { data, response } = await client().embeddings.create({ model: "text-embedding-3-small", input: "the quick brown fox" }).withResponse();
    expect(data.data).toHaveLength(1);
    expect(data.data[0]!.embedding).toHaveLength(8);
    expect(data.data[0]!.embedding.every((v) => typeof v === "number")).toBe(true);
    const upstream = mock.requests[0]!;
    expect(upstream.path).toBe("/v1/embeddings");
    expect(upstream.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(upstream.body).toEqual({ model: "text-embedding-3-small", input: "the quick brown fox", encoding_format: "base64" });

    const rec = await recordOf(response);
    expect(rec).toMatchObject({
      endpoint: "embeddings",
      model: "text-embedding-3-small",
      input_tokens: countTokens("the quick brown fox"),
      output_tokens: 0,
      usage_source: "provider",
      ended: "complete",
      clamped: {},
    });
    expect(data.usage.prompt_tokens).toBe(rec.input_tokens);
    expect(rec.cost_usd).toBeGreaterThan(0);
    // Input alone: 4,096 reserved output tokens at $1 per 1M would be $0.004.
    expect(rec.estimated_cost_usd).toBeGreaterThanOrEqual(rec.cost_usd);
    expect(rec.estimated_cost_usd).toBeLessThan(0.00001);
  });

  it("counts every input of an array, and token-id inputs by their length", async () => {
    const { data, response } = await client().embeddings.create({ model: "text-embedding-3-small", input: ["alpha beta", "gamma", "delta"], encoding_format: "float" }).withResponse();
    expect(data.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect((await recordOf(response)).input_tokens).toBe(countTokens("alpha beta") + countTokens("gamma") + countTokens("delta"));

    const ids = await client().embeddings.create({ model: "text-embedding-3-small", input: [[1, 2, 3], [4, 5]] }).withResponse();
    expect((await recordOf(ids.response)).input_tokens).toBe(5);
  });
});

describe("embeddings: refusals reach the SDK as its typed errors", () => {
  it("caps the number of inputs with 413 input_too_large", async () => {
    const err = await client().embeddings.create({ model: "text-embedding-3-small", input: ["a", "b", "c", "d"] }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.status).toBe(413);
    expect(err.code).toBe("input_too_large");
    expect(err.message).toMatch(/max_embedding_inputs/);
    expect(mock.requests).toHaveLength(0);
  });

  it("402 budget_exceeded before anything goes upstream", async () => {
    const err = await client({ apiKey: BROKE }).embeddings.create({ model: "text-embedding-3-small", input: "x" }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.status).toBe(402);
    expect(err.code).toBe("budget_exceeded");
    expect(mock.requests).toHaveLength(0);
  });

  it("401, 403, 400 and 404 as AuthenticationError, PermissionDeniedError, BadRequestError, NotFoundError", async () => {
    const unauthorized = await client({ apiKey: "tg_nope" }).embeddings.create({ model: "text-embedding-3-small", input: "x" }).catch((e) => e);
    expect(unauthorized).toBeInstanceOf(OpenAI.AuthenticationError);
    const model = await client().embeddings.create({ model: "gpt-4o-mini", input: "x" }).catch((e) => e);
    expect(model).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(model.code).toBe("model_not_allowed");
    const invalid = await client().embeddings.create({ model: "text-embedding-3-small", input: [] }).catch((e) => e);
    expect(invalid).toBeInstanceOf(OpenAI.BadRequestError);
    expect(invalid.param).toBe("input");
    const missing = await client({ path: "/chat" }).embeddings.create({ model: "text-embedding-3-small", input: "x" }).catch((e) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect(missing.code).toBe("not_found");
    expect(mock.requests).toHaveLength(0);
  });
});

describe("embeddings: the simulated provider", () => {
  const { gw: sim } = useGateway({
    upstream: false,
    config: {
      store: "memory:",
      providers: { sim: { type: "simulated" } },
      models: { "text-embedding-3-small": { provider: "sim", price: { input: 0.02, output: 0 } } },
      plans: { free: { models: ["text-embedding-3-small"] } },
      keys: [{ key: CALLER, user: "alice", plan: "free" }],
      routes: { embed: { path: "/embed", plans: ["free"] } },
    },
  });

  it("answers in base64 and float alike, deterministically, with realistic usage", async () => {
    const simClient = new OpenAI({ baseURL: `${sim.url}/embed/v1`, apiKey: CALLER, maxRetries: 0 });
    const { data, response } = await simClient.embeddings.create({ model: "text-embedding-3-small", input: ["hello world", "bye"] }).withResponse();
    const floats = await simClient.embeddings.create({ model: "text-embedding-3-small", input: ["hello world", "bye"], encoding_format: "float" });
    expect(data.data.map((d) => d.embedding)).toEqual(floats.data.map((d) => d.embedding));
    expect(data.data[0]!.embedding).not.toEqual(data.data[1]!.embedding);
    expect(Math.hypot(...data.data[0]!.embedding)).toBeCloseTo(1, 5);
    expect(data.usage.prompt_tokens).toBe(countTokens("hello world") + countTokens("bye"));
    const rec = await sim.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ endpoint: "embeddings", usage_source: "provider", input_tokens: data.usage.prompt_tokens, output_tokens: 0 });
  });
});
