import { describe, expect, it } from "vitest";
import { emptyUsageRecord, type UsageRecord } from "./usage-record.js";
import { flaggedCallers, flaggedCohorts, refusalsByCode, summarize, timeSeries, totalRequests, totalsOf } from "./usage-report.js";

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const MIN = 60_000;
const rec = (at: number, over: Partial<UsageRecord>): UsageRecord => ({ ...emptyUsageRecord(`r${at}`, new Date(at)), ...over });

describe("usage report", () => {
  const records = [
    rec(T0 + 10_000, { route: "chat", user: "a", cost_usd: 0.000002, input_tokens: 3, output_tokens: 4 }),
    rec(T0 + 70_000, { route: "chat", user: "b", cost_usd: 0.000005, input_tokens: 1, output_tokens: 1 }),
    rec(T0 + 75_000, { route: "agent", user: "a", cost_usd: 0.000001 }),
    rec(T0 + 130_000, { route: "chat", user: "c", decision: "deny", code: "rate_limited" }),
    rec(T0 + 140_000, { route: "chat", user: "c", decision: "deny", code: "blocked", signals: ["score:104(network)", "ip_many_users"], ip: "192.0.2.1" }),
    rec(T0 + 150_000, { route: "chat", user: "d", decision: "downgrade", signals: ["score:55(user)"], ip: "192.0.2.2", cost_usd: 0.000003 }),
  ];

  it("buckets spend, tokens and requests on epoch-aligned buckets, per group with the rest as other", () => {
    const s = timeSeries(records, { since: T0 + 30_000, until: T0 + 3 * MIN, bucketMs: MIN, by: "route", top: 1 });
    expect(s.buckets).toEqual([T0, T0 + MIN, T0 + 2 * MIN]);
    expect(s.total.requests).toEqual([1, 2, 3]);
    expect(s.total.cost_micros).toEqual([2, 6, 3]);
    expect(s.total.tokens).toEqual([7, 2, 0]);
    expect(s.total.denied).toEqual([0, 0, 2]);
    expect(s.series.map((g) => g.group)).toEqual(["chat", "other"]);
    expect(s.series[1]!.cost_micros).toEqual([0, 1, 0]);
    // Every bucket's groups add up to its total.
    for (let i = 0; i < 3; i++) expect(s.series.reduce((n, g) => n + g.cost_micros[i]!, 0)).toBe(s.total.cost_micros[i]);
    expect(() => timeSeries(records, { since: 0, until: T0, bucketMs: MIN })).toThrow(/buckets/);
  });

  it("totals, refusals by code and flagged callers with the signals that fired", () => {
    expect(totalsOf(records)).toEqual({ requests: 6, denied: 2, downgraded: 1, input_tokens: 4, output_tokens: 5, cost_micros: 11 });
    expect(refusalsByCode(records).map((r) => [r.code, r.count])).toEqual([
      ["rate_limited", 1],
      ["blocked", 1],
    ]);
    expect(flaggedCallers(records)).toEqual([
      { user: "d", ip: "192.0.2.2", requests: 1, downgraded: 1, blocked: 0, signals: { "score(user)": 1 }, last_ts: new Date(T0 + 150_000).toISOString() },
      { user: "c", ip: "192.0.2.1", requests: 1, downgraded: 0, blocked: 1, signals: { "score(network)": 1, ip_many_users: 1 }, last_ts: new Date(T0 + 140_000).toISOString() },
    ]);
  });

  it("by signal: a request counts under each signal it carries, a score under its source, one with none under -", () => {
    const rows = summarize(records, "signal");
    expect(rows.map((r) => [r.group, r.requests, r.denied, r.downgraded])).toEqual([
      ["-", 4, 1, 0],
      ["score(user)", 1, 0, 1],
      ["score(network)", 1, 1, 0],
      ["ip_many_users", 1, 1, 0],
    ]);
    const s = timeSeries(records, { since: T0, until: T0 + 3 * MIN, bucketMs: MIN, by: "signal" });
    expect(s.series.find((g) => g.group === "ip_many_users")!.denied).toEqual([0, 0, 1]);
  });

  it("groups flagged requests by cohort and network: a farm of keys one per /24 is one row, as is one /24's farm", () => {
    const farm = Array.from({ length: 12 }, (_, i) =>
      rec(T0 + i, { user: `farm-${i}`, ip: `10.${i}.7.9`, decision: i % 3 ? "downgrade" : "deny", code: i % 3 ? null : "blocked", signals: ["new_identity_velocity", `score:${70 + i}(cohort)`] }),
    );
    const onOneNet = Array.from({ length: 5 }, (_, i) => rec(T0 + 100 + i, { user: `net-${i}`, ip: `203.0.113.${i}`, decision: "deny", code: "blocked", signals: ["score:100(network)"] }));
    const shared = Array.from({ length: 3 }, (_, i) => rec(T0 + 200 + i, { user: "sharer", ip: `172.${16 + i}.0.1`, decision: "downgrade", signals: ["key_many_networks", "score:60(user)"] }));
    const summary = rec(T0 + 300, { decision: "deny", code: "blocked", count: 40, signals: ["anon_pool_pressure", "new_identity_velocity"] });
    const rows = flaggedCohorts([...records, ...farm, ...onOneNet, ...shared, summary]);
    expect(rows.map((r) => [r.cohort, r.group, r.users, r.networks, r.downgraded, r.blocked])).toEqual([
      ["summary", "blocked", 0, 0, 0, 40],
      ["new_identity_velocity", "new_identity_velocity", 12, 12, 8, 4],
      ["network", "203.0.113.0/24", 5, 1, 0, 5],
      ["key_many_networks", "sharer", 1, 3, 3, 0],
      ["network", "192.0.2.0/24", 2, 1, 1, 1],
    ]);
    expect(rows[1]!.signals).toEqual({ new_identity_velocity: 12, "score(cohort)": 12 });
  });

  describe("library mode: an app request and its model calls (SPEC §6)", () => {
    // One agent request: two model calls served, a third refused over the budget, which also
    // marks the app request refused. Its record carries the run counters and none of the calls' cost.
    const app = rec(T0 + 1_000, { request_id: "app1", route: "agent", user: "a", endpoint: "app", decision: "deny", code: "budget_exceeded", ended: "refused", tool_calls: 3, run_step: 3 });
    const call = (n: number, over: Partial<UsageRecord>) => rec(T0 + 1_000 + n, { request_id: `app1:${n}`, parent_id: "app1", route: "agent", user: "a", endpoint: "chat", model: "gpt-4o-mini", ...over });
    const library = [
      call(1, { input_tokens: 100, output_tokens: 20, cost_usd: 0.00003, tool_calls: 2 }),
      call(2, { input_tokens: 150, output_tokens: 10, cost_usd: 0.00004, tool_calls: 1 }),
      call(3, { decision: "deny", code: "budget_exceeded" }),
      app,
      rec(T0 + 2_000, { route: "chat", user: "b", cost_usd: 0.000005, input_tokens: 1, output_tokens: 1 }),
    ];

    it("counts the app request once and every model call's tokens and dollars once", () => {
      expect(totalsOf(library)).toEqual({ requests: 2, denied: 1, downgraded: 0, input_tokens: 251, output_tokens: 31, cost_micros: 75 });
      expect(totalRequests(library)).toBe(2);
      expect(summarize(library, "user").map((r) => [r.group, r.requests, r.denied, r.cost_micros])).toEqual([
        ["a", 1, 1, 70],
        ["b", 1, 0, 5],
      ]);
      expect(refusalsByCode(library).map((r) => [r.code, r.count])).toEqual([["budget_exceeded", 1]]);
      const s = timeSeries(library, { since: T0, until: T0 + MIN, bucketMs: MIN });
      expect([s.total.requests[0], s.total.denied[0], s.total.tokens[0], s.total.cost_micros[0]]).toEqual([2, 1, 282, 75]);
    });

    it("a downgraded app request is one flagged request, not one per model call", () => {
      const downgraded = [
        rec(T0, { request_id: "app2", parent_id: null, user: "d", ip: "192.0.2.9", endpoint: "app", decision: "downgrade", signals: ["score:60(user)"] }),
        rec(T0 + 1, { request_id: "app2:1", parent_id: "app2", user: "d", ip: "192.0.2.9", decision: "downgrade", signals: ["score:60(user)"], cost_usd: 0.000001 }),
        rec(T0 + 2, { request_id: "app2:2", parent_id: "app2", user: "d", ip: "192.0.2.9", decision: "downgrade", signals: ["score:60(user)"], cost_usd: 0.000001 }),
      ];
      expect(totalsOf(downgraded)).toMatchObject({ requests: 1, downgraded: 1, cost_micros: 2 });
      expect(flaggedCallers(downgraded)).toMatchObject([{ user: "d", requests: 1, downgraded: 1, signals: { "score(user)": 1 } }]);
    });
  });
});
