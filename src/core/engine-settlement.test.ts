import { describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { openaiChat } from "../formats/openai-chat.js";
import { createProviders } from "../providers/registry.js";
import { MemoryStore } from "../stores/memory.js";
import { Engine } from "./engine.js";
import type { UsageRecord } from "./usage-record.js";

/** A memory store whose settle and usage writes fail on demand, as a full disk or a lost Redis would. */
class FailingStore extends MemoryStore {
  failSettle = false;
  failAppend = false;
  settles: { id: string; actual: number[] }[] = [];

  override async settle(id: string, actual: number[]): Promise<void> {
    if (this.failSettle) {
      this.failSettle = false; // the retry at the reservation gets through
      throw new Error("disk I/O error");
    }
    this.settles.push({ id, actual });
    return super.settle(id, actual);
  }

  override async appendUsage(record: UsageRecord): Promise<void> {
    if (this.failAppend) throw new Error("SQLITE_FULL: database or disk is full");
    return super.appendUsage(record);
  }
}

async function served(store: FailingStore) {
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { sim: { type: "simulated" } },
      models: { m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
      plans: { free: { models: ["m"], budget: { daily: 1 } } },
      keys: [{ key: "tg_settle_user", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", input: { max_output_tokens: 64 } } },
    }),
  );
  const records: UsageRecord[] = [];
  const warnings: string[] = [];
  const engine = new Engine({ config, store, providers: createProviders(config), onRecord: (r) => records.push(r), warn: (_f, m) => warnings.push(m) });
  const ex = engine.open({ route: "chat", endpoint: "chat_completions", ip: "203.0.113.9", credentials: { token: "tg_settle_user" } });
  await engine.admit(ex);
  await engine.prepare(ex, openaiChat, { model: "m", messages: [{ role: "user", content: "hello" }] });
  const { meter } = await engine.call(ex, new AbortController().signal);
  const record = await engine.finish(ex, { ended: "complete", meter });
  return { record, records, warnings, estimateMicros: ex.estimate };
}

describe("settlement never throws a served request away", () => {
  it("a store that refuses the charge: the reservation is charged, the record written, the failure logged", async () => {
    const store = new FailingStore();
    store.failSettle = true;
    const { record, records, warnings, estimateMicros } = await served(store);
    expect(record).toMatchObject({ usage_source: "reserved", ended: "complete", output_tokens: 64 });
    expect(Math.round(record.cost_usd * 1e6)).toBe(estimateMicros);
    expect(records).toEqual([record]);
    expect(await store.queryUsage({ since: 0 })).toHaveLength(1);
    expect(warnings.join("\n")).toMatch(/settling a served request failed; its reservation is charged/);
    // The retry committed the reservation's own amounts.
    expect(store.settles.some((s) => s.actual.includes(estimateMicros))).toBe(true);
  });

  it("a store that cannot take the record: the request still ends, the record reaches the sinks, the failure is logged", async () => {
    const store = new FailingStore();
    store.failAppend = true;
    const { record, records, warnings } = await served(store);
    expect(record.usage_source).toBe("provider");
    expect(records).toEqual([record]);
    expect(warnings.join("\n")).toMatch(/did not take a served request's usage record/);
  });
});

describe("a refusal while the store cannot write", () => {
  it("is still the caller's refusal (401 for a bad key), not a 503; its record reaches the sinks and the failure is logged", async () => {
    const store = new FailingStore();
    store.failAppend = true;
    const config = resolveConfig(
      parseConfig({
        store: "memory:",
        providers: { sim: { type: "simulated" } },
        models: { m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
        plans: { free: { models: ["m"] } },
        keys: [{ key: "tg_settle_user", user: "u", plan: "free" }],
        routes: { chat: { path: "/chat", plans: ["free"], default_model: "m" } },
      }),
    );
    const records: UsageRecord[] = [];
    const warnings: string[] = [];
    const engine = new Engine({ config, store, providers: createProviders(config), onRecord: (r) => records.push(r), warn: (_f, m) => warnings.push(m) });
    const ex = engine.open({ route: "chat", endpoint: "chat_completions", ip: "203.0.113.9", credentials: { token: "tg_not_a_key" } });
    const err = await engine.admit(ex).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "unauthorized", status: 401 });
    expect(records).toMatchObject([{ decision: "deny", code: "unauthorized" }]);
    expect(warnings.join("\n")).toMatch(/did not take a refusal's usage record/);
  });
});
