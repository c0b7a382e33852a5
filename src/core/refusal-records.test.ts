import { describe, expect, it } from "vitest";
import { RefusalRecords } from "./refusal-records.js";
import { emptyUsageRecord, type UsageRecord } from "./usage-record.js";

const refusal = (code: "unauthorized" | "rate_limited", route = "chat"): UsageRecord =>
  Object.assign(emptyUsageRecord("r", new Date()), { decision: "deny" as const, code, route, endpoint: "chat_completions" });

describe("RefusalRecords", () => {
  it("keeps the first N refusals of each code per second and folds the rest into one summary per second", () => {
    let now = 10_000;
    const summaries: UsageRecord[] = [];
    const r = new RefusalRecords(3, (s) => summaries.push(s), () => now);
    const kept = (code: "unauthorized" | "rate_limited", n: number) => Array.from({ length: n }, () => r.admit(refusal(code))).filter(Boolean).length;
    expect(kept("unauthorized", 10)).toBe(3);
    expect(kept("rate_limited", 5)).toBe(3);
    expect(summaries).toEqual([]);
    now += 1_000;
    expect(kept("unauthorized", 4)).toBe(3);
    // The first refusal of a later second emits the earlier second's summary of that code.
    expect(summaries.map((s) => [s.code, s.count, s.ts])).toEqual([["unauthorized", 7, new Date(10_000).toISOString()]]);
    r.flush();
    expect(summaries.map((s) => [s.code, s.count])).toEqual([
      ["unauthorized", 7],
      ["rate_limited", 2],
      ["unauthorized", 1],
    ]);
    expect(summaries.every((s) => s.decision === "deny" && s.route === "chat" && s.user === null)).toBe(true);
  });

  it("fold counts a refusal into its summary only once its code's records of the second are spent", () => {
    let now = 20_000;
    const summaries: UsageRecord[] = [];
    const r = new RefusalRecords(2, (s) => summaries.push(s), () => now);
    // Records left this second (or a new second): the refusal must take the usual way, to its own record.
    expect(r.fold("unauthorized", "chat", "chat_completions")).toBe(false);
    expect([r.admit(refusal("unauthorized")), r.admit(refusal("unauthorized"))]).toEqual([true, true]);
    expect(r.fold("rate_limited", "chat", "chat_completions")).toBe(false);
    expect([r.fold("unauthorized", "chat", "chat_completions"), r.fold("unauthorized", "chat", "chat_completions")]).toEqual([true, true]);
    expect(r.admit(refusal("unauthorized"))).toBe(false);
    now += 1_000;
    expect(r.fold("unauthorized", "chat", "chat_completions")).toBe(false);
    r.flush();
    // Folded and admitted refusals of one second share one summary: every refusal counted once.
    expect(summaries.map((s) => [s.code, s.route, s.endpoint, s.count, s.ts])).toEqual([["unauthorized", "chat", "chat_completions", 3, new Date(20_000).toISOString()]]);
  });

  it("emits an open summary once its second is over, without another refusal", async () => {
    const summaries: UsageRecord[] = [];
    const r = new RefusalRecords(0, (s) => summaries.push(s));
    r.admit(refusal("unauthorized"));
    await new Promise((done) => setTimeout(done, 1_400));
    expect(summaries.map((s) => s.count)).toEqual([1]);
  });
});
