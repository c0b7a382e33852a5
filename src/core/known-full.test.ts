import { describe, expect, it } from "vitest";
import { openaiChat } from "../formats/openai-chat.js";
import { CountingStore } from "../testing/counting-store.js";
import { fakeClock, testEngine, type FakeClock } from "../testing/test-engine.js";
import { TollgateError } from "./errors.js";
import { RECENT_TOTAL_MS } from "./recent-totals.js";

const hello = { model: "m", messages: [{ role: "user", content: "hello" }] };
const config = (extra: Record<string, unknown> = {}) => ({
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } }, dear: { provider: "sim", price: { input: 5, output: 5 } } },
  plans: { free: { models: ["m"], budget: { daily: 1 } } },
  keys: [{ key: "tg_full_ann", user: "ann", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", limits: [{ per: "user", requests: 2, window: "1m" }], input: { max_output_tokens: 64 } } },
  ...extra,
});

function engineWith(clock: FakeClock, opts: { gateway?: boolean; extra?: Record<string, unknown> } = {}) {
  const store = new CountingStore(clock.now);
  return { ...testEngine(config(opts.extra), { clock, store, gateway: opts.gateway ?? true }), store };
}

/** What a caller sees of a refusal, and what its record says. */
function seen(r: { refusal?: TollgateError; headers: Record<string, string>; record: { code: string | null; decision: string; user: string | null; key_id: string | null; plan: string | null } }) {
  const { refusal, headers, record } = r;
  return {
    code: refusal?.code,
    status: refusal?.status,
    message: refusal?.message,
    retryAfter: refusal?.retryAfterSeconds,
    ratelimit: headers["ratelimit"],
    policy: headers["ratelimit-policy"],
    record: { code: record.code, decision: record.decision, user: record.user, key_id: record.key_id, plan: record.plan },
  };
}

describe("refusals the store just gave, given again from memory", () => {
  it("a full window's 429 comes again without a store trip: the same code, message, Retry-After, RateLimit headers and record", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal).toBeUndefined();
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal).toBeUndefined();
    const ops = t.store.ops;
    const first = seen(await t.send({ key: "tg_full_ann", body: hello }));
    expect(first).toMatchObject({ code: "rate_limited", status: 429, retryAfter: 60, ratelimit: '"chat.0";r=0;t=60', record: { code: "rate_limited", decision: "deny", user: "ann" } });
    // The store said so: a peek, then the reservation that names the window and its wait.
    expect(t.store.ops).toBe(ops + 2);
    clock.advance(400);
    const again = seen(await t.send({ key: "tg_full_ann", body: hello }));
    expect(t.store.ops).toBe(ops + 2);
    // The wait counts down from the store's answer, as the store's would have.
    expect(again).toEqual({ ...first, message: first.message });
    clock.advance(700);
    expect(seen(await t.send({ key: "tg_full_ann", body: hello })).retryAfter).toBe(59);
  });

  it("for RECENT_TOTAL_MS at most, never past the window's reset, and not after this process gave a slot back", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    await t.send({ key: "tg_full_ann", body: hello });
    await t.send({ key: "tg_full_ann", body: hello });
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal?.code).toBe("rate_limited");
    clock.advance(RECENT_TOTAL_MS + 1);
    const ops = t.store.ops;
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal?.code).toBe("rate_limited");
    expect(t.store.ops).toBeGreaterThan(ops);
    // The window resets a minute after its first request: served again, whatever was remembered.
    clock.advance(60_000);
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal).toBeUndefined();
  });

  it("a slot this process gives back lets the next request ask the store (library mode: gate 3 holds before the body)", async () => {
    const clock = fakeClock();
    const t = engineWith(clock, { gateway: false });
    const held = t.engine.open({ route: "chat", endpoint: "chat_completions", ip: "198.51.100.7", credentials: { token: "tg_full_ann" } });
    await t.engine.admit(held);
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal).toBeUndefined();
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal?.code).toBe("rate_limited");
    // The held request is refused at gate 4: its slot goes back to the window.
    await expect(t.engine.prepare(held, openaiChat, { model: 42 })).rejects.toThrow();
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal).toBeUndefined();
  });

  it("a flood's 429s past the second's records are answered before an exchange, with the headers and body of the slow way, and counted", async () => {
    const clock = fakeClock();
    const t = engineWith(clock, { extra: { server: { max_refusal_records_per_s: 1 } } });
    await t.send({ key: "tg_full_ann", body: hello });
    await t.send({ key: "tg_full_ann", body: hello });
    const caller = { route: "chat", endpoint: "chat_completions" as const, ip: "198.51.100.7", credentials: { token: "tg_full_ann" } };
    // Within one second of the records: the first 429 takes the whole way to its own record; the
    // early answer is given only once the code's records of the second are spent.
    let slow, early;
    for (let attempt = 0; attempt < 3 && !early; attempt++) {
      expect(t.engine.refuseEarly(caller)).toBeUndefined();
      slow = seen(await t.send({ key: "tg_full_ann", body: hello }));
      const ops = t.store.ops;
      early = t.engine.refuseEarly(caller);
      expect(t.store.ops).toBe(ops);
    }
    expect(early).toBeDefined();
    expect({ code: early!.error.code, status: early!.error.status, message: early!.error.message, retryAfter: early!.error.retryAfterSeconds, ratelimit: early!.headers["ratelimit"], policy: early!.headers["ratelimit-policy"] }).toEqual({
      code: slow!.code,
      status: slow!.status,
      message: slow!.message,
      retryAfter: slow!.retryAfter,
      ratelimit: slow!.ratelimit,
      policy: slow!.policy,
    });
    await t.engine.flushRefusals();
    const summary = t.records.find((r) => r.count !== undefined);
    expect(summary).toMatchObject({ code: "rate_limited", route: "chat", endpoint: "chat_completions", decision: "deny", count: 1 });
  });

  it("a 403 for a model the plan does not offer costs no store trip while the recent totals show room, with gate 3's RateLimit headers", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    await t.send({ key: "tg_full_ann", body: hello });
    const ops = t.store.ops;
    const forbidden = await t.send({ key: "tg_full_ann", body: { ...hello, model: "dear" } });
    expect(forbidden.refusal).toMatchObject({ code: "model_not_allowed", status: 403 });
    expect(t.store.ops).toBe(ops);
    // One of two taken, and this request in the window as gate 3 would have had it: none left.
    expect(forbidden.headers).toMatchObject({ ratelimit: '"chat.0";r=0;t=60', "ratelimit-policy": '"chat.0";q=2;w=60' });
    expect(forbidden.record).toMatchObject({ decision: "deny", code: "model_not_allowed", model_requested: "dear" });
    // It took nothing: the window's second request is still served.
    expect((await t.send({ key: "tg_full_ann", body: hello })).refusal).toBeUndefined();
  });
});
