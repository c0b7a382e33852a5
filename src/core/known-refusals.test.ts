import { describe, expect, it } from "vitest";
import { anthropicMessages } from "../formats/anthropic-messages.js";
import { openaiChat } from "../formats/openai-chat.js";
import { CountingStore } from "../testing/counting-store.js";
import { fakeClock, testEngine, type FakeClock } from "../testing/test-engine.js";
import type { CallerContext, HeldCounter } from "./exchange.js";
import type { GateEnv } from "./gate.js";
import { learnSettled } from "./known-refusals.js";
import { RECENT_TOTAL_MS } from "./recent-totals.js";

const hello = { model: "m", messages: [{ role: "user", content: "hello" }] };
const config = (extra: Record<string, unknown> = {}) => ({
  server: { max_refusal_records_per_s: 1 },
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } }, dear: { provider: "sim", price: { input: 5, output: 5 } } },
  // `dear` is offered by the pro plan only: a free caller's 403 is not a pro caller's.
  plans: { free: { models: ["m"], budget: { daily: 1 } }, pro: { models: ["m", "dear"] } },
  keys: [
    { key: "tg_kr_ann", user: "ann", plan: "free" },
    { key: "tg_kr_bob", user: "bob", plan: "pro" },
  ],
  routes: {
    chat: {
      path: "/chat",
      plans: ["free", "pro"],
      default_model: "m",
      limits: [{ per: "user", requests: 5, window: "1m" }],
      input: { max_output_tokens: 64, max_prompt_chars: 100 },
    },
  },
  ...extra,
});

function engineWith(clock: FakeClock, extra?: Record<string, unknown>) {
  const store = new CountingStore(clock.now);
  return { ...testEngine(config(extra), { clock, store, gateway: true }), store };
}

const caller = (key: string, endpoint: CallerContext["endpoint"] = "chat_completions"): CallerContext => ({ route: "chat", endpoint, ip: "198.51.100.7", credentials: { token: key } });

/** Sends forbidden requests the slow way until the code's one record of the second is taken, and returns the last. */
async function spendRecords(t: ReturnType<typeof engineWith>, key: string, body: Record<string, unknown>) {
  const slow = await t.send({ key, body });
  expect(t.engine.bodyRefusalsFolding).toBe(true);
  return slow;
}

describe("a 403 for a model the plan does not offer, answered from the body before an exchange", () => {
  it("gives the slow way's code, message, param and RateLimit headers, without a store trip, and is counted", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    await t.send({ key: "tg_kr_ann", body: hello });
    expect(t.engine.bodyRefusalsFolding).toBe(false);
    // Before the second's records are spent, every 403 takes the whole way to its own record.
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
    const slow = await spendRecords(t, "tg_kr_ann", { ...hello, model: "dear" });
    const ops = t.store.ops;
    const early = t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" });
    expect(t.store.ops).toBe(ops);
    expect(early).toBeDefined();
    expect({ code: early!.error.code, status: early!.error.status, message: early!.error.message, param: early!.error.param, headers: early!.headers }).toEqual({
      code: slow.refusal!.code,
      status: 403,
      message: slow.refusal!.message,
      param: "model",
      headers: { ratelimit: slow.headers["ratelimit"], "ratelimit-policy": slow.headers["ratelimit-policy"] },
    });
    // The window still has one served request in it (the 403s took nothing), and this one counted in.
    expect(early!.headers["ratelimit"]).toBe('"chat.0";r=3;t=60');
    // The Anthropic format reads its model the same way.
    const messages = { model: "dear", max_tokens: 10, messages: [{ role: "user", content: "hello" }] };
    expect(t.engine.refuseFromBody(caller("tg_kr_ann", "messages"), anthropicMessages, messages)?.error.code).toBe("model_not_allowed");
    await t.engine.flushRefusals();
    expect(t.records.find((r) => r.count !== undefined)).toMatchObject({ code: "model_not_allowed", route: "chat", endpoint: "chat_completions", decision: "deny", count: 1 });
  });

  it("never for a caller whose plan offers the model, nor for one the gates before gate 5 refuse", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    await t.send({ key: "tg_kr_ann", body: hello });
    await t.send({ key: "tg_kr_bob", body: hello });
    await spendRecords(t, "tg_kr_ann", { ...hello, model: "dear" });
    // Allowed by bob's plan, not ann's.
    expect(t.engine.refuseFromBody(caller("tg_kr_bob"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
    expect((await t.send({ key: "tg_kr_bob", body: { ...hello, model: "dear" } })).refusal).toBeUndefined();
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeDefined();
    // Gate 4 first: a prompt over the route's cap is a 413, a malformed body a 400.
    const long = { model: "dear", messages: [{ role: "user", content: "x".repeat(101) }] };
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, long)).toBeUndefined();
    expect((await t.send({ key: "tg_kr_ann", body: long })).refusal?.code).toBe("input_too_large");
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { model: "dear", messages: "hi" })).toBeUndefined();
    // An unknown key is gate 1's, not this one's.
    expect(t.engine.refuseFromBody(caller("tg_kr_nobody"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
  });

  it("only while the recent totals say gate 3 passes: a full window or a spent budget goes to the gates", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    for (let i = 0; i < 4; i++) expect((await t.send({ key: "tg_kr_ann", body: hello })).refusal).toBeUndefined();
    await spendRecords(t, "tg_kr_ann", { ...hello, model: "dear" });
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeDefined();
    // The window's last slot: with this request in, it would be 5 of 5, still room.
    expect((await t.send({ key: "tg_kr_ann", body: hello })).refusal).toBeUndefined();
    // Full now: gate 3's 429 comes first, and only the gates give it.
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
    expect((await t.send({ key: "tg_kr_ann", body: { ...hello, model: "dear" } })).refusal?.code).toBe("rate_limited");
    // Totals older than RECENT_TOTAL_MS are not trusted either.
    clock.advance(60_000 + RECENT_TOTAL_MS + 1);
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
  });

  it("not when the caller's budget is spent: gate 3's 402 comes first", async () => {
    const clock = fakeClock();
    const t = engineWith(clock, { plans: { free: { models: ["m"], budget: { daily: 0 } }, pro: { models: ["m", "dear"] } } });
    // Nothing left of a budget of nothing: refused at gate 3, before the body.
    await t.send({ key: "tg_kr_ann", body: hello });
    const refused = await t.send({ key: "tg_kr_ann", body: { ...hello, model: "dear" } });
    expect(refused.refusal?.code).toBe("budget_exceeded");
    // Bob's 403 for a model no plan offers takes the second's one record of the code.
    await t.send({ key: "tg_kr_bob", body: hello });
    await spendRecords(t, "tg_kr_bob", { ...hello, model: "nope" });
    expect(t.engine.refuseFromBody(caller("tg_kr_bob"), openaiChat, { ...hello, model: "nope" })).toBeDefined();
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
  });
});

describe("a 402 for an estimate a budget cannot take even at its settled spend, answered from the body", () => {
  // A budget of 200 micro-dollars. At $1 per 1M tokens a call of `hello` estimates 81 + its
  // max_tokens micro-dollars (the prompt's bound, then the output) and costs 11 + what it wrote.
  const tight = { plans: { free: { models: ["m"], budget: { daily: 0.0002 } }, pro: { models: ["m", "dear"] } } };
  const ask = (tokens: number) => ({ ...hello, max_tokens: tokens });
  const settle = () => new Promise((r) => setImmediate(r));

  it("gives the slow way's code, message, Retry-After and RateLimit headers without a store trip, once the settled spend leaves too little", async () => {
    const clock = fakeClock();
    const t = engineWith(clock, tight);
    // Two calls of 60 output tokens at most: served, and settled at what they cost.
    let spent = 0;
    for (let i = 0; i < 2; i++) {
      const served = await t.send({ key: "tg_kr_ann", body: ask(60) });
      expect(served.refusal).toBeUndefined();
      spent += Math.round(served.record.cost_usd * 1e6);
    }
    // An estimate one micro-dollar over what is left: the store refuses it, and tells what is settled.
    const over = 200 - spent - 80;
    expect(over).toBeGreaterThan(1);
    expect(over).toBeLessThanOrEqual(64);
    const big = ask(over);
    const slow = await t.send({ key: "tg_kr_ann", body: big });
    expect(slow.refusal?.code).toBe("budget_exceeded");
    await settle();
    expect(t.engine.bodyRefusalsFolding).toBe(true);
    const ops = t.store.ops;
    const early = t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, big);
    expect(t.store.ops).toBe(ops);
    expect(early).toBeDefined();
    expect({ code: early!.error.code, status: early!.error.status, message: early!.error.message, retryAfter: early!.error.retryAfterSeconds, limit: early!.error.limit, headers: early!.headers }).toEqual({
      code: "budget_exceeded",
      status: 402,
      message: slow.refusal!.message,
      retryAfter: slow.refusal!.retryAfterSeconds,
      limit: slow.refusal!.limit,
      headers: { ratelimit: slow.headers["ratelimit"], "ratelimit-policy": slow.headers["ratelimit-policy"] },
    });
    // A call small enough for what is left is not refused here, and is served.
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, ask(1))).toBeUndefined();
    expect((await t.send({ key: "tg_kr_ann", body: ask(1) })).refusal).toBeUndefined();
    await t.engine.flushRefusals();
    expect(t.records.find((r) => r.count !== undefined)).toMatchObject({ code: "budget_exceeded", decision: "deny", count: 1 });
  });

  it("never from holds: a budget full of in-flight estimates that then settle lower admits again", async () => {
    const clock = fakeClock();
    const t = engineWith(clock, tight);
    // A call holding most of the budget at its estimate, still in flight.
    const held = t.engine.open(caller("tg_kr_ann"));
    await t.engine.admit(held, { bodyPending: true });
    await t.engine.prepare(held, openaiChat, ask(80));
    expect(held.budget).toBeDefined();
    const second = ask(40);
    expect((await t.send({ key: "tg_kr_ann", body: second })).refusal?.code).toBe("budget_exceeded");
    await settle();
    expect(t.engine.bodyRefusalsFolding).toBe(true);
    // Nothing is settled yet: only the store can refuse it.
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, second)).toBeUndefined();
    // The held call ends having generated little: its hold settles far lower, and the next call fits.
    const { meter } = await t.engine.call(held, new AbortController().signal);
    await t.engine.finish(held, { ended: "complete", meter });
    expect(held.record.cost_usd * 1e6).toBeLessThan(60);
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, second)).toBeUndefined();
    expect((await t.send({ key: "tg_kr_ann", body: second })).refusal).toBeUndefined();
  });
});

describe("early refusals of engines sharing one process", () => {
  it("word a 402 by each engine's own budget, though their budgets share a key", async () => {
    const clock = fakeClock();
    const messages = [];
    for (const daily of [0.0001, 0.00005]) {
      const t = engineWith(clock, { plans: { free: { models: ["m"], budget: { daily } }, pro: { models: ["m", "dear"] } } });
      // No call fits either budget (each estimates over 81 micro-dollars): the first 402 spends the second's record.
      const slow = await t.send({ key: "tg_kr_ann", body: hello });
      expect(slow.refusal?.code).toBe("budget_exceeded");
      const early = t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, hello);
      expect(early?.error.message).toBe(slow.refusal!.message);
      messages.push(early!.error.message);
    }
    expect(messages[0]).toContain("$0.0001 ");
    expect(messages[1]).toContain("$0.00005 ");
  });
});

describe("the second whose refusal records are spent", () => {
  it("is the engine's clock's second, as the gates' own: a new second gives 403s their own records again", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    await spendRecords(t, "tg_kr_ann", { ...hello, model: "dear" });
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeDefined();
    // Before, the records counted seconds of the wall clock: this test, like every early-refusal
    // test, then depended on no wall-clock second ending in its middle.
    clock.advance(1_000);
    expect(t.engine.bodyRefusalsFolding).toBe(false);
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, { ...hello, model: "dear" })).toBeUndefined();
  });
});

describe("learning a refused budget's settled spend", () => {
  it("asks the store once per budget while a question is open, however many 402s come meanwhile", async () => {
    let asked = 0;
    let answer!: (d: { total: number; reserved: number }[]) => void;
    const noted: number[] = [];
    const env = {
      store: { peekDetail: () => (asked++, new Promise<{ total: number; reserved: number }[]>((r) => (answer = r))) },
      recent: { settledFresh: () => noted.length > 0, noteSettled: (_key: string, amount: number) => noted.push(amount) },
    } as unknown as GateEnv;
    const budget = { key: "b:ann:d", max: 1_000, amount: 10, windowMs: 86_400_000, unit: "usd", period: "daily", label: "daily budget" } as HeldCounter;
    for (let i = 0; i < 50; i++) learnSettled(env, budget);
    expect(asked).toBe(1);
    answer([{ total: 900, reserved: 300 }]);
    await new Promise((r) => setImmediate(r));
    expect(noted).toEqual([600]);
    learnSettled(env, budget);
    expect(asked).toBe(1);
  });
});

describe("a flood of one body", () => {
  const bytesOf = (body: unknown) => Buffer.from(JSON.stringify(body));
  /** refuseFromBytes, counting the parses it asks for. */
  function fromBytes(t: ReturnType<typeof engineWith>, key: string, bytes: Buffer, parses: { n: number }) {
    return t.engine.refuseFromBytes(caller(key), openaiChat, bytes, () => (parses.n++, JSON.parse(bytes.toString())));
  }

  it("is parsed once, and refused as the parsed body is, while the caller's windows still have room", async () => {
    const clock = fakeClock();
    const t = engineWith(clock);
    const dear = { ...hello, model: "dear" };
    await spendRecords(t, "tg_kr_ann", dear);
    const parses = { n: 0 };
    const first = fromBytes(t, "tg_kr_ann", bytesOf(dear), parses);
    const again = fromBytes(t, "tg_kr_ann", bytesOf(dear), parses);
    expect(parses.n).toBe(1);
    expect(again).toEqual(first);
    expect(again).toEqual(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, dear));
    // Other bytes are parsed; bytes that are no JSON are left to the gates.
    expect(fromBytes(t, "tg_kr_ann", bytesOf({ ...dear, max_tokens: 5 }), parses)?.error.code).toBe("model_not_allowed");
    expect(parses.n).toBe(2);
    expect(t.engine.refuseFromBytes(caller("tg_kr_ann"), openaiChat, Buffer.from("{"), () => JSON.parse("{"))).toBeUndefined();
    // What the body says is kept, not the verdict: once the window is full, the same bytes go the whole way.
    expect(fromBytes(t, "tg_kr_ann", bytesOf(dear), parses)).toBeDefined();
    expect(parses.n).toBe(3);
    for (let i = 0; i < 5; i++) expect((await t.send({ key: "tg_kr_ann", body: hello })).refusal).toBeUndefined();
    expect(fromBytes(t, "tg_kr_ann", bytesOf(dear), parses)).toBeUndefined();
    expect(parses.n).toBe(3);
  });

  it("gets no 402 from yesterday's budget once the day is over", async () => {
    const clock = fakeClock("2026-01-15T23:59:58Z");
    const keys = [
      { key: "tg_kr_ann", user: "ann", plan: "free" },
      { key: "tg_kr_cat", user: "cat", plan: "free" },
    ];
    const t = engineWith(clock, { keys, plans: { free: { models: ["m"], budget: { daily: 0.0002 } }, pro: { models: ["m", "dear"] } } });
    const ask = (tokens: number) => ({ ...hello, max_tokens: tokens });
    // Two calls served and settled at what they cost; then one whose estimate is just over what is left.
    let spent = 0;
    for (let i = 0; i < 2; i++) spent += Math.round((await t.send({ key: "tg_kr_ann", body: ask(60) })).record.cost_usd * 1e6);
    const big = ask(200 - spent - 80);
    expect((await t.send({ key: "tg_kr_ann", body: big })).refusal?.code).toBe("budget_exceeded");
    await new Promise((r) => setImmediate(r));
    const parses = { n: 0 };
    expect(t.engine.bodyRefusalsFolding).toBe(true);
    expect(t.engine.refuseFromBody(caller("tg_kr_ann"), openaiChat, big)?.error.code).toBe("budget_exceeded");
    expect(fromBytes(t, "tg_kr_ann", bytesOf(big), parses)?.error.code).toBe("budget_exceeded");
    // Midnight: a new day's budget, which ann has not spent. (cat's 402, after two calls of the
    // new day, spends the new second's record, so the early way is open.)
    clock.set("2026-01-16T00:00:01Z");
    for (let i = 0; i < 2; i++) expect((await t.send({ key: "tg_kr_cat", body: ask(60) })).refusal).toBeUndefined();
    expect((await t.send({ key: "tg_kr_cat", body: ask(64) })).refusal?.code).toBe("budget_exceeded");
    expect(t.engine.bodyRefusalsFolding).toBe(true);
    expect(fromBytes(t, "tg_kr_ann", bytesOf(big), parses)).toBeUndefined();
    expect(parses.n).toBe(1);
    expect((await t.send({ key: "tg_kr_ann", body: big })).refusal).toBeUndefined();
  });
});
