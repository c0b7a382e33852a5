import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryStore } from "../stores/memory.js";
import { RedisStore } from "../stores/redis.js";
import { SqliteStore } from "../stores/sqlite.js";
import type { Store } from "./store.js";
import { RedisServer } from "../testing/redis-server.js";
import type { Identity } from "./identity.js";
import { block, blockedSubjects, callerPolicy, ipSubject, readBudgetOverride, setBudgetOverride, unblock } from "./policy.js";

const HOUR = 3_600_000;
const alice: Identity = { kind: "key", user: "alice", keyId: "k1", plan: "free", verified: false, ip: "198.51.100.7", ipGroup: "198.51.100.7" };

let redis: RedisServer | undefined;
beforeAll(async () => {
  redis = await RedisServer.start();
});
afterAll(() => redis?.dispose());

type Clocked = { store: Store; advance(ms: number): void };

const stores: [string, () => Promise<Clocked>][] = [
  [
    "memory",
    async () => {
      let now = Date.UTC(2025, 0, 1);
      return { store: new MemoryStore(() => now), advance: (ms) => void (now += ms) };
    },
  ],
  [
    "sqlite",
    async () => {
      let now = Date.UTC(2025, 0, 1);
      return { store: SqliteStore.open(":memory:", { now: () => now }), advance: (ms) => void (now += ms) };
    },
  ],
  [
    "redis",
    async () => {
      let now = Date.UTC(2025, 0, 1);
      const store = await RedisStore.open(redis!.url(3), { log: () => {}, clock: () => now });
      await store.redis.flushdb();
      return { store, advance: (ms) => void (now += ms) };
    },
  ],
];

describe.each(stores)("operator policies on the %s store", (_name, open) => {
  let s: Clocked;
  beforeAll(async () => {
    s = await open();
  });
  afterAll(() => s.store.close());

  it("blocks a user until lifted, and only that user", async () => {
    expect((await callerPolicy(s.store, alice)).blocked).toEqual([]);
    await block(s.store, { kind: "user", id: "alice" });
    expect((await callerPolicy(s.store, alice)).blocked).toEqual(["user"]);
    expect((await callerPolicy(s.store, { ...alice, user: "bob" })).blocked).toEqual([]);
    s.advance(400 * 24 * HOUR);
    expect((await callerPolicy(s.store, alice)).blocked).toEqual(["user"]);
    await unblock(s.store, { kind: "user", id: "alice" });
    expect((await callerPolicy(s.store, alice)).blocked).toEqual([]);
  });

  it("blocks an address for a while, and the block runs out by itself", async () => {
    await block(s.store, ipSubject("198.51.100.7")!, HOUR);
    await block(s.store, ipSubject("198.51.100.7")!, HOUR); // again: still one block, not two
    expect((await callerPolicy(s.store, alice)).blocked).toEqual(["ip"]);
    expect(await blockedSubjects(s.store, [ipSubject("198.51.100.7")!, ipSubject("198.51.100.8")!])).toEqual([true, false]);
    s.advance(HOUR + 1);
    expect((await callerPolicy(s.store, alice)).blocked).toEqual([]);
  });

  it("holds budget overrides exactly, a $0 budget included, and clears them", async () => {
    const subject = { kind: "user" as const, id: "alice" };
    await setBudgetOverride(s.store, subject, { daily: 2_500_000 });
    expect(await readBudgetOverride(s.store, subject)).toEqual({ daily: 2_500_000, monthly: undefined });
    await setBudgetOverride(s.store, subject, { daily: 0, monthly: 7_000_001 });
    expect((await callerPolicy(s.store, alice)).budget).toEqual({ daily: 0, monthly: 7_000_001 });
    await setBudgetOverride(s.store, subject, {});
    expect(await readBudgetOverride(s.store, subject)).toEqual({ daily: undefined, monthly: undefined });
  });

  it("raises an org's and a key's budgets for a while; the raises lapse by themselves, and say until when", async () => {
    const inAcme: Identity = { ...alice, org: "acme" };
    const org = { kind: "org" as const, id: "acme" };
    const key = { kind: "key" as const, id: "k1" };
    const setAt = Date.UTC(2030, 0, 1);
    await setBudgetOverride(s.store, org, { daily: 5_000_000 }, HOUR, setAt);
    await setBudgetOverride(s.store, key, { total: 0, monthly: 1 }, 2 * HOUR, setAt);
    expect(await readBudgetOverride(s.store, org)).toEqual({ daily: 5_000_000, until: setAt + HOUR });
    expect(await readBudgetOverride(s.store, key)).toEqual({ monthly: 1, total: 0, until: setAt + 2 * HOUR });
    expect(await callerPolicy(s.store, inAcme)).toMatchObject({ org: { daily: 5_000_000 }, key: { monthly: 1, total: 0 } });
    // Another org, and a caller without an org, read none of it.
    expect((await callerPolicy(s.store, { ...inAcme, org: "globex" })).org).toEqual({ daily: undefined, monthly: undefined });
    expect((await callerPolicy(s.store, alice)).org).toEqual({});
    s.advance(HOUR + 1);
    expect((await callerPolicy(s.store, inAcme)).org).toEqual({ daily: undefined, monthly: undefined });
    expect(await readBudgetOverride(s.store, org)).toEqual({});
    expect((await callerPolicy(s.store, inAcme)).key).toMatchObject({ total: 0 });
    s.advance(HOUR);
    expect((await callerPolicy(s.store, inAcme)).key).toEqual({ daily: undefined, monthly: undefined, total: undefined });
    // Set again for good: the old end does not linger.
    await setBudgetOverride(s.store, org, { monthly: 9 }, HOUR, setAt);
    await setBudgetOverride(s.store, org, { monthly: 9 });
    expect(await readBudgetOverride(s.store, org)).toEqual({ monthly: 9 });
    s.advance(2 * HOUR);
    expect(await readBudgetOverride(s.store, org)).toEqual({ monthly: 9 });
    await setBudgetOverride(s.store, org, {});
  });
});

describe("ipSubject", () => {
  it("groups IPv6 by /64 and refuses what is not an address", () => {
    expect(ipSubject("2001:db8:1:2:3:4:5:6")).toEqual({ kind: "ip", id: "2001:db8:1:2::/64" });
    expect(ipSubject("::ffff:192.0.2.1")).toEqual({ kind: "ip", id: "192.0.2.1" });
    expect(ipSubject("not-an-ip")).toBeUndefined();
  });
});
