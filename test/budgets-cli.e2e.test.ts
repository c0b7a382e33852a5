import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import type { BudgetLevelRow } from "../src/core/budget-report.js";
import { runCli } from "./gateway-process.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * `tollgate budgets` (every level and where it stands; set / clear an override) and `tollgate usage
 * --by org|key`, reading the SQLite store a running gateway writes.
 */
const micros = (usd: number) => Math.round(usd * 1e6);

const { gw } = useGateway({
  upstream: { behavior: { outputTokens: 20 }, reset: false },
  config: (mock) => ({
    store: `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-budgets-cli-")), "t.db")}`,
    timezone: "America/New_York",
    // Operator overrides are read by gateways with an admin API.
    admin_key: "tg_admin_budgets_cli",
    budget: { daily: 10, monthly: 100 },
    providers: { up: openaiUpstream(mock) },
    // $1 per 1M tokens both ways: a call costs a few tens of micro-dollars.
    models: { house: { provider: "up", price: { input: 1, output: 1 } } },
    plans: { free: { models: ["house"], budget: { daily: 0.0003 } }, pro: { models: ["house"], budget: { daily: 1 }, timezone: "Asia/Tokyo" } },
    orgs: { acme: { budget: { daily: 0.0006, soft: 0.8 }, timezone: "Europe/Berlin" }, beta: {} },
    keys: [
      { key: "tg_cli_alice", id: "alice_key", user: "alice", plan: "free", org: "acme" },
      { key: "tg_cli_bob", id: "bob_key", user: "bob", plan: "pro", org: "acme" },
      { key: "tg_cli_trial", id: "trial_key", user: "tess", plan: "pro", budget: { total: 0.0002 } },
    ],
    routes: {
      chat: {
        path: "/chat",
        plans: ["free", "pro"],
        default_model: "house",
        input: { max_output_tokens: 40 },
        limits: [
          { per: "route", usd: 5, window: "1h" },
          { per: "user", usd: 0.5, window: "1d" },
        ],
      },
    },
  }),
});

let asked = 0;
const ask = (key: string) =>
  void asked++ ||
  new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: key, maxRetries: 0 }).chat.completions.create({ model: "house", messages: [{ role: "user", content: "hello" }] }).then(
    () => "200",
    (e: { status?: number; error?: { message?: string } }) => `${e.status} ${e.error?.message}`,
  );
/** Calls until refused; the refusal. */
async function spendAll(key: string): Promise<string> {
  for (let i = 0; i < 60; i++) {
    const r = await ask(key);
    if (r !== "200") return r;
  }
  throw new Error(`${key} was never refused`);
}
const cli = (...args: string[]) => runCli([...args, "--config", gw.configPath]);
const listing = async () => {
  const r = await cli("budgets", "--json");
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { budgets: BudgetLevelRow[] }).budgets;
};

describe("tollgate budgets and usage --by org|key", () => {
  it("lists every level with what its records spent, its state and its zone's reset; sets and clears an override; groups usage by org and key", async () => {
    expect(await spendAll("tg_cli_alice")).toMatch(/^402 the free plan's daily budget/);
    expect(await spendAll("tg_cli_bob")).toMatch(/^402 org acme's daily budget/);
    expect(await ask("tg_cli_trial")).toBe("200");
    const records = (await gw.waitForRequests(asked)).filter((r) => r.decision !== "deny");
    const spent = (pick: (r: (typeof records)[number]) => boolean) => records.filter(pick).reduce((a, r) => a + micros(r.cost_usd), 0);
    const all = spent(() => true);

    const rows = await listing();
    const row = (level: string, subject: string | null, period: string) => rows.find((r) => r.level === level && r.subject === subject && r.period === period)!;
    expect(row("gateway", null, "daily")).toMatchObject({ limit_usd: 10, state: "ok", timezone: "America/New_York" });
    expect(micros(row("gateway", null, "daily").used_usd!)).toBe(all);
    expect(micros(row("gateway", null, "monthly").used_usd!)).toBe(all);
    expect(micros(row("route", "chat", "1h").used_usd!)).toBe(all);
    expect(row("route", "chat", "1d")).toMatchObject({ limit_usd: 0.5, used_usd: null, name: expect.stringContaining("per user") });

    const acme = row("org", "acme", "daily");
    // Refused because the next call's reservation does not fit; past the soft share, not yet spent to the cent.
    expect(acme).toMatchObject({ limit_usd: 0.0006, soft_usd: 0.00048, state: "soft", timezone: "Europe/Berlin", until: null, reserved_usd: 0 });
    const estimate = Math.max(...records.map((r) => micros(r.estimated_cost_usd)));
    expect(micros(acme.remaining_usd!)).toBeLessThan(estimate);
    expect(micros(acme.used_usd!)).toBe(spent((r) => r.user === "alice" || r.user === "bob"));
    // Berlin's next midnight: 22:00 or 23:00 UTC, within a day.
    const reset = Date.parse(acme.resets_at!);
    expect(reset - Date.now()).toBeGreaterThan(0);
    expect(reset - Date.now()).toBeLessThanOrEqual(86_400_000);
    expect([22, 23]).toContain(new Date(reset).getUTCHours());
    expect(rows.some((r) => r.level === "org" && r.subject === "beta")).toBe(false);

    expect(row("user", "alice", "daily")).toMatchObject({ name: "the free plan's daily budget", timezone: "America/New_York" });
    expect(micros(row("user", "alice", "daily").remaining_usd!)).toBeLessThan(estimate);
    expect(micros(row("user", "alice", "daily").used_usd!)).toBe(spent((r) => r.user === "alice"));
    expect(row("user", "bob", "daily")).toMatchObject({ limit_usd: 1, state: "ok", timezone: "Asia/Tokyo" });
    expect(new Date(row("user", "bob", "daily").resets_at!).getUTCHours()).toBe(15); // Tokyo midnight
    expect(row("key", "trial_key", "total")).toMatchObject({ limit_usd: 0.0002, resets_at: null, state: "ok" });
    expect(micros(row("key", "trial_key", "total").used_usd!)).toBe(spent((r) => r.user === "tess"));

    const text = await cli("budgets");
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^level\s+subject\s+period\s+limit_usd\s+used_usd\s+reserved_usd\s+remaining_usd\s+state\s+resets_at/);
    expect(text.stdout).toMatch(/\norg\s+acme\s+daily\s+0\.0006\s+0\.000\d+\s+0\.00\s+0\.000\d+\s+soft\s+\S+ \S+Z \(Europe\/Berlin\)/);

    // A temporary raise for the org: bob is served again, and the listing says until when.
    const set = await cli("budgets", "set", "org", "acme", "--daily", "1", "--until", "1h");
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/^org acme: daily \$1 until 20\d\d-\d\d-\d\dT/);
    expect(await ask("tg_cli_bob")).toBe("200");
    const raised = (await listing()).find((r) => r.level === "org" && r.subject === "acme")!;
    expect(raised).toMatchObject({ limit_usd: 1, state: "ok", name: "org acme's daily budget (set by the operator)" });
    expect(Math.abs(Date.parse(raised.until!) - (Date.now() + 3_600_000))).toBeLessThan(60_000);
    expect((await cli("budgets", "clear", "org", "acme")).stdout).toContain("org acme: no override");
    expect(await ask("tg_cli_bob")).toMatch(/^402 org acme's daily budget of \$0\.0006/);
    // A key's lifetime cut to nothing, for good.
    expect((await cli("budgets", "set", "key", "trial_key", "--total", "0")).code).toBe(0);
    expect(await ask("tg_cli_trial")).toMatch(/^402 this key's total budget \(set by the operator\)/);
    expect((await listing()).find((r) => r.level === "key" && r.subject === "trial_key")).toMatchObject({ limit_usd: 0, remaining_usd: 0, state: "exhausted", until: null });

    for (const [args, message] of [
      [["budgets", "set", "org", "initech", "--daily", "1"], 'no org "initech"'],
      [["budgets", "set", "org", "acme", "--total", "1"], "only a key has a lifetime budget"],
      [["budgets", "set", "org", "acme"], "give --daily, --monthly"],
      [["budgets", "set", "key", "nokey", "--daily", "1"], 'no key with id "nokey"'],
      [["budgets", "set", "org", "acme", "--daily", "1", "--until", "2020-01-01T00:00:00Z"], "has passed"],
      [["budgets", "set", "team", "acme", "--daily", "1"], "expected a level"],
    ] as const) {
      const r = await cli(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toContain(message);
    }

    await gw.waitForRequests(asked);
    const byOrg = await cli("usage", "--by", "org", "--json");
    expect(byOrg.code, byOrg.stderr).toBe(0);
    const orgRows = (JSON.parse(byOrg.stdout) as { rows: { org: string; cost_usd: number }[] }).rows;
    const now = gw.records.filter((r) => r.decision !== "deny");
    const sum = (pick: (r: (typeof now)[number]) => boolean) => now.filter(pick).reduce((a, r) => a + micros(r.cost_usd), 0);
    expect(micros(orgRows.find((r) => r.org === "acme")!.cost_usd)).toBe(sum((r) => r.org === "acme"));
    expect(micros(orgRows.find((r) => r.org === "-")!.cost_usd)).toBe(sum((r) => r.user === "tess"));
    const byKey = await cli("usage", "--by", "key", "--json");
    const keyRows = (JSON.parse(byKey.stdout) as { rows: { key: string; cost_usd: number; requests: number }[] }).rows;
    expect(keyRows.map((r) => r.key).sort()).toEqual(["alice_key", "bob_key", "trial_key"]);
    expect(micros(keyRows.find((r) => r.key === "bob_key")!.cost_usd)).toBe(sum((r) => r.key_id === "bob_key"));
    expect(keyRows.find((r) => r.key === "bob_key")!.requests).toBe(gw.records.filter((r) => r.key_id === "bob_key").length);
    expect((await cli("usage", "--by", "team")).stderr).toContain("--by: expected one of user, route, model, ip, signal, org, key");
  }, 150_000);
});
