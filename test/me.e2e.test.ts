import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import type { QuotaReport } from "../src/core/quota-report.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/** GET {path}/v1/me: the caller's own budgets and limits, so an app can show what is left. */
const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { anonymous: { models: ["gpt-4o-mini"], budget: { daily: 0.01 } }, free: { models: ["gpt-4o-mini"], budget: { daily: 0.5, monthly: 5 } },
      // India has one offset all year (UTC+05:30, no DST): its midnight is plain arithmetic here.
      india: { models: ["gpt-4o-mini"], budget: { daily: 0 }, timezone: "Asia/Kolkata" },
    },
    keys: [{ key: "tg_me", user: "meg", plan: "free" }, { key: "tg_me_in", user: "ila", plan: "india" }, { key: "tg_me_stream", user: "sam", plan: "free" }],
    routes: {
      chat: {
        path: "/chat",
        plans: ["anonymous", "free", "india"],
        default_model: "gpt-4o-mini",
        limits: [
          { per: "user", requests: 20, window: "1h" },
          { per: "user", concurrent: 3 },
          { per: "plan", plans: ["anonymous"], requests: 600, window: "1m" },
        ],
      },
    },
  }),
  upstream: { reset: false },
});

describe("GET /v1/me", () => {
  it("answers the caller with each budget and limit that applies, matching what its records charged", async () => {
    const client = new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: "tg_me", maxRetries: 0 });
    mock.setBehavior({ outputTokens: 12 });
    for (let i = 0; i < 3; i++) await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello there" }] });
    await gw.waitForRecords(3);
    const spent = gw.records.filter((r) => r.user === "meg").reduce((a, r) => a + Math.round(r.cost_usd * 1e6), 0);
    expect(spent).toBeGreaterThan(0);

    const me = (await client.get("/me")) as QuotaReport;
    expect(me).toMatchObject({ user: "meg", plan: "free", verified: false, route: "chat" });
    expect(me.key_id).toBeTypeOf("string");
    const daily = me.budgets.find((b) => b.name.includes("daily"))!;
    expect(daily.limit_usd).toBe(0.5);
    expect(Math.round(daily.used_usd * 1e6)).toBe(spent);
    expect(daily.reserved_usd).toBe(0);
    expect(Math.round(daily.remaining_usd * 1e6)).toBe(500_000 - spent);
    expect(Date.parse(daily.resets_at!)).toBeGreaterThan(Date.now());
    expect(me.budgets.find((b) => b.name.includes("monthly"))!.limit_usd).toBe(5);

    // The anonymous pool does not apply to a free caller; the two user limits do.
    expect(me.limits.map((l) => l.id)).toEqual(["chat.0", "chat.1"]);
    expect(me.limits[0]).toMatchObject({ per: "user", unit: "requests", limit: 20, used: 3, reserved: 0, remaining: 17, window_s: 3600 });
    expect(me.limits[1]).toMatchObject({ per: "user", unit: "concurrent", limit: 3, used: 0, reserved: 0, remaining: 3, window_s: null });
    // Asking spends nothing and writes no record.
    expect(((await client.get("/me")) as QuotaReport).limits[0]!.used).toBe(3);
    expect(gw.records.filter((r) => r.user === "meg")).toHaveLength(3);
  });

  it("shows what a stream still open holds as reserved, and only the settled cost once it ends", { timeout: 60_000 }, async () => {
    const client = new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: "tg_me_stream", maxRetries: 0 });
    mock.setBehavior({ outputTokens: 30, tokenIntervalMs: 50 });
    const { data: stream, response } = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "tell me a story" }], stream: true }).withResponse();
    const chunks = stream[Symbol.asyncIterator]();
    expect((await chunks.next()).done).toBe(false);

    const during = (await client.get("/me")) as QuotaReport;
    const daily = during.budgets.find((b) => b.name.includes("daily"))!;
    expect(daily.used_usd).toBe(0);
    expect(daily.reserved_usd).toBeGreaterThan(0);
    expect(Math.round(daily.remaining_usd * 1e6)).toBe(500_000 - Math.round(daily.reserved_usd * 1e6));
    expect(during.limits[0]).toMatchObject({ unit: "requests", used: 0, reserved: 1, remaining: 19 });
    expect(during.limits[1]).toMatchObject({ unit: "concurrent", used: 0, reserved: 1, remaining: 2 });

    while (!(await chunks.next()).done);
    const record = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    const after = (await client.get("/me")) as QuotaReport;
    const settled = after.budgets.find((b) => b.name.includes("daily"))!;
    expect(settled.reserved_usd).toBe(0);
    expect(Math.round(settled.used_usd * 1e6)).toBe(Math.round(record.cost_usd * 1e6));
    expect(Math.round(settled.used_usd * 1e6)).toBeGreaterThan(0);
    expect(after.limits[0]).toMatchObject({ used: 1, reserved: 0, remaining: 19 });
    expect(after.limits[1]).toMatchObject({ used: 0, reserved: 0, remaining: 3 });
  });

  it("answers an anonymous caller with its pool, and refuses bad credentials with 401", async () => {
    const res = await fetch(`${gw.url}/chat/v1/me`);
    expect(res.status).toBe(200);
    const me = (await res.json()) as QuotaReport;
    expect(me.plan).toBe("anonymous");
    expect(me.limits.map((l) => l.id)).toEqual(["chat.0", "chat.1", "chat.2"]);
    expect(me.budgets[0]!.limit_usd).toBe(0.01);

    const bad = await fetch(`${gw.url}/chat/v1/me`, { headers: { authorization: "Bearer tg_nope" } });
    expect(bad.status).toBe(401);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
  });

  it("says when a budget resets: midnight in the plan's time zone, in /v1/me and in the 402", async () => {
    const DAY = 86_400_000;
    const IST = 5.5 * 3_600_000;
    const nextMidnight = (now: number) => (Math.floor((now + IST) / DAY) + 1) * DAY - IST;
    const before = nextMidnight(Date.now());
    const client = new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: "tg_me_in", maxRetries: 0 });
    const me = (await client.get("/me")) as QuotaReport;
    const err = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    const after = nextMidnight(Date.now());
    const expected = [before, after].map((t) => new Date(t).toISOString());

    expect(me.budgets).toHaveLength(1);
    expect(me.budgets[0]).toMatchObject({ name: "the india plan's daily budget", limit_usd: 0, remaining_usd: 0, timezone: "Asia/Kolkata", state: "exhausted" });
    expect(expected).toContain(me.budgets[0]!.resets_at);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.status).toBe(402);
    expect((err.error as { code: string }).code).toBe("budget_exceeded");
    const at = /it resets at (\S+) \(midnight Asia\/Kolkata\)/.exec(err.message)?.[1];
    expect(expected).toContain(at);
    const retryAfter = Number(err.headers?.get("retry-after"));
    expect(Math.abs(Date.now() + retryAfter * 1000 - Date.parse(at!))).toBeLessThan(5_000);
  });
});

