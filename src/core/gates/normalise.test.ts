import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

const config = (input: Record<string, unknown>) => ({
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] } },
  keys: [{ key: "tg_norm_ann", user: "ann", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", input: { max_output_tokens: 20, ...input } } },
});
const hello = { messages: [{ role: "user", content: "hello there, tell me a long story" }] };

describe("gate 4, normalise", () => {
  it("max_tokens over the route's cap is clamped: recorded in `clamped`, announced in a header, and the answer stays within it", async () => {
    const { record, refusal, headers } = await testEngine(config({})).send({ key: "tg_norm_ann", body: { ...hello, max_tokens: 5000 } });
    expect(refusal).toBeUndefined();
    expect(record.clamped).toEqual({ max_tokens: { from: 5000, to: 20 } });
    expect(headers["x-tollgate-clamped"]).toBe("max_tokens=5000->20");
    expect(record.output_tokens).toBeGreaterThan(0);
    expect(record.output_tokens).toBeLessThanOrEqual(20);
  });

  it("no output limit asked for: the route's cap is sent and recorded as from null", async () => {
    const { record, headers } = await testEngine(config({})).send({ key: "tg_norm_ann", body: hello });
    expect(record.clamped).toEqual({ max_output_tokens: { from: null, to: 20 } });
    expect(headers["x-tollgate-clamped"]).toBeUndefined();
  });

  it("on_excess_output_tokens: reject refuses with 400 output_tokens_exceeded naming the field", async () => {
    const { refusal } = await testEngine(config({ on_excess_output_tokens: "reject" })).send({ key: "tg_norm_ann", body: { ...hello, max_completion_tokens: 21 } });
    expect(refusal).toMatchObject({ code: "output_tokens_exceeded", status: 400, param: "max_completion_tokens" });
  });

  it("caps on the prompt, the messages and n are refused before any model call", async () => {
    const t = testEngine(config({ max_prompt_chars: 10, max_messages: 1 }));
    expect((await t.send({ key: "tg_norm_ann", body: hello })).refusal).toMatchObject({ code: "input_too_large", status: 413, limit: "max_prompt_chars" });
    const two = { messages: [{ role: "user", content: "a" }, { role: "user", content: "b" }] };
    expect((await t.send({ key: "tg_norm_ann", body: two })).refusal).toMatchObject({ code: "input_too_large", limit: "max_messages" });
    expect((await t.send({ key: "tg_norm_ann", body: { messages: [{ role: "user", content: "a" }], n: 2 } })).refusal).toMatchObject({ code: "param_not_allowed", param: "n" });
    expect(t.records.every((r) => r.cost_usd === 0 && r.decision === "deny")).toBe(true);
  });
});
