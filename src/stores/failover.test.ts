import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RedisServer } from "../testing/redis-server.js";
import { FailoverStore } from "./failover.js";
import { RedisStore, StoreUnavailableError } from "./redis.js";
import type { StoredKey } from "../core/store.js";
import { emptyUsageRecord } from "../core/usage-record.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const counter = (key: string, max: number, amount: number) => ({ key, max, amount, windowMs: MINUTE });

async function until(what: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(25);
  }
}

describe("failover store (on_store_error: open)", () => {
  let server: RedisServer;
  let redis: RedisStore;
  let store: FailoverStore;
  let lines: string[];

  beforeEach(async () => {
    server = await RedisServer.start({ persistent: true });
    lines = [];
    redis = await RedisStore.open(server.url(), { log: (l) => lines.push(l) });
    store = new FailoverStore(redis, (l) => lines.push(l));
  });

  afterEach(async () => {
    await store.close();
    await server.dispose();
  });

  it("settles with the record through Redis while it is up, and locally (the record queued for Redis) while it is away", async () => {
    const record = (id: string) => ({ ...emptyUsageRecord(id, new Date()), decision: "allow" as const });
    expect(await store.reserve("up", [counter("w", 5, 2)], HOUR)).toMatchObject({ ok: true });
    await store.settleWithRecord!("up", [1], record("up"));
    expect(await store.peek([{ key: "w", windowMs: MINUTE }])).toEqual([1]);
    expect((await store.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["up"]);

    await server.stop();
    expect(await store.reserve("away", [counter("w", 5, 2)], HOUR)).toMatchObject({ ok: true });
    await store.settleWithRecord!("away", [1], record("away"));
    expect(redis.pending.usage).toBe(1);
    await server.restart();
    await until(() => !store.degraded && redis.pending.usage === 0 && redis.pending.writes === 0);
    expect((await store.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["up", "away"]);
    expect(await store.peek([{ key: "w", windowMs: MINUTE }])).toEqual([2]);
  });

  it("falls back to local limits that start from what Redis counted, and charges them to Redis when it returns", async () => {
    for (let i = 0; i < 3; i++) {
      expect(await store.reserve(`before-${i}`, [counter("u", 5, 1)], HOUR)).toMatchObject({ ok: true });
      await store.settle(`before-${i}`, [1]);
    }
    await server.stop();

    expect(await store.reserve("local-1", [counter("u", 5, 1)], HOUR)).toMatchObject({ ok: true, totals: [4] });
    expect(await store.reserve("local-2", [counter("u", 5, 1)], HOUR)).toMatchObject({ ok: true, totals: [5] });
    expect(await store.reserve("local-3", [counter("u", 5, 1)], HOUR)).toMatchObject({ ok: false, used: 5 });
    expect(store.degraded).toBe(true);
    await store.settle("local-1", [1]);
    await store.settle("local-2", [1]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/store unavailable .*on_store_error is open/);
    expect(lines[0]).not.toMatch(/redis:\/\//);

    await server.restart();
    await until(() => !store.degraded);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/is back; limits are shared again/);
    await until(() => redis.pending.writes === 0);
    // Redis now holds the 3 it saw and the 2 spent while it was away.
    expect(await redis.peek([{ key: "u", windowMs: MINUTE }])).toEqual([5]);
    expect(await store.reserve("after", [counter("u", 5, 1)], HOUR)).toMatchObject({ ok: false, used: 5 });
  });

  it("delivers a settlement made while Redis was away once it returns", async () => {
    expect(await store.reserve("held", [counter("k", 10, 8)], HOUR)).toMatchObject({ ok: true });
    await server.stop();
    await store.settle("held", [2]);
    expect(redis.pending.writes).toBe(1);
    await server.restart();
    await until(() => redis.pending.writes === 0);
    expect(await redis.peek([{ key: "k", windowMs: MINUTE }])).toEqual([2]);
  });

  it("keeps resolving keys it has seen; key management waits for Redis", async () => {
    const key: StoredKey = { id: "k1", hash: "a".repeat(64), prefix: "tg_", user: "u", plan: "free", service: false, grants: [], verified: false, createdAt: 1 };
    await store.putKey(key);
    expect(await store.findKey(key.hash)).toEqual(key);
    await server.stop();
    expect(await store.findKey(key.hash)).toEqual(key);
    expect(await store.findKey("b".repeat(64))).toBeUndefined();
    await expect(store.putKey({ ...key, hash: "c".repeat(64) })).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.queryUsage({ since: 0 })).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it("does not hide an error that is not Redis being away", async () => {
    await expect(store.reserve("bad", [counter("k", 10, Number.NaN)], HOUR)).rejects.toThrow(RangeError);
    await redis.redis.set("tg:{tollgate}:c:wrong", "not a hash");
    await expect(store.reserve("wrongtype", [counter("wrong", 10, 1)], HOUR)).rejects.toThrow(/WRONGTYPE/);
    expect(store.degraded).toBe(false);
    expect(lines).toEqual([]);
  });
});
