import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

/** Ten output tokens at $100 per 1M, no input price: every call reserves and costs exactly $0.001. */
const config = (budgets: { plan?: number; gateway?: number }) => ({
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 0, output: 100 } } },
  plans: { free: { models: ["m"], budget: budgets.plan === undefined ? undefined : { daily: budgets.plan } } },
  budget: budgets.gateway === undefined ? undefined : { daily: budgets.gateway },
  keys: [{ key: "tg_budget_ann", user: "ann", plan: "free" }, { key: "tg_budget_bo", user: "bo", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", input: { max_output_tokens: 10 } } },
});
const hello = { messages: [{ role: "user", content: "hello" }] };

describe("gate 6, budget", () => {
  it("a plan's daily budget: 402 naming the plan once spent, reset when the clock crosses midnight UTC", async () => {
    const t = testEngine(config({ plan: 0.002 }));
    t.clock.set("2026-03-10T23:50:00Z");
    for (let i = 0; i < 2; i++) {
      const ok = await t.send({ key: "tg_budget_ann", body: hello });
      expect(ok.record).toMatchObject({ decision: "allow", cost_usd: 0.001, usage_source: "provider" });
    }
    const spent = await t.send({ key: "tg_budget_ann", body: hello });
    expect(spent.refusal).toMatchObject({ code: "budget_exceeded", status: 402 });
    expect(spent.refusal!.message).toMatch(/the free plan's daily budget of \$0\.002/);
    expect(spent.refusal!.message).toMatch(/resets at 2026-03-11T00:00:00\.000Z/);
    expect(spent.refusal!.retryAfterSeconds).toBe(600);
    // Another user of the plan has a budget of their own.
    expect((await t.send({ key: "tg_budget_bo", body: hello })).refusal).toBeUndefined();

    t.clock.set("2026-03-11T00:00:01Z");
    expect((await t.send({ key: "tg_budget_ann", body: hello })).refusal).toBeUndefined();
  });

  it("a reservation that would overdraw is refused before the call, naming the budget and what is left", async () => {
    const t = testEngine(config({ plan: 0.0015 }));
    expect((await t.send({ key: "tg_budget_ann", body: hello })).refusal).toBeUndefined();
    const second = await t.send({ key: "tg_budget_ann", body: hello });
    expect(second.refusal?.code).toBe("budget_exceeded");
    expect(second.refusal!.message).toMatch(/would be exceeded: \$0\.0005 left, this request may cost up to \$0\.001/);
    expect(t.records.filter((r) => r.cost_usd > 0)).toHaveLength(1);
  });

  it("a key's lifetime budget never resets: its 402 names no reset time and sends no Retry-After", async () => {
    const base = config({});
    const t = testEngine({ ...base, keys: [{ key: "tg_budget_trial", user: "tri", plan: "free", budget: { total: 0.001 } }] });
    expect((await t.send({ key: "tg_budget_trial", body: hello })).refusal).toBeUndefined();
    const spent = await t.send({ key: "tg_budget_trial", body: hello });
    expect(spent.refusal).toMatchObject({ code: "budget_exceeded", status: 402 });
    expect(spent.refusal!.message).not.toMatch(/resets at/);
    expect(spent.refusal!.retryAfterSeconds).toBeUndefined();
  });

  it("the gateway's budget is a level of its own: it refuses every user once the sum is spent", async () => {
    const t = testEngine(config({ plan: 1, gateway: 0.002 }));
    expect((await t.send({ key: "tg_budget_ann", body: hello })).refusal).toBeUndefined();
    expect((await t.send({ key: "tg_budget_bo", body: hello })).refusal).toBeUndefined();
    const third = await t.send({ key: "tg_budget_bo", body: hello });
    expect(third.refusal?.code).toBe("budget_exceeded");
    expect(third.refusal!.message).toMatch(/the gateway's daily budget/);
  });
});
