import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import "../src/entry/fetch.js";
import { createTollgate, type Tollgate } from "../src/index.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * Temporary raises: PUT /admin/budgets/{user|ip|org|key}/ID with `until` (a time, or a duration
 * from now) replaces a configured budget until then, and lapses by itself — in the gateway and in
 * an app on the same store, with nobody calling DELETE.
 */
const ADMIN = "tg_admin_raise";

const { gw, mock } = useGateway({
  upstream: { behavior: { outputTokens: 20 }, reset: false },
  config: (mock) => ({
    store: `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-raise-")), "shared.db")}`,
    admin_key: ADMIN,
    providers: { up: openaiUpstream(mock) },
    // $1 per 1M tokens: a call reserves about $0.00005.
    models: { house: { provider: "up", price: { input: 1, output: 1 } } },
    plans: { pro: { models: ["house"], budget: { daily: 1 } } },
    // Too little for one call until an operator raises it.
    orgs: { acme: { budget: { daily: 0.00001 } }, beta: {} },
    keys: [
      { key: "tg_raise_acme", user: "ann", plan: "pro", org: "acme" },
      { key: "tg_raise_solo", id: "solo_key", user: "sol", plan: "pro" },
    ],
    routes: { chat: { path: "/chat", plans: ["pro"], default_model: "house", input: { max_output_tokens: 40 } } },
  }),
});
// An app on the gateway's store, with the gateway's config.
let tg: Tollgate;
beforeAll(async () => {
  tg = await createTollgate({ config: gw.configPath });
});
afterAll(() => tg?.close());

async function admin(method: string, path: string, body?: unknown) {
  const res = await fetch(`${gw.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { error?: { code: string; param: string | null; message: string } } };
}

/** One call through the gateway: 200, or the status and message of the refusal. */
const viaGateway = (key: string) =>
  new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: key, maxRetries: 0 }).chat.completions.create({ model: "house", messages: [{ role: "user", content: "hello" }] }).then(
    () => "200",
    (e: { status?: number; error?: { message?: string } }) => `${e.status} ${e.error?.message}`,
  );

/** One call from an app on the same store: the openai SDK through gate.fetch(). */
async function viaLibrary(key: string): Promise<string> {
  const handler = tg.fetch(
    async (_req, gate) => {
      const client = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: "sk-up", fetch: gate.fetch(), maxRetries: 0 });
      try {
        await client.chat.completions.create({ model: "house", messages: [{ role: "user", content: "hello" }] });
        return new Response("200");
      } catch (e) {
        return new Response(`${(e as { status?: number }).status} ${(e as { error?: { message?: string } }).error?.message}`);
      }
    },
    { route: "chat" },
  );
  const res = await handler(new Request("http://app.test/api", { method: "POST", headers: { authorization: `Bearer ${key}` } }));
  return res.status === 200 ? res.text() : `${res.status} ${((await res.json()) as { error: { message: string } }).error.message}`;
}

const sleepUntil = (at: number) => new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));

describe("temporary budget raises", () => {
  it("an org's raise until a time and a key's cut for a duration apply to the gateway and the library, then lapse by themselves", async () => {
    expect(await viaGateway("tg_raise_acme")).toMatch(/^402 org acme's daily budget of \$0\.00001 would be exceeded/);
    expect(await viaLibrary("tg_raise_acme")).toMatch(/^402 org acme's daily budget of \$0\.00001/);
    expect(await viaGateway("tg_raise_solo")).toBe("200");

    const until = new Date(Math.ceil((Date.now() + 6_000) / 1000) * 1000);
    const raise = await admin("PUT", "/admin/budgets/org/acme", { daily_usd: 1, until: until.toISOString() });
    expect(raise).toEqual({ status: 200, body: { kind: "org", id: "acme", daily_usd: 1, monthly_usd: null, until: until.toISOString() } });
    const cut = await admin("PUT", "/admin/budgets/key/solo_key", { total_usd: 0, until: "6s" });
    expect(cut.status).toBe(200);
    expect(cut.body).toMatchObject({ kind: "key", id: "solo_key", total_usd: 0, daily_usd: null });
    const cutUntil = Date.parse(cut.body.until as string);
    expect(Math.abs(cutUntil - (Date.now() + 6_000))).toBeLessThan(3_000);

    expect(await viaGateway("tg_raise_acme")).toBe("200");
    expect(await viaLibrary("tg_raise_acme")).toBe("200");
    expect(await viaGateway("tg_raise_solo")).toMatch(/^402 this key's total budget \(set by the operator\) of \$0(\.00)? is spent/);
    expect(await viaLibrary("tg_raise_solo")).toMatch(/^402 this key's total budget \(set by the operator\)/);

    await sleepUntil(Math.max(until.getTime(), cutUntil) + 300);
    // Back to the configured $0.00001, which the raised calls already spent.
    expect(await viaGateway("tg_raise_acme")).toMatch(/^402 org acme's daily budget of \$0\.00001 is spent/);
    expect(await viaLibrary("tg_raise_acme")).toMatch(/^402 org acme's daily budget of \$0\.00001/);
    expect(await viaGateway("tg_raise_solo")).toBe("200");
    expect(await viaLibrary("tg_raise_solo")).toBe("200");
    expect((await admin("GET", "/admin/budgets/org/acme")).body).toEqual({ kind: "org", id: "acme", daily_usd: null, monthly_usd: null, until: null });
    expect((await admin("GET", "/admin/budgets/key/solo_key")).body).toEqual({ kind: "key", id: "solo_key", daily_usd: null, monthly_usd: null, total_usd: null, until: null });
  }, 60_000);

  it("refuses a raise it cannot honour with 400 naming the field, and an unknown org or key with 404", async () => {
    const bad = async (path: string, body: unknown) => {
      const r = await admin("PUT", path, body);
      return [r.status, r.body.error?.code, r.body.error?.param ?? null];
    };
    expect(await bad("/admin/budgets/org/beta", { daily_usd: 1, until: "2020-01-01T00:00:00Z" })).toEqual([400, "invalid_request", "until"]);
    expect(await bad("/admin/budgets/org/beta", { daily_usd: 1, until: "next tuesday" })).toEqual([400, "invalid_request", "until"]);
    expect(await bad("/admin/budgets/org/beta", { daily_usd: 1, until: "1h", for: "1h" })).toEqual([400, "invalid_request", "until"]);
    expect(await bad("/admin/budgets/org/beta", { total_usd: 1 })).toEqual([400, "invalid_request", "total_usd"]);
    expect(await bad("/admin/budgets/org/globex", { daily_usd: 1 })).toEqual([404, "not_found", null]);
    expect(await bad("/admin/budgets/key/nokey", { daily_usd: 1 })).toEqual([404, "not_found", null]);
    // Nothing was set by any of them.
    expect((await admin("GET", "/admin/budgets/org/beta")).body).toMatchObject({ daily_usd: null, until: null });
  }, 30_000);
});
