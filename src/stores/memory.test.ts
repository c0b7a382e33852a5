import { describe, expect, it } from "vitest";
import { MemoryStore } from "./memory.js";
import { describeStoreContract } from "./store-contract.js";

describeStoreContract("memory", async () => {
  let now = Date.UTC(2025, 0, 1);
  const store = new MemoryStore(() => now);
  return { store, advance: (ms) => void (now += ms), size: (key) => store.debugSize(key) };
});

describe("memory store", () => {
  const HOUR = 3_600_000;

  it("forgets counters, reservations, scores and sets nobody touches again", async () => {
    let now = Date.UTC(2025, 0, 1);
    const store = new MemoryStore(() => now);
    for (let i = 0; i < 100; i++) {
      // Settled, never settled (a crashed request), released: each leaves something behind for a while.
      await store.reserve(`s${i}`, [{ key: `budget:${i}`, max: 1e9, amount: 5, windowMs: 1_000 }], HOUR);
      await store.settle(`s${i}`, [5]);
      await store.reserve(`lost${i}`, [{ key: `rpm:${i}`, max: 10, amount: 1, windowMs: 1_000 }], 100);
      await store.score(`ip:${i}`, 3, 10);
      await store.distinct(`seen:${i}`, "user", 1_000);
    }
    expect(store.debugSize()).toBeGreaterThanOrEqual(500);
    now += HOUR;
    // Only unrelated traffic from now on: a bounded number of operations sweeps everything old.
    for (let i = 0; i < 300; i++) await store.peek([{ key: "other", windowMs: 1_000 }]);
    expect(store.debugSize()).toBe(0);
  });

  it("a reservation never settled still counts a late settle until its window ends, then is forgotten", async () => {
    let now = Date.UTC(2025, 0, 1);
    const store = new MemoryStore(() => now);
    const c = { key: "k", max: 10, amount: 4, windowMs: 60_000 };
    await store.reserve("slow", [c], 1_000);
    now += 30_000;
    for (let i = 0; i < 50; i++) await store.peek([]);
    await store.settle("slow", [3]);
    expect(await store.peek([c])).toEqual([3]);

    await store.reserve("never", [c], 1_000);
    now += 61_000;
    for (let i = 0; i < 50; i++) await store.peek([]);
    expect(store.debugSize()).toBe(0);
    await store.settle("never", [3]);
    expect(await store.peek([c])).toEqual([0]);
  });
});
