import { describe, expect, it } from "vitest";
import type { Provider } from "./provider.js";
import { testEngine } from "../testing/test-engine.js";

const config = {
  providers: { sim: { type: "simulated" }, fixed: { type: "simulated" } },
  models: {
    m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 4 } },
    thinker: { provider: "sim", upstream: "o4-mini", price: { input: 1, output: 4 }, reasoning: true },
    liar: { provider: "fixed", upstream: "gpt-4o-mini", price: { input: 1, output: 4 } },
  },
  plans: { free: { models: ["m", "thinker", "liar"] } },
  keys: [{ key: "tg_usage_ann", user: "ann", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", input: { max_output_tokens: 20 } } },
};
const ask = (model: string, stream = false) => ({ model, stream, messages: [{ role: "user", content: "tell me something" }] });
const micros = (usd: number) => Math.round(usd * 1e6);

/** A provider that claims a billion output tokens for every call. */
const inflating: Provider = {
  name: "fixed",
  supports: () => true,
  close: async () => {},
  call: async () => ({
    kind: "json",
    body: { id: "x", object: "chat.completion", model: "gpt-4o-mini", choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }], usage: { prompt_tokens: 5, completion_tokens: 1e9, total_tokens: 1e9 + 5 } },
  }),
};

describe("finish: where a served request's usage comes from (SPEC §6 usage_source)", () => {
  it("provider: the provider's usage, for a whole answer and a whole stream", async () => {
    const t = testEngine(config);
    for (const stream of [false, true]) {
      const { record } = await t.send({ key: "tg_usage_ann", body: ask("m", stream) });
      expect(record).toMatchObject({ usage_source: "provider", ended: "complete", stream });
      expect(record.output_tokens).toBeGreaterThan(0);
      expect(micros(record.cost_usd)).toBe(record.input_tokens * 1 + record.output_tokens * 4);
    }
  });

  it("counted: a stream the client left before the usage came is charged the tokens that passed", async () => {
    const { record } = await testEngine(config).send({ key: "tg_usage_ann", body: ask("m", true), disconnectAfter: 5 });
    expect(record).toMatchObject({ usage_source: "counted", ended: "client_disconnect" });
    expect(record.output_tokens).toBeGreaterThan(0);
    expect(record.output_tokens).toBeLessThanOrEqual(5);
    expect(record.cost_usd).toBeLessThan(record.estimated_cost_usd!);
  });

  it("reserved: a reasoning model's stream cut short is charged its whole reservation (its hidden tokens cannot be counted)", async () => {
    const { record } = await testEngine(config).send({ key: "tg_usage_ann", body: ask("thinker", true), disconnectAfter: 5 });
    expect(record).toMatchObject({ usage_source: "reserved", ended: "client_disconnect", output_tokens: 20 });
    expect(record.cost_usd).toBe(record.estimated_cost_usd);
  });

  it("reserved: usage the provider cannot have meant (past the clamp) is charged the reservation, with a warning", async () => {
    const t = testEngine(config, { providers: { fixed: inflating } });
    const { record } = await t.send({ key: "tg_usage_ann", body: ask("liar") });
    expect(record).toMatchObject({ usage_source: "reserved", output_tokens: 20 });
    expect(record.cost_usd).toBe(record.estimated_cost_usd);
    expect(t.warnings.join("\n")).toMatch(/implausible usage from the provider/);
  });

  it("none: a call the client left before it went out is free and has no usage source", async () => {
    const { record } = await testEngine(config).send({ key: "tg_usage_ann", body: ask("m", true), disconnectAfter: 0 });
    expect(record).toMatchObject({ usage_source: null, ended: "client_disconnect", input_tokens: 0, output_tokens: 0, cost_usd: 0 });
  });
});

/** A provider that says a frontier model answered, with a long answer, whatever was asked. */
const swapping: Provider = {
  name: "fixed",
  supports: () => true,
  close: async () => {},
  call: async () => ({
    kind: "json",
    body: { id: "x", object: "chat.completion", model: "gpt-4o", choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }], usage: { prompt_tokens: 5, completion_tokens: 20, total_tokens: 25 } },
  }),
};

describe("finish: an answer from a dearer model than the one asked for", () => {
  it("is charged its higher price, but never past the reservation every budget was checked against (SPEC §7.1)", async () => {
    const t = testEngine(config, { providers: { fixed: swapping } });
    const { record } = await t.send({ key: "tg_usage_ann", body: ask("liar") });
    // gpt-4o at $2.50/$10 per 1M for 5 + 20 tokens is $0.0002125, far above the asked model's price.
    const asked = 5 * 1 + 20 * 4;
    expect(micros(record.estimated_cost_usd!)).toBeGreaterThan(asked);
    expect(micros(record.estimated_cost_usd!)).toBeLessThan(213);
    expect(micros(record.cost_usd)).toBe(micros(record.estimated_cost_usd!));
    expect(t.warnings.join("\n")).toMatch(/answered with model gpt-4o instead of gpt-4o-mini; charged its higher price up to the reservation/);
  });
});
