import { SignJWT } from "jose";
import OpenAI from "openai";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "./gateway-process.js";
import { useGateway } from "./use-gateway.js";

const JWT_SECRET = "a-test-secret-that-is-long-enough-for-hs256!";
const ADMIN = "admin-secret-for-tests";

const config = (upstream: string, store: string) => ({
  store,
  admin_key: ADMIN,
  server: { trust_proxy: 1 },
  providers: { up: { type: "openai", base_url: `${upstream}/v1`, api_key: "sk-up" } },
  models: { "gpt-4o-mini": { provider: "up" }, o3: { provider: "up", requires: ["verified"] } },
  plans: { anonymous: { models: ["gpt-4o-mini"] }, free: { models: ["gpt-4o-mini", "o3"] }, pro: { models: ["gpt-4o-mini", "o3"], paid: true } },
  keys: [
    { key: "tg_user_key", user: "alice", plan: "free" },
    { key: "tg_service_key", service: true, plan: "free", grants: ["free", "pro"] },
    { key: "tg_expired_key", user: "old", plan: "free", expires: "2020-01-01T00:00:00Z" },
  ],
  jwt: { secret: JWT_SECRET },
  routes: {
    limited: { path: "/limited", plans: ["free", "pro"], default_model: "gpt-4o-mini", limits: [{ per: "user", requests: 10, window: "1m" }] },
    perip: { path: "/perip", plans: ["anonymous", "free"], default_model: "gpt-4o-mini", limits: [{ per: "ip", requests: 3, window: "1m" }] },
    refund: { path: "/refund", plans: ["free"], default_model: "gpt-4o-mini", limits: [{ per: "user", requests: 3, window: "1m" }] },
    open: { path: "/open", plans: ["anonymous", "free", "pro"], default_model: "gpt-4o-mini" },
  },
});

const { gw, mock } = useGateway({ config: (mock) => config(mock.url, `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-id-")), "t.db")}`) });

function chat(route: string, headers: Record<string, string> = {}, body: object = {}) {
  return fetch(`${gw.url}/${route}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], ...body }),
  });
}

const bearer = (k: string) => ({ authorization: `Bearer ${k}` });

describe("window limits", () => {
  it("admits exactly 10 of 50 concurrent requests under requests: 10 per user, with Retry-After and RateLimit headers", async () => {
    const res = await Promise.all(Array.from({ length: 50 }, () => chat("limited", bearer("tg_user_key"))));
    const ok = res.filter((r) => r.status === 200);
    const limited = res.filter((r) => r.status === 429);
    expect(ok).toHaveLength(10);
    expect(limited).toHaveLength(40);
    expect(mock.requests).toHaveLength(10);
    const body = await limited[0]!.json();
    expect(body.error.code).toBe("rate_limited");
    expect(Number(limited[0]!.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(ok[0]!.headers.get("ratelimit-policy")).toBe('"limited.0";q=10;w=60');
    expect(ok[0]!.headers.get("ratelimit")).toMatch(/^"limited\.0";r=\d+;t=60$/);
  });

  it("does not believe a forged X-Forwarded-For beyond the trusted hop", async () => {
    // trust_proxy: 1 means only the right-most address (what our proxy saw) counts.
    const statuses = [];
    for (let i = 0; i < 6; i++) {
      const r = await chat("perip", { "x-forwarded-for": `10.9.9.${i}, 198.51.100.7` });
      statuses.push(r.status);
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429]);
    // A different real client address has its own quota.
    expect((await chat("perip", { "x-forwarded-for": "198.51.100.8" })).status).toBe(200);
  });

  it("groups IPv6 callers by /64: rotating addresses inside one /64 share one quota", async () => {
    const statuses = [];
    for (let i = 1; i <= 5; i++) statuses.push((await chat("perip", { "x-forwarded-for": `2001:db8:1:2::${i.toString(16)}` })).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect((await chat("perip", { "x-forwarded-for": "2001:db8:1:3::1" })).status).toBe(200);
    // IPv4-mapped IPv6 is the IPv4 address.
    expect((await chat("perip", { "x-forwarded-for": "::ffff:198.51.100.99" })).status).toBe(200);
  });

  it("gives quota back when a later gate refuses: refusals feed suspicion, not the window", async () => {
    for (let i = 0; i < 5; i++) expect((await chat("refund", bearer("tg_user_key"), { model: "not-a-model" })).status).toBe(403);
    for (let i = 0; i < 3; i++) expect((await chat("refund", bearer("tg_user_key"))).status).toBe(200);
    expect((await chat("refund", bearer("tg_user_key"))).status).toBe(429);
  });

  it("refuses a limited caller's large body without reading it", async () => {
    const big = "x".repeat(5_000_000);
    // Exhaust the per-IP quota of another address first.
    for (let i = 0; i < 3; i++) await chat("perip", { "x-forwarded-for": "198.51.100.50" });
    const started = performance.now();
    const r = await chat("perip", { "x-forwarded-for": "198.51.100.50" }, { messages: [{ role: "user", content: big }] }).catch((e) => e);
    expect(r.status).toBe(429);
    expect(mock.requests.filter((q) => q.rawBody.length > 1_000_000)).toHaveLength(0);
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe("identity", () => {
  it("serves anonymous callers only on routes that allow anonymous", async () => {
    expect((await chat("open")).status).toBe(200);
    const r = await chat("limited");
    expect(r.status).toBe(401);
    expect((await r.json()).error.code).toBe("unauthorized");
  });

  it("refuses an expired static key and accepts x-api-key", async () => {
    expect((await chat("open", bearer("tg_expired_key"))).status).toBe(401);
    expect((await chat("open", { "x-api-key": "tg_user_key" })).status).toBe(200);
  });

  it("lets a service key act for an end user, and ignores those headers from any other key", async () => {
    const r1 = await chat("limited", { ...bearer("tg_service_key"), "x-tollgate-user": "carol", "x-tollgate-plan": "pro" });
    expect(r1.status).toBe(200);
    const r2 = await chat("limited", { ...bearer("tg_user_key"), "x-tollgate-user": "mallory", "x-tollgate-plan": "pro" });
    expect([200, 429]).toContain(r2.status);
    expect(await gw.recordFor(r1.headers.get("x-tollgate-request-id"))).toMatchObject({ user: "carol", plan: "pro" });
    expect(await gw.recordFor(r2.headers.get("x-tollgate-request-id"))).toMatchObject({ user: "alice", plan: "free" });
    // A service key may only grant the plans it is allowed to.
    const r3 = await chat("open", { ...bearer("tg_service_key"), "x-tollgate-user": "dave", "x-tollgate-plan": "anonymous" });
    expect(r3.status).toBe(403);
  });

  it("accepts a valid HS256 JWT with its claims, and refuses alg none, a wrong signature and an expired token", async () => {
    const sign = (claims: object, secret = JWT_SECRET, exp = "5m") =>
      new SignJWT({ ...claims }).setProtectedHeader({ alg: "HS256" }).setSubject("jwt-user").setIssuedAt().setExpirationTime(exp).sign(new TextEncoder().encode(secret));
    const good = await sign({ plan: "free", email_verified: true });
    const r = await chat("open", bearer(good), { model: "o3" });
    expect(r.status).toBe(200);
    const rec = await gw.recordFor(r.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ user: "jwt-user", plan: "free", model: "o3" });

    const unverified = await sign({ plan: "free", email_verified: false });
    const denied = await chat("open", bearer(unverified), { model: "o3" });
    expect(denied.status).toBe(403);
    expect((await denied.json()).error.code).toBe("model_not_allowed");

    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const none = `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "x", plan: "pro", exp: Math.floor(Date.now() / 1000) + 300 })}.`;
    expect((await chat("open", bearer(none))).status).toBe(401);
    expect((await chat("open", bearer(await sign({ plan: "free" }, "a-different-secret-that-is-long-enough!!")))).status).toBe(401);
    const expired = await new SignJWT({ plan: "free" }).setProtectedHeader({ alg: "HS256" }).setSubject("u").setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(new TextEncoder().encode(JWT_SECRET));
    expect((await chat("open", bearer(expired))).status).toBe(401);
  });

  it("works with the openai SDK's typed errors", async () => {
    const client = new OpenAI({ baseURL: `${gw.url}/limited/v1`, apiKey: "tg_nope", maxRetries: 0 });
    const err = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
  });
});

describe("keys in the store", () => {
  it("creates, uses, lists and revokes keys through the CLI and the admin API", async () => {
    const created = await runCli(["keys", "create", "--config", gw.configPath, "--user", "erin", "--plan", "free", "--json"]);
    expect(created.code).toBe(0);
    const { id, key } = JSON.parse(created.stdout);
    expect(key).toMatch(/^tg_/);
    expect((await chat("open", bearer(key))).status).toBe(200);

    const list = await runCli(["keys", "list", "--config", gw.configPath]);
    expect(list.stdout).toContain(id);
    expect(list.stdout).not.toContain(key);

    expect((await runCli(["keys", "revoke", id, "--config", gw.configPath])).code).toBe(0);
    const revoked = await chat("open", bearer(key));
    expect(revoked.status).toBe(401);
    expect((await revoked.json()).error.message).toMatch(/revoked/);

    const admin = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };
    expect((await fetch(`${gw.url}/admin/keys`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    // Far enough off that the key is used before it expires on a loaded machine; then its expiry is waited out.
    const expires = Date.now() + 5_000;
    const made = await fetch(`${gw.url}/admin/keys`, { method: "POST", headers: admin, body: JSON.stringify({ user: "frank", plan: "free", expires: new Date(expires).toISOString() }) });
    expect(made.status).toBe(201);
    const k2 = await made.json();
    expect((await chat("open", bearer(k2.key))).status).toBe(200);
    const listed = await (await fetch(`${gw.url}/admin/keys`, { headers: admin })).json();
    expect(JSON.stringify(listed)).not.toContain(k2.key);
    expect(listed.data.map((k: { id: string }) => k.id)).toContain(k2.id);
    await new Promise((r) => setTimeout(r, Math.max(0, expires + 100 - Date.now())));
    expect((await chat("open", bearer(k2.key))).status).toBe(401);
  }, 30_000);
});
