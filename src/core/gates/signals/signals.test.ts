import { describe, expect, it } from "vitest";
import { testEngine, type TestEngine } from "../../../testing/test-engine.js";
import { markFirstSeen } from "./new-identities.js";
import { anonPoolPressure } from "./pool-pressure.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const hello = { messages: [{ role: "user", content: "hello" }] };
const keys = (prefix: string, n: number, plan = "pro") => Array.from({ length: n }, (_, i) => ({ key: `tg_${prefix}_${i}`, user: `${prefix}-${i}`, plan }));

/** Only the signal under test weighs anything, so each test reads one signal's effect. */
const quiet = { refused: 0, near_cap_prompt: 0, ip_many_users: 0, burst_under_limit: 0, new_identity_expensive_model: 0, key_many_networks: 0, new_identity_velocity: 0, anon_pool_pressure: 0, run_churn: 0 };
function engine(extra: { signals: Partial<typeof quiet>; abuse?: Record<string, unknown>; routes?: Record<string, unknown>; keys?: object[] }): TestEngine {
  return testEngine({
    providers: { sim: { type: "simulated" } },
    models: {
      cheap: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 0.1, output: 0.4 } },
      dear: { provider: "sim", upstream: "gpt-4o", price: { input: 5, output: 20 } },
    },
    plans: { anonymous: { models: ["cheap", "dear"] }, pro: { models: ["cheap", "dear"] } },
    keys: extra.keys ?? keys("user", 3),
    routes: extra.routes ?? { chat: { path: "/chat", plans: ["anonymous", "pro"], default_model: "dear" } },
    abuse: { downgrade_to: "cheap", downgrade_at: 50, block_at: 100, half_life: "1h", signals: { ...quiet, ...extra.signals }, ...extra.abuse },
  });
}
const outcome = (r: Awaited<ReturnType<TestEngine["send"]>>) => (r.refusal ? r.refusal.code : r.record.model === "dear" ? "served" : "downgraded");

describe("key_many_networks", () => {
  it("a key used from more networks (/16) than the threshold scores on each further request: downgraded, then blocked", async () => {
    const t = engine({ signals: { key_many_networks: 25 }, abuse: { many_networks_threshold: 5 } });
    const results = [];
    // Each request from another /16, as a key passed around a residential-proxy pool would be.
    for (let i = 0; i < 10; i++) results.push(await t.send({ key: "tg_user_0", ip: `10.${i}.3.4`, body: hello }));
    expect(results.map(outcome)).toEqual(["served", "served", "served", "served", "served", "served", "served", "downgraded", "downgraded", "blocked"]);
    expect(results[5]!.record.signals).toEqual(["key_many_networks"]);
    expect(results[9]!.record.signals).toContain("score:100(user)");
    // Another key, and the same key's owner from one network many times, are untouched.
    for (let i = 0; i < 10; i++) expect(outcome(await t.send({ key: "tg_user_1", ip: `10.${i % 2}.${i}.4`, body: hello }))).toBe("served");
  });

  it("counts an IPv6 /32 as one network, whatever the /48 inside it", async () => {
    const t = engine({ signals: { key_many_networks: 25 }, abuse: { many_networks_threshold: 2 } });
    for (let i = 0; i < 8; i++) expect((await t.send({ key: "tg_user_0", ip: `2001:db8:${i}::1`, body: hello })).record.signals).toEqual([]);
    const other = await t.send({ key: "tg_user_0", ip: "2001:db9::1", body: hello });
    const third = await t.send({ key: "tg_user_0", ip: "2001:dba::1", body: hello });
    expect(other.record.signals).toEqual([]);
    expect(third.record.signals).toEqual(["key_many_networks"]);
  });

  it("forgets networks after many_networks_window", async () => {
    const t = engine({ signals: { key_many_networks: 25 }, abuse: { many_networks_threshold: 2, many_networks_window: "1h" } });
    for (let i = 0; i < 2; i++) await t.send({ key: "tg_user_0", ip: `10.${i}.0.1`, body: hello });
    t.clock.advance(HOUR + 1);
    expect((await t.send({ key: "tg_user_0", ip: "10.9.0.1", body: hello })).record.signals).toEqual([]);
  });
});

describe("run_churn", () => {
  const routes = { agent: { path: "/agent", plans: ["pro"], default_model: "dear", runs: { per: "user", max: 1000, window: "1d", max_steps: 10 } } };

  it("fresh run ids past the threshold score on each request; one long run never does", async () => {
    const t = engine({ signals: { run_churn: 25 }, abuse: { run_churn_threshold: 3 }, routes });
    const honest = [];
    for (let step = 0; step < 10; step++) honest.push(await t.send({ key: "tg_user_1", runId: "long-run", body: hello }));
    expect(honest.map(outcome)).toEqual(Array(10).fill("served"));

    const rotating = [];
    for (let run = 0; run < 8; run++) rotating.push(await t.send({ key: "tg_user_0", runId: `fresh-${run}`, body: hello }));
    expect(rotating.map(outcome)).toEqual(["served", "served", "served", "served", "served", "downgraded", "downgraded", "blocked"]);
    expect(rotating[3]!.record.signals).toEqual(["run_churn"]);
  });

  it("a request that only reads (GET /v1/me) starts no run: an app polling its quota is not churning", async () => {
    const t = engine({ signals: { run_churn: 25 }, abuse: { run_churn_threshold: 3 }, routes });
    for (let i = 0; i < 10; i++) await t.engine.quotaFor(t.engine.open({ route: "agent", endpoint: "chat_completions", ip: "10.0.0.1", credentials: { token: "tg_user_0" } }));
    expect((await t.send({ key: "tg_user_0", ip: "10.0.0.1", runId: "one", body: hello })).record.signals).toEqual([]);
  });

  it("a call without x-tollgate-run is a run of its own, so leaving the header off counts too", async () => {
    const t = engine({ signals: { run_churn: 25 }, abuse: { run_churn_threshold: 3 }, routes });
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await t.send({ key: "tg_user_0", body: hello }));
    expect(results[3]!.record.signals).toEqual(["run_churn"]);
  });
});

describe("anon_pool_pressure", () => {
  const routes = { chat: { path: "/chat", plans: ["anonymous", "pro"], default_model: "dear", limits: [{ per: "plan", plans: ["anonymous"], requests: 100, window: "1m" }] } };

  it("anonymous demand on the pool raises every anonymous caller's score, one request per address included; keyed callers are untouched", async () => {
    const t = engine({ signals: { anon_pool_pressure: 100 }, abuse: { pool_pressure_at: 0.5 }, routes });
    const flood = [];
    for (let i = 0; i < 160; i++) flood.push(outcome(await t.send({ ip: `10.${i >> 8}.${i & 255}.1`, body: hello })));
    // Pressure is demand * ln2 / 100: 0.5 at the 73rd request, 1 from the 145th.
    expect(flood.slice(0, 72).every((o) => o === "served")).toBe(true);
    expect(flood.slice(72, 100).every((o) => o === "downgraded")).toBe(true);
    expect(flood.slice(100, 144).every((o) => o === "rate_limited")).toBe(true);
    expect(flood.slice(144).every((o) => o === "blocked")).toBe(true);
    const last = t.records.at(-1)!;
    expect(last.signals).toEqual(["anon_pool_pressure", "score:100(cohort)"]);
    expect(outcome(await t.send({ key: "tg_user_0", ip: "10.0.0.1", body: hello }))).toBe("served");
    expect(await anonPoolPressure({ store: t.store }, t.config.routes[0]!)).toBe(1);

    // The flood stops: within a few windows the pool's pressure is gone and anonymous callers are served.
    t.clock.advance(6 * MINUTE);
    expect(await anonPoolPressure({ store: t.store }, t.config.routes[0]!)).toBeLessThan(0.05);
    expect(outcome(await t.send({ ip: "10.9.9.9", body: hello }))).toBe("served");
  });

  it("without an anonymous pool on the route there is no pressure", async () => {
    const t = engine({ signals: { anon_pool_pressure: 100 } });
    for (let i = 0; i < 200; i++) await t.send({ ip: `10.1.${i}.1`, body: hello });
    expect(await anonPoolPressure({ store: t.store }, t.config.routes[0]!)).toBe(0);
    expect(t.records.every((r) => r.decision === "allow")).toBe(true);
  });
});

describe("new_identity_velocity", () => {
  const opts = { signals: { new_identity_velocity: 60, refused: 5 }, abuse: { new_identity_baseline_per_hour: 6, new_identity_surge_factor: 3, new_identity_window: "1h" }, keys: [...keys("old", 3), ...keys("new", 40)] };

  it("while new identities arrive at 3x their baseline, the whole young cohort is downgraded, then its members with a record of their own blocked; old identities are untouched", async () => {
    const t = engine(opts);
    // History: three identities first seen two days ago.
    for (let i = 0; i < 3; i++) await t.send({ key: `tg_old_${i}`, body: hello });
    t.clock.advance(2 * DAY);

    // 18/h is hot: a moving count (half-life 1h) of 26 arrivals.
    const arrivals = [];
    for (let i = 0; i < 30; i++) {
      arrivals.push(outcome(await t.send({ key: `tg_new_${i}`, ip: `10.${i}.0.1`, body: hello })));
      t.clock.advance(10_000);
    }
    expect(arrivals.slice(0, 25).every((o) => o === "served")).toBe(true);
    expect(arrivals.slice(26).every((o) => o === "downgraded")).toBe(true);
    // The whole cohort, the ones that came first included.
    const early = await t.send({ key: "tg_new_0", ip: "10.0.0.1", body: hello });
    expect(outcome(early)).toBe("downgraded");
    expect(early.record.signals).toEqual(["new_identity_velocity", "score:60(cohort)"]);
    for (let i = 0; i < 3; i++) {
      const old = await t.send({ key: `tg_old_${i}`, body: hello });
      expect(outcome(old)).toBe("served");
      expect(old.record.signals).toEqual([]);
    }
    // A young identity with a record of its own (8 refusals: 40) is blocked while the cohort is hot.
    for (let i = 0; i < 8; i++) await t.send({ key: "tg_new_1", ip: "10.1.0.1", body: { messages: "not a list" } });
    expect(outcome(await t.send({ key: "tg_new_1", ip: "10.1.0.1", body: hello }))).toBe("blocked");

    // Arrivals stop: once the recent rate is back under 3x the baseline, the cohort is served again.
    t.clock.advance(3 * HOUR);
    expect(outcome(await t.send({ key: "tg_new_2", ip: "10.2.0.1", body: hello }))).toBe("served");
    // Except those first seen during the surge: they stay in it while they are young.
    expect(outcome(await t.send({ key: "tg_new_29", ip: "10.29.0.1", body: hello }))).toBe("downgraded");
    t.clock.advance(DAY);
    expect(outcome(await t.send({ key: "tg_new_29", ip: "10.29.0.1", body: hello }))).toBe("served");
  });

  it("an identity marked as first seen long ago is not in the cohort", async () => {
    const t = engine(opts);
    for (let i = 0; i < 30; i++) await t.send({ key: `tg_new_${i}`, ip: `10.${i}.0.1`, body: hello });
    await markFirstSeen(t, "old-0", 3 * DAY);
    expect(outcome(await t.send({ key: "tg_old_0", body: hello }))).toBe("served");
    expect(outcome(await t.send({ key: "tg_old_1", body: hello }))).toBe("downgraded");
  });

  it("a young identity's refusals are kept as evidence too", async () => {
    const t = engine({ ...opts, signals: { refused: 10 } });
    await markFirstSeen(t, "old-0", 3 * DAY);
    for (let i = 0; i < 6; i++) {
      await t.send({ key: "tg_new_0", ip: "10.1.0.1", body: { messages: "not a list" } });
      await t.send({ key: "tg_old_0", ip: "10.2.0.1", body: { messages: "not a list" } });
    }
    t.clock.advance(3 * HOUR);
    // 60 points each; three hours on the old identity's are down to 7.5, the new one's to 55.
    expect(outcome(await t.send({ key: "tg_old_0", ip: "10.2.0.1", body: hello }))).toBe("served");
    expect(outcome(await t.send({ key: "tg_new_0", ip: "10.1.0.1", body: hello }))).toBe("downgraded");
  });

  it("keeps the evidence against a young identity for new_identity_age: a fresh account cannot wait out its record, an old one can", async () => {
    const routes = { chat: { path: "/chat", plans: ["pro"], default_model: "dear", input: { max_prompt_chars: 50 } } };
    const t = engine({ ...opts, signals: { near_cap_prompt: 5 }, routes });
    await markFirstSeen(t, "old-0", 3 * DAY);
    const nearCap = { messages: [{ role: "user", content: "x".repeat(48) }] };
    for (let i = 0; i < 12; i++) {
      await t.send({ key: "tg_new_0", ip: "10.1.0.1", body: nearCap });
      await t.send({ key: "tg_old_0", ip: "10.2.0.1", body: nearCap });
    }
    expect(outcome(await t.send({ key: "tg_new_0", ip: "10.1.0.1", body: hello }))).toBe("downgraded");
    expect(outcome(await t.send({ key: "tg_old_0", ip: "10.2.0.1", body: hello }))).toBe("downgraded");
    // Three hours on, the old identity's 60 points are down to 7.5; the new one's to 55.
    t.clock.advance(3 * HOUR);
    expect(outcome(await t.send({ key: "tg_old_0", ip: "10.2.0.1", body: hello }))).toBe("served");
    expect(outcome(await t.send({ key: "tg_new_0", ip: "10.1.0.1", body: hello }))).toBe("downgraded");
  });
});
