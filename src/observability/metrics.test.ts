import { describe, expect, it } from "vitest";
import { resolveConfig } from "../config/resolve.js";
import { configSchema } from "../config/schema.js";
import { emptyUsageRecord, type UsageRecord } from "../core/usage-record.js";
import type { Store, StoredKey } from "../core/store.js";
import { MemoryStore } from "../stores/memory.js";
import { SqliteStore } from "../stores/sqlite.js";
import { Counter, Histogram, Registry } from "prom-client";
import { Metrics, signalLabel } from "./metrics.js";
import { SeriesCounter, SeriesHistogram } from "./series.js";

const config = resolveConfig(
  configSchema.parse({
    providers: { sim: { type: "simulated" } },
    models: { "gpt-4o-mini": { provider: "sim" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    routes: { chat: { path: "/chat", plans: ["free"] } },
  }),
);

const rec = (over: Partial<UsageRecord>): UsageRecord => ({ ...emptyUsageRecord("r", new Date()), route: "chat", endpoint: "chat_completions", plan: "free", ...over });

async function values(m: Metrics, name: string) {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return (metric?.values ?? []) as { labels: Record<string, string>; value: number; metricName?: string }[];
}

describe("metrics", () => {
  it("counts requests, spend and tokens from records, with labels only from the config", async () => {
    const m = new Metrics(config);
    m.record(rec({ model: "gpt-4o-mini", input_tokens: 10, output_tokens: 20, cost_usd: 0.000015, ended: "complete", duration_ms: 120, ttft_ms: 40 }));
    m.record(rec({ model: "gpt-4o-mini", input_tokens: 5, output_tokens: 7, cost_usd: 0.000005, ended: "client_disconnect", duration_ms: 80, ttft_ms: 30 }));
    // What a caller controls never becomes a label: an unknown model or plan, a user, an IP.
    m.record(rec({ decision: "deny", code: "model_not_allowed", model_requested: "attacker-chosen-name", plan: "forged-plan", user: "u-123", ip: "203.0.113.9", signals: ["score:87(network)", "whatever"] }));

    expect((await values(m, "tollgate_spend_usd_total"))[0]).toMatchObject({ labels: { route: "chat", model: "gpt-4o-mini", plan: "free" } });
    expect((await values(m, "tollgate_spend_usd_total"))[0]!.value).toBeCloseTo(0.00002, 12);
    expect(await values(m, "tollgate_tokens_total")).toEqual([
      expect.objectContaining({ labels: expect.objectContaining({ direction: "input" }), value: 15 }),
      expect.objectContaining({ labels: expect.objectContaining({ direction: "output" }), value: 27 }),
    ]);
    const requests = await values(m, "tollgate_requests_total");
    expect(requests).toContainEqual(expect.objectContaining({ labels: { route: "chat", endpoint: "chat_completions", decision: "deny", code: "model_not_allowed" }, value: 1 }));
    expect(await values(m, "tollgate_cancellations_total")).toEqual([expect.objectContaining({ labels: { route: "chat", ended: "client_disconnect" }, value: 1 })]);
    expect((await values(m, "tollgate_abuse_signals_total")).map((v) => v.labels.signal).sort()).toEqual(["other", "score_network"]);
    const text = await m.registry.metrics();
    for (const leaked of ["attacker-chosen-name", "forged-plan", "u-123", "203.0.113.9"]) expect(text).not.toContain(leaked);
  });

  it("counts a library app request once: its model calls (parent_id) add spend and tokens, not requests", async () => {
    const m = new Metrics(config);
    m.record(rec({ request_id: "app", model: null, duration_ms: 900 }));
    for (const id of ["c1", "c2", "c3"]) m.record(rec({ request_id: id, parent_id: "app", model: "gpt-4o-mini", input_tokens: 10, output_tokens: 5, cost_usd: 0.00001, ended: "complete", duration_ms: 300 }));
    expect((await values(m, "tollgate_requests_total")).reduce((n, v) => n + v.value, 0)).toBe(1);
    expect((await values(m, "tollgate_spend_usd_total"))[0]!.value).toBeCloseTo(0.00003, 12);
    const durations = (await values(m, "tollgate_request_duration_seconds")).filter((v) => v.metricName?.endsWith("_count"));
    expect(durations.reduce((n, v) => n + v.value, 0)).toBe(1);
  });

  it("counts every refusal a summary record stands for in the duration histogram, as in the request counter", async () => {
    const m = new Metrics(config);
    m.record(rec({ decision: "deny", code: "unauthorized", duration_ms: 3 }));
    m.record(rec({ request_id: "refusals-1", decision: "deny", code: "unauthorized", count: 250 }));
    const requests = (await values(m, "tollgate_requests_total")).reduce((n, v) => n + v.value, 0);
    const durations = await values(m, "tollgate_request_duration_seconds");
    const count = durations.filter((v) => v.metricName?.endsWith("_count")).reduce((n, v) => n + v.value, 0);
    expect(requests).toBe(251);
    expect(count).toBe(251);
    // Answered in the turn they came: the lowest bucket holds them all.
    expect(durations.find((v) => v.metricName?.endsWith("_bucket") && v.labels.le === (0.005 as unknown as string))?.value).toBe(251);
  });

  // A memory store times itself; any other store is wrapped. Both must report the same.
  const stores = {
    memory: () => new MemoryStore(),
    sqlite: () => SqliteStore.open(":memory:"),
  };
  for (const [kind, open] of Object.entries(stores)) {
    it(`follows reservations from reserve to settle or release (${kind})`, async () => {
      const m = new Metrics(config);
      const store = m.instrumentStore(open());
      const counter = { key: "k", max: 10, amount: 1, windowMs: 60_000 };
      await store.reserve("req-a:b", [counter], 60_000);
      await store.reserve("req-a:q", [counter], 60_000);
      await store.reserve("req-b:q", [{ ...counter, amount: 11 }], 60_000); // refused: holds nothing
      await store.reserve("pol:block:u:x", [counter], 60_000);
      // The gateway's one reservation for a request's windows and budgets counts as both.
      await store.reserve("req-d:qb", [counter], 60_000);
      const held = async () => Object.fromEntries((await values(m, "tollgate_reservations_in_flight")).map((v) => [v.labels.kind, v.value]));
      expect(await held()).toEqual({ budget: 2, quota: 2, other: 0 });
      await store.settle("req-a:b", [1]);
      await store.release("req-a:q");
      await store.settle("req-d:qb", [1]);
      expect(await held()).toEqual({ budget: 0, quota: 0, other: 0 });
      // A lease that ran out is held no longer: the store stopped counting it.
      await store.reserve("req-c:q", [counter], 1);
      await new Promise((r) => setTimeout(r, 5));
      expect(await held()).toEqual({ budget: 0, quota: 0, other: 0 });
      expect(store.kind).toBe(kind);
      await store.close();
    });

    it(`times every operation, and counts the ones that fail (${kind})`, async () => {
      const m = new Metrics(config);
      const inner = open();
      const store = m.instrumentStore(inner);
      const counter = { key: "k", max: 10, amount: 1, windowMs: 60_000 };
      for (let i = 0; i < 3; i++) await store.reserve(`r${i}:q`, [counter], 60_000);
      await store.settle("r0:q", [1]);
      await store.peek([counter]);
      await store.appendUsage(rec({}));
      const counts = Object.fromEntries((await values(m, "tollgate_store_operation_seconds")).filter((v) => v.metricName?.endsWith("_count")).map((v) => [v.labels.op, v.value]));
      expect(counts).toEqual({ reserve: 3, settle: 1, peek: 1, appendUsage: 1 });
      expect(await values(m, "tollgate_store_errors_total")).toEqual([]);

      // A key with no grants cannot be stored: the caller gets a rejection, and it is counted.
      await expect(store.putKey({ hash: "h" } as StoredKey)).rejects.toThrow();
      expect(await values(m, "tollgate_store_errors_total")).toEqual([expect.objectContaining({ labels: { op: "putKey" }, value: 1 })]);
      const sums = (await values(m, "tollgate_store_operation_seconds")).filter((v) => v.metricName?.endsWith("_sum"));
      expect(sums.every((v) => v.value >= 0 && v.value < 1)).toBe(true);
      await store.close();
    });
  }

  it("counts a store that rejects, or throws instead of rejecting, behind the wrapper", async () => {
    const m = new Metrics(config);
    const inner = SqliteStore.open(":memory:");
    const store = m.instrumentStore(inner);
    inner.queryUsage = async () => {
      throw new Error("disk on fire");
    };
    await expect(store.queryUsage({ since: 0 })).rejects.toThrow("disk on fire");
    expect(await values(m, "tollgate_store_errors_total")).toEqual([expect.objectContaining({ labels: { op: "queryUsage" }, value: 1 })]);
    inner.findKey = () => {
      throw new Error("driver bug");
    };
    await expect(store.findKey("h")).rejects.toThrow("driver bug");
    expect(await values(m, "tollgate_store_errors_total")).toContainEqual(expect.objectContaining({ labels: { op: "findKey" }, value: 1 }));
    // What the wrapper does not time passes through, and optional members are present only when the store has them.
    expect(store.kind).toBe("sqlite");
    expect(typeof store.peekDetail).toBe(typeof inner.peekDetail);
    expect(typeof store.clock).toBe(typeof (inner as Store).clock);
    expect(typeof store.health).toBe(typeof inner.health);
    expect(store.outbox).toBe(inner.outbox);
    await store.close();
  });

  it("has a memory store time itself once; a second gateway on it wraps it", async () => {
    const inner = new MemoryStore();
    const first = new Metrics(config);
    const second = new Metrics(config);
    expect(first.instrumentStore(inner)).toBe(inner);
    const wrapped = second.instrumentStore(inner);
    expect(wrapped).not.toBe(inner);
    await wrapped.reserve("a:q", [{ key: "k", max: 10, amount: 1, windowMs: 60_000 }], 60_000);
    const reserves = async (m: Metrics) => (await values(m, "tollgate_store_operation_seconds")).find((v) => v.metricName?.endsWith("_count") && v.labels.op === "reserve")?.value;
    // The second gateway's wrapper times its call, and the store, which reports to the first, too.
    expect(await reserves(second)).toBe(1);
    expect(await reserves(first)).toBe(1);
  });

  it("counts requests in flight until each ends, answered, failed or thrown", async () => {
    const m = new Metrics(config);
    const inFlight = async () => (await values(m, "tollgate_requests_in_flight"))[0]!.value;
    let finish!: () => void;
    let fail!: (err: Error) => void;
    const answered = m.track(() => new Promise<string>((resolve) => (finish = () => resolve("ok"))));
    const failed = m.track(() => new Promise<string>((_, reject) => (fail = reject)));
    const thrown = m.track((): Promise<string> => {
      throw new Error("bug");
    });
    await expect(thrown).rejects.toThrow("bug");
    expect(await inFlight()).toBe(2);
    finish();
    expect(await answered).toBe("ok");
    expect(await inFlight()).toBe(1);
    fail(new Error("upstream"));
    await expect(failed).rejects.toThrow("upstream");
    expect(await inFlight()).toBe(0);
  });

  it("names score signals by their source, not their value", () => {
    expect(signalLabel("score:123(user)")).toBe("score_user");
    expect(signalLabel("admin_block:ip")).toBe("admin_block:ip");
    expect(signalLabel("near_cap_prompt")).toBe("near_cap_prompt");
    expect(signalLabel("x".repeat(100))).toBe("other");
  });
});

describe("series metrics", () => {
  it("scrape exactly as prom-client's own Counter and Histogram would", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const counter = new SeriesCounter("t_total", "a counter", ours);
    const reference = new Counter({ name: "t_total", help: "a counter", labelNames: ["a", "b"], registers: [theirs] });
    const bounds = [0.1, 1, 10];
    const histogram = new SeriesHistogram("t_seconds", "a histogram", bounds, ours);
    const referenceHistogram = new Histogram({ name: "t_seconds", help: "a histogram", labelNames: ["a"], buckets: bounds, registers: [theirs] });
    // Made in the order of first use, as Metrics makes them.
    const y = counter.series({ a: "y", b: "2" });
    const x = counter.series({ a: "x", b: "1" });
    const hy = histogram.series({ a: "y" });
    const hx = histogram.series({ a: "x" });
    for (const [i, v] of [0.05, 0.1, 0.5, 3, 10, 11, 0].entries()) {
      const [s, h, a] = i % 2 ? [x, hx, "x"] : [y, hy, "y"];
      s.value += v;
      reference.inc({ a, b: a === "x" ? "1" : "2" }, v);
      histogram.observe(h, v);
      referenceHistogram.observe({ a }, v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.getMetricsAsJSON()).toEqual(
      (await theirs.getMetricsAsJSON()).map((m) => ({ ...m, values: (m.values as { labels: object; value: number; metricName?: string }[]).map(({ labels, value, metricName }) => (metricName ? { labels, value, metricName } : { labels, value })) })),
    );
  });
});
