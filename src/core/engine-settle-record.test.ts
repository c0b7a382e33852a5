import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { openaiChat } from "../formats/openai-chat.js";
import { createProviders } from "../providers/registry.js";
import { SqliteStore } from "../stores/sqlite.js";
import { Engine } from "./engine.js";
import type { UsageRecord } from "./usage-record.js";

/** A real SQLite store that counts the writes a served request makes, and fails the joint one on demand. */
type CountingStore = SqliteStore & { calls: string[]; failTogether: boolean };

const opened: SqliteStore[] = [];
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
});

function open(): CountingStore {
  const store = Object.assign(SqliteStore.open(join(mkdtempSync(join(tmpdir(), "tollgate-settle-record-")), "t.db")), { calls: [] as string[], failTogether: false });
  opened.push(store);
  const settle = store.settle.bind(store);
  const appendUsage = store.appendUsage.bind(store);
  const together = store.settleWithRecord.bind(store);
  store.settle = (id, actual) => (store.calls.push("settle"), settle(id, actual));
  store.appendUsage = (record) => (store.calls.push("appendUsage"), appendUsage(record));
  store.settleWithRecord = async (id, actual, record) => {
    store.calls.push("settleWithRecord");
    if (store.failTogether) throw new Error("SQLITE_BUSY: database is locked");
    return together(id, actual, record);
  };
  return store;
}

/** One request the gateway's way: admitted before its body, gate 3 and the budget in one reservation. */
async function served(store: CountingStore) {
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { sim: { type: "simulated" } },
      models: { m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
      plans: { free: { models: ["m"], budget: { daily: 1 } } },
      keys: [{ key: "tg_settle_record", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", limits: [{ per: "user", requests: 100, window: "1m" }], input: { max_output_tokens: 64 } } },
    }),
  );
  const records: UsageRecord[] = [];
  const warnings: string[] = [];
  const engine = new Engine({ config, store, providers: createProviders(config), onRecord: (r) => records.push(r), warn: (_f, m) => warnings.push(m) });
  const ex = engine.open({ route: "chat", endpoint: "chat_completions", ip: "203.0.113.9", credentials: { token: "tg_settle_record" } });
  await engine.admit(ex, { bodyPending: true });
  await engine.prepare(ex, openaiChat, { model: "m", messages: [{ role: "user", content: "hello" }] });
  const { meter } = await engine.call(ex, new AbortController().signal);
  store.calls = [];
  const record = await engine.finish(ex, { ended: "complete", meter });
  const budget = ex.budget!.counters.filter((c) => c.unit === "usd");
  return { record, records, warnings, spent: await store.peekDetail(budget) };
}

describe("a served request's settle and record", () => {
  it("are one write on a store that offers it (one SQLite commit), which holds both", async () => {
    const store = open();
    const { record, records, spent } = await served(store);
    expect(store.calls).toEqual(["settleWithRecord"]);
    expect(record).toMatchObject({ usage_source: "provider", ended: "complete" });
    expect(record.cost_usd).toBeGreaterThan(0);
    expect(records).toEqual([record]);
    expect(await store.queryUsage({ since: 0 })).toEqual([record]);
    // The budget holds the actual cost, settled: nothing is still reserved.
    expect(spent).toEqual([{ total: Math.round(record.cost_usd * 1e6), reserved: 0 }]);
  });

  it("when that write fails, neither is kept: the request is settled and recorded on its own, once", async () => {
    const store = open();
    store.failTogether = true;
    const { record, records, warnings, spent } = await served(store);
    expect(store.calls).toEqual(["settleWithRecord", "settle", "appendUsage"]);
    expect(record.usage_source).toBe("provider");
    expect(records).toEqual([record]);
    expect(await store.queryUsage({ since: 0 })).toEqual([record]);
    expect(spent).toEqual([{ total: Math.round(record.cost_usd * 1e6), reserved: 0 }]);
    expect(warnings.join("\n")).toMatch(/settling a served request with its record failed; settling it alone/);
  });
});

describe("SqliteStore.settleWithRecord", () => {
  it("commits the settle and the record together, or neither", async () => {
    const store = open();
    const counter = { key: "budget:u", amount: 500, max: 1_000, windowMs: 86_400_000 };
    expect(await store.reserve("r1", [counter], 60_000)).toMatchObject({ ok: true });
    const record = { request_id: "r1", ts: new Date().toISOString(), cost_usd: 0.0002 } as UsageRecord;
    // The record's row cannot be written: the settle in the same transaction must not stay either.
    const insert = (store as unknown as { insertUsage: { run: (...a: unknown[]) => unknown } }).insertUsage;
    const run = insert.run;
    insert.run = () => {
      throw new Error("SQLITE_FULL: database or disk is full");
    };
    await expect(store.settleWithRecord("r1", [200], record)).rejects.toThrow(/SQLITE_FULL/);
    expect(await store.peekDetail([counter])).toEqual([{ total: 500, reserved: 500 }]);
    expect(await store.queryUsage({ since: 0 })).toEqual([]);
    insert.run = run;
    await store.settleWithRecord("r1", [200], record);
    expect(await store.peekDetail([counter])).toEqual([{ total: 200, reserved: 0 }]);
    expect((await store.queryUsage({ since: 0 })).map((r) => r.request_id)).toEqual(["r1"]);
  });
});
