import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { QuotaReport } from "../src/core/quota-report.js";
import { MockUpstream } from "../src/testing/mock-upstream.js";
import { GatewayProcess } from "./gateway-process.js";

/**
 * Budget levels reserved in one atomic step: an org's budget is shared by its callers (keys with
 * `org:`, a service key's x-tollgate-org), on top of each user's plan budget and each key's own.
 * No level is skipped because another exists.
 */
let mock: MockUpstream;
const gateways: GatewayProcess[] = [];
beforeAll(async () => {
  mock = await MockUpstream.start();
});
afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await mock?.close();
});

const micros = (usd: number) => Math.round(usd * 1e6);

function config(store: string) {
  return {
    store,
    providers: { up: { type: "openai", base_url: `${mock.url}/v1`, api_key: "sk-up" } },
    // $1 per 1M tokens both ways: a call costs a few tens of micro-dollars.
    models: { house: { provider: "up", price: { input: 1, output: 1 } } },
    plans: { free: { models: ["house"], budget: { daily: 0.0004 } }, pro: { models: ["house"], budget: { daily: 1 } } },
    orgs: { acme: { budget: { daily: 0.001 } } },
    keys: [
      { key: "tg_alice", user: "alice", plan: "free", org: "acme" },
      { key: "tg_bob", user: "bob", plan: "pro", org: "acme" },
      { key: "tg_backend", service: true, plan: "pro" },
      { key: "tg_trial", user: "tess", plan: "pro", budget: { total: 0.0002 } },
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
