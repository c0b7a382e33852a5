import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useUpstream } from "./use-gateway.js";

/**
 * Soft budget thresholds through `tollgate serve` and the official openai SDK: past a budget's
 * soft share the caller is served the cheaper model (decision downgrade, signal budget_soft), the
 * hard limit still refuses with 402, and a route without budget_downgrade_to keeps the asked model.
 */
const mock = useUpstream({ reset: false });
const gateways = useGateways({ after: "all" });

const DAILY = 0.003;
const SOFT = 0.5;

function config(store: string) {
  return {
    store,
    providers: { up: openaiUpstream(mock) },
    // A big call costs a few hundred micro-dollars, a small one a tenth of that.
    models: { big: { provider: "up", upstream: "up-big", price: { input: 10, output: 10 } }, small: { provider: "up", upstream: "up-small", price: { input: 1, output: 1 } } },
    plans: { pro: { models: ["big", "small"], budget: { daily: DAILY, soft: SOFT } } },
    keys: [
      { key: "tg_soft_ann", user: "ann", plan: "pro" },
      { key: "tg_soft_bo", user: "bo", plan: "pro" },
    ],
    routes: {
      chat: { path: "/chat", plans: ["pro"], budget_downgrade_to: "small", input: { max_output_tokens: 40 } },
      plain: { path: "/plain", plans: ["pro"], input: { max_output_tokens: 40 } },
    },
  };
}

interface Outcome {
  status: number;
  model?: string;
  downgraded?: string | null;
  message?: string;
}

async function ask(url: string, route: string, apiKey: string): Promise<Outcome> {
  const c = new OpenAI({ baseURL: `${url}/${route}/v1`, apiKey, maxRetries: 0 });
  try {
    const { data, response } = await c.chat.completions.create({ model: "big", messages: [{ role: "user", content: "hello" }] }).withResponse();
    return { status: 200, model: data.model, downgraded: response.headers.get("x-tollgate-downgraded") };
  } catch (e) {
    const err = e as { status?: number; error?: { message?: string } };
    return { status: err.status ?? 0, message: err.error?.message };
  }
}

/** Asks until the budget refuses (bounded), returning each outcome with the caller's spend before it. */
async function untilRefused(gw: GatewayProcess, route: string, key: string, user: string) {
  const out: { before: number; outcome: Outcome }[] = [];
  for (let i = 0; i < 200; i++) {
    const before = gw.records.filter((r) => r.user === user).reduce((a, r) => a + r.cost_usd, 0);
    const outcome = await ask(gw.url, route, key);
    out.push({ before, outcome });
    if (outcome.status !== 200) return out;
    // The record is printed just after the response: wait for it so the next spend is known.
    const n = out.length;
    const start = Date.now();
    while (gw.records.filter((r) => r.user === user).length < n && Date.now() - start < 5_000) await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("the budget never refused");
}

describe.each([
  ["memory", () => "memory:"],
  ["sqlite", () => `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-soft-")), "t.db")}`],
])("soft budget thresholds on %s", (_name, store) => {
  it("below the soft share the asked model is served; past it the cheaper one, recorded as a downgrade; the hard limit refuses with 402", async () => {
    mock.reset();
    const gw = await GatewayProcess.start(config(store()));
    gateways.push(gw);
    const calls = await untilRefused(gw, "chat", "tg_soft_ann", "ann");
    const served = calls.filter((c) => c.outcome.status === 200);
    const first = served.findIndex((c) => c.outcome.model === "up-small");
    expect(first).toBeGreaterThan(0);
    for (const c of served.slice(0, first)) {
      expect(c.before).toBeLessThan(DAILY * SOFT);
      expect(c.outcome).toMatchObject({ model: "up-big", downgraded: null });
    }
    for (const c of served.slice(first)) {
      expect(c.before).toBeGreaterThanOrEqual(DAILY * SOFT - 1e-9);
      expect(c.outcome).toMatchObject({ model: "up-small", downgraded: "budget_soft" });
    }
    const refused = calls.at(-1)!.outcome;
    expect(refused.status).toBe(402);
    expect(refused.message).toMatch(/the pro plan's daily budget of \$0\.003/);

    const records = gw.records.filter((r) => r.user === "ann" && r.decision !== "deny");
    expect(records.slice(0, first).every((r) => r.decision === "allow" && r.model === "big" && r.signals.length === 0)).toBe(true);
    expect(records.slice(first).every((r) => r.decision === "downgrade" && r.model === "small" && r.model_requested === "big" && r.signals.includes("budget_soft"))).toBe(true);
    expect(records.reduce((a, r) => a + r.cost_usd, 0)).toBeLessThanOrEqual(DAILY + 1e-9);
    // The upstream was asked for the cheaper model: the downgrade is real, not only a label.
    expect(mock.requests.map((r) => r.body?.model)).toEqual(served.map((c) => c.outcome.model));
  });

  it("a route without budget_downgrade_to keeps the asked model until the hard limit", async () => {
    const gw = await GatewayProcess.start(config(store()));
    gateways.push(gw);
    const calls = await untilRefused(gw, "plain", "tg_soft_bo", "bo");
    const served = calls.filter((c) => c.outcome.status === 200);
    // Several calls were made past the soft share, and none was downgraded.
    expect(served.filter((c) => c.before >= DAILY * SOFT).length).toBeGreaterThan(0);
    for (const c of served) expect(c.outcome).toMatchObject({ model: "up-big", downgraded: null });
    expect(calls.at(-1)!.outcome.status).toBe(402);
    expect(gw.records.filter((r) => r.user === "bo").every((r) => r.decision !== "downgrade")).toBe(true);
  });
});
