import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

const config = {
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] } },
  keys: [{ key: "tg_quota_ann", user: "ann", plan: "free" }, { key: "tg_quota_bo", user: "bo", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", limits: [{ per: "user", requests: 3, window: "1m" }] } },
};
const hello = { messages: [{ role: "user", content: "hello" }] };

describe("gate 3, quota", () => {
  it("the 4th request in a 3-per-minute window is 429 with Retry-After and RateLimit headers; the next minute it is served", async () => {
    const t = testEngine(config);
    for (let i = 0; i < 3; i++) expect((await t.send({ key: "tg_quota_ann", body: hello })).refusal).toBeUndefined();
    const fourth = await t.send({ key: "tg_quota_ann", body: hello });
    expect(fourth.refusal).toMatchObject({ code: "rate_limited", status: 429 });
    expect(fourth.refusal!.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(fourth.refusal!.retryAfterSeconds).toBeLessThanOrEqual(60);
    expect(fourth.headers["ratelimit"]).toMatch(/r=0/);
    expect(fourth.record).toMatchObject({ decision: "deny", code: "rate_limited", user: "ann", cost_usd: 0 });
    // Another user has a window of their own.
    expect((await t.send({ key: "tg_quota_bo", body: hello })).refusal).toBeUndefined();
    t.clock.advance(fourth.refusal!.retryAfterSeconds! * 1000);
    expect((await t.send({ key: "tg_quota_ann", body: hello })).refusal).toBeUndefined();
  });

  it("a refused request gives its slot back: refusals later in the chain do not use up the window", async () => {
    const t = testEngine(config);
    for (let i = 0; i < 3; i++) {
      expect((await t.send({ key: "tg_quota_ann", body: { ...hello, model: "not-a-model" } })).refusal?.code).toBe("model_not_allowed");
    }
    expect((await t.send({ key: "tg_quota_ann", body: hello })).refusal).toBeUndefined();
  });
});
