import { describe, expect, it } from "vitest";
import { emptyUsageRecord, type UsageRecord } from "./usage-record.js";
import { flaggedCallers, refusalsByCode, timeSeries, totalsOf } from "./usage-report.js";

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
});
