import { describe, expect, it } from "vitest";
import { openaiChat } from "../../formats/openai-chat.js";
import { MemoryStore } from "../../stores/memory.js";
import { fakeClock, testEngine, type TestEngine } from "../../testing/test-engine.js";
import { checkpointOf } from "../checkpoint.js";
import { TollgateError } from "../errors.js";
import type { Provider } from "../provider.js";
import type { Counter, ReserveResult } from "../store.js";

/** A memory store that lists the reservation ops requests cost and remembers every counter reserved. */
class CountingStore extends MemoryStore {
  ops: string[] = [];
  readonly reserved = new Map<string, Counter>();

  override reserve(id: string, counters: Counter[], leaseMs: number): Promise<ReserveResult> {
    this.ops.push(`reserve ${suffix(id)}`);
    for (const c of counters) this.reserved.set(c.key, c);
    return super.reserve(id, counters, leaseMs);
  }
  /** The next settle fails, as a full disk or a lost Redis would make it. */
  failSettle = false;

  override settle(id: string, actual: number[]): Promise<void> {
    this.ops.push(`settle ${suffix(id)}`);
    if (this.failSettle) {
      this.failSettle = false;
      return Promise.reject(new Error("disk I/O error"));
    }
    return super.settle(id, actual);
  }
  override release(id: string): Promise<void> {
    this.ops.push(`release ${suffix(id)}`);
    return super.release(id);
  }

  /** The totals of the counters reserved whose keys start with `prefix`, by key. */
  async totals(prefix: string): Promise<Record<string, number>> {
    const matching = [...this.reserved.values()].filter((c) => c.key.startsWith(prefix));
    const totals = await this.peek(matching);
    return Object.fromEntries(matching.map((c, i) => [c.key, totals[i]!]));
  }

  /** The total of the one counter reserved whose key starts with `prefix`. */
  async total(prefix: string): Promise<number> {
    const totals = Object.values(await this.totals(prefix));
    expect(totals, prefix).toHaveLength(1);
    return totals[0]!;
  }
}
const suffix = (id: string) => id.slice(id.lastIndexOf(":"));

const config = {
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
  // tiny's budget is not spent (gate 3 lets its callers in) but no call fits it (gate 6 refuses).
  plans: { free: { models: ["m"], budget: { daily: 1 } }, tiny: { models: ["m"], budget: { daily: 0.00001 } } },
  keys: [
    { key: "tg_joint_ann", user: "ann", plan: "free" },
    { key: "tg_joint_cy", user: "cy", plan: "tiny" },
    { key: "tg_joint_dee", user: "dee", plan: "free" },
  ],
  routes: {
    chat: {
      path: "/chat",
      plans: ["free", "tiny"],
      default_model: "m",
      limits: [
        { per: "user", requests: 3, window: "1m" },
        { per: "route", requests: 4, window: "1m" },
        { per: "user", tokens: 100_000, window: "1d" },
      ],
      input: { max_output_tokens: 100, max_messages: 4 },
      // Lease 25 s: a dead process's reservation is recovered inside the minute's window.
      timeout: "20s",
    },
  },
};
const hello = { messages: [{ role: "user", content: "hello" }] };
/** Over max_messages (gate 4's 413); what gate 4 reads first (model, stream) would show on the record. */
const tooLong = { model: "m", stream: true, messages: Array.from({ length: 6 }, () => ({ role: "user", content: "hello" })) };

/** Fills the route's window of four: ann's three, dee's one. */
async function fillRoute(t: TestEngine): Promise<void> {
  for (const key of ["tg_joint_ann", "tg_joint_ann", "tg_joint_ann", "tg_joint_dee"]) expect((await t.send({ key, body: hello })).refusal).toBeUndefined();
}

function gateway(store = new CountingStore(clock.now), providers?: Record<string, Provider>): TestEngine & { store: CountingStore } {
  return testEngine(config, { clock, store, providers, gateway: true }) as TestEngine & { store: CountingStore };
}
const clock = fakeClock();

/** Admits a request as the gateway does before the body arrives; `prepare` then runs gates 3-6 on the body. */
async function admitted(t: TestEngine, key: string) {
  const ex = t.engine.open({ route: "chat", endpoint: "chat_completions", ip: "198.51.100.7", credentials: { token: key } });
  await t.engine.admit(ex, { bodyPending: true });
  const prepare = async (body: object) => {
    try {
      await t.engine.prepare(ex, openaiChat, body);
      return undefined;
    } catch (err) {
      if (!TollgateError.is(err)) throw err;
      return err;
    }
  };
  return { ex, prepare };
}

describe("one store reservation per admitted gateway request (gates 3 and 6 together)", () => {
  it("a request with request windows, a token window and a budget costs one reserve and one settle, which count all of them", async () => {
    const t = gateway();
    const { record, refusal, headers } = await t.send({ key: "tg_joint_ann", body: hello });
    expect(refusal).toBeUndefined();
    expect(t.store.ops).toEqual(["reserve :qb", "settle :qb"]);
    // Everything the old two reservations counted is counted.
    expect(await t.store.total("bud:d:u:ann")).toBe(Math.round(record.cost_usd * 1e6));
    expect(record.cost_usd).toBeGreaterThan(0);
    expect(await t.store.total("lim:chat.2:")).toBe(record.input_tokens + record.output_tokens);
    expect(Object.values(await t.store.totals("lim:"))).toEqual([1, 1, record.input_tokens + record.output_tokens]);
    expect(headers["ratelimit"]).toBe('"chat.0";r=2;t=60, "chat.1";r=3;t=60');
    expect(Number(headers["x-tollgate-budget-remaining"])).toBeCloseTo(1 - record.estimated_cost_usd, 6);
    // The windows took the request: two more fit the per-user window of 3, the next is refused.
    for (let i = 0; i < 2; i++) expect((await t.send({ key: "tg_joint_ann", body: hello })).refusal).toBeUndefined();
    expect((await t.send({ key: "tg_joint_ann", body: hello })).refusal?.code).toBe("rate_limited");
  });

  it("on a memory store a request is held within prepare's call (no turn of the microtask queue), and concurrent requests still fit the windows exactly", async () => {
    const store = new MemoryStore(clock.now);
    const t = testEngine(config, { clock, store, gateway: true });
    const { ex } = await admitted(t, "tg_joint_ann");
    const preparing = t.engine.prepare(ex, openaiChat, hello);
    expect(ex.quota?.id).toBe(`${ex.id}:qb`);
    expect(ex.budget?.counters.map((c) => c.unit)).toEqual(["usd", "tokens"]);
    await preparing;
    // ann holds one of her three and one of the route's four: two more of ann's fit, then one of dee's.
    const ann = await Promise.all(Array.from({ length: 6 }, () => t.send({ key: "tg_joint_ann", body: hello })));
    expect(ann.filter((r) => !r.refusal)).toHaveLength(2);
    const dee = await Promise.all(Array.from({ length: 4 }, () => t.send({ key: "tg_joint_dee", body: hello })));
    expect(dee.filter((r) => !r.refusal)).toHaveLength(1);
    expect([...ann, ...dee].filter((r) => r.refusal).every((r) => r.refusal!.code === "rate_limited")).toBe(true);
    const route = config.routes.chat.limits[1]!;
    expect(await store.peek([{ key: "lim:chat.1:*", windowMs: 60_000 }])).toEqual([route.requests]);
  });

  it("a store whose reserve answers with a thenable that is not a native Promise (a library user's own store) is waited for", async () => {
    class ThenableStore extends CountingStore {
      override reserve(id: string, counters: Counter[], leaseMs: number): Promise<ReserveResult> {
        const answer = super.reserve(id, counters, leaseMs);
        return { then: (ok: (r: ReserveResult) => unknown, fail: (e: unknown) => unknown) => answer.then(ok, fail) } as unknown as Promise<ReserveResult>;
      }
    }
    const t = gateway(new ThenableStore(clock.now));
    const { record, refusal } = await t.send({ key: "tg_joint_ann", body: hello });
    expect(refusal).toBeUndefined();
    expect(t.store.ops).toEqual(["reserve :qb", "settle :qb"]);
    expect(await t.store.total("bud:d:u:ann")).toBe(Math.round(record.cost_usd * 1e6));
    expect(Object.values(await t.store.totals("lim:"))).toEqual([1, 1, record.input_tokens + record.output_tokens]);
  });

  it("a call that generated nothing: the windows count the request, the budget and token window nothing", async () => {
    const failing: Provider = { name: "sim", supports: () => true, close: async () => {}, call: async () => Promise.reject(new Error("connection reset")) };
    const t = gateway(new CountingStore(clock.now), { sim: failing });
    const { refusal } = await t.send({ key: "tg_joint_ann", body: hello });
    expect(refusal?.code).toBe("upstream_error");
    expect(t.store.ops).toEqual(["reserve :qb", "settle :qb"]);
    expect(await t.store.total("bud:d:u:ann")).toBe(0);
    expect(Object.values(await t.store.totals("lim:"))).toEqual([1, 1, 0]);
  });

  it("a settle the store fails: the reservation is charged (usage_source reserved), and the retry still counts the windows", async () => {
    const t = gateway();
    t.store.failSettle = true;
    const { record, refusal } = await t.send({ key: "tg_joint_ann", body: hello });
    expect(refusal).toBeUndefined();
    expect(record).toMatchObject({ usage_source: "reserved", ended: "complete", output_tokens: 100 });
    expect(Math.round(record.cost_usd * 1e6)).toBe(Math.round(record.estimated_cost_usd * 1e6));
    expect(t.warnings.join("\n")).toMatch(/settling a served request failed; its reservation is charged/);
    expect(t.store.ops).toEqual(["reserve :qb", "settle :qb", "settle :qb"]);
    expect(await t.store.total("bud:d:u:ann")).toBe(Math.round(record.estimated_cost_usd * 1e6));
    expect(Object.values(await t.store.totals("lim:"))).toEqual([1, 1, record.input_tokens + record.output_tokens]);
  });

  it("a budget refusal after the windows passed leaves the windows untouched, with gate 3's RateLimit headers and gate 6's 402", async () => {
    const t = gateway();
    for (let i = 0; i < 5; i++) {
      const { refusal, headers, record } = await t.send({ key: "tg_joint_cy", body: hello });
      expect(refusal).toMatchObject({ code: "budget_exceeded", status: 402 });
      expect(refusal!.message).toMatch(/would be exceeded: \$0\.00001 left, this request may cost up to \$0\.0001/);
      // What gate 3 says with this request in its windows: nothing was held before it.
      expect(headers["ratelimit"]).toBe('"chat.0";r=2;t=60, "chat.1";r=3;t=60');
      expect(record).toMatchObject({ decision: "deny", code: "budget_exceeded", model: "m", cost_usd: 0 });
      expect(record.estimated_cost_usd).toBeGreaterThan(0);
    }
    // Five refusals in a window of three per user and four per route: none of them counted.
    expect(Object.values(await t.store.totals("lim:"))).toEqual([0, 0, 0]);
    expect(await t.store.total("bud:d:u:cy")).toBe(0);
    // Nothing was held, so there was nothing to give back. Each asks the store: a budget seen full
    // can have room a moment later, when holds settle below their estimates (quota.ts windowRefusal).
    expect(t.store.ops).toEqual(Array(5).fill("reserve :qb"));
    expect((await t.send({ key: "tg_joint_ann", body: hello })).headers["ratelimit"]).toBe('"chat.0";r=2;t=60, "chat.1";r=3;t=60');
  });

  it("a full window still refuses first when the budget would refuse too: gate 3's 429, and the record as gate 3 left it", async () => {
    const t = gateway();
    // cy is admitted while the route's window has room; ann fills it before cy's body is in.
    const cy = await admitted(t, "tg_joint_cy");
    await fillRoute(t);
    const refusal = await cy.prepare({ ...hello, model: "m", max_tokens: 5_000 });
    expect(refusal).toMatchObject({ code: "rate_limited", status: 429 });
    expect(refusal!.message).toMatch(/^rate limited by limit chat.1 \(4 requests per 1m for the whole route\)/);
    expect(refusal!.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(cy.ex.headers).toEqual({ "ratelimit-policy": '"chat.0";q=3;w=60, "chat.1";q=4;w=60', ratelimit: `"chat.1";r=0;t=${refusal!.retryAfterSeconds}` });
    // Gates 4-6 never ran as far as the record can tell: no clamp, model or estimate.
    expect(cy.ex.record).toMatchObject({ decision: "deny", code: "rate_limited", model_requested: null, model: null, estimated_cost_usd: 0, clamped: {} });
  });

  it("a full window refuses before gate 4 does; with room, gate 4's refusal comes with gate 3's headers and holds nothing", async () => {
    const t = gateway();
    const late = await admitted(t, "tg_joint_cy");
    const early = await admitted(t, "tg_joint_cy");
    // With room: gate 4's 413, and the windows as gate 3 saw them with this request in.
    expect(await early.prepare(tooLong)).toMatchObject({ code: "input_too_large", status: 413 });
    expect(early.ex.headers["ratelimit"]).toBe('"chat.0";r=2;t=60, "chat.1";r=3;t=60');
    // Four more fill the route's window of four: the refused request held none of it.
    await fillRoute(t);
    // Full: the window's 429 wins over gate 4's 413, and the record is gate 3's.
    expect(await late.prepare(tooLong)).toMatchObject({ code: "rate_limited", status: 429 });
    expect(late.ex.headers["ratelimit"]).toMatch(/^"chat.1";r=0;t=\d+$/);
    expect(late.ex.record).toMatchObject({ code: "rate_limited", model_requested: null, stream: false });
  });

  it("a stream's checkpoint settles the one reservation whole: a crashed process's windows and budget are charged at it", async () => {
    const store = new CountingStore(clock.now);
    const t = gateway(store);
    const { ex, prepare } = await admitted(t, "tg_joint_ann");
    expect(await prepare({ ...hello, stream: true })).toBeUndefined();
    const { result, meter } = await t.engine.call(ex, new AbortController().signal);
    if (result.kind !== "stream") throw new Error("expected a stream");
    let events = 0;
    for await (const event of result.events) {
      meter.event(event);
      if (++events === 4) break;
    }
    const cp = checkpointOf(ex, meter, t.config)!;
    expect(cp.settles).toHaveLength(1);
    await store.checkpoint(cp);
    // The process dies here: nothing settles until the lease runs out and another process recovers it.
    clock.advance(ex.route.timeoutMs + 6_000);
    const [recovered] = await t.engine.recover();
    expect(recovered).toMatchObject({ request_id: ex.id, ended: "client_disconnect" });
    expect(recovered!.cost_usd).toBeGreaterThan(0);
    expect(await store.total("bud:d:u:ann")).toBe(Math.round(recovered!.cost_usd * 1e6));
    // Still inside the minute's window (the lease was shorter): the request counts in both, and
    // its tokens so far in the day's.
    expect(Object.values(await store.totals("lim:"))).toEqual([1, 1, recovered!.input_tokens + recovered!.output_tokens]);
  });
});

describe("a request that loses the race for a window's last slot after gates 4-6 ran", () => {
  // Every write gates 4-6 make: a clamp (and its header), a stream, a soft-budget downgrade (the
  // decision, another model, its header and signal), the served model's header and the estimate.
  const soft = {
    providers: { sim: { type: "simulated" } },
    models: { big: { provider: "sim", price: { input: 0, output: 100 } }, small: { provider: "sim", price: { input: 0, output: 50 } } },
    plans: { free: { models: ["big", "small"], budget: { daily: 0.004, soft: 0.1 }, budget_downgrade_to: "small" } },
    keys: [
      { key: "tg_race_ann", user: "ann", plan: "free" },
      { key: "tg_race_bo", user: "bo", plan: "free" },
    ],
    routes: { chat: { path: "/chat", plans: ["free"], limits: [{ per: "route", requests: 3, window: "1m" }], input: { max_output_tokens: 10 } } },
  };
  const asked = { model: "big", stream: true, max_tokens: 500, messages: [{ role: "user", content: "hello" }] };

  it("ends with the record, headers and signals gate 3 left, as when gate 3 refused first", async () => {
    const t = testEngine(soft, { clock, gateway: true });
    // $0.001 spent of $0.004, past the soft share of 10 %: ann's next requests are downgraded.
    expect((await t.send({ key: "tg_race_ann", body: asked })).record).toMatchObject({ decision: "allow", model: "big" });
    const served = await t.send({ key: "tg_race_ann", body: asked });
    expect(served.record).toMatchObject({ decision: "downgrade", model: "small", stream: true, clamped: { max_tokens: { from: 500, to: 10 } }, signals: ["budget_soft"] });
    expect(Object.keys(served.headers)).toEqual(expect.arrayContaining(["x-tollgate-clamped", "x-tollgate-downgraded", "x-tollgate-model"]));

    // ann's third is admitted with the route's last slot free; bo takes it before ann's body is in.
    const ex = t.engine.open({ route: "chat", endpoint: "chat_completions", ip: "198.51.100.7", credentials: { token: "tg_race_ann" } });
    await t.engine.admit(ex, { bodyPending: true });
    const record = structuredClone(ex.record);
    const headers = { ...ex.headers };
    expect((await t.send({ key: "tg_race_bo", body: asked })).refusal).toBeUndefined();
    const refusal = await t.engine.prepare(ex, openaiChat, asked).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refusal).toMatchObject({ code: "rate_limited", status: 429 });
    expect(ex.record).toEqual({ ...record, decision: "deny", code: "rate_limited", signals: [], duration_ms: ex.record.duration_ms });
    expect(ex.headers).toEqual({ ...headers, "ratelimit-policy": '"chat.0";q=3;w=60', ratelimit: expect.stringMatching(/^"chat.0";r=0;t=\d+$/) });
  });
});
