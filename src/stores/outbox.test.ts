import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryOutbox } from "./outbox-memory.js";
import { RedisServer } from "../testing/redis-server.js";
import { MemoryStore } from "./memory.js";
import { RedisStore } from "./redis.js";
import { describeOutboxContract } from "./outbox-contract.js";
import { SqliteStore } from "./sqlite.js";

describeOutboxContract("memory", async () => {
  let now = Date.UTC(2026, 0, 1);
  const store = new MemoryStore(() => now);
  return { outbox: store.outbox, advance: (ms) => void (now += ms), close: () => store.close() };
});

describeOutboxContract("sqlite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tollgate-outbox-"));
  let now = Date.UTC(2026, 0, 1);
  const path = join(dir, "tollgate.db");
  const stores = [SqliteStore.open(path, { now: () => now })];
  return {
    outbox: stores[0]!.outbox,
    advance: (ms) => void (now += ms),
    other: async () => {
      const s = SqliteStore.open(path, { now: () => now });
      stores.push(s);
      return s.outbox;
    },
    close: async () => {
      await Promise.all(stores.map((s) => s.close()));
      await rm(dir, { recursive: true, force: true });
    },
  };
});

let server: RedisServer;
beforeAll(async () => {
  server = await RedisServer.start();
});
afterAll(() => server?.dispose());

describeOutboxContract("redis", async () => {
  let now = Date.UTC(2026, 0, 1);
  const open = () => RedisStore.open(server.url(2), { log: () => {}, clock: () => now });
  const stores = [await open()];
  await stores[0]!.redis.flushdb();
  return {
    outbox: stores[0]!.outbox,
    advance: (ms) => void (now += ms),
    other: async () => {
      const s = await open();
      stores.push(s);
      return s.outbox;
    },
    close: async () => {
      await Promise.all(stores.map((s) => s.close()));
    },
  };
});

// On Redis's own clock (TIME inside the scripts), as gateways run it; time-travel tests skip.
describeOutboxContract("redis (server clock)", async () => {
  const store = await RedisStore.open(server.url(2), { log: () => {} });
  await store.redis.flushdb();
  return { outbox: store.outbox, close: () => store.close() };
});

describe("memory outbox", () => {
  it("remembers delivered ids only for their keep: a day of usage export does not pile up behind a long-kept alert or a failed message", async () => {
    let now = Date.UTC(2026, 0, 1);
    const outbox = new MemoryOutbox(() => now);
    const DAY = 86_400_000;
    await outbox.add([{ id: "alert", sink: "ops", kind: "budget.soft", payload: "{}" }, { id: "bad", sink: "ops", kind: "abuse.block", payload: "{}" }], 35 * DAY);
    await outbox.claim("ops", 10, 1_000);
    await outbox.delivered("ops", ["alert"]);
    await outbox.fail("ops", "bad", "HTTP 500");
    for (let i = 0; i < 1_000; i++) {
      await outbox.add([{ id: `r${i}`, sink: "cloudevents", kind: "usage", payload: "{}" }], DAY);
      await outbox.claim("cloudevents", 1, 1_000);
      await outbox.delivered("cloudevents", [`r${i}`]);
    }
    expect(outbox.debugSize()).toBe(1_002);
    now += DAY;
    await outbox.counts();
    expect(outbox.debugSize()).toBe(2);
    expect(await outbox.list({ state: "failed", limit: 5 })).toMatchObject({ total: 1, items: [{ id: "bad" }] });
  });
});
