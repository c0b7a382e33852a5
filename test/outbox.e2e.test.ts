import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebhookReceiver } from "../src/testing/webhook-receiver.js";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useRedis, useUpstream } from "./use-gateway.js";

/**
 * Alerts and usage export through `tollgate serve`: signed webhooks verified by the
 * standardwebhooks package, CloudEvents batches, and the store's outbox carrying both across a
 * dead receiver and a killed gateway, on SQLite and on Redis shared by two gateways.
 */
const SECRET = `whsec_${Buffer.from("tollgate-e2e-webhook-signing-key").toString("base64")}`;
const ADMIN = "admin-outbox-e2e";
const mock = useUpstream({ reset: false });
const redis = useRedis({ persistent: true });
let receiver: WebhookReceiver;
beforeAll(async () => {
  receiver = await WebhookReceiver.start(SECRET);
});
afterAll(() => receiver?.close());
// Hooks run in reverse: the gateways are stopped before the receiver forgets what they sent.
afterEach(() => {
  receiver.alerts.length = 0;
  receiver.events.length = 0;
});
const gateways = useGateways({ after: "each", signal: "SIGKILL" });

const DAILY = 0.003;

function config(store: string) {
  return {
    store,
    admin_key: "env:OUTBOX_ADMIN_KEY",
    providers: { up: openaiUpstream(mock) },
    models: { big: { provider: "up", upstream: "up-big", price: { input: 10, output: 10 } }, small: { provider: "up", upstream: "up-small", price: { input: 1, output: 1 } } },
    plans: { pro: { models: ["big", "small"], budget: { daily: DAILY, soft: 0.5 } } },
    keys: [{ key: "tg_out_ann", user: "ann", plan: "pro" }],
    routes: { chat: { path: "/chat", plans: ["pro"], budget_downgrade_to: "small", input: { max_output_tokens: 40 } } },
    alerts: { webhooks: [{ name: "ops", url: `${receiver.url}/hooks`, secret: "env:OUTBOX_WEBHOOK_SECRET" }] },
    export: { cloudevents: { url: `${receiver.url}/events`, batch_size: 5 } },
    // Short retries so a receiver down for seconds sees what one down for minutes would.
    outbox: { retry_min: "100ms", retry_max: "1s", poll: "100ms", timeout: "2s" },
  };
}

const ENV = { OUTBOX_ADMIN_KEY: ADMIN, OUTBOX_WEBHOOK_SECRET: SECRET };

const start = (cfg: object): Promise<GatewayProcess> => gateways.start(cfg, ENV);

/** Asks through the official SDK until the budget refuses; returns the served requests' ids. */
async function spendAll(urls: string[]): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < 200; i++) {
    const client = new OpenAI({ baseURL: `${urls[i % urls.length]}/chat/v1`, apiKey: "tg_out_ann", maxRetries: 0 });
    try {
      const { response } = await client.chat.completions.create({ model: "big", messages: [{ role: "user", content: "hello" }] }).withResponse();
      served.push(response.headers.get("x-tollgate-request-id")!);
    } catch (e) {
      expect((e as { status?: number }).status).toBe(402);
      return served;
    }
  }
  throw new Error("the budget never refused");
}

async function admin(gw: GatewayProcess, path: string, method = "GET") {
  const res = await fetch(`${gw.url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}` } });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const today = () => new Date().toISOString().slice(0, 10);

describe("alerts and export", () => {
  it("a user crossing the soft share: exactly one signed budget.soft alert, and every served request exported as a CloudEvent", { timeout: 60_000 }, async () => {
    const gw = await start(config(`sqlite:${join(mkdtempSync(join(tmpdir(), "tg-outbox-")), "t.db")}`));
    const served = await spendAll([gw.url]);
    await until("the export of every served request", () => served.every((id) => receiver.ids("tollgate.usage").includes(id)));
    await until("the soft alert", () => receiver.ids("budget.soft").length > 0);
    // A duplicate could only come from the outbox: once it holds nothing, nothing more is sent.
    await until("the outbox to be empty", async () => (await admin(gw, "/admin/outbox")).body.total === 0);
    const soft = receiver.alerts.filter((a) => a.type === "budget.soft");
    expect(soft).toHaveLength(1);
    expect(receiver.rejected).toBe(0);
    expect(soft[0]!.id).toBe(`budget.soft:user:ann:daily:${today()}`);
    expect(soft[0]!.body).toMatchObject({ type: "budget.soft", data: { id: soft[0]!.id, level: "user", subject: "user:ann", period: "daily", limit_usd: DAILY, soft_usd: DAILY / 2, user: "ann", plan: "pro", route: "chat" } });
    expect((soft[0]!.body.data as { spent_usd: number }).spent_usd).toBeGreaterThanOrEqual(DAILY / 2);
    expect(receiver.ids("budget.exhausted")).toEqual([`budget.exhausted:user:ann:daily:${today()}`]);

    const events = receiver.events.filter((e) => served.includes(e.id));
    expect(events[0]!.body).toMatchObject({ specversion: "1.0", type: "tollgate.usage", source: "tollgate", subject: "ann" });
    const rec = await gw.recordFor(events[0]!.id);
    expect(events[0]!.body.data).toMatchObject({ tokens: rec.input_tokens + rec.output_tokens, input_tokens: rec.input_tokens, output_tokens: rec.output_tokens, cost_usd: rec.cost_usd, model: rec.model, route: "chat" });
    // Refused requests cost nothing and are not exported.
    expect(receiver.ids("tollgate.usage").sort()).toEqual([...served].sort());

    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/tollgate_outbox_delivered_total\{sink="ops",kind="budget.soft"\} 1/);
    expect(metrics).toContain(`tollgate_outbox_delivered_total{sink="cloudevents",kind="usage"} ${served.length}`);
    // The secret is nowhere the operator's tools look.
    const page = await admin(gw, "/admin/outbox?state=failed");
    expect(JSON.stringify(page.body) + gw.stderr + gw.stdout).not.toContain(SECRET.slice(6));
  });

  describe.each([
    ["sqlite", 1, () => `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-outbox-")), "t.db")}`],
    ["redis, two gateways", 2, () => redis.url(3)],
  ])("on %s: the receiver down and a gateway killed meanwhile", (_name, processes, store) => {
    it("every alert and export batch is delivered once the receiver is back, by id: duplicates only with the same id", { timeout: 90_000 }, async () => {
      const cfg = config(store());
      const first = await Promise.all(Array.from({ length: processes }, () => start(cfg)));
      await receiver.down();
      try {
        const served = await spendAll(first.map((g) => g.url));
        await Promise.all(first.map((g) => g.waitForRequests(1)));
        // Everything waits in the outbox, with the reason it has not gone.
        let pending: Record<string, any> = {};
        // The exhaustion alert is queued just after the 402: waited for by id, since another
        // alert (a burn rate) can make up the count before it.
        const expected = [`budget.soft:user:ann:daily:${today()}`, `budget.exhausted:user:ann:daily:${today()}`];
        await until("the outbox to hold every message", async () => {
          pending = (await admin(first[0]!, "/admin/outbox?limit=500")).body;
          const ids = new Set(pending.data.map((i: { id: string }) => i.id));
          return pending.total >= served.length + 2 && expected.every((id) => ids.has(id));
        });
        const alertIds: string[] = pending.data.filter((i: { sink: string }) => i.sink === "ops").map((i: { id: string }) => i.id);
        expect(alertIds).toEqual(expect.arrayContaining(expected));
        await until("a failed attempt", async () => (await admin(first[0]!, "/admin/outbox?limit=500")).body.data.some((i: { last_error: string | null }) => i.last_error?.startsWith("connection failed")));
        // One gateway dies without a chance to clean up; another comes up on the same store.
        await first[0]!.stop("SIGKILL");
        const second = await start(cfg);
        // Every waiting message is tried again after the kill (the dead gateway's once its claim
        // lapses), and still nothing reaches the receiver while it is down.
        const attempts = async () => new Map<string, number>((await admin(second, "/admin/outbox?limit=500")).body.data.map((i: { sink: string; id: string; attempts: number }) => [`${i.sink} ${i.id}`, i.attempts]));
        const afterKill = await attempts();
        expect(afterKill.size).toBeGreaterThanOrEqual(served.length + 2);
        await until("every message to be tried again", async () => {
          const now = await attempts();
          return [...afterKill].every(([id, n]) => (now.get(id) ?? 0) > n);
        });
        expect(receiver.alerts.length + receiver.events.length).toBe(0);
        await receiver.up();
        await until("every alert and usage event", () => alertIds.every((id) => receiver.ids().includes(id)) && served.every((id) => receiver.ids().includes(id)), 40_000);
        // Anything else could only come from the outbox: once it holds nothing, nothing more is sent.
        await until("the outbox to be empty", async () => (await admin(second, "/admin/outbox")).body.total === 0);
        // Nothing but what was queued, each id once or more, and nothing left behind.
        expect(receiver.ids().sort()).toEqual([...alertIds, ...served].sort());
        expect(receiver.ids("budget.soft")).toHaveLength(1);
        expect(receiver.rejected).toBe(0);
        const after = (await admin(second, "/admin/outbox")).body;
        expect(after.total).toBe(0);
        expect((await admin(second, "/admin/outbox?state=failed")).body.total).toBe(0);
        const dupes = receiver.alerts.length + receiver.events.length - receiver.ids().length;
        expect(dupes).toBeGreaterThanOrEqual(0);
      } finally {
        if (!(await fetch(receiver.url).then(() => true, () => false))) await receiver.up();
      }
    });
  });
});

describe("the outbox in the admin API", () => {
  it("lists what waits and what failed, pages, retries a failed message by id, and answers errors in the admin API's shape", { timeout: 60_000 }, async () => {
    const gw = await start({ ...config("memory:"), outbox: { retry_min: "100ms", retry_max: "200ms", max_attempts: 2, poll: "100ms", timeout: "2s" } });
    await receiver.down();
    try {
      const served = await spendAll([gw.url]);
      // Two attempts each, then failed: nothing is pending, everything is listed as failed with its reason.
      await until("every message to fail", async () => (await admin(gw, "/admin/outbox?state=failed&limit=1")).body.total >= served.length + 2 && (await admin(gw, "/admin/outbox")).body.total === 0);
      expect((await admin(gw, "/admin/outbox")).body).toMatchObject({ state: "pending", total: 0, data: [], next_cursor: null });
      const first = (await admin(gw, "/admin/outbox?state=failed&limit=2")).body;
      expect(first.data).toHaveLength(2);
      expect(first.data[0]).toMatchObject({ state: "failed", attempts: 2, next_attempt_at: null, last_error: expect.stringMatching(/^gave up after 2 attempts \(max_attempts\); last: connection failed/) });
      const second = (await admin(gw, `/admin/outbox?state=failed&limit=2&cursor=${first.next_cursor}`)).body;
      expect(second.data.map((i: { id: string }) => i.id)).not.toContain(first.data[0].id);
      expect(first.counts).toEqual(expect.arrayContaining([{ sink: "ops", kind: "budget.soft", state: "failed", count: 1 }]));
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      expect(metrics).toContain(`tollgate_outbox_failed_total{sink="cloudevents",kind="usage"} ${served.length}`);

      const softId = `budget.soft:user:ann:daily:${today()}`;
      await receiver.up();
      const retried = await admin(gw, `/admin/outbox/${encodeURIComponent(softId)}/retry`, "POST");
      expect(retried).toMatchObject({ status: 200, body: { data: [{ id: softId, sink: "ops", state: "pending", attempts: 0 }] } });
      await until("the retried alert", () => receiver.ids("budget.soft").includes(softId));
      // Only what was retried went: the other failed messages wait for their own retry.
      expect(receiver.ids()).toEqual([softId]);
      expect(receiver.rejected).toBe(0);

      expect(await admin(gw, "/admin/outbox/nope/retry", "POST")).toMatchObject({ status: 404, body: { error: { code: "not_found" } } });
      expect(await admin(gw, "/admin/outbox?state=sent")).toMatchObject({ status: 400, body: { error: { code: "invalid_request", param: "state" } } });
      expect(await admin(gw, "/admin/outbox?cursor=!!")).toMatchObject({ status: 400, body: { error: { code: "invalid_request", param: "cursor" } } });
      const anon = await fetch(`${gw.url}/admin/outbox`);
      expect(anon.status).toBe(401);
    } finally {
      if (!(await fetch(receiver.url).then(() => true, () => false))) await receiver.up();
    }
  });
});
