import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SharedTicker } from "./checkpoint.js";

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
