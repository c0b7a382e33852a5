import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { MAX_USAGE_RECORDS, MemoryStore } from "./memory.js";
import { emptyUsageRecord } from "../core/usage-record.js";
import { SqliteStore } from "./sqlite.js";
import type { Counter } from "../core/store.js";
import { describeStoreContract } from "./store-contract.js";

describeStoreContract("memory", async () => {
  let now = Date.UTC(2025, 0, 1);
  const store = new MemoryStore(() => now);
  return { store, advance: (ms) => void (now += ms), size: (key) => store.debugSize(key) };
});

describe("memory store", () => {
  const HOUR = 3_600_000;

  it("a failing operation is a rejected promise that the observer counts as failed, never a throw at the call", async () => {
    const store = new MemoryStore();
    const ended: [string, boolean][] = [];
    store.observe({ ended: (op, _started, failed) => void ended.push([op, failed]) });
    // Counters that are not there make the store's own code fail: the caller must still get a promise.
    let call: Promise<unknown> | undefined;
    expect(() => (call = store.reserve("r", undefined as never, 1_000))).not.toThrow();
    await expect(call).rejects.toThrow(TypeError);
    await store.peek([{ key: "k", windowMs: 1_000 }]);
    expect(ended).toEqual([["reserve", true], ["peek", false]]);
  });

  it("reserves within the call as reserve does, and settles with the record in one call, exactly", () => {
    let now = Date.UTC(2025, 0, 1);
    const store = new MemoryStore(() => now);
    const budget: Counter = { key: "bud", max: 1_000_000, amount: 400_000, windowMs: HOUR };
    const ended: string[] = [];
    store.observe({ ended: (op, _started, failed) => void ended.push(`${op}${failed ? " failed" : ""}`) });
    expect(store.reserveNow!("a", [budget], HOUR)).toEqual({ ok: true, totals: [400_000] });
    expect(store.reserveNow!("b", [budget], HOUR)).toEqual({ ok: true, totals: [800_000] });
    // The third does not fit next to the two held: refused, holding nothing.
    expect(store.reserveNow!("c", [budget], HOUR)).toMatchObject({ ok: false, index: 0, used: 800_000 });
    void store.settleWithRecord!("a", [123_457], emptyUsageRecord("a", new Date(now)));
    void store.settleWithRecord!("b", [1], emptyUsageRecord("b", new Date(now)));
    now += 1;
    expect(store.reserveNow!("d", [{ ...budget, amount: 0 }], HOUR)).toEqual({ ok: true, totals: [123_458] });
    expect(store.heldReservations()).toEqual(["d"]);
    return store.queryUsage({ since: 0 }).then((records) => {
      expect(records.map((r) => r.request_id)).toEqual(["a", "b"]);
      expect(ended).toEqual(["reserve", "reserve", "reserve", "settleWithRecord", "settleWithRecord", "reserve", "queryUsage"]);
    });
  });

  it("a subclass that intercepts reserve, settle or appendUsage gets no shortcut past it", () => {
    class Reserving extends MemoryStore {
      override reserve(id: string, counters: Counter[], leaseMs: number) {
        return super.reserve(id, counters, leaseMs);
      }
    }
    class Settling extends MemoryStore {
      override settle(id: string, actual: number[]) {
        return super.settle(id, actual);
      }
    }
    class Appending extends MemoryStore {
      override appendUsage(record: Parameters<MemoryStore["appendUsage"]>[0]) {
        return super.appendUsage(record);
      }
    }
    expect(new MemoryStore().reserveNow).toBeTypeOf("function");
    expect(new MemoryStore().settleWithRecord).toBeTypeOf("function");
    expect(new Reserving().reserveNow).toBeUndefined();
    expect(new Reserving().settleWithRecord).toBeTypeOf("function");
    expect(new Settling().settleWithRecord).toBeUndefined();
    expect(new Appending().settleWithRecord).toBeUndefined();
    expect(new Appending().reserveNow).toBeTypeOf("function");
  });

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

  it("an operation pays for four entries of the sweep in all, however many kinds of entries the store holds", async () => {
    let now = Date.UTC(2025, 0, 1);
    const store = new MemoryStore(() => now);
    for (let i = 0; i < 20; i++) {
      await store.reserve(`lost${i}`, [{ key: `rpm:${i}`, max: 10, amount: 1, windowMs: 1_000 }], 100);
      await store.score(`ip:${i}`, 3, 10);
      await store.distinct(`seen:${i}`, "user", 1_000);
    }
    now += HOUR;
    // Everything is dead now: each operation forgets what its step of the sweep looks at.
    let size = store.debugSize();
    expect(size).toBe(80);
    for (let op = 0; op < 20; op++) {
      await store.peek([]);
      const next = store.debugSize();
      expect(size - next, `operation ${op}`).toBe(4);
      size = next;
    }
    // The walk went on from map to map: counters, reservations, scores and sets are all gone.
    expect(size).toBe(0);
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

  // The memory store keeps running sums and prunes only when something can have left; SQLite sums
  // its rows on every read. The same operations must give both the same answers.
  // Two SQLite handles on one file take turns, so each reads running totals the other wrote; now
  // and then the totals are wiped, as in a file written before them.
  it("answers a long random run of reserves, settles, releases and peeks as SQLite does", async () => {
    let now = Date.UTC(2025, 0, 1, 0, 0, 0, 7);
    const memory = new MemoryStore(() => now);
    const dir = await mkdtemp(join(tmpdir(), "tollgate-random-"));
    const path = join(dir, "tollgate.db");
    const handles = [SqliteStore.open(path, { now: () => now }), SqliteStore.open(path, { now: () => now })];
    const raw = new Database(path);
    let seed = 42;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    let sqlite = handles[0]!;
    const shapes = [
      { key: "exact", max: 40, windowMs: 5_000 },
      { key: "rpm", max: 300, windowMs: 60_000 },
      { key: "tokens", max: 9_000, windowMs: 20_000 },
      { key: "day", max: 50_000, windowMs: 86_400_000 },
    ];
    const open: { id: string; n: number }[] = [];
    for (let step = 0; step < 3_000; step++) {
      now += [0, 0, 1, 7, 150, 999, 4_000][rand(7)]!;
      sqlite = handles[rand(2)]!;
      if (rand(100) === 0) raw.exec("DELETE FROM counter_totals");
      const op = rand(10);
      if (op < 5) {
        const pick = shapes.filter(() => rand(2) === 0);
        const counters: Counter[] = pick.map((c) => ({ ...c, amount: 1 + rand(c.max > 1000 ? 400 : 3) }));
        const id = `r${step}`;
        const lease = [500, 3_000, 60_000][rand(3)]!;
        const [a, b] = [await memory.reserve(id, counters, lease), await sqlite.reserve(id, counters, lease)];
        expect(a, `step ${step}`).toEqual(b);
        if (a.ok) open.push({ id, n: counters.length });
      } else if (op < 8 && open.length) {
        const { id, n } = open.splice(rand(open.length), 1)[0]!;
        if (op < 7) {
          const actual = Array.from({ length: n }, () => rand(300));
          await memory.settle(id, actual);
          await sqlite.settle(id, actual);
        } else {
          await memory.release(id);
          await sqlite.release(id);
        }
      } else {
        expect(await memory.peek(shapes), `step ${step}`).toEqual(await sqlite.peek(shapes));
      }
    }
    expect(await memory.peekDetail(shapes)).toEqual(await sqlite.peekDetail(shapes));
    raw.close();
    for (const h of handles) await h.close();
    await rm(dir, { recursive: true, force: true });
  });
});

describe("memory store usage records", () => {
  it("keeps the latest MAX_USAGE_RECORDS, so a long-running memory gateway's heap does not grow with its traffic", async () => {
    const store = new MemoryStore();
    const base = Date.parse("2026-12-07T00:00:00Z");
    const total = MAX_USAGE_RECORDS + 25_000;
    for (let i = 0; i < total; i++) {
      await store.appendUsage(emptyUsageRecord(`r${i}`, new Date(base + i)));
    }
    const kept = await store.queryUsage({ since: 0 });
    expect(kept.length).toBeLessThanOrEqual(MAX_USAGE_RECORDS);
    expect(kept.length).toBeGreaterThan(MAX_USAGE_RECORDS * 0.85);
    // The newest are the ones kept, in order.
    expect(kept.at(-1)!.request_id).toBe(`r${total - 1}`);
    expect(Number(kept[0]!.request_id.slice(1))).toBe(total - kept.length);
  });
});
