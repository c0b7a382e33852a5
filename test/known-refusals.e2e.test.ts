import Anthropic from "@anthropic-ai/sdk";
import autocannon from "autocannon";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { useGateway } from "./use-gateway.js";

/**
 * Issue 15 phase 10a: a flood's 403 (a model the caller's plan does not offer) and 402 (a call no
 * budget can take) are answered from the body before an exchange once the code's records of the
 * second are spent. On the wire they must be the refusals the gates give, and every one counted.
 */

const CAP = 5;
const FLOOD = 1_500;
const config = {
  store: "memory:",
  server: { max_refusal_records_per_s: CAP },
  providers: { local: { type: "simulated" } },
  models: { house: { provider: "local", price: { input: 0.5, output: 1.5 } }, dear: { provider: "local", price: { input: 5, output: 15 } } },
  plans: { free: { models: ["house"] }, pro: { models: ["house", "dear"] }, broke: { models: ["house"], budget: { daily: 0.000001 } } },
  keys: [
    { key: "tg_kr_free", user: "fay", plan: "free" },
    { key: "tg_kr_pro", user: "pat", plan: "pro" },
    { key: "tg_kr_broke", user: "bea", plan: "broke" },
  ],
  routes: { chat: { path: "/chat", plans: ["free", "pro", "broke"], default_model: "house", limits: [{ per: "user", requests: 1_000_000, window: "1m" }] } },
};
const chat = (model: string) => JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 16 });
const messages = (model: string) => JSON.stringify({ model, max_tokens: 16, messages: [{ role: "user", content: "hi" }] });

const { gw } = useGateway({ config, upstream: false });

/** What a caller sees of a refusal: everything but the request id, which must be its own. */
async function seen(path: string, key: string, body: string) {
  const res = await fetch(`${gw.url}/chat${path}`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body });
  const id = res.headers.get("x-tollgate-request-id");
  expect(id).toMatch(/^[0-9a-f-]{36}$/);
  const h = (name: string) => res.headers.get(name);
  return { id, wire: { status: res.status, body: await res.json(), ratelimit: h("ratelimit"), policy: h("ratelimit-policy"), retryAfter: h("retry-after"), type: h("content-type") } };
}

describe("a flood's 403s and 402s answered before an exchange", () => {
  it("are on the wire what the gates answer (OpenAI and Anthropic shapes), each with its own request id", async () => {
    for (const [path, key, body, status] of [
      ["/v1/chat/completions", "tg_kr_free", chat("dear"), 403],
      ["/v1/messages", "tg_kr_free", messages("dear"), 403],
      ["/v1/chat/completions", "tg_kr_broke", chat("house"), 402],
      ["/v1/messages", "tg_kr_broke", messages("house"), 402],
    ] as const) {
      // Past the second's CAP records, the rest are answered early: all must look alike.
      const answers = [];
      for (let i = 0; i < 4 * CAP; i++) answers.push(await seen(path, key, body));
      expect(new Set(answers.map((a) => a.id)).size).toBe(answers.length);
      // Retry-After counts down to the budget's reset: a second apart, it may say one less.
      for (const a of answers) {
        expect({ ...a.wire, retryAfter: undefined }).toEqual({ ...answers[0]!.wire, retryAfter: undefined });
        expect(Math.abs(Number(a.wire.retryAfter ?? 0) - Number(answers[0]!.wire.retryAfter ?? 0))).toBeLessThanOrEqual(1);
      }
      expect(answers[0]!.wire.status).toBe(status);
    }
    // The official clients read them as the refusals they are.
    const openai = new OpenAI({ apiKey: "tg_kr_free", baseURL: `${gw.url}/chat/v1`, maxRetries: 0 });
    const e403 = await openai.chat.completions.create({ model: "dear", messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(e403).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect((e403 as InstanceType<typeof OpenAI.APIError>).code).toBe("model_not_allowed");
    const anthropic = new Anthropic({ apiKey: "tg_kr_broke", baseURL: `${gw.url}/chat`, maxRetries: 0 });
    const e402 = await anthropic.messages.create({ model: "house", max_tokens: 16, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(e402).toBeInstanceOf(Anthropic.APIError);
    expect((e402 as InstanceType<typeof Anthropic.APIError>).status).toBe(402);
    expect(((e402 as InstanceType<typeof Anthropic.APIError>).error as { error: { code: string } }).error.code).toBe("budget_exceeded");
    // A caller whose plan offers the model is served in the middle of it all.
    const served = await new OpenAI({ apiKey: "tg_kr_pro", baseURL: `${gw.url}/chat/v1`, maxRetries: 0 }).chat.completions.create({ model: "dear", messages: [{ role: "user", content: "hi" }] });
    expect(served.choices[0]!.message.content).toBeTruthy();
  }, 60_000);

  it("are every one counted in the records and /metrics", async () => {
    // The last second's summaries are out once it is over (RefusalRecords' 250 ms timer).
    await new Promise((r) => setTimeout(r, 1_500));
    const before = await requestsTotal();
    const flood = (key: string, body: string) =>
      autocannon({ url: `${gw.url}/chat/v1/chat/completions`, method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body, connections: 8, amount: FLOOD });
    const [forbidden, broke] = await Promise.all([flood("tg_kr_free", chat("dear")), flood("tg_kr_broke", chat("house"))]);
    expect(forbidden["4xx"] + broke["4xx"]).toBe(2 * FLOOD);
    expect(forbidden.errors + broke.errors).toBe(0);
    let after = before;
    await waitFor(async () => {
      after = await requestsTotal();
      return after.model_not_allowed - before.model_not_allowed >= FLOOD && after.budget_exceeded - before.budget_exceeded >= FLOOD ? true : undefined;
    });
    expect(after.model_not_allowed - before.model_not_allowed).toBe(FLOOD);
    expect(after.budget_exceeded - before.budget_exceeded).toBe(FLOOD);
  }, 90_000);
});

async function requestsTotal(): Promise<Record<"model_not_allowed" | "budget_exceeded", number>> {
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  const total = (code: string) =>
    metrics
      .split("\n")
      .filter((l) => l.startsWith("tollgate_requests_total{") && l.includes(`code="${code}"`))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
  return { model_not_allowed: total("model_not_allowed"), budget_exceeded: total("budget_exceeded") };
}

async function waitFor<T>(check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  for (const deadline = Date.now() + ms; ; ) {
    const value = await check();
    if (value !== undefined || Date.now() > deadline) return value as T;
    await new Promise((r) => setTimeout(r, 200));
  }
}
