import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import type { OutboxStore } from "../core/outbox.js";
import { StoreUnavailableError } from "../core/store.js";
import { emptyUsageRecord } from "../core/usage-record.js";
import { MemoryOutbox } from "../stores/outbox-memory.js";
import { OutboxEvents } from "./events.js";

const SECRET = `whsec_${Buffer.from("events-test-signing-key").toString("base64")}`;
const config = resolveConfig(
  parseConfig({
    store: "memory:",
    providers: { sim: { type: "simulated" } },
    models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
    plans: { free: { models: ["m"] } },
    routes: { chat: { path: "/chat", plans: ["free"] } },
    alerts: { webhooks: [{ name: "ops", url: "http://127.0.0.1:9/hooks", secret: SECRET, events: ["budget.soft"] }, { name: "abuse", url: "http://127.0.0.1:9/abuse", secret: SECRET, events: ["abuse.block"] }] },
    export: { cloudevents: { url: "http://127.0.0.1:9/events" } },
  }),
);

/** A store outbox that is away (StoreUnavailableError) while `down`. */
function flaky() {
  const inner = new MemoryOutbox();
  const state = { down: false };
  const outbox = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (prop !== "add" || typeof value !== "function") return value;
      return (...args: unknown[]) => (state.down ? Promise.reject(new StoreUnavailableError("redis is not connected")) : (value as (...a: unknown[]) => unknown).apply(target, args));
    },
  }) as OutboxStore;
  return { outbox, inner, state };
}

describe("outbox events", () => {
  it("an alert goes to every webhook subscribed to its type, once per id however often it is raised", async () => {
    const outbox = new MemoryOutbox();
    const events = new OutboxEvents(outbox, config, { kick: () => {}, warn: () => {} });
    for (let i = 0; i < 5; i++) events.alert({ id: "budget.soft:user:ann:daily:2026-12-07", type: "budget.soft", at: 0, data: { spent_usd: 1 } });
    events.alert({ id: "budget.exhausted:user:ann:daily:2026-12-07", type: "budget.exhausted", at: 0, data: {} });
    await events.flush();
    const page = await outbox.list({ state: "pending", limit: 10 });
    expect(page.items.map((i) => [i.sink, i.id])).toEqual([["ops", "budget.soft:user:ann:daily:2026-12-07"]]);
    expect(JSON.parse(page.items[0]!.payload)).toEqual({ type: "budget.soft", timestamp: "1970-01-01T00:00:00.000Z", data: { id: "budget.soft:user:ann:daily:2026-12-07", spent_usd: 1 } });
  });

  it("while the store is away, usage events and alerts wait in memory and reach the outbox when it is back; the request is not held up", async () => {
    const { outbox, inner, state } = flaky();
    const warnings: string[] = [];
    const events = new OutboxEvents(outbox, config, { kick: () => {}, warn: (_f, m) => warnings.push(m) });
    state.down = true;
    const record = { ...emptyUsageRecord("req-1", new Date()), user: "ann", decision: "allow" as const };
    await events.usage(record);
    events.alert({ id: "abuse.block:user:ann:w", type: "abuse.block", at: 0, data: {} });
    await sleep(20);
    expect(events.waiting).toBe(2);
    expect((await inner.list({ state: "pending", limit: 10 })).total).toBe(0);
    state.down = false;
    await events.flush();
    expect((await inner.list({ state: "pending", limit: 10 })).items.map((i) => [i.sink, i.id]).sort()).toEqual([["abuse", "abuse.block:user:ann:w"], ["cloudevents", "req-1"]]);
    expect(events.waiting).toBe(0);
    expect(warnings).toEqual([]);
  });
});
