import { spawnSync } from "node:child_process";
import { appendFileSync, mkdtempSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import type { UsageRecord } from "../src/core/usage-record.js";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useRedis, useUpstream } from "./use-gateway.js";

const mock = useUpstream();
const redis = useRedis();

const gateways = useGateways({ after: "each", signal: "SIGKILL" });
const start = (config: object) => gateways.start(config);

const BUDGET_MICROS = 100_000;
/** The mock streams one token per interval: 20 tokens a second. */
const TOKEN_MS = 50;
/**
 * Lease = timeout + 5 s: a dead process's reservations lapse 15 s after they were taken. The
 * wall clock must outlast the wait for 30 tokens however slowly a loaded machine streams them,
 * or it ends the streams before the kill and there is nothing to recover.
 */
const TIMEOUT = "10s";
const LEASE_MS = 15_000;
/** Requests per hour: the two crashed streams and the one after them fill it. */
const WINDOW = 3;

/** `window`: requests per hour per user; every request's one reservation holds it with the budget (gates 3 and 6 together). */
function config(store: string, window = 1_000) {
  return {
    store,
    providers: { up: openaiUpstream(mock, "sk-up-secret") },
    models: { "house-model": { provider: "up", upstream: "gpt-4o-mini", price: { input: 0.5, output: 1.5 } } },
    plans: { free: { models: ["house-model"], budget: { daily: BUDGET_MICROS / 1e6 } } },
    keys: [{ key: "tg_crash_user", user: "carol", plan: "free" }],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "house-model", timeout: TIMEOUT, input: { max_output_tokens: 1000 }, limits: [{ per: "user", requests: window, window: "1h" }] } },
  };
}

const ask = (url: string, body: object = {}) =>
  fetch(`${url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer tg_crash_user", "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "count to a thousand" }], max_tokens: 1000, ...body }),
  });

/**
 * The budget holds what the recovered streams cost: the next request sees it spent. The window
 * still counts them: recovery settled the whole reservation, not only its budget.
 */
async function expectBudgetSpent(gw: GatewayProcess, recovered: UsageRecord[]): Promise<void> {
  mock.setBehavior({ outputTokens: 5 });
  const next = await ask(gw.url);
  expect(next.status).toBe(200);
  const own = await gw.recordFor(next.headers.get("x-tollgate-request-id"));
  const charged = recovered.reduce((sum, r) => sum + Math.round(r.cost_usd * 1e6), 0);
  // The header is what is left after this request's own reservation.
  const remaining = Math.round(Number(next.headers.get("x-tollgate-budget-remaining")) * 1e6);
  expect(remaining).toBe(BUDGET_MICROS - charged - Math.round(own.estimated_cost_usd * 1e6));
  expect(next.headers.get("ratelimit")).toMatch(/;r=0;/);
  expect((await ask(gw.url)).status).toBe(429);
}

/**
 * Reads a chat stream to its end (here: the gateway's death) and counts the content tokens the
 * client received: what "delivered" means in SPEC §7.4. The upstream's own count runs ahead of it
 * by whatever sits in socket buffers or in a starved gateway's queue.
 */
async function countDelivered(res: Response, delivered: number[], i: number): Promise<void> {
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for await (const bytes of res.body!) {
      buffered += decoder.decode(bytes, { stream: true });
      const events = buffered.split("\n\n");
      buffered = events.pop()!;
      for (const event of events) {
        const data = event.startsWith("data: ") ? event.slice(6) : "";
        if (data === "" || data === "[DONE]") continue;
        const content = (JSON.parse(data) as { choices?: { delta?: { content?: unknown } }[] }).choices?.[0]?.delta?.content;
        if (typeof content === "string" && content !== "") delivered[i]!++;
      }
    }
  } catch {
    // The stream breaks when the process dies: what was read by then is what was delivered.
  }
}

/**
 * Opens two streams, waits until each has delivered `tokens` tokens, and kills the gateway with
 * SIGKILL; returns the streams' request ids, how many tokens each had been sent by the upstream
 * and how many reached the client.
 */
async function crashMidStream(gw: GatewayProcess, tokens: number): Promise<{ ids: string[]; sent: number[]; delivered: number[] }> {
  mock.setBehavior({ outputTokens: 1000, tokenIntervalMs: TOKEN_MS });
  const streams = await Promise.all([ask(gw.url, { stream: true }), ask(gw.url, { stream: true })]);
  for (const s of streams) expect(s.status).toBe(200);
  const ids = streams.map((s) => s.headers.get("x-tollgate-request-id")!);
  // Read the bodies so the gateway keeps writing; they end when the process dies.
  const delivered = [0, 0];
  const reading = Promise.all(streams.map((s, i) => countDelivered(s, delivered, i)));
  const deadline = Date.now() + 8_000;
  while (delivered.some((n) => n < tokens)) {
    if (Date.now() > deadline) throw new Error("the streams did not deliver in time");
    await sleep(10);
  }
  // Still streaming at the kill: neither ended by the mock nor cut by the gateway.
  expect(mock.requests.slice(-2).map((r) => [r.finishedAt, r.closedAt])).toEqual([[undefined, undefined], [undefined, undefined]]);
  await gw.stop("SIGKILL");
  await reading;
  return { ids, sent: mock.requests.slice(-2).map((r) => r.chunksSent), delivered };
}

async function waitFor<T>(what: string, get: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * A crash forgets at most one second of delivered tokens: what was charged is within that of what
 * reached the client, and never more than the upstream sent.
 */
function expectRecovered(rec: UsageRecord, sent: number, delivered: number): void {
  expect(rec.decision).toBe("allow");
  expect(rec.ended).toBe("client_disconnect");
  expect(rec.usage_source).toBe("counted");
  expect(rec.signals).toContain("recovered_after_crash");
  expect(rec.output_tokens).toBeLessThanOrEqual(sent);
  expect(rec.output_tokens).toBeGreaterThanOrEqual(delivered - 1_000 / TOKEN_MS);
  expect(rec.cost_usd).toBeGreaterThan(0);
}

describe("kill -9 mid-stream (SPEC §7.4)", () => {
  it("sqlite: after a restart, the two streams are charged what they delivered and recorded", async () => {
    const store = `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-crash-")), "t.db")}`;
    const first = await start(config(store, WINDOW));
    const { ids, sent, delivered } = await crashMidStream(first, 30);

    const second = await start(config(store, WINDOW));
    const records = await Promise.all(ids.map((id) => waitFor(`the record of ${id}`, () => second.records.find((r) => r.request_id === id), LEASE_MS + 15_000)));
    records.forEach((rec, i) => expectRecovered(rec, sent[i]!, delivered[i]!));

    await expectBudgetSpent(second, records);
    // Written once: a later restart finds nothing more to recover.
    const usage = (await second.stop("SIGTERM"), new Database(store.slice("sqlite:".length), { readonly: true }));
    const stored = usage.prepare("SELECT record FROM usage_records").pluck().all() as string[];
    usage.close();
    for (const id of ids) expect(stored.filter((r) => (JSON.parse(r) as UsageRecord).request_id === id)).toHaveLength(1);
  }, 90_000);

  it("redis: the gateway that stayed up settles a dead one's streams, exactly once among its peers", async () => {
    const store = redis.url(3);
    const [doomed, peerA, peerB] = await Promise.all([start(config(store, WINDOW)), start(config(store, WINDOW)), start(config(store, WINDOW))]);
    const { ids, sent, delivered } = await crashMidStream(doomed, 30);

    const recordOf = (id: string) => [...peerA.records, ...peerB.records].filter((r) => r.request_id === id);
    const records = await Promise.all(ids.map((id) => waitFor(`the record of ${id}`, () => recordOf(id)[0], LEASE_MS + 15_000)));
    records.forEach((rec, i) => expectRecovered(rec, sent[i]!, delivered[i]!));
    await sleep(2_000);
    for (const id of ids) expect(recordOf(id)).toHaveLength(1);
    await expectBudgetSpent(peerA, records);
  }, 90_000);
});

describe("store failures are 503 store_unavailable, fast (SPEC §5.2, §7.6)", () => {
  it("sqlite locked by another process: requests and /healthz answer 503 well under a second, and recover", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "tg-lock-")), "t.db");
    const gw = await start(config(`sqlite:${path}`));
    mock.setBehavior({ outputTokens: 5 });
    expect((await ask(gw.url)).status).toBe(200);

    const holder = new Database(path);
    holder.exec("BEGIN IMMEDIATE");
    try {
      const t0 = performance.now();
      const [refused, health] = await Promise.all([ask(gw.url), fetch(`${gw.url}/healthz`)]);
      const elapsed = performance.now() - t0;
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect((await refused.json()).error.code).toBe("store_unavailable");
      expect(health.status).toBe(503);
      expect((await health.json()).store).toMatchObject({ kind: "sqlite", ok: false, detail: expect.stringMatching(/locked/) });
      // The old driver waited 5 s on busy_timeout with the event loop blocked.
      expect(elapsed).toBeLessThan(1_500);
      expect(gw.stderr).toMatch(/store sqlite:\S+ is locked/);
    } finally {
      holder.exec("ROLLBACK");
      holder.close();
    }
    expect((await ask(gw.url)).status).toBe(200);
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  }, 30_000);
});

/** A private 4 MB tmpfs for one process, through an unprivileged user+mount namespace where the kernel allows one. */
function tmpfsWrap(dir: string): string[] | undefined {
  const probe = spawnSync("unshare", ["-rm", "sh", "-c", `mount -t tmpfs -o size=4m tmpfs '${dir}'`]);
  return probe.status === 0 ? ["unshare", "-rm", "sh", "-c", `mount -t tmpfs -o size=4m tmpfs '${dir}' && exec "$@"`, "sh"] : undefined;
}

describe("a full disk", () => {
  const dir = mkdtempSync(join(tmpdir(), "tg-full-"));
  const wrap = tmpfsWrap(dir);

  it.skipIf(!wrap)("sqlite on a full disk: 503 store_unavailable with Retry-After and a stderr line naming the store; served again once there is room", async () => {
    const gw = await GatewayProcess.start(config(`sqlite:${join(dir, "t.db")}`), {}, wrap);
    gateways.push(gw);
    mock.setBehavior({ outputTokens: 5 });
    expect((await ask(gw.url)).status).toBe(200);

    // The gateway's tmpfs, seen through its own root: fill it to the last byte.
    const filler = join(`/proc/${gw.child.pid}/root`, dir, "filler");
    const chunk = Buffer.alloc(64 * 1024, 1);
    try {
      for (;;) appendFileSync(filler, chunk);
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe("ENOSPC");
    }
    try {
      const statuses = new Set<number>();
      // A write that still fits a page the WAL already holds may pass; within a few requests the disk is out.
      let res: Response | undefined;
      for (let i = 0; i < 50; i++) {
        res = await ask(gw.url);
        statuses.add(res.status);
        if (res.status === 503) break;
      }
      expect(res!.status).toBe(503);
      expect(statuses.has(502)).toBe(false);
      expect(res!.headers.get("retry-after")).toBe("1");
      expect((await res!.json()).error.code).toBe("store_unavailable");
      // The ops log line reaches the pipe on its own schedule: wait for it rather than race it.
      await expect.poll(() => gw.stderr, { timeout: 5_000 }).toMatch(/store sqlite:\S+t\.db cannot write \(SQLITE_FULL/);
      expect(gw.stderr).not.toContain("sk-up-secret");
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(503);
    } finally {
      unlinkSync(filler);
    }
    expect((await ask(gw.url)).status).toBe(200);
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  }, 30_000);
});
