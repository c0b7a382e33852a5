import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { emptyUsageRecord } from "../core/usage-record.js";
import { RedisServer } from "../testing/redis-server.js";
import { bucketWidth } from "./buckets.js";
import { APPEND_USAGE } from "./redis-scripts.js";
import { RedisStore, StoreUnavailableError } from "./redis.js";
import { redisTestStores } from "./redis-test-stores.js";
import { describeStoreContract } from "./store-contract.js";
import { expectUsageLineIsStoredText } from "./usage-line-check.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** Each test gets an empty database (1; 0 is left to the other tests). */
const { url, fresh, closedAfterEach } = redisTestStores(1);

describeStoreContract("redis", async () => {
  let now = Date.UTC(2025, 0, 1);
  const store = await fresh({ clock: () => now });
  return { store, advance: (ms) => void (now += ms), size: (key) => store.debugSize(key) };
});

// The same contract on Redis's own clock (TIME inside the scripts); time-travel tests skip here.
describeStoreContract("redis (server clock)", async () => ({ store: await fresh() }));

const counter = (key: string, max: number, amount: number, windowMs = MINUTE) => ({ key, max, amount, windowMs });
const record = (id: string, ts = new Date()) => ({ ...emptyUsageRecord(id, ts), decision: "allow" as const });

describe("redis store", () => {
  const { store, keep } = closedAfterEach();

  it("keeps a clock aligned to the Redis server's TIME, for calendar periods", async () => {
    const s = await store();
    await sleep(50);
    const [sec, usec] = await s.redis.time();
    const redisNow = Number(sec) * 1000 + Number(usec) / 1000;
    expect(Math.abs(s.clock() - redisNow)).toBeLessThan(50);
  });

  it("gives every key it writes the namespace's hash tag, and every key but API keys a TTL", async () => {
    const s = await store();
    await s.reserve("a", [counter("u:1", 10, 1), counter("gw", 100, 5, 32 * 86_400_000)], 10_000);
    await s.settle("a", [1, 4]);
    await s.reserve("b", [counter("u:1", 10, 1)], 10_000);
    await s.score("sus:u:1", 3, HOUR);
    await s.distinct("ips", "203.0.113.9", HOUR);
    await s.appendUsage(record("r1"));
    await s.putKey({ id: "k1", hash: "f".repeat(64), prefix: "tg_", plan: "free", service: false, grants: [], verified: false, createdAt: 1 });
    await s.revokeKey("k1");
    const keys = await s.redis.keys("*");
    expect(keys.length).toBeGreaterThan(10);
    for (const key of keys) {
      expect(key.startsWith("tg:{tollgate}:")).toBe(true);
      if (key.startsWith("tg:{tollgate}:k:")) continue;
      expect([key, await s.redis.pttl(key)]).toEqual([key, expect.toSatisfy((ttl: number) => ttl > 0)]);
    }
  });

  it("two clients see one set of counters: 200 reservations from both admit exactly 20", async () => {
    const [a, b] = [await store(), await store()];
    let n = 0;
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).reserve(`x${n++}`, [counter("hot", 20, 1)], HOUR)),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(20);
    expect(await a.peek([{ key: "hot", windowMs: MINUTE }])).toEqual([20]);
  });

  it("sends one turn's reserves, settles, releases and peeks as one script call, each answered on its own", async () => {
    const s = await store();
    const rpm = (amount: number) => [counter("turn", 10, amount)];
    expect(await s.reserve("warm", rpm(1), HOUR)).toMatchObject({ ok: true });
    const calls = async () => {
      const stats = await s.redis.info("commandstats");
      return [...stats.matchAll(/cmdstat_(evalsha|eval|fcall)[^:]*:calls=(\d+)/g)].reduce((n, m) => n + Number(m[2]), 0);
    };
    const before = await calls();
    const settled = s.settle("warm", [1]);
    const reserved = Array.from({ length: 12 }, (_, i) => s.reserve(`t${i}`, rpm(1), HOUR));
    const [, , totals] = await Promise.all([settled, s.release("t0"), s.peek([{ key: "turn", windowMs: MINUTE }])]);
    const answers = await Promise.all(reserved);
    // The INFO reading itself is not a script; the warm-up already loaded the script.
    expect((await calls()) - before).toBe(1);
    // In call order: the settle first, then 9 of the 12 fit beside it, then the release and the peek.
    expect(answers.map((a) => a.ok)).toEqual([...Array(9).fill(true), false, false, false]);
    expect(answers[8]).toEqual({ ok: true, totals: [10] });
    expect(totals).toEqual([9]);
    expect(await s.peek([{ key: "turn", windowMs: MINUTE }])).toEqual([9]);
  });

  it("the usage line is the text the usage stream just took, and a record appended again after a change is written as it is then", async () => {
    const s = await store();
    await expectUsageLineIsStoredText(s, async () => (await s.redis.xrange("tg:{tollgate}:usage", "-", "+")).map(([, fields]) => fields[1]!));
  });

  it("ships a turn's usage records in the same script call as its counter ops", async () => {
    const s = await store();
    await s.reserve("warm", [counter("u", 10, 1)], HOUR);
    await s.appendUsage(record("warm"));
    await s.redis.config("RESETSTAT");
    await Promise.all([s.settle("warm", [1]), s.appendUsage(record("a")), s.reserve("next", [counter("u", 10, 1)], HOUR)]);
    const stats = await s.redis.info("commandstats");
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    expect({ scripts: calls("evalsha") + calls("eval"), xadd: calls("xadd") }).toEqual({ scripts: 1, xadd: 1 });
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["warm", "a"]);
  });

  it("writes a batch of usage records as one stream entry (200 records at most) and reads every record back, entries of one record too", async () => {
    const s = await store();
    // An entry as builds before phase 10d (and RECOVER) write it: one record.
    await s.redis.xadd("tg:{tollgate}:usage", "*", "r", JSON.stringify(record("old")));
    // 1,001 records in one turn: five full entries and one of a record; more than a page of entries.
    const ids = Array.from({ length: 1_001 }, (_, i) => `n${i}`);
    await Promise.all(ids.map((id) => s.reserve(id, [counter("many", 10_000, 1)], HOUR)));
    await s.redis.config("RESETSTAT");
    await Promise.all(ids.map((id) => s.settleWithRecord!(id, [1], record(id))));
    const stats = await s.redis.info("commandstats");
    expect(Number(/cmdstat_xadd:calls=(\d+)/.exec(stats)?.[1])).toBe(6);
    expect(await s.redis.xlen("tg:{tollgate}:usage")).toBe(7);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["old", ...ids]);
  });

  it("settles a served request and appends its record in one script call, a turn's records in one usage batch; resent while Redis hangs, neither counts twice", async () => {
    const s = await store();
    await s.reserve("warm", [counter("w", 20, 1)], HOUR);
    for (const id of ["a", "b"]) expect(await s.reserve(id, [counter("w", 20, 5)], HOUR)).toMatchObject({ ok: true });
    await s.redis.config("RESETSTAT");
    await Promise.all([s.settleWithRecord!("a", [2], record("a")), s.settleWithRecord!("b", [3], record("b"))]);
    const stats = await s.redis.info("commandstats");
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    // One stream entry holds the turn's two records (phase 10d): one XADD.
    expect({ scripts: calls("evalsha") + calls("eval"), xadd: calls("xadd") }).toEqual({ scripts: 1, xadd: 1 });
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["a", "b"]);
    expect(await s.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 6, reserved: 1 }]);
    // A bad amount refuses both: no record is written for a settle that was not made.
    await expect(s.settleWithRecord!("warm", [NaN], record("bad"))).rejects.toThrow(RangeError);
    await s.settle("warm", [1]);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["a", "b"]);

    // Redis stops answering mid-call: both wait in memory, and land once, whenever it answers again.
    expect(await s.reserve("c", [counter("w", 20, 4)], HOUR)).toMatchObject({ ok: true });
    const admin = new Redis(url());
    try {
      await admin.call("CLIENT", "PAUSE", "1500", "ALL");
      await s.settleWithRecord!("c", [1], record("c"));
      await sleep(2_500);
      await s.close();
      const entries = await admin.xrange("tg:{tollgate}:usage", "-", "+");
      expect(entries.flatMap(([, fields]) => fields.filter((_, i) => i % 2 === 1).map((r) => JSON.parse(r).request_id))).toEqual(["a", "b", "c"]);
      const reader = await RedisStore.open(url(), { log: () => {} });
      keep(reader);
      expect(await reader.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 7, reserved: 0 }]);
    } finally {
      admin.disconnect();
    }
  });

  it("an op that fails inside a turn's BATCH call fails alone: the turn's settles and records land once, the counters stay whole", async () => {
    const s = await store();
    // A counter key holding a string (another app's key in our namespace): the script's read of it
    // fails with WRONGTYPE. Before, the whole call failed after its earlier ops had written the
    // usage entries and deleted reservation records, but before their counters were written.
    await s.redis.set("tg:{tollgate}:c:poison:c", "not a hash");
    for (const id of ["a", "b"]) expect(await s.reserve(id, [counter("w", 20, 5)], HOUR)).toMatchObject({ ok: true });
    const after = await Promise.allSettled([s.settleWithRecord!("a", [2], record("a")), s.reserve("p1", [counter("poison", 20, 1)], HOUR)]);
    const before = await Promise.allSettled([s.reserve("p2", [counter("poison", 20, 1)], HOUR), s.settleWithRecord!("b", [3], record("b"))]);
    expect([after.map((r) => r.status), before.map((r) => r.status)]).toEqual([
      ["fulfilled", "rejected"],
      ["rejected", "fulfilled"],
    ]);
    expect(String((after[1] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["a", "b"]);
    expect(await s.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 5, reserved: 0 }]);
    // The usage stream itself of the wrong type: the record's op fails without marking its batch
    // written, the settle stands, and settleWithRecord still resolves (the record is on stdout).
    expect(await s.reserve("c", [counter("w", 20, 5)], HOUR)).toMatchObject({ ok: true });
    await s.redis.del("tg:{tollgate}:usage");
    await s.redis.set("tg:{tollgate}:usage", "not a stream");
    await s.settleWithRecord!("c", [1], record("c"));
    expect(await s.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 6, reserved: 0 }]);
    expect(await s.redis.keys("tg:{tollgate}:ub:*")).toHaveLength(2);
  });

  it("a reserve that fails on a later counter answers alone in the turn's flat reply: the ops around it get their own answers", async () => {
    const s = await store();
    await s.redis.set("tg:{tollgate}:c:poison:c", "not a hash");
    const answers = await Promise.allSettled([
      s.reserve("before", [counter("w", 20, 1), counter("v", 20, 4)], HOUR),
      s.reserve("bad", [counter("w", 20, 1), counter("v", 20, 1), counter("poison", 20, 1)], HOUR),
      s.reserve("after", [counter("w", 20, 2)], HOUR),
      s.peekDetail([{ key: "w", windowMs: MINUTE }, { key: "v", windowMs: MINUTE }]),
    ]);
    expect(answers.map((a) => (a.status === "fulfilled" ? a.value : String(a.reason)))).toEqual([
      { ok: true, totals: [1, 4] },
      expect.stringMatching(/WRONGTYPE/),
      { ok: true, totals: [3] },
      [
        { total: 3, reserved: 3 },
        { total: 4, reserved: 4 },
      ],
    ]);
  });

  it("a turn's BATCH call answered with an error after it ran: settleWithRecord resolves, nothing is counted or recorded twice", async () => {
    const s = await store();
    for (const id of ["a", "b"]) expect(await s.reserve(id, [counter("w", 20, 5)], HOUR)).toMatchObject({ ok: true });
    // The reply to a call that ran is lost to a non-transient error (a batch split past its op limit,
    // a proxy in front of Redis): the engine must not be told "neither" and append the records again.
    const run = (s as unknown as { run: (...a: unknown[]) => Promise<unknown> }).run.bind(s);
    let failed = 0;
    (s as unknown as { run: typeof run }).run = async (...a) => {
      const reply = await run(...a);
      if (failed++ === 0) throw new Error("ERR injected after the script ran");
      return reply;
    };
    await Promise.all([s.settleWithRecord!("a", [2], record("a")), s.settleWithRecord!("b", [3], record("b"))]);
    expect(failed).toBeGreaterThan(1);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["a", "b"]);
    expect(await s.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 5, reserved: 0 }]);
  });

  it("a turn of 9,000 served requests lands every record and every settle (a usage op holds at most 200 records)", async () => {
    const s = await store();
    const ids = Array.from({ length: 9_000 }, (_, i) => `n${i}`);
    for (let i = 0; i < ids.length; i += 500) {
      await Promise.all(ids.slice(i, i + 500).map((id) => s.reserve(id, [counter("w", 100_000, 5)], HOUR)));
    }
    // One turn: before, its records went into one usage op whose 9,000 arguments overflowed the
    // script's unpack() and failed the whole call, every settle of it with them.
    await Promise.all(ids.map((id) => s.settleWithRecord!(id, [2], record(id))));
    expect((await s.queryUsage({ since: 0 })).length).toBe(9_000);
    expect(await s.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 18_000, reserved: 0 }]);
  }, 60_000);

  it("a settle whose counter cannot be read keeps its reservation record, so a later settle still counts", async () => {
    const logs: string[] = [];
    const s = await store({ log: (line) => logs.push(line) });
    expect(await s.reserve("a", [counter("w", 20, 5), counter("z", 20, 5)], HOUR)).toMatchObject({ ok: true });
    await s.redis.del("tg:{tollgate}:c:z:c");
    await s.redis.set("tg:{tollgate}:c:z:c", "not a hash");
    await s.settleWithRecord!("a", [2, 2], record("a"));
    expect(logs.join("\n")).toMatch(/refused a served request's settlement twice/);
    await s.redis.del("tg:{tollgate}:c:z:c");
    await s.settle("a", [2, 2]);
    expect(await s.peekDetail([{ key: "w", windowMs: MINUTE }])).toEqual([{ total: 2, reserved: 0 }]);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["a"]);
  });

  it("a lease runs out on Redis's clock", async () => {
    const s = await store();
    expect(await s.reserve("held", [counter("k", 1, 1)], 300)).toMatchObject({ ok: true });
    expect(await s.reserve("next", [counter("k", 1, 1)], 300)).toMatchObject({ ok: false });
    await sleep(350);
    expect(await s.reserve("next", [counter("k", 1, 1)], HOUR)).toMatchObject({ ok: true });
  });

  it("appends a usage batch once, even when the same batch is sent again", async () => {
    const s = await store();
    const keys = ["tg:{tollgate}:usage", "tg:{tollgate}:ub:batch-1"];
    const args = ["", String(HOUR), JSON.stringify(record("once"))];
    expect(await s.redis.eval(APPEND_USAGE.lua, 2, ...keys, ...args)).toBe(1);
    expect(await s.redis.eval(APPEND_USAGE.lua, 2, ...keys, ...args)).toBe(0);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["once"]);
  });

  it("queries past one page of the stream, by each record's own ts", async () => {
    const s = await store();
    const t0 = Date.now() - HOUR;
    await Promise.all(Array.from({ length: 2_500 }, (_, i) => s.appendUsage(record(`r${i}`, new Date(t0 + i)))));
    // appendUsage stops waiting for Redis after a short while (a request never waits on it); on a
    // loaded machine some batches are still on their way then.
    const deadline = Date.now() + 5_000;
    while (s.pending.usage && Date.now() < deadline) await sleep(20);
    expect(await s.queryUsage({ since: t0 })).toHaveLength(2_500);
    expect((await s.queryUsage({ since: t0 + 1_000, until: t0 + 1_010 })).map((r) => r.request_id)).toEqual(
      Array.from({ length: 10 }, (_, i) => `r${1_000 + i}`),
    );
  });

  it("does not hang on a Redis that stopped answering: settle and usage wait in memory and land later", async () => {
    const s = await store();
    expect(await s.reserve("slow", [counter("k", 10, 8)], HOUR)).toMatchObject({ ok: true });
    const pauser = new Redis(url());
    await pauser.client("PAUSE", 1_500, "ALL");
    let started = performance.now();
    await expect(s.peek([{ key: "k", windowMs: MINUTE }])).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(performance.now() - started).toBeLessThan(1_000);
    // One unanswered command is enough: the next ones fail at once instead of waiting again.
    started = performance.now();
    await expect(s.reserve("next", [counter("k", 10, 1)], HOUR)).rejects.toThrow(/stopped answering/);
    await s.settle("slow", [3]);
    await s.appendUsage(record("during-pause"));
    expect(performance.now() - started).toBeLessThan(100);
    expect(s.pending).toEqual({ usage: 1, writes: 1 });
    await sleep(1_200);
    const deadline = Date.now() + 5_000;
    while ((s.pending.writes || s.pending.usage) && Date.now() < deadline) await sleep(50);
    pauser.disconnect();
    expect(await s.peek([{ key: "k", windowMs: MINUTE }])).toEqual([3]);
    expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["during-pause"]);
  });

  it("fails at once while Redis is down, buffers usage, and ships it when Redis is back", async () => {
    const own = await RedisServer.start();
    try {
      const s = await RedisStore.open(own.url(), { log: () => {} });
      keep(s);
      await own.stop();
      await sleep(50);
      const started = performance.now();
      await expect(s.reserve("r", [counter("k", 1, 1)], HOUR)).rejects.toBeInstanceOf(StoreUnavailableError);
      await s.appendUsage(record("while-down"));
      await s.settle("r", [1]);
      expect(performance.now() - started).toBeLessThan(100);
      expect(s.pending.usage).toBe(1);

      await own.restart();
      const deadline = Date.now() + 5_000;
      while (s.pending.usage && Date.now() < deadline) await sleep(50);
      expect((await s.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["while-down"]);
    } finally {
      await own.dispose();
    }
  });

  it("close() ships what is buffered", async () => {
    const s = await fresh();
    for (let i = 0; i < 500; i++) void s.appendUsage(record(`c${i}`));
    expect(s.pending.usage).toBe(500);
    await s.close();
    const reader = await RedisStore.open(url());
    keep(reader);
    expect(await reader.queryUsage({ since: 0 })).toHaveLength(500);
  });

  it("sums a counter afresh once its buckets leave: no rounding left over from the running sum", async () => {
    let now = Date.UTC(2025, 0, 1);
    const s = await store({ clock: () => now });
    const usd = (amount: number) => counter("usd", 1e9, amount, HOUR);
    for (const [i, amount] of [0.1, 0.2, 0.7].entries()) {
      await s.reserve(`f${i}`, [usd(amount)], MINUTE);
      await s.settle(`f${i}`, [amount]);
      now += 20 * MINUTE;
    }
    now += 5 * MINUTE;
    // The first bucket (0.1) has left; what is left is summed again, not 0.1 + 0.2 + 0.7 - 0.1.
    expect(await s.peek([{ key: "usd", windowMs: HOUR }])).toEqual([0.2 + 0.7]);
    now += 2 * HOUR;
    expect(await s.peek([{ key: "usd", windowMs: HOUR }])).toEqual([0]);
  });

  it("carries a counter of the previous layout over: its buckets as they were, its unsettled entries at their reserved amounts", async () => {
    let now = Date.UTC(2025, 0, 1);
    const s = await store({ clock: () => now });
    // As the scripts before the one-hash layout left a counter of max 100 over a minute (938 ms
    // buckets): 4 settled 10 s ago, 10 reserved 5 s ago and unsettled, under record "b".
    const base = "tg:{tollgate}:c:k";
    const bucket = Math.floor((now - 10_000) / 938) * 938;
    await s.redis.hset(`${base}:b`, String(bucket), "4", "s", "4", "ng", String(bucket + 937 + MINUTE), "x", String(now + HOUR));
    await s.redis.zadd(`${base}:g`, bucket + 937 + MINUTE, String(bucket), "+inf", "~");
    await s.redis.hset(base, "7", "10", "~", "0");
    await s.redis.zadd(`${base}:t`, now - 5_000, "7", "+inf", "~");
    await s.redis.zadd(`${base}:l`, now + HOUR, "7", "+inf", "~");
    await s.redis.set("tg:{tollgate}:r:b", JSON.stringify([[base, "7", MINUTE, "10", 938, now - 5_000]]), "PX", HOUR);
    for (const k of [base, `${base}:t`, `${base}:l`, `${base}:b`, `${base}:g`]) await s.redis.pexpire(k, HOUR);

    expect(await s.peek([{ key: "k", windowMs: MINUTE }])).toEqual([14]);
    expect(await s.redis.exists(base, `${base}:t`, `${base}:l`, `${base}:b`, `${base}:g`)).toBe(0);
    // The old reservation was charged in full when carried over: its settle changes nothing.
    await s.settle("b", [7]);
    expect(await s.peek([{ key: "k", windowMs: MINUTE }])).toEqual([14]);
    expect(await s.reserve("c", [counter("k", 100, 1)], HOUR)).toEqual({ ok: true, totals: [15] });
    for (const key of await s.redis.keys(`${base}*`)) expect([key, await s.redis.pttl(key)]).toEqual([key, expect.toSatisfy((t: number) => t > 0)]);
    await s.settle("c", [1]);
    now += 2 * MINUTE;
    expect(await s.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
    expect(await s.debugSize("k")).toBe(0);
  });

  it("an unsettled reservation on a month-long budget stops counting within a second of its lease, not a bucket (12 h) later", async () => {
    let now = Date.UTC(2025, 0, 1, 5, 30, 0, 250);
    const s = await store({ clock: () => now });
    const month = counter("bud:m", 1e12, 5_000, 32 * 86_400_000);
    expect(await s.reserve("crashed", [month], 65_000)).toMatchObject({ ok: true });
    now += 64_999;
    expect(await s.peek([month])).toEqual([5_000]);
    now += 1_001;
    expect(await s.peek([month])).toEqual([0]);
  });

  it("keeps a counter in one hash: a reserve and a settle read and write it once each", async () => {
    const s = await store();
    await s.reserve("warm", [counter("one", 1e6, 1)], HOUR);
    await s.settle("warm", [1]);
    await s.redis.config("RESETSTAT");
    await s.reserve("a", [counter("one", 1e6, 1)], HOUR);
    await s.settle("a", [1]);
    const stats = await s.redis.info("commandstats");
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    // Reserve: HMGET, HSET, SET of the record; settle: DEL of the record (not read back: this
    // process knows what it reserved), HMGET, HSET.
    expect({ hmget: calls("hmget"), hset: calls("hset"), hgetall: calls("hgetall"), hvals: calls("hvals"), zadd: calls("zadd"), get: calls("get") }).toEqual({ hmget: 2, hset: 2, hgetall: 0, hvals: 0, zadd: 0, get: 0 });
  });

  it("settles what this process reserved without reading the record back, once however often it is sent; another process settles from the record", async () => {
    let now = Date.UTC(2025, 0, 1);
    const [a, b] = [await store({ clock: () => now }), await store({ clock: () => now })];
    const day = (amount: number) => [counter("usd", 1e9, amount, 24 * HOUR), counter("rpm", 1e3, 1)];
    const held = (a as unknown as { held: Map<string, unknown> }).held;
    expect(await a.reserve("mine", day(500), 10 * MINUTE)).toEqual({ ok: true, totals: [500, 1] });
    const sent = held.get("mine");
    await a.settle("mine", [120, 1]);
    expect(await a.peek([{ key: "usd", windowMs: 24 * HOUR }, { key: "rpm", windowMs: MINUTE }])).toEqual([120, 1]);
    // The same settle again (its reply was lost, the write-behind queue sends it again): nothing more.
    held.set("mine", sent);
    await a.settle("mine", [120, 1]);
    expect(await a.peek([{ key: "usd", windowMs: 24 * HOUR }, { key: "rpm", windowMs: MINUTE }])).toEqual([120, 1]);
    // Reserved by a, settled by b (which has only the record to go by), 2 minutes later.
    expect(await a.reserve("theirs", day(500), 10 * MINUTE)).toMatchObject({ ok: true });
    now += 2 * MINUTE;
    await b.settle("theirs", [80, 1]);
    expect(await a.peek([{ key: "usd", windowMs: 24 * HOUR }, { key: "rpm", windowMs: MINUTE }])).toEqual([200, 0]);
    // a's own settle of it comes too late to count twice.
    await a.settle("theirs", [80, 1]);
    expect(await b.peekDetail([{ key: "usd", windowMs: 24 * HOUR }])).toEqual([{ total: 200, reserved: 0 }]);
    expect(held.size).toBe(0);
  });

  it("settles by the field names it works out itself, for every kind of counter: nothing left in flight, no record read", async () => {
    // Redis's own clock: reserve times are whatever TIME says, not round test numbers.
    const s = await store();
    const kinds = [
      counter("exact", 50, 1), // 1 ms buckets
      counter("coarse", 1e6, 3), // window end rounded up to the bucket width
      counter("day", 1e9, 700, 24 * HOUR), // the lease (shorter than the window) ends the hold
      counter("odd", 1e6, 2, 7_777), // a width that does not divide the window
    ];
    const windows = kinds.map((c) => ({ key: c.key, windowMs: c.windowMs }));
    await s.redis.config("RESETSTAT");
    for (let i = 0; i < 5; i++) {
      expect(await s.reserve(`k${i}`, kinds, 10 * MINUTE + i)).toMatchObject({ ok: true });
      await s.settle(`k${i}`, [1, 2, 300, 1]);
    }
    const stats = await s.redis.info("commandstats");
    expect(Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0)).toBe(0);
    expect(await s.peekDetail(windows)).toEqual([5, 10, 1500, 5].map((total) => ({ total, reserved: 0 })));
    for (const c of kinds) expect((await s.redis.hkeys(`tg:{tollgate}:c:${c.key}:c`)).filter((f) => f.startsWith("l"))).toEqual([]);
  });

  it("one turn's ops on one key with different maxes keep their own bucket widths, each op runs at its own (test) time, and a settle sent again changes nothing", async () => {
    let now = Date.UTC(2025, 0, 1);
    const s = await store({ clock: () => now });
    // One turn: the same key reserved with a max that keeps 1 ms buckets and one that does not;
    // a counter of max 1 taken, refused, then taken again a window later (the clock moved between
    // the calls, not between turns).
    const exact = s.reserve("exact", [counter("shared", 50, 1)], HOUR);
    const coarse = s.reserve("coarse", [counter("shared", 1e6, 1)], HOUR);
    const first = s.reserve("first", [counter("once", 1, 1)], HOUR);
    const second = s.reserve("second", [counter("once", 1, 1)], HOUR);
    now += MINUTE;
    const later = s.reserve("later", [counter("once", 1, 1)], HOUR);
    expect(await Promise.all([exact, coarse, first, second, later])).toEqual([
      { ok: true, totals: [1] },
      { ok: true, totals: [2] },
      { ok: true, totals: [1] },
      { ok: false, index: 0, used: 1, retryAfterMs: MINUTE },
      { ok: true, totals: [1] },
    ]);
    const widths = async (id: string) => (JSON.parse((await s.redis.get(`tg:{tollgate}:r:${id}`))!) as string[][]).map((e) => e[4]);
    expect([await widths("exact"), await widths("coarse")]).toEqual([["1"], [String(bucketWidth(MINUTE, 1e6))]]);
    const held = (s as unknown as { held: Map<string, unknown> }).held;
    const sent = held.get("exact");
    await Promise.all([s.settle("exact", [1]), s.settle("coarse", [1]), s.settle("later", [1])]);
    // Each settle found the in-flight field its reserve made: nothing left reserved.
    expect(await s.peekDetail([{ key: "once", windowMs: MINUTE }])).toEqual([{ total: 1, reserved: 0 }]);
    expect((await s.redis.hkeys("tg:{tollgate}:c:shared:c")).filter((f) => f.startsWith("l"))).toEqual([]);
    // A settle sent again (R is gone: it does nothing) in the turn before another op: that op
    // still reads its own arguments.
    held.set("exact", sent);
    const [, again] = await Promise.all([s.settle("exact", [1]), s.reserve("again", [counter("shared", 1e6, 5)], HOUR)]);
    expect(again).toEqual({ ok: true, totals: [5] });
  });

  it("settles what it reserved at a fractional test clock without reading the record back", async () => {
    let now = Date.UTC(2025, 0, 1) + 0.25;
    const s = await store({ clock: () => now });
    const kinds = [counter("exact", 50, 1), counter("day", 1e9, 700, 24 * HOUR)];
    expect(await s.reserve("f", kinds, 10 * MINUTE + 0.5)).toMatchObject({ ok: true });
    now += 1.5;
    await s.redis.config("RESETSTAT");
    await s.settle("f", [1, 300]);
    expect(Number(/cmdstat_get:calls=(\d+)/.exec(await s.redis.info("commandstats"))?.[1] ?? 0)).toBe(0);
    expect(await s.peekDetail(kinds.map((c) => ({ key: c.key, windowMs: c.windowMs })))).toEqual([
      { total: 1, reserved: 0 },
      { total: 300, reserved: 0 },
    ]);
  });

  it("writes a reservation record any process can settle and release, whatever its counter keys hold", async () => {
    const [a, b] = [await store(), await store()];
    const keys = ["plain:user:1", 'quote"d', "back\\slash", "new\nline", "slash/é/ü", "tab\there"];
    for (const [i, key] of keys.entries()) {
      const counters = [counter(key, 1e6, 7), counter(`${key}:2`, 1e6, 3, 24 * HOUR)];
      expect(await a.reserve(`r${i}`, counters, HOUR)).toMatchObject({ ok: true });
      // The record is JSON (what an older build reads with cjson): the keys as they were, every field text.
      const rec = JSON.parse((await a.redis.get(`tg:{tollgate}:r:r${i}`))!) as string[][];
      expect(rec.map((e) => e[0])).toEqual([`tg:{tollgate}:c:${key}`, `tg:{tollgate}:c:${key}:2`]);
      expect(rec.map((e) => e.slice(2, 5))).toEqual([["60000", "7", String(bucketWidth(MINUTE, 1e6))], ["86400000", "3", String(bucketWidth(24 * HOUR, 1e6))]]);
      expect(rec.flat().every((f) => typeof f === "string")).toBe(true);
      // b has only the record to go by: settles one, releases the other.
      if (i % 2) await b.release(`r${i}`);
      else await b.settle(`r${i}`, [5, 2]);
      const expected = i % 2 ? [0, 0] : [5, 2];
      expect(await a.peek([{ key, windowMs: MINUTE }, { key: `${key}:2`, windowMs: 24 * HOUR }])).toEqual(expected);
    }
  });

  it("reads and writes a counter once per turn, however many of the turn's requests touch it", async () => {
    const s = await store();
    const both = (amount: number) => [counter("user", 1e6, amount), counter("route", 1e6, amount)];
    await s.reserve("warm", both(1), HOUR);
    await s.settle("warm", [1, 1]);
    await s.redis.config("RESETSTAT");
    // One turn: 10 requests settle what they reserved in an earlier turn, 10 more reserve.
    await Promise.all(Array.from({ length: 10 }, (_, i) => s.reserve(`a${i}`, both(2), HOUR)));
    const turn = [...Array.from({ length: 10 }, (_, i) => s.settle(`a${i}`, [1, 1])), ...Array.from({ length: 10 }, (_, i) => s.reserve(`b${i}`, both(2), HOUR))];
    const answers = await Promise.all(turn);
    const stats = await s.redis.info("commandstats");
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    // Two turns, two counters: each counter read (HMGET) and written (HSET) once per turn.
    expect({ scripts: calls("evalsha"), hmget: calls("hmget"), hset: calls("hset") }).toEqual({ scripts: 2, hmget: 4, hset: 4 });
    // Each op still saw the ones before it: the settles gave back 1 of each 2, the reserves added 2.
    expect(answers.at(-1)).toEqual({ ok: true, totals: [1 + 10 + 20, 1 + 10 + 20] });
    expect(await s.peek([{ key: "user", windowMs: MINUTE }, { key: "route", windowMs: MINUTE }])).toEqual([31, 31]);
  });

  it("refuses to open when Redis cannot be reached in time", async () => {
    const gone = await RedisServer.start();
    const url = gone.url();
    await gone.dispose();
    const started = performance.now();
    await expect(RedisStore.open(url, { connectTimeoutMs: 300, log: () => {} })).rejects.toThrow(/cannot reach redis at 127\.0\.0\.1:\d+\/0/);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
