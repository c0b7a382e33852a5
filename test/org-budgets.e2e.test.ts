import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import type { QuotaReport } from "../src/core/quota-report.js";
import { testEngine } from "../src/testing/test-engine.js";
import { RedisStore } from "../src/stores/redis.js";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useRedis, useUpstream } from "./use-gateway.js";

/**
 * Budget levels reserved in one atomic step: an org's budget is shared by its callers (keys with
 * `org:`, a service key's x-tollgate-org), on top of each user's plan budget and each key's own.
 * No level is skipped because another exists.
 */
const mock = useUpstream({ reset: false });
const gateways = useGateways({ after: "all" });

const micros = (usd: number) => Math.round(usd * 1e6);

function config(store: string) {
  return {
    store,
    providers: { up: openaiUpstream(mock) },
    // $1 per 1M tokens both ways: a call costs a few tens of micro-dollars.
    models: { house: { provider: "up", price: { input: 1, output: 1 } } },
    plans: { free: { models: ["house"], budget: { daily: 0.0004 } }, pro: { models: ["house"], budget: { daily: 1 } } },
    orgs: { acme: { budget: { daily: 0.001 } } },
    keys: [
      { key: "tg_alice", user: "alice", plan: "free", org: "acme" },
      { key: "tg_bob", user: "bob", plan: "pro", org: "acme" },
      { key: "tg_backend", service: true, plan: "pro" },
      { key: "tg_trial", user: "tess", plan: "pro", budget: { total: 0.0002 } },
      { key: "tg_dan", user: "dan", plan: "pro", org: "acme", budget: { daily: 0.0003 } },
    ],
    routes: { chat: { path: "/chat", plans: ["free", "pro"], default_model: "house", input: { max_output_tokens: 40 } } },
  };
}

function client(url: string, apiKey: string, headers: Record<string, string> = {}) {
  return new OpenAI({ baseURL: `${url}/chat/v1`, apiKey, maxRetries: 0, defaultHeaders: headers });
}
const ask = (c: OpenAI) =>
  c.chat.completions.create({ model: "house", messages: [{ role: "user", content: "hello" }] }).then(
    () => 200,
    (e: { status?: number; error?: { code?: string; message?: string } }) => `${e.status} ${e.error?.message}`,
  );

describe.each([
  ["memory", () => "memory:"],
  ["sqlite", () => `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-org-")), "t.db")}`],
])("an org of three users on two plans, on %s", (_name, store) => {
  it("200 concurrent requests never overdraw the org or any user's plan budget; refusals name the level", async () => {
    const gw = await GatewayProcess.start(config(store()));
    gateways.push(gw);
    mock.setBehavior({ outputTokens: 20 });
    const alice = client(gw.url, "tg_alice");
    const bob = client(gw.url, "tg_bob");
    const carol = client(gw.url, "tg_backend", { "x-tollgate-user": "carol", "x-tollgate-org": "acme" });
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => ask([alice, bob, carol][i % 3]!)));
    const served = results.filter((r) => r === 200).length;
    await gw.waitForRequests(200);

    expect(served).toBeGreaterThan(5);
    const refusals = results.filter((r) => r !== 200) as string[];
    expect(refusals.some((r) => r.startsWith("402 org acme's daily budget"))).toBe(true);
    expect(refusals.every((r) => r.startsWith("402 "))).toBe(true);
    // Reservations are worst cases: once the burst has settled, bob spends what the org has left.
    let last: number | string = 200;
    let made = 200;
    for (; made < 300 && last === 200; made++) last = await ask(bob);
    expect(String(last)).toMatch(/^402 org acme's daily budget of \$0\.001 would be exceeded/);
    await gw.waitForRequests(made);

    const spend = (user: string) => gw.records.filter((r) => r.user === user).reduce((a, r) => a + micros(r.cost_usd), 0);
    const org = spend("alice") + spend("bob") + spend("carol");
    expect(org).toBeLessThanOrEqual(1000);
    expect(spend("alice")).toBeLessThanOrEqual(400);
    // What the org has left cannot hold one more call's reservation.
    const estimate = Math.max(...gw.records.map((r) => micros(r.estimated_cost_usd)));
    expect(org).toBeGreaterThan(1000 - estimate);

    // A pro user outside the org still has the plan's $1 to spend.
    expect(await ask(client(gw.url, "tg_backend", { "x-tollgate-user": "dora" }))).toBe(200);
    // The quota endpoint shows the org's budget next to the user's.
    const me = (await client(gw.url, "tg_bob").get("/me")) as QuotaReport;
    const orgBudget = me.budgets.find((b) => b.name === "org acme's daily budget")!;
    expect(micros(orgBudget.used_usd)).toBe(org);
    expect(me.budgets.some((b) => b.name === "the pro plan's daily budget")).toBe(true);
  }, 60_000);
});

describe("an org of four callers on Redis, two gateway processes sharing one redis-server", () => {
  const redis = useRedis();

  it("200 concurrent requests spread over both processes never overdraw the org, any user's plan budget or dan's key budget", async () => {
    const [one, two] = await GatewayProcess.startAll([config(redis.url(1)), config(redis.url(1))]);
    gateways.push(one!, two!);
    mock.setBehavior({ outputTokens: 20 });
    const callers = (url: string) => [client(url, "tg_alice"), client(url, "tg_bob"), client(url, "tg_backend", { "x-tollgate-user": "carol", "x-tollgate-org": "acme" }), client(url, "tg_dan")];
    const on = [callers(one!.url), callers(two!.url)];
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => ask(on[i % 2]![Math.floor(i / 2) % 4]!)));
    await Promise.all([one!.waitForRequests(100, 15_000), two!.waitForRequests(100, 15_000)]);

    const refusals = results.filter((r) => r !== 200) as string[];
    expect(results.filter((r) => r === 200).length).toBeGreaterThan(5);
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.every((r) => /^402 (org acme's|the free plan's|this key's) daily budget/.test(r))).toBe(true);
    // Both processes refused, with what they served together inside the budgets: the levels are
    // shared through Redis, not per process.
    for (const gw of [one!, two!]) expect(gw.records.some((r) => r.code === "budget_exceeded")).toBe(true);

    // Reservations are worst cases: once the burst has settled, bob spends what the org has left,
    // alternating processes.
    let last: number | string = 200;
    let made = 0;
    for (; made < 100 && last === 200; made++) last = await ask(on[made % 2]![1]!);
    expect(String(last)).toMatch(/^402 org acme's daily budget of \$0\.001 would be exceeded/);
    await Promise.all([one!.waitForRequests(100 + Math.ceil(made / 2), 15_000), two!.waitForRequests(100 + Math.floor(made / 2), 15_000)]);

    const records = [...one!.records, ...two!.records];
    const spend = (user: string) => records.filter((r) => r.user === user).reduce((a, r) => a + micros(r.cost_usd), 0);
    const org = spend("alice") + spend("bob") + spend("carol") + spend("dan");
    expect(org).toBeLessThanOrEqual(1000);
    expect(spend("alice")).toBeLessThanOrEqual(400);
    expect(spend("dan")).toBeLessThanOrEqual(300);
    // Tight, not merely safe: what the org has left cannot hold one more call.
    const estimate = Math.max(...records.map((r) => micros(r.estimated_cost_usd)));
    expect(org).toBeGreaterThan(1000 - estimate);
    // Either process reports the same org spend.
    for (const gw of [one!, two!]) {
      const me = (await client(gw.url, "tg_dan").get("/me")) as QuotaReport;
      expect(micros(me.budgets.find((b) => b.name === "org acme's daily budget")!.used_usd)).toBe(org);
      expect(micros(me.budgets.find((b) => b.name === "this key's daily budget")!.used_usd)).toBe(spend("dan"));
    }
  }, 90_000);

  it("a key's total holds across days while its plan's daily budget starts again (two engines on one Redis, clocks moved past midnight)", async () => {
    let now = Date.parse("2026-05-31T23:00:00Z");
    const clock = () => now;
    const cfg = {
      providers: { sim: { type: "simulated" } },
      // A call costs exactly $0.0001: ten output tokens at $10/M.
      models: { m: { provider: "sim", price: { input: 0, output: 10 } } },
      plans: { pro: { models: ["m"], budget: { daily: 0.0003 } } },
      keys: [{ key: "tg_total", user: "tess", plan: "pro", budget: { total: 0.0005 } }],
      routes: { chat: { path: "/chat", plans: ["pro"], default_model: "m", input: { max_output_tokens: 10 } } },
    };
    const stores = await Promise.all([RedisStore.open(redis.url(2), { log: () => {}, clock }), RedisStore.open(redis.url(2), { log: () => {}, clock })]);
    const engines = stores.map((store) => testEngine(cfg, { store, clock: { now: clock, advance: (ms) => void (now += ms), set: () => {} } }));
    try {
      const call = (i: number) => engines[i % 2]!.send({ key: "tg_total", body: { model: "m", messages: [{ role: "user", content: "hi" }] } }).then((r) => r.refusal?.message ?? "200");
      const day1 = await Promise.all([0, 1, 2, 3, 4, 5].map(call));
      expect(day1.filter((r) => r === "200")).toHaveLength(3);
      expect(day1.filter((r) => r.startsWith("the pro plan's daily budget"))).toHaveLength(3);
      now = Date.parse("2026-06-01T00:00:01Z"); // a new day, a new month
      const day2 = await Promise.all([0, 1, 2, 3, 4, 5].map(call));
      expect(day2.filter((r) => r === "200")).toHaveLength(2);
      expect(day2.filter((r) => r.startsWith("this key's total budget of $0.0005"))).toHaveLength(4);
      now = Date.parse("2026-07-15T12:00:00Z");
      expect(await call(0)).toMatch(/^this key's total budget of \$0\.0005 (is spent|would be exceeded)/);
      const records = engines.flatMap((e) => e.records).filter((r) => r.decision !== "block" && r.cost_usd > 0);
      expect(records.reduce((a, r) => a + micros(r.cost_usd), 0)).toBe(500);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  }, 60_000);
});

describe("a key's own budget", () => {
  it("a trial key's total holds on top of its plan's, and an unknown org is refused", async () => {
    const gw = await GatewayProcess.start(config("memory:"));
    gateways.push(gw);
    mock.setBehavior({ outputTokens: 20 });
    const trial = client(gw.url, "tg_trial");
    const results: (number | string)[] = [];
    for (let i = 0; i < 10; i++) results.push(await ask(trial));
    const spent = gw.records.filter((r) => r.user === "tess").reduce((a, r) => a + micros(r.cost_usd), 0);
    expect(spent).toBeLessThanOrEqual(200);
    expect(results.filter((r) => r === 200).length).toBeGreaterThan(0);
    expect(String(results.at(-1))).toMatch(/^402 this key's total budget of \$0\.0002/);
    const me = (await trial.get("/me")) as QuotaReport;
    expect(me.budgets.find((b) => b.name === "this key's total budget")).toMatchObject({ limit_usd: 0.0002, resets_at: null });

    const stranger = await ask(client(gw.url, "tg_backend", { "x-tollgate-user": "eve", "x-tollgate-org": "initech" }));
    expect(stranger).toMatch(/^403 unknown org "initech"/);
  });
});
