import { ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { Engine } from "../core/engine.js";
import type { UsageRecord } from "../core/usage-record.js";
import { Observability } from "../observability/index.js";
import { createProviders } from "../providers/registry.js";
import { MemoryStore } from "../stores/memory.js";
import { createGateway, type Gateway } from "./server.js";

/** What happened, in order: `answer <id>` when a response is ended, `<sink> <id>` when a sink takes a record. */
const events: string[] = [];
const stored: string[] = [];
let gateway: Gateway;
let obs: Observability;
let url: string;
const end = ServerResponse.prototype.end;

beforeAll(async () => {
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { up: { type: "simulated" } },
      models: { m: { provider: "up", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
      plans: { free: { models: ["m"], budget: { daily: 100 } } },
      keys: [{ key: "tg_answer_first", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", limits: [{ per: "user", requests: 1000, window: "1m" }] } },
    }),
  );
  obs = new Observability(config, { stdout: new Writable({ write: (_c, _e, done) => done() }), stderr: new Writable({ write: (_c, _e, done) => done() }) });
  const sink = <T extends object, K extends keyof T>(target: T, method: K, name: string) => {
    const original = (target[method] as (r: UsageRecord) => void).bind(target);
    target[method] = ((r: UsageRecord) => {
      events.push(`${name} ${r.request_id}`);
      original(r);
    }) as T[K];
  };
  sink(obs.logs, "usage", "usage-line");
  sink(obs.metrics, "record", "metrics");
  sink(obs.tracing, "record", "tracing");
  sink(obs.tail, "push", "tail");
  const store = new MemoryStore();
  const append = store.appendUsage.bind(store);
  store.appendUsage = (r) => {
    stored.push(r.request_id);
    return append(r);
  };
  // A served request's record is stored with its settle, in one call.
  const together = store.settleWithRecord!.bind(store);
  store.settleWithRecord = (id, actual, r) => {
    stored.push(r.request_id);
    return together(id, actual, r);
  };
  const engine = new Engine({ config, store, providers: createProviders(config), onRecord: obs.onRecord, warn: () => {} });
  ServerResponse.prototype.end = function (this: ServerResponse, ...args: unknown[]) {
    const id = this.getHeader("x-tollgate-request-id") ?? (this as unknown as { requestId?: string }).requestId;
    events.push(`answer ${String(id)}`);
    return (end as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as typeof end;
  gateway = createGateway(engine, { observability: obs });
  await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  ServerResponse.prototype.end = end;
  await gateway?.drain(100);
});

async function chat(): Promise<string> {
  const res = await fetch(`${url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer tg_answer_first", "content-type": "application/json" },
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], max_tokens: 5 }),
  });
  expect(res.status).toBe(200);
  await res.text();
  return res.headers.get("x-tollgate-request-id")!;
}

describe("the answer leaves before the record sinks run", () => {
  it("writes each answer before its record reaches the usage line, metrics, its span or the tail, and each sink takes each record once", async () => {
    const ids = await Promise.all(Array.from({ length: 12 }, chat));
    await expect.poll(() => events.filter((e) => e.startsWith("tail ")).length).toBe(12);
    for (const id of ids) {
      const mine = events.filter((e) => e.endsWith(` ${id}`));
      // The record was stored before the answer (durable whatever happens to the write), and the
      // sinks run after it.
      expect(stored).toContain(id);
      expect(mine).toEqual([`answer ${id}`, `usage-line ${id}`, `metrics ${id}`, `tracing ${id}`, `tail ${id}`]);
    }
  });

  it("a scrape of /metrics right after an answer counts its request", async () => {
    for (let i = 0; i < 3; i++) {
      const before = await requestsCounted();
      await chat();
      expect(await requestsCounted()).toBe(before + 1);
    }
  });
});

/** tollgate_requests_total as GET /metrics serves it. */
async function requestsCounted(): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("tollgate_requests_total{"))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}
