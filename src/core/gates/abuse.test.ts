import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

const config = {
  providers: { sim: { type: "simulated" } },
  models: {
    cheap: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 0.1, output: 0.4 } },
    dear: { provider: "sim", upstream: "gpt-4o", price: { input: 5, output: 20 } },
  },
  plans: { free: { models: ["cheap", "dear"] } },
  keys: [{ key: "tg_abuse_ann", user: "ann", plan: "free" }, { key: "tg_abuse_bo", user: "bo", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "dear", input: { max_prompt_chars: 50 } } },
  abuse: {
    blocklist: ["203.0.113.0/24"],
    downgrade_to: "cheap",
    downgrade_at: 2,
    block_at: 4,
    half_life: "1h",
    signals: { refused: 1, near_cap_prompt: 0, ip_many_users: 0, burst_under_limit: 0, new_identity_expensive_model: 0 },
  },
};
const hello = { messages: [{ role: "user", content: "hello" }] };
const tooLong = { messages: [{ role: "user", content: "x".repeat(51) }] };

describe("gate 2, abuse", () => {
  it("a blocklisted network is 403 blocked, with the signal on the record", async () => {
    const { refusal, record } = await testEngine(config).send({ key: "tg_abuse_ann", ip: "203.0.113.40", body: hello });
    expect(refusal).toMatchObject({ code: "blocked", status: 403 });
    expect(record.signals).toContain("blocklist");
  });

  it("refusals raise the caller's score: at downgrade_at the model is swapped with the signal named, at block_at the caller is blocked", async () => {
    const t = testEngine(config);
    // Each address its own, so only the user's score rises.
    const from = (n: number) => `198.51.${n}.1`;
    for (let i = 0; i < 2; i++) expect((await t.send({ key: "tg_abuse_ann", ip: from(i), body: tooLong })).refusal?.code).toBe("input_too_large");
    const downgraded = await t.send({ key: "tg_abuse_ann", ip: from(2), body: hello });
    expect(downgraded.refusal).toBeUndefined();
    expect(downgraded.record).toMatchObject({ decision: "downgrade", model_requested: "dear", model: "cheap" });
    expect(downgraded.headers["x-tollgate-downgraded"]).toBe("score:2(user)");
    expect(downgraded.record.signals).toContain("score:2(user)");
    // Another user is untouched.
    expect((await t.send({ key: "tg_abuse_bo", ip: from(3), body: hello })).record).toMatchObject({ decision: "allow", model: "dear" });

    for (let i = 4; i < 6; i++) await t.send({ key: "tg_abuse_ann", ip: from(i), body: tooLong });
    expect((await t.send({ key: "tg_abuse_ann", ip: from(6), body: hello })).refusal).toMatchObject({ code: "blocked", status: 403 });
  });

  it("the score decays with the clock: after enough half-lives the caller is served the model asked for", async () => {
    const t = testEngine(config);
    for (let i = 0; i < 2; i++) await t.send({ key: "tg_abuse_ann", ip: `198.51.${i}.1`, body: tooLong });
    t.clock.advance(2 * 3_600_000); // two half-lives: the score of 2 is down to 0.5
    const served = await t.send({ key: "tg_abuse_ann", ip: "198.51.9.1", body: hello });
    expect(served.record).toMatchObject({ decision: "allow", model: "dear" });
  });
});
