import { describe, expect, it } from "vitest";
import { fakeClock, testEngine } from "../testing/test-engine.js";
import type { Alert } from "./alerts.js";

/**
 * Alerts the engine decides, on the memory store with a fake clock. Ten output tokens at $100 per
 * 1M: a call to `big` costs exactly $0.001. The plan's daily budget is $0.004, soft at 0.5.
 */
const config = (over: Record<string, unknown> = {}) => ({
  providers: { sim: { type: "simulated" } },
  models: { big: { provider: "sim", price: { input: 0, output: 100 } } },
  plans: { free: { models: ["big"], budget: { daily: 0.004, soft: 0.5 } } },
  keys: [{ key: "tg_al_ann", user: "ann", plan: "free" }, { key: "tg_al_bo", user: "bo", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "big", input: { max_output_tokens: 10 } } },
  ...over,
});
const ask = { model: "big", messages: [{ role: "user", content: "hello" }] };

function capture() {
  const alerts: Alert[] = [];
  return { alerts, events: { alert: (a: Alert) => void alerts.push(a) }, ids: () => [...new Set(alerts.map((a) => a.id))] };
}

describe("alerts the engine raises", () => {
  it("budget.soft: raised by the request that crosses the soft share, named for the budget, subject and day", async () => {
    const sink = capture();
    const t = testEngine(config(), { events: sink.events, clock: fakeClock("2026-12-07T12:00:00Z") });
    await t.send({ key: "tg_al_ann", body: ask });
    expect(sink.alerts).toEqual([]);
    // The second call settles at $0.002 = the soft share: it raises the alert itself.
    await t.send({ key: "tg_al_ann", body: ask });
    expect(sink.alerts.map((a) => a.id)).toEqual(["budget.soft:user:ann:daily:2026-12-07"]);
    expect(sink.alerts[0]).toMatchObject({ type: "budget.soft", data: { level: "user", subject: "user:ann", period: "daily", limit_usd: 0.004, spent_usd: 0.002, soft_usd: 0.002, user: "ann", plan: "free", route: "chat" } });
    // Later requests see the same state: the same id again, which the outbox absorbs.
    await t.send({ key: "tg_al_ann", body: ask });
    expect(sink.ids()).toEqual(["budget.soft:user:ann:daily:2026-12-07"]);
    // Another user of the plan is not past its own share.
    await t.send({ key: "tg_al_bo", body: ask });
    expect(sink.ids()).toEqual(["budget.soft:user:ann:daily:2026-12-07"]);
  });

  it("budget.exhausted: a 402 names the budget that refused, once per period", async () => {
    const sink = capture();
    const t = testEngine(config(), { events: sink.events, clock: fakeClock("2026-12-07T23:00:00Z") });
    for (let i = 0; i < 4; i++) await t.send({ key: "tg_al_ann", body: ask });
    expect((await t.send({ key: "tg_al_ann", body: ask })).refusal?.code).toBe("budget_exceeded");
    await t.send({ key: "tg_al_ann", body: ask });
    const exhausted = sink.alerts.filter((a) => a.type === "budget.exhausted");
    expect(new Set(exhausted.map((a) => a.id))).toEqual(new Set(["budget.exhausted:user:ann:daily:2026-12-07"]));
    expect(exhausted[0]!.data).toMatchObject({ spent_usd: 0.004, limit_usd: 0.004, resets_at: "2026-12-08T00:00:00.000Z" });
    // A new day is a new period: a new id.
    t.clock.set("2026-12-08T00:00:01Z");
    for (let i = 0; i < 5; i++) await t.send({ key: "tg_al_ann", body: ask });
    expect(new Set(sink.alerts.filter((a) => a.type === "budget.exhausted").map((a) => a.id))).toEqual(new Set(["budget.exhausted:user:ann:daily:2026-12-07", "budget.exhausted:user:ann:daily:2026-12-08"]));
  });

  it("budget.burn_rate: raised when the share spent outruns the share of the day gone by (and at least 10% is spent)", async () => {
    const sink = capture();
    // No soft share here, and a $0.01 budget: each call is 10% of it.
    const t = testEngine(config({ plans: { free: { models: ["big"], budget: { daily: 0.01 } } } }), { events: sink.events, clock: fakeClock("2026-12-07T00:00:00Z") });
    const burn = () => sink.alerts.filter((a) => a.type === "budget.burn_rate");
    // 06:00, 25% of the day gone: 20% spent is on pace.
    t.clock.set("2026-12-07T06:00:00Z");
    for (let i = 0; i < 3; i++) await t.send({ key: "tg_al_ann", body: ask });
    expect(burn()).toEqual([]);
    // The third request saw 20% before it; the next sees 30% > 25%: projected to run out before midnight.
    await t.send({ key: "tg_al_ann", body: ask });
    expect(burn().map((a) => a.id)).toEqual(["budget.burn_rate:user:ann:daily:2026-12-07"]);
    // At the average rate so far (30% in 6 h) the budget is gone after 20 h.
    expect(burn()[0]!.data).toMatchObject({ spent_share: 0.3, elapsed_share: 0.25, projected_exhaustion_at: "2026-12-07T20:00:00.000Z" });
  });

  it("abuse.block: one per caller per abuse_every window however many requests it makes", async () => {
    const sink = capture();
    const t = testEngine(config({ abuse: { blocklist: ["203.0.113.0/24"] }, alerts: { abuse_every: "1h" } }), { events: sink.events, clock: fakeClock("2026-12-07T10:10:00Z") });
    for (let i = 0; i < 20; i++) expect((await t.send({ key: "tg_al_ann", body: ask, ip: "203.0.113.9" })).refusal?.code).toBe("blocked");
    expect(sink.ids()).toEqual(["abuse.block:user:ann:2026-12-07T10:00:00.000Z"]);
    expect(sink.alerts[0]!.data).toMatchObject({ subject: "user:ann", ip: "203.0.113.9", signals: ["blocklist"] });
    t.clock.set("2026-12-07T11:00:00Z");
    await t.send({ key: "tg_al_ann", body: ask, ip: "203.0.113.9" });
    expect(sink.ids()).toHaveLength(2);
  });

  it("abuse.downgrade: when the suspicion score downgrades a caller", async () => {
    const sink = capture();
    const t = testEngine(
      config({
        models: { big: { provider: "sim", price: { input: 0, output: 100 } }, small: { provider: "sim", price: { input: 0, output: 1 } } },
        plans: { free: { models: ["big", "small"] } },
        abuse: { downgrade_to: "small", downgrade_at: 10, signals: { refused: 10 } },
      }),
      { events: sink.events },
    );
    // A refusal (a model the plan does not have) makes ann suspicious enough to be downgraded.
    expect((await t.send({ key: "tg_al_ann", body: { ...ask, model: "nope" } })).refusal?.code).toBe("model_not_allowed");
    const r = await t.send({ key: "tg_al_ann", body: ask });
    expect(r.record).toMatchObject({ decision: "downgrade", model: "small" });
    expect(sink.alerts.map((a) => a.type)).toEqual(["abuse.downgrade"]);
    expect(sink.alerts[0]!.id).toMatch(/^abuse\.downgrade:user:ann:/);
  });

  it("without a listener nothing is computed: no extra store reads on the request path", async () => {
    const t = testEngine(config());
    let peeks = 0;
    const peek = t.store.peek.bind(t.store);
    t.store.peek = (c) => (peeks++, peek(c));
    for (let i = 0; i < 3; i++) await t.send({ key: "tg_al_ann", body: ask });
    const withAlerts = testEngine(config(), { events: capture().events });
    let alertPeeks = 0;
    const peek2 = withAlerts.store.peek.bind(withAlerts.store);
    withAlerts.store.peek = (c) => (alertPeeks++, peek2(c));
    for (let i = 0; i < 3; i++) await withAlerts.send({ key: "tg_al_ann", body: ask });
    // One gate-3 peek per request either way; the crossing request pays one more with alerts on.
    expect(peeks).toBe(3);
    expect(alertPeeks).toBe(4);
  });
});
