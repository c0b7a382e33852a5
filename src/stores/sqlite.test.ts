import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { emptyUsageRecord } from "../core/usage-record.js";
import { SqliteStore, type SqliteStoreOptions } from "./sqlite.js";
import { LIVE_SUM_SQL } from "./sqlite-live-sums.js";
import { describeStoreContract } from "./store-contract.js";
import { expectUsageLineIsStoredText } from "./usage-line-check.js";

const HOUR = 3_600_000;

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "tollgate-sqlite-"));
}

describeStoreContract("sqlite", async () => {
  const dir = await tempDir();
  let now = Date.UTC(2025, 0, 1);
  const store = SqliteStore.open(join(dir, "tollgate.db"), { now: () => now });
  return {
    store,
    advance: (ms) => void (now += ms),
    cleanup: () => rm(dir, { recursive: true, force: true }),
    size: (key) => store.debugSize(key),
  };
});

describe("sqlite store", () => {
  let dir: string;
  const open: SqliteStore[] = [];
  const openStore = (path: string, opts?: SqliteStoreOptions) => {
    const store = SqliteStore.open(path, opts);
    open.push(store);
    return store;
  };

  beforeEach(async () => {
    dir = await tempDir();
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("creates missing parent directories", async () => {
    const path = join(dir, "a", "b", "tollgate.db");
    const store = openStore(path);
    expect(await store.reserve("r", [{ key: "k", max: 1, amount: 1, windowMs: HOUR }], HOUR)).toMatchObject({ ok: true });
    expect(existsSync(path)).toBe(true);
  });

  it("opens :memory:", async () => {
    const store = openStore(":memory:");
    expect(store.kind).toBe("sqlite");
    expect(await store.distinct("d", "m", HOUR)).toBe(1);
  });

  it("uses WAL and records its schema version", async () => {
    const path = join(dir, "tollgate.db");
    openStore(path);
    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
      expect(raw.pragma("user_version", { simple: true })).toBe(2);
    } finally {
      raw.close();
    }
  });

  it("refuses a file written by a newer schema", async () => {
    const path = join(dir, "tollgate.db");
    const raw = new Database(path);
    raw.pragma("user_version = 99");
    raw.close();
    expect(() => SqliteStore.open(path)).toThrow(/schema version 99/);
  });

  it("keeps counters, keys and usage across a reopen", async () => {
    const path = join(dir, "tollgate.db");
    const first = SqliteStore.open(path);
    const counter = { key: "k", max: 10, amount: 7, windowMs: HOUR };
    await first.reserve("r", [counter], HOUR);
    await first.settle("r", [6]);
    const key = { id: "key_1", hash: "d".repeat(64), prefix: "tg_", plan: "free", service: false, grants: [], verified: true, createdAt: 1 };
    await first.putKey(key);
    const record = emptyUsageRecord("req_1", new Date());
    await first.appendUsage(record);
    await first.close();

    const second = openStore(path);
    expect(await second.peek([counter])).toEqual([6]);
    expect(await second.findKey(key.hash)).toEqual(key);
    expect(await second.queryUsage({ since: 0 })).toEqual([record]);
  });

  it("two handles on one file share the same limits", async () => {
    const path = join(dir, "tollgate.db");
    const a = openStore(path);
    const b = openStore(path);
    const counter = { key: "shared", max: 3, amount: 1, windowMs: HOUR };
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).reserve(`r${i}`, [counter], HOUR)),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(3);
    await a.release("r0");
    expect(await b.peek([counter])).toEqual([2]);
  });

  it("a reused id takes over its name on either handle: settle addresses the newest rows, the older ones count until their lease ends", async () => {
    let now = Date.UTC(2025, 0, 1);
    const path = join(dir, "tollgate.db");
    const [a, b] = [openStore(path, { now: () => now }), openStore(path, { now: () => now })];
    const c = (key: string, amount: number) => ({ key, max: 100, amount, windowMs: HOUR });
    expect(await a.reserve("x", [c("k", 5), c("j", 7)], 60_000)).toMatchObject({ ok: true });
    // The other handle reuses the id: only the file tells it the id still holds rows.
    expect(await b.reserve("x", [c("k", 3)], HOUR)).toEqual({ ok: true, totals: [8] });
    await a.settle("x", [1]);
    expect(await b.peek([c("k", 0), c("j", 0)])).toEqual([6, 7]);
    await b.settle("x", [50]);
    expect(await a.peek([c("k", 0)])).toEqual([6]);
    now += 60_000;
    expect(await a.peek([c("k", 0), c("j", 0)])).toEqual([1, 0]);
  });

  it("a settle into a bucket whose counter's window grew keeps both amounts until the longer window ends", async () => {
    let now = Date.UTC(2025, 0, 1);
    const store = openStore(join(dir, "tollgate.db"), { now: () => now });
    const c = (windowMs: number) => ({ key: "k", max: 50, amount: 1, windowMs });
    // Same millisecond, so both settle into one exact bucket: the second one's window is longer.
    expect(await store.reserve("a", [c(1_000)], HOUR)).toMatchObject({ ok: true });
    expect(await store.reserve("b", [c(5_000)], HOUR)).toMatchObject({ ok: true });
    await store.settle("a", [2]);
    await store.settle("b", [3]);
    expect(await store.peek([c(5_000)])).toEqual([5]);
    now += 2_000;
    expect(await store.peek([c(5_000)])).toEqual([5]);
    now += 3_000;
    expect(await store.peek([c(5_000)])).toEqual([0]);
  });

  it("a reservation of more counters than one statement writes settles each of them", async () => {
    const store = openStore(join(dir, "tollgate.db"));
    const counters = Array.from({ length: 19 }, (_, i) => ({ key: `k${i}`, max: 100, amount: i + 1, windowMs: HOUR }));
    const reserved = await store.reserve("many", counters, HOUR);
    expect(reserved).toEqual({ ok: true, totals: counters.map((c) => c.amount) });
    expect(await store.reserve("over", [...counters.slice(0, 18), { ...counters[18]!, amount: 82 }], HOUR)).toMatchObject({ ok: false, index: 18, used: 19 });
    await store.settle("many", counters.map((_, i) => 2 * i));
    expect(await store.peek(counters)).toEqual(counters.map((_, i) => 2 * i));
  });

  it("drops version 1's sliding log when it opens a version 1 file", async () => {
    const path = join(dir, "tollgate.db");
    const raw = new Database(path);
    raw.exec("CREATE TABLE counter_entries (seq INTEGER PRIMARY KEY, key TEXT)");
    raw.pragma("user_version = 1");
    raw.close();
    openStore(path);
    const check = new Database(path, { readonly: true });
    try {
      expect(check.pragma("user_version", { simple: true })).toBe(2);
      expect(check.prepare("SELECT name FROM sqlite_master WHERE name = 'counter_entries'").all()).toEqual([]);
    } finally {
      check.close();
    }
  });

  it("deletes buckets and reservations that left their window, across all keys, so the tables do not grow forever", async () => {
    const path = join(dir, "tollgate.db");
    let now = Date.UTC(2025, 0, 1);
    const store = openStore(path, { now: () => now });
    for (let i = 0; i < 50; i++) {
      const id = `day1-${i}`;
      await store.reserve(id, [{ key: "budget:2025-01-01", max: 1e9, amount: 1, windowMs: 1_000 }], HOUR);
      await store.settle(id, [1]);
      // A 16 ms bucket each: enough for the key to keep a total row, which must go too.
      now += 17;
    }
    // An unsettled reservation whose lease ran out stays until its window ends, so a late settle can still count.
    await store.reserve("late", [{ key: "rpm", max: 10, amount: 1, windowMs: 5_000 }], 100);
    // Settled amounts of a 1 s window sit in 16 ms buckets (ceil(1000 / 64)): gone a bucket later at most.
    now += 1_016;
    await store.reserve("next", [{ key: "budget:2025-01-02", max: 1e9, amount: 1, windowMs: 1_000 }], HOUR);

    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.prepare("SELECT key FROM counter_buckets ORDER BY key").pluck().all()).toEqual([]);
      expect(raw.prepare("SELECT key FROM counter_live ORDER BY key").pluck().all()).toEqual(["budget:2025-01-02", "rpm"]);
      expect(raw.prepare("SELECT key FROM counter_totals").pluck().all()).toEqual([]);
    } finally {
      raw.close();
    }
  });

  it("a file written before running totals (buckets, no totals table) answers as it did, with no migration step", async () => {
    const path = join(dir, "tollgate.db");
    let now = Date.UTC(2025, 0, 1);
    const counter = { key: "rpm", max: 100, amount: 1, windowMs: 60_000 };
    const before = openStore(path, { now: () => now });
    for (let i = 0; i < 30; i++) {
      await before.reserve(`r${i}`, [counter], HOUR);
      await before.settle(`r${i}`, [2]);
      now += 500;
    }
    await before.close();
    const raw = new Database(path);
    raw.exec(`DROP TRIGGER counter_totals_insert; DROP TRIGGER counter_totals_update; DROP TRIGGER counter_totals_delete;
              DROP TABLE counter_totals;`);
    raw.close();

    const after = openStore(path, { now: () => now });
    expect(await after.peek([counter])).toEqual([60]);
    // 60 settled: 40 more fit, the 41st does not; the earliest bucket leaves at its end + 60 s.
    for (let i = 0; i < 40; i++) expect((await after.reserve(`s${i}`, [counter], HOUR)).ok).toBe(true);
    const refused = await after.reserve("over", [counter], HOUR);
    expect(refused).toMatchObject({ ok: false, used: 100 });
    // Once the earliest buckets have left the window, the total is what summing the rows says.
    now = Date.UTC(2025, 0, 1) + 67_000;
    const check = new Database(path, { readonly: true });
    const settled = check.prepare("SELECT SUM(amount) FROM counter_buckets WHERE gone_at > ?").pluck().get(now) as number;
    check.close();
    expect(settled).toBeGreaterThan(0);
    expect(settled).toBeLessThan(60);
    expect(await after.peek([counter])).toEqual([settled + 40]);
  });

  it("sums a key's reservations in flight from one covering index, replacing the older index of a file written before it", async () => {
    const path = join(dir, "tollgate.db");
    const now = Date.UTC(2025, 0, 1);
    const rpm = { key: "rpm", max: 100, amount: 1, windowMs: 60_000 };
    const first = openStore(path, { now: () => now });
    for (let i = 0; i < 5; i++) expect((await first.reserve(`r${i}`, [rpm], HOUR)).ok).toBe(true);
    await first.close();
    // The index a previous tollgate made (and makes again whenever it opens the file).
    const raw = new Database(path);
    raw.exec("DROP INDEX counter_live_sum; CREATE INDEX counter_live_key ON counter_live (key, ts, lease_until, amount)");
    raw.close();

    const store = openStore(path, { now: () => now });
    expect(await store.reserve("r5", [rpm], HOUR)).toEqual({ ok: true, totals: [6] });
    const check = new Database(path, { readonly: true });
    const indexes = check.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'counter_live'").pluck().all();
    expect(indexes).toContain("counter_live_sum");
    expect(indexes).not.toContain("counter_live_key");
    // Each in-flight row read from the index alone: without window_ms in it, every row cost a search of the table too.
    const plan = check.prepare(`EXPLAIN QUERY PLAN ${LIVE_SUM_SQL}`).all("a", 1, 1) as { detail: string }[];
    check.close();
    expect(plan.map((p) => p.detail)).toEqual(["SEARCH counter_live USING COVERING INDEX counter_live_sum (key=?)"]);
  });

  it("a running total written by one handle is what another reads, and counts a bucket an older tollgate wrote to the same file", async () => {
    const path = join(dir, "tollgate.db");
    let now = Date.UTC(2025, 0, 1);
    const a = openStore(path, { now: () => now });
    const b = openStore(path, { now: () => now });
    const counter = { key: "tokens", max: 1_000, amount: 10, windowMs: 60_000 };
    for (let i = 0; i < 10; i++) {
      await (i % 2 ? a : b).reserve(`r${i}`, [counter], HOUR);
      await (i % 2 ? b : a).settle(`r${i}`, [50]);
      // A bucket each (938 ms wide): enough of them for the key to keep a total row.
      now += 1_000;
    }
    const raw = new Database(path);
    try {
      expect(raw.prepare("SELECT settled FROM counter_totals WHERE key = 'tokens'").pluck().get()).toBe(500);
      // What a settle of the version before this one writes: the bucket row alone.
      raw.prepare("INSERT INTO counter_buckets (key, bucket_start, amount, gone_at) VALUES ('tokens', ?, 400, ?)").run(now, now + 60_000);
    } finally {
      raw.close();
    }
    expect(await a.peek([counter])).toEqual([900]);
    expect(await b.reserve("x", [{ ...counter, amount: 101 }], HOUR)).toMatchObject({ ok: false, used: 900 });
    expect((await a.reserve("y", [{ ...counter, amount: 100 }], HOUR)).ok).toBe(true);
  });

  it("a bucket that left but was not swept yet and takes a settle again (the counter's window changed) counts only the new amount", async () => {
    let now = Date.UTC(2025, 0, 1);
    const store = openStore(join(dir, "tollgate.db"), { now: () => now });
    const short = { key: "k", max: 64, amount: 1, windowMs: 1_000 };
    const long = { ...short, windowMs: 5_000 };
    // Reserves sweep at most once a second: this one makes the next sweep t + 500's, so nothing
    // deletes the bucket at t when it leaves at t + 1000.
    await store.reserve("other", [{ ...short, key: "other" }], HOUR);
    // Nine more buckets (1 ms wide, max <= 64), so that the key keeps a total row.
    for (let i = 0; i < 9; i++) {
      await store.reserve(`early${i}`, [long], HOUR);
      await store.settle(`early${i}`, [1]);
      now += 1;
    }
    const t = (now += 600);
    await store.reserve("short", [short], HOUR);
    await store.reserve("long", [long], HOUR);
    await store.settle("short", [3]);
    now = t + 500;
    await store.reserve("later", [long], HOUR);
    await store.settle("later", [4]);
    // Past the short window, before a sweep: the bucket at t has left and still holds 3.
    now = t + 1_001;
    expect(await store.peek([long])).toEqual([9 + 4 + 1]);
    expect((await store.reserve("probe", [long], HOUR)).ok).toBe(true);
    await store.release("probe");
    // The long reservation of t settles into that same bucket: 2 counts, the 3 that left does not.
    await store.settle("long", [2]);
    expect(await store.peek([long])).toEqual([9 + 6]);
    expect(await store.reserve("full", [{ ...long, amount: 50 }], HOUR)).toMatchObject({ ok: false, used: 15 });
  });

  it("forgets expired distinct members and long-decayed scores", async () => {
    const path = join(dir, "tollgate.db");
    let now = Date.UTC(2025, 0, 1);
    const store = openStore(path, { now: () => now });
    for (let i = 0; i < 20; i++) await store.distinct(`ip:${i}`, "user", 1_000);
    for (let i = 0; i < 20; i++) await store.score(`ip:${i}`, 5, 10);
    now += HOUR;
    await store.distinct("ip:fresh", "user", 1_000);
    await store.score("ip:fresh", 1, 10);

    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.prepare("SELECT key FROM distinct_members").pluck().all()).toEqual(["ip:fresh"]);
      expect(raw.prepare("SELECT key FROM scores").pluck().all()).toEqual(["ip:fresh"]);
    } finally {
      raw.close();
    }
  });

  it("acknowledges a usage record only once another connection can read it, in the order appended", async () => {
    const path = join(dir, "tollgate.db");
    const store = openStore(path);
    const raw = new Database(path, { readonly: true });
    try {
      const count = raw.prepare("SELECT COUNT(*) FROM usage_records").pluck();
      const seenAtAck: number[] = [];
      // All 40 are appended in one turn, so they share a commit: none may be acknowledged before it.
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          store.appendUsage(emptyUsageRecord(`r${i}`, new Date(Date.UTC(2025, 0, 1)))).then(() => {
            seenAtAck.push(count.get() as number);
          }),
        ),
      );
      expect(Math.min(...seenAtAck)).toBe(40);
      expect(raw.prepare("SELECT record FROM usage_records ORDER BY seq").pluck().all().map((r) => JSON.parse(r as string).request_id)).toEqual(
        Array.from({ length: 40 }, (_, i) => `r${i}`),
      );
    } finally {
      raw.close();
    }
  });

  it("the usage line is the text of the row just written, and a record appended again after a change is written as it is then", async () => {
    const store = openStore(join(dir, "tollgate.db"));
    await expectUsageLineIsStoredText(store, () => new Database(join(dir, "tollgate.db"), { readonly: true }).prepare("SELECT record FROM usage_records ORDER BY seq").pluck().all() as string[]);
  });

  it("refuses every usage record of a batch it could not commit, and writes the next one once it can", async () => {
    const path = join(dir, "tollgate.db");
    const store = openStore(path);
    const at = new Date(Date.UTC(2025, 0, 1));
    const holder = new Database(path);
    holder.exec("BEGIN IMMEDIATE");
    const refused = await Promise.allSettled([0, 1, 2].map((i) => store.appendUsage(emptyUsageRecord(`lost${i}`, at))));
    holder.exec("COMMIT");
    holder.close();
    expect(refused.map((r) => r.status === "rejected" && (r.reason as Error).name)).toEqual([
      "StoreUnavailableError",
      "StoreUnavailableError",
      "StoreUnavailableError",
    ]);
    await new Promise((r) => setTimeout(r, 1_100)); // past the stuck lock's fast-fail spell
    await store.appendUsage(emptyUsageRecord("kept", at));
    expect((await store.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["kept"]);
  });

  it("a settle is acknowledged once another connection sees it, and a reserve called after it counts it even before that", async () => {
    const path = join(dir, "tollgate.db");
    const store = openStore(path);
    const rpm = (amount: number) => [{ key: "rpm", max: 10, amount, windowMs: 60_000 }];
    expect(await store.reserve("a", rpm(10), HOUR)).toMatchObject({ ok: true });
    const settled = store.settle("a", [2]);
    // Not awaited: the settle waits for the turn's batch, but the reserve must see 2 used, not 10.
    expect(await store.reserve("b", rpm(8), HOUR)).toEqual({ ok: true, totals: [10] });
    await settled;
    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.prepare("SELECT SUM(amount) FROM counter_buckets WHERE key = 'rpm'").pluck().get()).toBe(2);
    } finally {
      raw.close();
    }
  });


  it("reserves, settles and releases called in one turn share one commit, and each reserve gets its own answer", async () => {
    const path = join(dir, "tollgate.db");
    // No checkpointer: the test reads the commits' frames in the WAL, which a restart would overwrite.
    const store = openStore(path, { checkpointer: false });
    const rpm = (amount: number) => [{ key: "rpm", max: 10, amount, windowMs: 60_000 }];
    // Every commit appends its changed pages to the WAL as frames: one reserve alone writes a few.
    const frames = () => (statSync(`${path}-wal`).size - 32) / (4096 + 24);
    const start = frames();
    expect(await store.reserve("warm", rpm(1), HOUR)).toMatchObject({ ok: true });
    const one = frames() - start;
    const settled = store.settle("warm", [1]);
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => store.reserve(`r${i}`, rpm(1), HOUR)));
    await Promise.all([settled, store.release("r0")]);
    // Fourteen operations, one commit: a few pages (8 here), not fourteen commits of 3 or so (35).
    expect(frames() - start - one).toBeLessThanOrEqual(4 * one);
    // In call order: the settle first, then 9 of the 12 fit beside it; the release came after.
    expect(answers.map((a) => a.ok)).toEqual([...Array(9).fill(true), false, false, false]);
    expect(answers[8]).toEqual({ ok: true, totals: [10] });
    expect(await store.peek([{ key: "rpm", windowMs: 60_000 }])).toEqual([9]);
  });

  it("a turn's usage rows share the commit of its reserves and settles", async () => {
    const path = join(dir, "tollgate.db");
    const store = openStore(path, { checkpointer: false });
    const rpm = (amount: number) => [{ key: "rpm", max: 10, amount, windowMs: 60_000 }];
    // A WAL frame whose header names the database size ends a transaction: one per commit.
    const commits = () => {
      const wal = readFileSync(`${path}-wal`);
      let n = 0;
      for (let at = 32; at + 24 <= wal.length; at += 24 + 4096) if (wal.readUInt32BE(at + 4) !== 0) n++;
      return n;
    };
    expect(await store.reserve("a", rpm(1), HOUR)).toMatchObject({ ok: true });
    const before = commits();
    // What a gateway's turn holds under load: one request settles, another writes its record, a third reserves.
    const at = new Date(Date.UTC(2025, 0, 1));
    const [, , reserved] = await Promise.all([store.settle("a", [1]), store.appendUsage(emptyUsageRecord("done", at)), store.reserve("b", rpm(1), HOUR)]);
    expect(reserved).toEqual({ ok: true, totals: [2] });
    expect(commits() - before).toBe(1);
    expect((await store.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["done"]);
  });

  it("checkpoints off the event loop keep the WAL bounded under sustained writes: the checkpointer starts it over, the store never has to", async () => {
    const path = join(dir, "tollgate.db");
    const restartPages = 300;
    const store = openStore(path, { walRestartPages: restartPages });
    expect(await store.reserve("warm", [{ key: "warm", max: 1, amount: 1, windowMs: 60_000 }], HOUR)).toMatchObject({ ok: true });
    const db = new Database(path, { readonly: true });
    const pagesOf = () => Math.max(0, statSync(`${path}-wal`).size - 32) / (4096 + 24);
    try {
      // The store's own auto-checkpoint is only the bound, well past where the worker restarts the WAL.
      expect(db.pragma("wal_autocheckpoint", { simple: true })).toBe(1000);
      const rpm = [{ key: "rpm", max: 1e12, amount: 1, windowMs: 60_000 }];
      const at = new Date(Date.UTC(2025, 0, 1));
      let largest = 0;
      // Turns of a reserve and a usage row, then a settle, as a gateway commits them: ~3,600
      // pages in all, 12 times the restart size.
      const turns = 2_000;
      for (let i = 0; i < turns; i++) {
        await Promise.all([store.reserve(`r${i}`, rpm, HOUR), store.appendUsage({ ...emptyUsageRecord(`u${i}`, at), route: "x".repeat(2_000) })]);
        await store.settle(`r${i}`, [1]);
        largest = Math.max(largest, pagesOf());
        if (i % 5 === 0) await sleep(1);
      }
      const stats = await store.debugCheckpoints();
      expect(stats?.restarts).toBeGreaterThan(0);
      // With no checkpoint in the store's commits (wal_autocheckpoint 0, or a worker that never
      // restarts and no bound) it grows by every page written (to ~3,600). The worker restarts
      // it about every 300 pages; the store's own checkpoint at 4 × 300 is the bound on a machine
      // too loaded to give the worker a core in time (it skips a turn while the worker checkpoints,
      // so it may overshoot by a few commits).
      expect(largest).toBeLessThan(6 * restartPages);
      expect(await store.peek(rpm)).toEqual([turns]);
    } finally {
      db.close();
    }
  }, 60_000);

  it("closing the store removes the WAL: the checkpointer's connection closes first", async () => {
    const path = join(dir, "tollgate.db");
    const store = SqliteStore.open(path);
    expect(await store.reserve("a", [{ key: "k", max: 1, amount: 1, windowMs: 60_000 }], HOUR)).toMatchObject({ ok: true });
    expect(existsSync(`${path}-wal`)).toBe(true);
    await store.close();
    expect(existsSync(`${path}-wal`)).toBe(false);
  });

  it("revokes every key filed under the id", async () => {
    const store = openStore(join(dir, "tollgate.db"), { now: () => 42 });
    const base = { id: "dup", prefix: "tg_", plan: "free", service: false, grants: [], verified: true, createdAt: 1 };
    await store.putKey({ ...base, hash: "1".repeat(64) });
    await store.putKey({ ...base, hash: "2".repeat(64) });
    expect(await store.revokeKey("dup")).toBe(true);
    expect((await store.listKeys()).map((k) => k.revokedAt)).toEqual([42, 42]);
  });
});

const compiled = fileURLToPath(new URL("../../dist/stores/sqlite.js", import.meta.url));
const worker = fileURLToPath(new URL("../../test/fixtures/sqlite-race-worker.mjs", import.meta.url));

interface Child {
  proc: ChildProcessWithoutNullStreams;
  /** Resolves with the next JSON line the child prints. */
  next(): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

function child(args: string[]): Child {
  const proc = spawn(process.execPath, [worker, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((res) => proc.on("exit", (code) => res(code)));
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  return {
    proc,
    exited,
    async next() {
      const line = await Promise.race([
        lines.next(),
        exited.then((code) => {
          throw new Error(`worker exited (${code}) before printing: ${stderr}`);
        }),
      ]);
      if (line.done) throw new Error(`worker closed stdout: ${stderr}`);
      return JSON.parse(line.value) as Record<string, unknown>;
    },
  };
}

// The children load the compiled store; `npm test` builds before running vitest.
describe.skipIf(!existsSync(compiled))("sqlite store across processes", () => {
  let dir: string;
  const children: Child[] = [];

  beforeEach(async () => {
    dir = await tempDir();
  });

  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
      await c.exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("4 processes reserving 100 times each against max 50 admit exactly 50", async () => {
    const db = join(dir, "race.db");
    for (let i = 0; i < 4; i++) children.push(child(["race", db, "race", "50", "100"]));
    for (const c of children) expect(await c.next()).toEqual({ ready: true });
    for (const c of children) c.proc.stdin.write("go\n");
    const admitted = await Promise.all(children.map(async (c) => (await c.next()).admitted as number));
    expect(admitted.reduce((a, b) => a + b, 0)).toBe(50);

    const store = SqliteStore.open(db);
    try {
      expect(await store.peek([{ key: "race", windowMs: HOUR }])).toEqual([50]);
    } finally {
      await store.close();
    }
  });

  it("a process killed before settling gives its reservation back after the lease, and its usage record survives", async () => {
    const db = join(dir, "crash.db");
    const leaseMs = 300;
    const record = { ...emptyUsageRecord("req_before_crash", new Date()), signals: ["x"], clamped: { max_tokens: { from: 100, to: 10 } } };
    const c = child(["crash", db, "crash", String(leaseMs), JSON.stringify(record)]);
    children.push(c);
    const out = await c.next();
    const printedBy = Date.now();
    expect(out.result).toMatchObject({ ok: true });
    c.proc.kill("SIGKILL");
    await c.exited;

    const store = SqliteStore.open(db);
    try {
      const counter = { key: "crash", max: 1, amount: 1, windowMs: HOUR };
      // Only meaningful while the lease is surely still running; a slow machine may already be past it.
      if (Date.now() < (out.reservedAt as number) + leaseMs) {
        expect(await store.reserve("too-early", [counter], HOUR)).toMatchObject({ ok: false, used: 1 });
      }
      expect(await store.queryUsage({ since: 0 })).toEqual([record]);

      await sleep(Math.max(0, printedBy + leaseMs + 50 - Date.now()));
      expect(await store.peek([counter])).toEqual([0]);
      expect(await store.reserve("after-lease", [counter], HOUR)).toMatchObject({ ok: true });
    } finally {
      await store.close();
    }
  });
});
