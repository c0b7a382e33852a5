import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { emptyUsageRecord } from "../core/usage-record.js";
import { SqliteStore } from "./sqlite.js";

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 0, 1);

// The sums of reservations in flight that a store keeps in its process (sqlite-live-sums.ts) must
// answer every reserve exactly as summing the table would: these are the ways they can go stale.
describe("sqlite store: in-flight sums kept in the process", () => {
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
});
