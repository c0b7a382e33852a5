import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { emptyUsageRecord } from "../core/usage-record.js";
import { SqliteStore } from "./sqlite.js";

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 0, 1);

// What a store keeps in its process of its own reservations must answer every reserve exactly as
// the table would: the sums in flight (sqlite-live-sums.ts), and a turn's settles summed per bucket
// and written once before its commit (sqlite-pending-settles.ts). These are the ways they can go stale.
describe("sqlite store: what a process keeps of its own reservations", () => {
  let dir: string;
  let path: string;
  let now: number;
  const open: SqliteStore[] = [];
  const openStore = () => {
    const store = SqliteStore.open(path, { now: () => now, checkpointer: false });
    open.push(store);
    return store;
  };
  const two = { key: "two", max: 2, amount: 1, windowMs: 60_000 };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "tg-live-sums-"));
    path = join(dir, "t.db");
    now = T0;
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("another handle's reserves and releases count at once, in both directions", async () => {
    const a = openStore();
    const b = openStore();
    expect(await a.reserve("a1", [two], HOUR)).toMatchObject({ ok: true });
    expect(await b.reserve("b1", [two], HOUR)).toMatchObject({ ok: true });
    // a summed one in flight before b's reserve: it must see two now.
    expect(await a.reserve("a2", [two], HOUR)).toMatchObject({ ok: false, used: 2 });
    await b.release("b1");
    expect(await a.reserve("a2", [two], HOUR)).toMatchObject({ ok: true, totals: [2] });
    expect(await b.reserve("b2", [two], HOUR)).toMatchObject({ ok: false, used: 2 });
  });

  it("a reservation's lease ending frees its amount without any write", async () => {
    const store = openStore();
    expect(await store.reserve("r1", [two], 1_000)).toMatchObject({ ok: true });
    expect(await store.reserve("r2", [two], HOUR)).toMatchObject({ ok: true });
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: false, used: 2 });
    now += 1_000;
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: true, totals: [2] });
    // r1's late settle goes into its bucket (it still counts there) and takes nothing off the sum in flight twice.
    await store.settle("r1", [1]);
    expect(await store.reserve("r4", [two], HOUR)).toMatchObject({ ok: false, used: 3 });
  });

  it("a settle of a reservation made before another connection wrote still frees its amount", async () => {
    const store = openStore();
    expect(await store.reserve("r1", [two], HOUR)).toMatchObject({ ok: true });
    expect(await store.reserve("r2", [two], HOUR)).toMatchObject({ ok: true });
    const other = new Database(path);
    other.prepare("INSERT INTO scores (key, value, ts, forget_at) VALUES ('x', 1, 1, 9e15)").run();
    other.close();
    // Summed from the table in the turn that finds the other write, then kept from the next one:
    // r1 and r2 are in that sum, but this store no longer knows they are its own.
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: false, used: 2 });
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: false, used: 2 });
    await store.settle("r1", [0]);
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: true, totals: [2] });
  });

  it("a turn whose transaction failed after a settle still counts that reservation", async () => {
    const store = openStore();
    const raw = new Database(path);
    raw.exec("CREATE TRIGGER refuse_boom BEFORE INSERT ON usage_records WHEN NEW.record LIKE '%boom%' BEGIN SELECT RAISE(ABORT, 'boom refused'); END");
    raw.close();
    expect(await store.reserve("r1", [two], HOUR)).toMatchObject({ ok: true });
    expect(await store.reserve("r2", [two], HOUR)).toMatchObject({ ok: true });
    // One turn: the settle, then a row the database refuses. The whole turn is rolled back.
    const turn = await Promise.allSettled([store.settle("r1", [0]), store.appendUsage(emptyUsageRecord("boom", new Date(T0)))]);
    expect(turn.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: false, used: 2 });
    await store.settle("r1", [0]);
    expect(await store.reserve("r3", [two], HOUR)).toMatchObject({ ok: true, totals: [2] });
    // r3 was reserved since the last failure, so its settle is summed in JS: a failed turn's sum is not written by the next one.
    const failed = await Promise.allSettled([store.settle("r3", [1]), store.appendUsage(emptyUsageRecord("boom", new Date(T0)))]);
    expect(failed.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    await store.settle("r2", [1]);
    expect(await store.peek([two])).toEqual([2]);
    await store.settle("r3", [1]);
    expect(await store.peek([two])).toEqual([2]);
  });

  it("a reused id's older rows keep counting until their lease ends; a settle of the id frees only the newer ones", async () => {
    const store = openStore();
    const three = { ...two, key: "three", max: 3 };
    expect(await store.reserve("x", [three], 1_000)).toMatchObject({ ok: true });
    expect(await store.reserve("x", [three], HOUR)).toMatchObject({ ok: true, totals: [2] });
    await store.settle("x", [0]);
    expect(await store.reserve("y", [three], HOUR)).toMatchObject({ ok: true, totals: [2] });
    expect(await store.reserve("z", [three], HOUR)).toMatchObject({ ok: true, totals: [3] });
    now += 1_000;
    expect(await store.reserve("w", [three], HOUR)).toMatchObject({ ok: true, totals: [3] });
  });

  it("many settles of one turn over several keys, whole and fractional, leave the buckets and running totals another handle reads", async () => {
    const store = openStore();
    const counters = [
      { key: "rpm", max: 1_000, amount: 1, windowMs: 60_000 },
      { key: "budget", max: 1e9, amount: 500, windowMs: HOUR },
      { key: "tokens", max: 1e6, amount: 100, windowMs: HOUR },
    ];
    // Earlier settled amounts, so the running totals exist before the turn.
    expect(await store.reserve("old", counters, HOUR)).toMatchObject({ ok: true });
    await store.settle("old", [1, 7, 10]);
    await store.peek(counters);
    now += 1_500;
    for (let i = 0; i < 12; i++) expect(await store.reserve(`r${i}`, counters, HOUR)).toMatchObject({ ok: true });
    now += 1_500;
    // One turn: whole amounts, a 0, a fractional one (written on its own), and one left at its reserved amount.
    const actual = (i: number) => [1, i === 3 ? 0 : 11 * i, i === 5 ? 2.5 : 20 + i];
    const settles = Array.from({ length: 12 }, (_, i) => store.settle(`r${i}`, i === 7 ? [] : actual(i)));
    const after = store.reserve("next", counters, HOUR);
    await Promise.all(settles);
    const budget = 7 + Array.from({ length: 12 }, (_, i) => (i === 7 ? 500 : i === 3 ? 0 : 11 * i)).reduce((a, b) => a + b, 0);
    const tokens = 10 + Array.from({ length: 12 }, (_, i) => (i === 7 ? 100 : i === 5 ? 2.5 : 20 + i)).reduce((a, b) => a + b, 0);
    expect(await after).toEqual({ ok: true, totals: [14, budget + 500, tokens + 100] });
    await store.release("next");
    const other = openStore();
    expect(await other.peek(counters)).toEqual([13, budget, tokens]);
    const raw = new Database(path, { readonly: true });
    try {
      for (const [key, sum] of [["rpm", 13], ["budget", budget], ["tokens", tokens]] as const) {
        expect(raw.prepare("SELECT SUM(amount) FROM counter_buckets WHERE key = ?").pluck().get(key)).toBe(sum);
        // The triggers kept the running total in step with the buckets written.
        expect(raw.prepare("SELECT settled FROM counter_totals WHERE key = ?").pluck().get(key)).toBe(sum);
      }
      expect(raw.prepare("SELECT COUNT(*) FROM counter_live").pluck().get()).toBe(0);
    } finally {
      raw.close();
    }
  });

  it("a reserve refused in the turn of a settle says when that settled amount leaves", async () => {
    const store = openStore();
    const rpm = (amount: number) => [{ key: "rpm", max: 10, amount, windowMs: 60_000 }];
    expect(await store.reserve("a", rpm(1), HOUR)).toMatchObject({ ok: true });
    now += 30_000;
    const settled = store.settle("a", [10]);
    // The 10 settled into T0's 1 ms bucket leave at T0 + 60 s, 30 s from now.
    expect(await store.reserve("b", rpm(1), HOUR)).toEqual({ ok: false, index: 0, used: 10, retryAfterMs: 30_000 });
    await settled;
  });

  it("a held reservation swept with its window settles nothing and keeps the turn's other settles", async () => {
    const store = openStore();
    const rpm = { key: "rpm", max: 100, amount: 1, windowMs: 60_000 };
    const day = { key: "day", max: 100, amount: 1, windowMs: 86_400_000 };
    // A lease far longer than the rpm window: the rpm row leaves (and is swept) while still held.
    expect(await store.reserve("slow", [rpm, day], 10 * HOUR)).toMatchObject({ ok: true });
    expect(await store.reserve("fast", [rpm, day], HOUR)).toMatchObject({ ok: true });
    now += 120_000;
    const turn = [store.reserve("sweeps", [rpm], HOUR), store.settle("slow", [5, 5]), store.settle("fast", [3, 3])];
    expect(await turn[0]).toEqual({ ok: true, totals: [1] });
    await Promise.all(turn);
    expect(await store.peek([rpm, day])).toEqual([1, 8]);
  });
  it("a steady handle's settled sums are read again once another handle settled into the same key", async () => {
    const a = openStore();
    const b = openStore();
    const three = { ...two, key: "three", max: 3 };
    expect(await a.reserve("a1", [three], HOUR)).toMatchObject({ ok: true });
    await a.settle("a1", [1]);
    expect(await b.reserve("b1", [three], HOUR)).toMatchObject({ ok: true, totals: [2] });
    await b.settle("b1", [1]);
    // a's first turn after b's commits reads everything from the file; its next one, steady, must not fall back on what it knew before.
    expect(await a.reserve("a2", [{ ...three, amount: 1 }], HOUR)).toMatchObject({ ok: true, totals: [3] });
    await a.release("a2");
    expect(await a.reserve("a3", [{ ...three, amount: 2 }], HOUR)).toMatchObject({ ok: false, used: 2 });
  });

  it("a steady handle reusing an id it no longer remembers (reserved before another handle wrote) detaches the older rows", async () => {
    const store = openStore();
    const three = { ...two, key: "three", max: 3 };
    expect(await store.reserve("x", [three], 1_000)).toMatchObject({ ok: true });
    const other = new Database(path);
    other.prepare("INSERT INTO scores (key, value, ts, forget_at) VALUES ('x', 1, 1, 9e15)").run();
    other.close();
    expect(await store.reserve("y", [three], HOUR)).toMatchObject({ ok: true, totals: [2] });
    expect(await store.reserve("x", [three], HOUR)).toMatchObject({ ok: true, totals: [3] });
    // The settle frees the newer x only: the older one counts until its lease ends.
    await store.settle("x", [0]);
    expect(await store.reserve("z", [three], HOUR)).toMatchObject({ ok: true, totals: [3] });
    expect(await store.reserve("w", [three], HOUR)).toMatchObject({ ok: false, used: 3 });
  });

  it("an id reserved twice in one turn: the settle frees the second reservation only", async () => {
    const store = openStore();
    const three = { ...two, key: "three", max: 3 };
    // A first turn, so that the next one is steady (the store's first reads everything from the file).
    expect(await store.reserve("warm", [two], HOUR)).toMatchObject({ ok: true });
    const turn = await Promise.all([store.reserve("x", [three], 1_000), store.reserve("x", [three], HOUR)]);
    expect(turn).toEqual([{ ok: true, totals: [1] }, { ok: true, totals: [2] }]);
    await store.settle("x", [0]);
    expect(await store.reserve("y", [three], HOUR)).toMatchObject({ ok: true, totals: [2] });
    expect(await store.reserve("z", [three], HOUR)).toMatchObject({ ok: true, totals: [3] });
    now += 1_000;
    expect(await store.reserve("w", [three], HOUR)).toMatchObject({ ok: true, totals: [3] });
  });
});
