import { describe, expect, it } from "vitest";
import { parseConfig } from "../../config/load.js";
import { resolveConfig } from "../../config/resolve.js";
import type { Provider } from "../provider.js";
import { createProviders } from "../../providers/registry.js";
import { fakeClock, testEngine, type TestEngine } from "../../testing/test-engine.js";

/**
 * Budget days in each level's own time zone. A call costs exactly $0.001 (ten output tokens at
 * $100/M, no input price); every daily budget below is $0.003, so the fourth call of a day is
 * refused.
 */
const config = {
  providers: { sim: { type: "simulated", tokens_per_second: 1_000_000 } },
  models: { m: { provider: "sim", price: { input: 0, output: 100 } } },
  plans: {
    east: { models: ["m"], budget: { daily: 0.003 }, timezone: "America/New_York" },
    utc: { models: ["m"], budget: { daily: 0.003 } },
    team: { models: ["m"] },
  },
  orgs: { berlin: { budget: { daily: 0.003 }, timezone: "Europe/Berlin" } },
  keys: [
    { key: "tg_zone_ny", user: "nia", plan: "east" },
    { key: "tg_zone_utc", user: "uma", plan: "utc" },
    { key: "tg_zone_org", user: "otto", plan: "team", org: "berlin" },
  ],
  routes: { chat: { path: "/chat", plans: ["east", "utc", "team"], default_model: "m", input: { max_output_tokens: 10 } } },
};
const ask = { model: "m", messages: [{ role: "user", content: "hello" }] };
const H = 3_600_000;

async function spend(t: TestEngine, key: string, n: number) {
  for (let i = 0; i < n; i++) {
    const r = await t.send({ key, body: ask });
    expect(r.refusal, `${key} call ${i + 1}`).toBeUndefined();
  }
}

describe("budget days in the plan's and the org's time zone", () => {
  it("a New York plan's day runs 23 hours on the spring-forward day and resets at New York midnight; a UTC plan's at UTC midnight", async () => {
    const t = testEngine(config);
    t.clock.set("2026-03-08T05:00:00Z"); // 00:00 in New York (EST), the day clocks spring forward
    await spend(t, "tg_zone_ny", 3);
    await spend(t, "tg_zone_utc", 3);
    t.clock.set("2026-03-09T03:59:59.999Z"); // 23:59:59.999 EDT: still the 8th there, 23 hours later
    const refused = await t.send({ key: "tg_zone_ny", body: ask });
    expect(refused.refusal).toMatchObject({ code: "budget_exceeded", status: 402, retryAfterSeconds: 1 });
    expect(refused.refusal!.message).toContain("the east plan's daily budget of $0.003");
    expect(refused.refusal!.message).toContain("it resets at 2026-03-09T04:00:00.000Z (midnight America/New_York)");
    // The UTC plan's day ended four hours ago.
    await spend(t, "tg_zone_utc", 1);
    t.clock.set("2026-03-09T04:00:00Z");
    await spend(t, "tg_zone_ny", 3);
    expect((await t.send({ key: "tg_zone_ny", body: ask })).refusal?.message).toContain("it resets at 2026-03-10T04:00:00.000Z (midnight America/New_York)");
  });

  it("a New York plan's fall-back day runs 25 hours", async () => {
    const t = testEngine(config);
    t.clock.set("2026-11-01T04:00:00Z"); // 00:00 EDT on 1 November
    await spend(t, "tg_zone_ny", 3);
    t.clock.set("2026-11-02T04:59:59Z"); // 23:59:59 EST, 25 hours on
    expect((await t.send({ key: "tg_zone_ny", body: ask })).refusal?.code).toBe("budget_exceeded");
    t.clock.set("2026-11-02T05:00:00Z");
    await spend(t, "tg_zone_ny", 1);
  });

  it("an org's budget follows the org's zone, and /v1/me's resets_at names that zone's midnight", async () => {
    const t = testEngine(config);
    t.clock.set("2026-10-25T12:00:00Z"); // Berlin falls back this day: it ends at 23:00Z
    await spend(t, "tg_zone_org", 3);
    const refused = await t.send({ key: "tg_zone_org", body: ask });
    expect(refused.refusal!.message).toContain("org berlin's daily budget of $0.003");
    expect(refused.refusal!.message).toContain("it resets at 2026-10-25T23:00:00.000Z (midnight Europe/Berlin)");
    expect(refused.refusal!.retryAfterSeconds).toBe(11 * 3600);

    const me = await report(t, "tg_zone_org");
    expect(me.budgets).toEqual([
      { name: "org berlin's daily budget", limit_usd: 0.003, used_usd: 0.003, reserved_usd: 0, remaining_usd: 0, resets_at: "2026-10-25T23:00:00.000Z", timezone: "Europe/Berlin", soft_usd: null, state: "exhausted" },
    ]);
    t.clock.set("2026-10-25T23:00:00Z");
    expect((await report(t, "tg_zone_org")).budgets[0]).toMatchObject({ used_usd: 0, state: "ok", resets_at: "2026-10-26T23:00:00.000Z" });
    await spend(t, "tg_zone_org", 3);
  });

  it("a reset keeps spend in flight: a call reserved at 23:59:59.9 and settled after midnight is charged to the day it was reserved in", async () => {
    const clock = fakeClock("2026-03-08T04:00:00Z"); // 23:00 EST on the 7th
    const real = createProviders(resolveConfig(parseConfig({ store: "memory:", ...config }))).sim!;
    let t: TestEngine;
    let during: Promise<unknown> | undefined;
    // The provider answers the in-flight call only after another caller tried the same day's budget
    // and the clock crossed midnight.
    const slow: Provider = {
      name: "sim",
      supports: (e) => real.supports(e),
      close: () => real.close(),
      async call(c) {
        if (clock.now() === Date.parse("2026-03-08T04:59:59.900Z")) {
          clock.set("2026-03-08T04:59:59.950Z");
          during = t.send({ key: "tg_zone_ny", body: ask });
          await during;
          clock.set("2026-03-08T05:00:00.100Z"); // 00:00:00.1 on the 8th in New York
        }
        return real.call(c);
      },
    };
    t = testEngine(config, { clock, providers: { sim: slow } });
    await spend(t, "tg_zone_ny", 2);
    clock.set("2026-03-08T04:59:59.900Z");
    const inFlight = await t.send({ key: "tg_zone_ny", body: ask });
    expect(inFlight.refusal).toBeUndefined();
    expect(inFlight.record.cost_usd).toBe(0.001);
    // While it was in flight, the old day's budget counted its reservation: the other call was refused.
    const other = (await during) as Awaited<ReturnType<TestEngine["send"]>>;
    expect(other.refusal).toMatchObject({ code: "budget_exceeded" });
    expect(other.refusal!.message).toContain("$0.003 is spent; it resets at 2026-03-08T05:00:00.000Z (midnight America/New_York)");

    // Settled after midnight, it stays in the 7th's counter; the 8th starts whole.
    const [seventh, eighth] = await t.store.peek(["bud:d:u:nia:2026-03-07", "bud:d:u:nia:2026-03-08"].map((key) => ({ key, windowMs: 32 * 24 * H })));
    expect([seventh, eighth]).toEqual([3_000, 0]);
    expect((await report(t, "tg_zone_ny")).budgets[0]).toMatchObject({ used_usd: 0, remaining_usd: 0.003, resets_at: "2026-03-09T04:00:00.000Z" });
    await spend(t, "tg_zone_ny", 3);
    expect((await t.send({ key: "tg_zone_ny", body: ask })).refusal?.code).toBe("budget_exceeded");
  });

  it("refuses an unknown zone at load, naming the field", () => {
    const bad = (over: Record<string, unknown>) => () => resolveConfig(parseConfig({ store: "memory:", ...config, ...over }));
    expect(bad({ plans: { ...config.plans, east: { ...config.plans.east, timezone: "America/New_Yrok" } } })).toThrow(/plans\.east\.timezone: unknown time zone "America\/New_Yrok"/);
    expect(bad({ orgs: { berlin: { timezone: "Berlin" } } })).toThrow(/orgs\.berlin\.timezone: unknown time zone "Berlin"/);
    expect(bad({ timezone: "+02:00" })).toThrow(/timezone: unknown time zone "\+02:00"/);
  });
});

/** What GET /v1/me answers this caller, from the engine directly. */
async function report(t: TestEngine, key: string) {
  const ex = t.engine.open({ route: "chat", endpoint: "chat_completions", ip: "198.51.100.7", credentials: { token: key } });
  return t.engine.quotaFor(ex);
}
