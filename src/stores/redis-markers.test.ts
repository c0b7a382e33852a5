import { describe, expect, it } from "vitest";
import type { Counter } from "../core/store.js";
import { emptyUsageRecord } from "../core/usage-record.js";
import { redisTestStores } from "./redis-test-stores.js";
import { RedisStore } from "./redis.js";
import { describeStoreContract } from "./store-contract.js";

// Reservations whose owner settles them (Store.reserve's ownerSettles, what the engine's gates
// ask for): a marker in an r2 HASH instead of a record.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const { fresh, closedAfterEach } = redisTestStores(2);

/** A store whose every reservation is made as the engine makes a request's. */
class OwnerSettled extends RedisStore {
  override reserve(id: string, counters: Counter[], leaseMs: number): ReturnType<RedisStore["reserve"]> {
    return super.reserve(id, counters, leaseMs, true);
  }
}

// The whole contract (leases, idempotent settles, releases, checkpoints and recovery) on markers.
describeStoreContract("redis, reservations settled by their owner", async () => {
  let now = Date.UTC(2025, 0, 1);
  const plain = await fresh({ clock: () => now });
  const store = new OwnerSettled(plain.redis, { clock: () => now, log: () => {} });
  return { store, advance: (ms) => void (now += ms), size: (key) => store.debugSize(key) };
});

const counter = (key: string, max: number, amount: number, windowMs = MINUTE) => ({ key, max, amount, windowMs });
const records = async (s: RedisStore, pattern: string) => (await s.redis.keys(`tg:{tollgate}:${pattern}`)).sort();

describe("redis store, reservations settled by their owner", () => {
  const { store } = closedAfterEach();

  it("writes no record, one marker HASH per script call; settles and releases once however often sent; another process's settle changes nothing", async () => {
    const [a, b] = [await store(), await store()];
    const both = (amount: number) => [counter("user", 1e6, amount), counter("usd", 1e9, 100 * amount, 24 * HOUR)];
    await a.redis.config("RESETSTAT");
    expect(await Promise.all([1, 2, 3].map((i) => a.reserve(`m${i}`, both(1), HOUR, true)))).toEqual([1, 2, 3].map((i) => ({ ok: true, totals: [i, 100 * i] })));
    const stats = await a.redis.info("commandstats");
    expect(/cmdstat_set:/.test(stats)).toBe(false);
    expect(await records(a, "r:*")).toEqual([]);
    const markers = await records(a, "r2:*");
    expect(markers).toHaveLength(1);
    expect((await a.redis.hkeys(markers[0]!)).sort()).toEqual(["m1", "m2", "m3"].map((id) => `tg:{tollgate}:r:${id}`));
    // The marker lives as long as the record would have: the longest window and bucket, plus a minute.
    expect(await a.redis.pttl(markers[0]!)).toBeGreaterThan(24 * HOUR);
    // Another process has no record to go by: its settle and release of these ids change nothing.
    await b.settle("m1", [1, 50]);
    await b.release("m2");
    expect(await a.peekDetail([{ key: "usd", windowMs: 24 * HOUR }])).toEqual([{ total: 300, reserved: 300 }]);
    const held = (a as unknown as { held: Map<string, unknown> }).held;
    const sent = held.get("m1");
    await a.settle("m1", [1, 50]);
    await a.release("m2");
    // Sent again (a lost reply, the write-behind queue): nothing more.
    held.set("m1", sent);
    await a.settle("m1", [1, 50]);
    expect(await a.peekDetail([{ key: "user", windowMs: MINUTE }, { key: "usd", windowMs: 24 * HOUR }])).toEqual([
      { total: 2, reserved: 1 },
      { total: 150, reserved: 100 },
    ]);
    await a.settle("m3", [1, 100]);
    expect(await a.peekDetail([{ key: "usd", windowMs: 24 * HOUR }])).toEqual([{ total: 150, reserved: 0 }]);
    expect(await records(a, "r2:*")).toEqual([]);
  });

  it("several processes on one Redis, at once: exactly max admitted, every settle counted once", async () => {
    const stores = await Promise.all([store(), store(), store(), store()]);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => stores[i % 4]!.reserve(`c${i}`, [counter("hot", 20, 1), counter("usd", 1e9, 10)], HOUR, true).then((r) => [i, r] as const)),
    );
    const admitted = results.filter(([, r]) => r.ok);
    expect(admitted).toHaveLength(20);
    // Each owner settles its own; the settles of one process ride in few script calls.
    await Promise.all(admitted.map(([i]) => stores[i % 4]!.settle(`c${i}`, [1, 7])));
    expect(await stores[0]!.peekDetail([{ key: "hot", windowMs: MINUTE }, { key: "usd", windowMs: MINUTE }])).toEqual([
      { total: 20, reserved: 0 },
      { total: 140, reserved: 0 },
    ]);
  });

  it("a process that dies holding one: its hold ends with the lease and nothing is ever charged for it", async () => {
    let now = Date.UTC(2025, 0, 1);
    const a = await store({ clock: () => now });
    expect(await a.reserve("dead", [counter("usd", 1e9, 500, HOUR)], 10 * MINUTE, true)).toMatchObject({ ok: true });
    // The process is gone: its memory of the reservation with it.
    (a as unknown as { held: Map<string, unknown> }).held.clear();
    expect(await a.peek([{ key: "usd", windowMs: HOUR }])).toEqual([500]);
    now += 10 * MINUTE;
    expect(await a.peek([{ key: "usd", windowMs: HOUR }])).toEqual([0]);
    expect(await a.recover()).toEqual([]);
    expect(await a.peek([{ key: "usd", windowMs: HOUR }])).toEqual([0]);
  });

  it("a checkpoint turns the marker into the record every build reads: recovered once after the lease, and the owner's settle does not count it again", async () => {
    let now = Date.UTC(2025, 0, 1);
    const [a, b] = [await store({ clock: () => now }), await store({ clock: () => now })];
    const counters = [counter("rpm", 10, 1), counter("usd", 1e9, 500, 24 * HOUR)];
    const cp = (id: string, actual: number[]) => ({ settles: [{ id, actual }], record: { ...emptyUsageRecord(id, new Date(now)), decision: "allow" as const } });
    expect(await a.reserve("s1", counters, 10 * MINUTE, true)).toMatchObject({ ok: true });
    expect(await a.reserve("s2", counters, 10 * MINUTE, true)).toMatchObject({ ok: true });
    await a.checkpoint(cp("s1", [1, 40]));
    await a.checkpoint(cp("s1", [1, 70]));
    await a.checkpoint(cp("s2", [1, 90]));
    // The record as a reserve writes it for any process (older builds' RECOVER and settle read it):
    // {base, in-flight field, window, amount, width, reserved at, lease end}, all texts.
    const rec = JSON.parse((await a.redis.get("tg:{tollgate}:r:s1"))!) as string[][];
    expect(rec.map((e) => [e[0], e[2], e[3], e[4], e[5], e[6]])).toEqual([
      ["tg:{tollgate}:c:rpm", "60000", "1", "1", String(now), String(now + 10 * MINUTE)],
      ["tg:{tollgate}:c:usd", "86400000", "500", "1350000", String(now), String(now + 10 * MINUTE)],
    ]);
    expect(await a.redis.hkeys((await records(a, "r2:*"))[0] ?? "none")).toEqual([]);
    // s2's owner settles it in time; s1's owner is gone, and another process recovers s1.
    await a.settle("s2", [1, 80]);
    now += 10 * MINUTE;
    expect((await b.recover()).map((r) => r.request_id)).toEqual(["s1"]);
    expect(await b.recover()).toEqual([]);
    expect(await a.peekDetail([{ key: "usd", windowMs: 24 * HOUR }])).toEqual([{ total: 150, reserved: 0 }]);
    // s1's owner was only slow: its settle comes after the recovery and changes nothing.
    await a.settle("s1", [1, 400]);
    expect(await a.peekDetail([{ key: "usd", windowMs: 24 * HOUR }])).toEqual([{ total: 150, reserved: 0 }]);
  });

  for (const own of [false, true]) {
    it(`a settle or release whose call Redis refused is settled by the retry (${own ? "marker" : "record"})`, async () => {
      const s = await store();
      const usd = (amount: number) => [counter("usd", 1e9, amount, HOUR)];
      const peek = () => s.peekDetail([{ key: "usd", windowMs: HOUR }]);
      expect(await s.reserve("a", usd(10), HOUR, own)).toMatchObject({ ok: true });
      failNextCall(s);
      await expect(s.settle("a", [25])).rejects.toThrow("injected");
      // As settleAlone and the engine's fallback do: settle again.
      await s.settle("a", [25]);
      expect(await peek()).toEqual([{ total: 25, reserved: 0 }]);
      expect(await s.reserve("b", usd(10), HOUR, own)).toMatchObject({ ok: true });
      failNextCall(s);
      await expect(s.release("b")).rejects.toThrow("injected");
      await s.release("b");
      expect(await peek()).toEqual([{ total: 25, reserved: 0 }]);
    });
  }

  it("a reservation made with a marker and still in flight is not forgotten however many are held after it", async () => {
    const s = await store();
    expect(await s.reserve("own", [counter("usd", 1e9, 10, HOUR)], HOUR, true)).toMatchObject({ ok: true });
    // Past MAX_HELD (50,000) reservations held by this process: the oldest record-backed ones make room.
    for (let i = 0; i < 50_001; i += 2_000) {
      await Promise.all(Array.from({ length: Math.min(2_000, 50_001 - i) }, (_, j) => s.reserve(`f${i + j}`, [counter("fill", 1e12, 1, HOUR)], HOUR, true)));
    }
    await s.settle("own", [25]);
    expect(await s.peekDetail([{ key: "usd", windowMs: HOUR }])).toEqual([{ total: 25, reserved: 0 }]);
  }, 120_000);
});

/** The store's next script call fails as a whole with a reply that is not transient (none of it runs). */
function failNextCall(s: RedisStore): void {
  const redis = s.redis as unknown as { sendCommand: (c: unknown) => Promise<unknown> };
  const orig = redis.sendCommand.bind(redis);
  redis.sendCommand = () => {
    redis.sendCommand = orig;
    const err = new Error("ERR injected");
    err.name = "ReplyError";
    return Promise.reject(err);
  };
}
