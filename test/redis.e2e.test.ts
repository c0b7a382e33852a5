import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../src/stores/redis.js";
import { RedisServer } from "../src/testing/redis-server.js";
import { GatewayProcess, runCli } from "./gateway-process.js";
import { openaiUpstream, useGateways, useUpstream } from "./use-gateway.js";

const mock = useUpstream();
let redis: RedisServer;
let admin: Redis;
beforeAll(async () => {
  redis = await RedisServer.start({ persistent: true });
  admin = new Redis(redis.url());
  admin.on("error", () => {});
});
afterAll(async () => {
  admin?.disconnect();
  await redis?.dispose();
});
// Hooks run in reverse: the gateways are stopped before the store is brought back and emptied.
afterEach(async () => {
  if (!redis.running) await redis.restart();
  await admin.flushall();
});
const gateways = useGateways({ after: "each", signal: "SIGKILL" });

/** house-model: $0.50 / $1.50 per 1M tokens; max_tokens 100 reserves about 160 micro-dollars. */
function config(opts: { onStoreError?: "closed" | "open"; budget?: number; route?: object } = {}) {
  return {
    store: redis.url(),
    on_store_error: opts.onStoreError ?? "closed",
    providers: { up: openaiUpstream(mock) },
    models: { "house-model": { provider: "up", upstream: "gpt-4o-mini", price: { input: 0.5, output: 1.5 } } },
    plans: { free: { models: ["house-model"], budget: { daily: opts.budget ?? 100 } } },
    keys: [{ key: "tg_redis_user", user: "carol", plan: "free" }],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "house-model", input: { max_output_tokens: 100 }, ...opts.route } },
  };
}

const ask = (url: string, body: object = {}, key = "tg_redis_user") =>
  fetch(`${url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "count to ten" }], max_tokens: 100, ...body }),
  });

async function startMany(n: number, cfg: object): Promise<GatewayProcess[]> {
  const started = await GatewayProcess.startAll(Array.from({ length: n }, () => cfg));
  gateways.push(...started);
  return started;
}

async function waitFor200(url: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let status = 0;
  while (status !== 200 && Date.now() < deadline) {
    await sleep(100);
    status = (await ask(url)).status;
  }
  expect(status).toBe(200);
}

/** Every record the gateways printed, found in Redis (waiting for write-behind to ship them). */
async function expectAllRecordsInRedis(gws: GatewayProcess[], timeoutMs = 10_000): Promise<void> {
  const printed = gws.flatMap((g) => g.records.map((r) => r.request_id));
  const store = await RedisStore.open(redis.url());
  try {
    const deadline = Date.now() + timeoutMs;
    let missing: string[] = printed;
    while (missing.length && Date.now() < deadline) {
      const stored = new Set((await store.queryUsage({ since: 0 })).map((r) => r.request_id));
      missing = printed.filter((id) => !stored.has(id));
      if (missing.length) await sleep(100);
    }
    expect(missing).toEqual([]);
  } finally {
    await store.close();
  }
}

for (const n of [2, 4]) {
  describe(`${n} gateway processes sharing one Redis`, () => {
    it("a per-user limit of 10 per minute admits exactly 10 of 80 requests spread over all of them", async () => {
      mock.setBehavior({ outputTokens: 5 });
      const gws = await startMany(n, config({ route: { limits: [{ per: "user", requests: 10, window: "1m" }] } }));
      const responses = await Promise.all(Array.from({ length: 80 }, (_, i) => ask(gws[i % n]!.url)));
      const statuses = responses.map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(10);
      expect(statuses.filter((s) => s === 429)).toHaveLength(70);
      expect(mock.requests).toHaveLength(10);
      // Every process refused some: the limit is shared, not per process.
      for (let g = 0; g < n; g++) expect(statuses.filter((s, i) => i % n === g && s === 429).length).toBeGreaterThan(0);
    }, 90_000);

    it("a budget race across them never overspends", async () => {
      mock.setBehavior({ outputTokens: 100, tokenIntervalMs: 1 });
      const gws = await startMany(n, config({ budget: 0.0032 }));
      const responses = await Promise.all(Array.from({ length: 160 }, (_, i) => ask(gws[i % n]!.url)));
      const served = responses.filter((r) => r.status === 200).length;
      expect(served + responses.filter((r) => r.status === 402).length).toBe(160);
      expect(served).toBeGreaterThanOrEqual(15);
      expect(mock.requests).toHaveLength(served);
      // Each process's records, counted by the requests they stand for (a summary record carries
      // several refusals), with room for four processes started and run on a loaded machine.
      await Promise.all(gws.map((g, i) => g.waitForRequests(responses.filter((_, j) => j % n === i).length, 30_000)));
      const allowed = gws.flatMap((g) => g.records).filter((r) => r.decision === "allow");
      expect(allowed).toHaveLength(served);
      const spent = allowed.reduce((sum, r) => sum + Math.round(r.cost_usd * 1e6), 0);
      expect(spent).toBeLessThanOrEqual(3_200);
    }, 90_000);
  });
}

describe("a process killed mid-stream", () => {
  it("gives its reservation back to the others once its lease runs out", async () => {
    // One reservation (about 160 micro-dollars) fits the budget, two do not; timeout 1s: lease 6s.
    const [a, b] = await startMany(2, config({ budget: 0.0002, route: { timeout: "1s" } }));
    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 20 });
    const reservedAt = Date.now();
    const hanging = ask(a!.url, { stream: true }).then(async (r) => {
      const reader = r.body!.getReader();
      await reader.read();
      return reader;
    });
    const reader = await hanging;
    await a!.stop("SIGKILL");
    await reader.read().catch(() => {});
    mock.setBehavior({ outputTokens: 5 });

    const held = await ask(b!.url);
    expect(held.status).toBe(402);
    let status = 402;
    while (status === 402 && Date.now() - reservedAt < 10_000) {
      await sleep(250);
      status = (await ask(b!.url)).status;
    }
    const elapsed = Date.now() - reservedAt;
    expect(status).toBe(200);
    expect(elapsed).toBeGreaterThanOrEqual(5_500);
    expect(elapsed).toBeLessThan(8_000);
  }, 60_000);
});

describe("Redis stopped mid-run", () => {
  it("closed: refuses within 1 s with 503 store_unavailable, recovers when Redis returns, loses no record", async () => {
    mock.setBehavior({ outputTokens: 5 });
    const [gw] = await startMany(1, config({ onStoreError: "closed", route: { limits: [{ per: "user", requests: 100, window: "1m" }] } }));
    for (let i = 0; i < 3; i++) expect((await ask(gw!.url)).status).toBe(200);

    // A Redis that hangs rather than dies is refused within a second too. The second is the
    // gateway's own (the record's duration): a 650 ms command deadline plus this test's client
    // and a loaded machine's scheduling of it would measure the machine. The client's
    // stopwatch still rules out a hang the record would not show.
    await admin.client("PAUSE", 2_000, "ALL");
    for (let i = 0; i < 2; i++) {
      const started = performance.now();
      const r = await ask(gw!.url);
      expect(r.status).toBe(503);
      expect(performance.now() - started).toBeLessThan(3_000);
      expect((await gw!.recordOf(r)).duration_ms).toBeLessThan(1_000);
    }
    await waitFor200(gw!.url);

    await redis.stop();
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      const r = await ask(gw!.url);
      const took = performance.now() - started;
      expect(r.status).toBe(503);
      expect((await r.json()).error.code).toBe("store_unavailable");
      expect(took).toBeLessThan(3_000);
      expect((await gw!.recordOf(r)).duration_ms).toBeLessThan(1_000);
    }
    expect(mock.requests).toHaveLength(4);

    await redis.restart();
    await waitFor200(gw!.url);
    await gw!.waitForRecords(gw!.records.length);
    await expectAllRecordsInRedis([gw!]);
    expect(gw!.stderr.match(/on_store_error is closed/g)).toHaveLength(1);
    expect(gw!.stderr.match(/is back/g)).toHaveLength(1);
    expect(gw!.stderr).not.toMatch(/redis:\/\//);
  }, 60_000);

  it("open: keeps serving under local limits, charges the outage to Redis when it returns, loses no record", async () => {
    mock.setBehavior({ outputTokens: 5 });
    const [gw] = await startMany(1, config({ onStoreError: "open", route: { limits: [{ per: "user", requests: 10, window: "1m" }] } }));
    for (let i = 0; i < 3; i++) expect((await ask(gw!.url)).status).toBe(200);

    await redis.stop();
    // The local store starts from the 3 Redis had counted: 7 more fit, then the limit holds.
    const during: number[] = [];
    for (let i = 0; i < 10; i++) during.push((await ask(gw!.url)).status);
    expect(during.filter((s) => s === 200)).toHaveLength(7);
    expect(during.filter((s) => s === 429)).toHaveLength(3);
    expect(gw!.stderr).toMatch(/on_store_error is open/);

    await redis.restart();
    const deadline = Date.now() + 10_000;
    while (!/is back/.test(gw!.stderr) && Date.now() < deadline) await sleep(100);
    expect(gw!.stderr).toMatch(/is back; limits are shared again/);
    // Back on Redis, which now holds the 7 served locally too: the window is still full.
    expect((await ask(gw!.url)).status).toBe(429);
    // A fresh process agrees: the limit is in Redis, not in the first process's memory.
    const [other] = await startMany(1, config({ onStoreError: "open", route: { limits: [{ per: "user", requests: 10, window: "1m" }] } }));
    expect((await ask(other!.url)).status).toBe(429);

    await expectAllRecordsInRedis([gw!, other!]);
    expect(gw!.stderr.match(/on_store_error is open/g)).toHaveLength(1);
    expect(gw!.stderr.match(/is back/g)).toHaveLength(1);
  }, 60_000);
});

describe("the CLI on a Redis store", () => {
  it("a key made by `tollgate keys create` works on every process; `tollgate usage` reads their records from Redis", async () => {
    mock.setBehavior({ outputTokens: 5 });
    const gws = await startMany(2, config());
    const created = await runCli(["keys", "create", "--config", gws[0]!.configPath, "--user", "dave", "--plan", "free", "--json"]);
    expect(created.code).toBe(0);
    const { key } = JSON.parse(created.stdout) as { key: string };
    for (const gw of gws) expect((await ask(gw.url, {}, key)).status).toBe(200);
    await Promise.all(gws.map((g) => g.waitForRecords(1)));

    const usage = await runCli(["usage", "--config", gws[0]!.configPath, "--since", "1h", "--by", "user", "--json"]);
    expect(usage.code).toBe(0);
    const rows = (JSON.parse(usage.stdout) as { rows: { user: string; requests: number }[] }).rows;
    expect(rows.find((r) => r.user === "dave")?.requests).toBe(2);
  }, 60_000);
});
