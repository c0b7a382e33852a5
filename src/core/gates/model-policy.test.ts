import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

const config = {
  providers: { sim: { type: "simulated" } },
  models: {
    small: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 1 } },
    big: { provider: "sim", upstream: "gpt-4o", price: { input: 5, output: 20 }, requires: ["paid"] },
    other: { provider: "sim", price: { input: 1, output: 1 } },
  },
  plans: { free: { models: ["small", "big"] }, pro: { models: ["small", "big", "other"], paid: true } },
  keys: [{ key: "tg_model_ann", user: "ann", plan: "free" }, { key: "tg_model_pat", user: "pat", plan: "pro" }],
  routes: { chat: { path: "/chat", plans: ["free", "pro"], default_model: "small", models: ["small", "big"] } },
};
const ask = (model?: string) => ({ ...(model && { model }), messages: [{ role: "user", content: "hello" }] });

describe("gate 5, model policy", () => {
  it("a model outside the plan is 403 model_not_allowed naming the plan, and nothing is charged", async () => {
    const t = testEngine({ ...config, plans: { ...config.plans, free: { models: ["small"] } } });
    const { refusal, record } = await t.send({ key: "tg_model_ann", body: ask("big") });
    expect(refusal).toMatchObject({ code: "model_not_allowed", status: 403, param: "model" });
    expect(refusal!.message).toMatch(/model big is not available to plan free/);
    expect(record).toMatchObject({ decision: "deny", model_requested: "big", cost_usd: 0 });
  });

  it("requires: [paid] refuses the free plan and serves the paid one", async () => {
    const t = testEngine(config);
    const free = await t.send({ key: "tg_model_ann", body: ask("big") });
    expect(free.refusal?.code).toBe("model_not_allowed");
    expect(free.refusal!.message).toMatch(/requires a paid plan/);
    const pro = await t.send({ key: "tg_model_pat", body: ask("big") });
    expect(pro.refusal).toBeUndefined();
    expect(pro.record).toMatchObject({ model: "big", model_requested: "big" });
    expect(pro.headers["x-tollgate-model"]).toBe("big");
  });

  it("a model the plan allows but the route does not is refused; no model asked for is the route's default", async () => {
    const t = testEngine(config);
    expect((await t.send({ key: "tg_model_pat", body: ask("other") })).refusal?.code).toBe("model_not_allowed");
    const dflt = await t.send({ key: "tg_model_ann", body: ask() });
    expect(dflt.record).toMatchObject({ model: "small", model_requested: "small" });
  });
});
