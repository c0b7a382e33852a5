import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useUpstream } from "./use-gateway.js";

const mock = useUpstream();
const gateways = useGateways({ after: "each", signal: "SIGKILL" });

/**
 * house-model costs $0.50 / $1.50 per 1M tokens. A request with a short prompt and max_tokens 100
 * reserves about 10 + 150 = 160 micro-dollars; the mock generates the full 100 tokens, so the
 * actual cost is close to the reservation and a $0.0032 budget fits about 20 requests.
 */
function config(store: string, extra: object = {}) {
  return {
    store,
    providers: { up: openaiUpstream(mock) },
    models: { "house-model": { provider: "up", upstream: "gpt-4o-mini", price: { input: 0.5, output: 1.5 } } },
    plans: { free: { models: ["house-model"], budget: { daily: 0.0032 } } },
    keys: [{ key: "tg_budget_user", user: "bob", plan: "free" }],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "house-model", input: { max_output_tokens: 100 }, ...extra } },
  };
}

const ask = (url: string, body: object = {}) =>
  fetch(`${url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer tg_budget_user", "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "count to ten" }], max_tokens: 100, ...body }),
  });

for (const kind of ["memory", "sqlite"] as const) {
  describe(`budget reservations on ${kind}:`, () => {
    it("200 concurrent requests never overspend a daily budget, and only served ones reach upstream", async () => {
      mock.setBehavior({ outputTokens: 100, tokenIntervalMs: 1 });
      const store = kind === "memory" ? "memory:" : `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-budget-")), "t.db")}`;
      const gw = await GatewayProcess.start(config(store));
      gateways.push(gw);
      const responses = await Promise.all(Array.from({ length: 200 }, () => ask(gw.url)));
      const statuses = responses.map((r) => r.status);
      const served = statuses.filter((s) => s === 200).length;
      const refused = await Promise.all(responses.filter((r) => r.status === 402).map((r) => r.json()));
      expect(served + refused.length).toBe(200);
      expect(served).toBeGreaterThanOrEqual(15);
      expect(served).toBeLessThanOrEqual(25);
      expect(refused[0].error.code).toBe("budget_exceeded");
      expect(refused[0].error.message).toMatch(/daily budget of \$0\.0032/);
      expect(refused[0].error.message).toMatch(/resets at \d{4}-\d\d-\d\dT00:00:00\.000Z/);
      expect(mock.requests).toHaveLength(served);

      // Summary records for refusals past 100 a second are written once their second is over.
      const records = await gw.waitForRequests(200, 30_000);
      const servedRecords = records.filter((r) => r.decision === "allow");
      expect(servedRecords).toHaveLength(served);
      const spentMicros = servedRecords.reduce((sum, r) => sum + Math.round(r.cost_usd * 1e6), 0);
      expect(spentMicros).toBeLessThanOrEqual(3200);
      for (const r of servedRecords) expect(r.estimated_cost_usd).toBeGreaterThanOrEqual(r.cost_usd);
      // Refusals past max_refusal_records_per_s are summarised: each record stands for `count`.
      expect(records.filter((r) => r.code === "budget_exceeded").reduce((a, r) => a + (r.count ?? 1), 0)).toBe(refused.length);
      // A gateway start and 200 requests took 20-21 s at load 21 (the default 20 s timeout).
    }, 60_000);
  });
}

describe("budget: remaining header and release on failure", () => {
  it("reports the remaining budget and gives a failed call's reservation back", async () => {
    const gw = await GatewayProcess.start(config("memory:"));
    gateways.push(gw);
    const ok = await ask(gw.url);
    expect(ok.status).toBe(200);
    const remaining = Number(ok.headers.get("x-tollgate-budget-remaining"));
    expect(remaining).toBeGreaterThan(0);
    expect(remaining).toBeLessThan(0.0032);

    mock.setBehavior({ status: 500 });
    for (let i = 0; i < 40; i++) expect((await ask(gw.url)).status).toBe(502);
    mock.setBehavior({});
    // 40 failed calls reserved 40 x 160 micros between them; none of it was kept.
    expect((await ask(gw.url)).status).toBe(200);
  });
});

describe("budget: crash safety on sqlite", () => {
  it("keeps served records across kill -9 and gives a dead process's reservation back after its lease", async () => {
    const db = join(mkdtempSync(join(tmpdir(), "tg-crash-")), "t.db");
    // A budget that fits one reservation at a time; a 1s wall clock gives a 6s lease.
    const cfg = { ...config(`sqlite:${db}`, { timeout: "1s" }), plans: { free: { models: ["house-model"], budget: { daily: 0.0003 } } } };
    const gw = await GatewayProcess.start(cfg);
    // The process that takes over is up before the reservation: started after the kill, on a
    // loaded machine it could come up after the 6 s lease, and find the budget free too early.
    const next = await GatewayProcess.start(cfg);
    gateways.push(next);
    mock.setBehavior({ outputTokens: 20 });
    const first = await ask(gw.url, { max_tokens: 20 });
    expect(first.status).toBe(200);
    const servedId = first.headers.get("x-tollgate-request-id");
    await gw.recordOf(first);

    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 50 });
    const hanging = ask(gw.url, { stream: true }).then((r) => r.text()).catch(() => {});
    await mock.waitForRequests(2, 10_000);
    const leaseEnds = Date.now() + 6_000;
    await gw.stop("SIGKILL");
    await hanging;
    mock.reset();

    mock.setBehavior({ outputTokens: 20 });
    // The dead process's reservation still holds the budget...
    const held = await ask(next.url);
    expect(Date.now(), "the budget was checked before the lease could end").toBeLessThan(leaseEnds);
    expect(held.status).toBe(402);
    // ...until its lease runs out.
    await new Promise((r) => setTimeout(r, Math.max(0, leaseEnds + 500 - Date.now())));
    expect((await ask(next.url)).status).toBe(200);

    const { SqliteStore } = await import("../src/stores/sqlite.js");
    const store = SqliteStore.open(db);
    const records = await store.queryUsage({ since: 0 });
    await store.close();
    expect(records.some((r) => r.request_id === servedId && r.decision === "allow")).toBe(true);
  }, 60_000);
});
