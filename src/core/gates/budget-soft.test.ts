import { describe, expect, it } from "vitest";
import { ENDPOINTS } from "../../gateway/endpoints.js";
import { testEngine } from "../../testing/test-engine.js";

/**
 * Ten output tokens, no input price: a call to `big` costs exactly $0.001, to `small` $0.0005, to
 * `mid` $0.0008. The plan's daily budget is $0.004 with a soft share of 0.5: past $0.002 spent the
 * caller is under pressure.
 */
const config = (over: { plan?: Record<string, unknown>; route?: Record<string, unknown>; gateway?: Record<string, unknown> } = {}) => ({
  providers: { sim: { type: "simulated" } },
  models: {
    big: { provider: "sim", price: { input: 0, output: 100 } },
    mid: { provider: "sim", price: { input: 0, output: 80 } },
    small: { provider: "sim", price: { input: 0, output: 50 } },
    outside: { provider: "sim", price: { input: 0, output: 10 } },
  },
  plans: { free: { models: ["big", "mid", "small"], budget: { daily: 0.004, soft: 0.5 }, budget_downgrade_to: "small", ...over.plan } },
  budget: over.gateway,
  keys: [{ key: "tg_soft_ann", user: "ann", plan: "free" }, { key: "tg_soft_bo", user: "bo", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "big", input: { max_output_tokens: 10 }, ...over.route } },
});
const ask = (model: string) => ({ model, messages: [{ role: "user", content: "hello" }] });

describe("soft budget thresholds: downgrade under budget pressure", () => {
  it("below the soft share the asked model is served; past it the plan's budget_downgrade_to, recorded as a downgrade; the hard limit still refuses", async () => {
    const t = testEngine(config());
    for (let i = 0; i < 2; i++) {
      const ok = await t.send({ key: "tg_soft_ann", body: ask("big") });
      expect(ok.record).toMatchObject({ decision: "allow", model: "big", cost_usd: 0.001, signals: [] });
      expect(ok.headers["x-tollgate-downgraded"]).toBeUndefined();
    }
    // $0.002 of $0.004 spent: at the soft share.
    const soft = await t.send({ key: "tg_soft_ann", body: ask("big") });
    expect(soft.refusal).toBeUndefined();
    expect(soft.record).toMatchObject({ decision: "downgrade", model_requested: "big", model: "small", cost_usd: 0.0005, signals: ["budget_soft"] });
    expect(soft.headers).toMatchObject({ "x-tollgate-downgraded": "budget_soft", "x-tollgate-model": "small" });
    // Another user of the plan is not under pressure: the plan's budget is per user.
    expect((await t.send({ key: "tg_soft_bo", body: ask("big") })).record).toMatchObject({ decision: "allow", model: "big" });
    // $0.0025 spent: three more downgraded calls reach $0.004, then the budget refuses.
    for (let i = 0; i < 3; i++) expect((await t.send({ key: "tg_soft_ann", body: ask("big") })).record).toMatchObject({ decision: "downgrade", model: "small" });
    const spent = await t.send({ key: "tg_soft_ann", body: ask("big") });
    expect(spent.refusal).toMatchObject({ code: "budget_exceeded", status: 402 });
    expect(spent.refusal!.message).toMatch(/the free plan's daily budget of \$0\.004/);
  });

  it("a new day lifts the pressure with the budget", async () => {
    const t = testEngine(config());
    t.clock.set("2026-03-10T23:00:00Z");
    for (let i = 0; i < 2; i++) await t.send({ key: "tg_soft_ann", body: ask("big") });
    expect((await t.send({ key: "tg_soft_ann", body: ask("big") })).record.model).toBe("small");
    t.clock.set("2026-03-11T00:00:01Z");
    expect((await t.send({ key: "tg_soft_ann", body: ask("big") })).record).toMatchObject({ decision: "allow", model: "big" });
  });

  it("a route's budget_downgrade_to outranks its plan's", async () => {
    const t = testEngine(config({ route: { budget_downgrade_to: "mid" } }));
    for (let i = 0; i < 2; i++) await t.send({ key: "tg_soft_ann", body: ask("big") });
    const soft = await t.send({ key: "tg_soft_ann", body: ask("big") });
    expect(soft.record).toMatchObject({ decision: "downgrade", model: "mid", signals: ["budget_soft"] });
  });

  it("without budget_downgrade_to, or naming a model the plan does not allow, the asked model is kept until the hard limit", async () => {
    for (const plan of [{ budget_downgrade_to: undefined }, { budget_downgrade_to: "outside" }]) {
      const t = testEngine(config({ plan }));
      for (let i = 0; i < 4; i++) {
        const r = await t.send({ key: "tg_soft_ann", body: ask("big") });
        expect(r.record).toMatchObject({ decision: "allow", model: "big", signals: [] });
        expect(r.headers["x-tollgate-downgraded"]).toBeUndefined();
      }
      expect((await t.send({ key: "tg_soft_ann", body: ask("big") })).refusal?.code).toBe("budget_exceeded");
    }
  });

  it("a caller that already asks for the cheaper model is served as asked, with no downgrade recorded", async () => {
    const t = testEngine(config());
    for (let i = 0; i < 2; i++) await t.send({ key: "tg_soft_ann", body: ask("big") });
    expect((await t.send({ key: "tg_soft_ann", body: ask("small") })).record).toMatchObject({ decision: "allow", model: "small", signals: [] });
  });

  it("any level's soft share applies: the gateway's budget puts every caller under pressure", async () => {
    const t = testEngine(config({ plan: { budget: { daily: 1 } }, gateway: { daily: 0.01, soft: 0.1 } }));
    expect((await t.send({ key: "tg_soft_ann", body: ask("big") })).record.model).toBe("big");
    // $0.001 of the gateway's $0.01 is its soft share: bo, who has spent nothing, is downgraded too.
    expect((await t.send({ key: "tg_soft_bo", body: ask("big") })).record).toMatchObject({ decision: "downgrade", model: "small", signals: ["budget_soft"] });
  });

  it("library mode: an app request under pressure has its model calls downgraded", async () => {
    const t = testEngine(config());
    for (let i = 0; i < 2; i++) await t.send({ key: "tg_soft_ann", body: ask("big") });
    const ex = t.engine.open({ route: "chat", endpoint: "chat_completions", ip: "198.51.100.7", credentials: { token: "tg_soft_ann" }, library: true });
    await t.engine.admit(ex);
    const app = t.engine.app(ex);
    const format = Object.values(ENDPOINTS).find((e) => e.name === "chat_completions")!.format;
    const call = await app.model(format, ask("big"));
    expect(call).toMatchObject({ model: "small", body: { model: "small" } });
    await call.end({ ended: "client_disconnect" });
    await app.close();
    expect(t.records.find((r) => r.parent_id === ex.id)).toMatchObject({ decision: "downgrade", model_requested: "big", model: "small", signals: ["budget_soft"] });
  });
});
