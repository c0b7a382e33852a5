import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { reservationActuals, SharedTicker } from "./checkpoint.js";
import type { Exchange, HeldCounter } from "./exchange.js";

describe("one timer for every open stream's checkpoints", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("makes each stream due a second apart, the first time 0.9-1 s after it opened, whenever it opened", () => {
    const due: { name: string; at: number }[] = [];
    const ticker = new SharedTicker<string>(1000, (name) => due.push({ name, at: Date.now() }));
    const t0 = Date.now();
    const opened = new Map<string, number>();
    // Streams opening at odd moments between the ticks, while others are open.
    for (const [name, after] of [["a", 0], ["b", 37], ["c", 250], ["d", 499], ["e", 1234]] as const) {
      vi.advanceTimersByTime(after - (Date.now() - t0));
      opened.set(name, Date.now());
      ticker.add(name);
    }
    vi.advanceTimersByTime(5000);
    for (const [name, at] of opened) {
      const times = due.filter((d) => d.name === name).map((d) => d.at - at);
      expect(times[0], name).toBeGreaterThan(900);
      expect(times[0], name).toBeLessThanOrEqual(1000);
      for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!, name).toBe(1000);
      expect(times.length, name).toBeGreaterThanOrEqual(4);
    }
  });

  it("never looks at a stream that closed, nor at one that closed before 0.9 s", () => {
    const due: string[] = [];
    const ticker = new SharedTicker<string>(1000, (name) => due.push(name));
    const stopShort = ticker.add("short");
    const stopLong = ticker.add("long");
    vi.advanceTimersByTime(850);
    stopShort();
    vi.advanceTimersByTime(1200);
    stopLong();
    vi.advanceTimersByTime(5000);
    expect(due).toEqual(["long", "long"]);
  });

  it("holds no timer once nothing is open, and starts one again for the next stream", () => {
    const due: string[] = [];
    const ticker = new SharedTicker<string>(1000, (name) => due.push(name));
    const stop = ticker.add("x");
    expect(vi.getTimerCount()).toBe(1);
    // A thousand streams open and close: still one timer.
    for (let i = 0; i < 1000; i++) ticker.add(`s${i}`)();
    expect(vi.getTimerCount()).toBe(1);
    stop();
    vi.advanceTimersByTime(200);
    expect(vi.getTimerCount()).toBe(0);
    ticker.add("y");
    vi.advanceTimersByTime(1000);
    expect(due).toEqual(["y"]);
  });
});

describe("what a served request's budget reservation settles at", () => {
  const held = (unit: HeldCounter["unit"], amount: number): HeldCounter => ({ key: `k:${unit}`, max: 1e9, amount, windowMs: 60_000, unit, label: unit });
  const windows = [held("requests", 1), held("concurrent", 1), held("tool_calls", 0)];
  const budgets = [held("usd", 5_000), held("tokens", 900), held("files", 2)];

  it("one reservation for gates 3 and 6: the request counted, its slot given back, its tool calls, then its cost and tokens", () => {
    const ex = { quota: { id: "r:qb", counters: windows }, budget: { id: "r:qb", counters: budgets, totals: [] } } as unknown as Exchange;
    expect(reservationActuals(ex, 3, 1_234, 56)).toEqual([1, 0, 3, 1_234, 56, 2]);
  });

  it("a budget reservation of its own settles the budgets only", () => {
    const ex = { quota: { id: "r:q", counters: windows }, budget: { id: "r:b", counters: budgets, totals: [] } } as unknown as Exchange;
    expect(reservationActuals(ex, 3, 1_234, 56)).toEqual([1_234, 56, 2]);
  });
});
