import { mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { DEMO_CONFIG, DEMO_KEYS, generateTraffic } from "../src/cli/demo.js";
import { launchChromium, requireChromium, HAVE_CHROMIUM, SKIP_BROWSER } from "./chromium.js";
import { GatewayProcess } from "./gateway-process.js";

const ADMIN_KEY = "dashboard-e2e-admin-secret";
const WEBHOOK_SECRET = "whsec_ZGFzaGJvYXJkLWUyZS13ZWJob29r";
/** TOLLGATE_SCREENSHOTS=1 writes the README's screenshots; otherwise they go to a temp folder. */
const SHOTS = process.env.TOLLGATE_SCREENSHOTS ? join(import.meta.dirname, "..", "docs", "screenshots") : mkdtempSync(join(tmpdir(), "tollgate-shots-"));
/** Screenshots want minutes of traffic for the chart to have a shape; the test itself needs seconds. */
const TRAFFIC_MS = process.env.TOLLGATE_SCREENSHOTS ? Number(process.env.TOLLGATE_SCREENSHOTS_TRAFFIC_MS ?? 240_000) : 4_000;

let gw: GatewayProcess;
let context: BrowserContext;
let page: Page;
let closeBrowser: (() => Promise<void>) | undefined;
let deadHook: string;

/** A port nothing listens on: connections to it are refused. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

beforeAll(async () => {
  requireChromium();
  if (!HAVE_CHROMIUM) return;
  // The demo gateway itself (its keys, plans and abuse settings), in memory, streaming fast.
  const demo = parse(readFileSync(DEMO_CONFIG, "utf8"));
  demo.store = "memory:";
  demo.admin_key = ADMIN_KEY;
  demo.server = { ...demo.server, trust_proxy: 1 };
  demo.providers.sim.tokens_per_second = 2000;
  // The demo's abuse and budget alerts go to a receiver that is down. One failed send past max_age
  // gives a message up after the first retry (5-10 s), and a retried one then waits pending 5-10 s.
  deadHook = `http://127.0.0.1:${await closedPort()}/hooks/tollgate`;
  demo.alerts = { webhooks: [{ name: "ops", url: deadHook, secret: "env:DASHBOARD_WEBHOOK_SECRET" }] };
  demo.outbox = { retry_min: "10s", retry_max: "10s", max_age: "1s", poll: "100ms", timeout: "1s" };
  gw = await GatewayProcess.start(demo, { DASHBOARD_WEBHOOK_SECRET: WEBHOOK_SECRET });
  ({ context, close: closeBrowser } = await launchChromium({ viewport: { width: 1400, height: 1000 }, colorScheme: "dark" }));
  page = context.pages()[0] ?? (await context.newPage());
}, 60_000);

afterAll(async () => {
  await closeBrowser?.();
  await gw?.stop();
});

async function asBob() {
  const res = await fetch(`${gw.url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${DEMO_KEYS.bob}`, "x-forwarded-for": "198.18.101.1" },
    body: JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "Write a long story about a toll gate." }], max_tokens: 400 }),
  });
  const body = await res.json();
  return { status: res.status, code: body.error?.code as string | undefined };
}

describe.skipIf(SKIP_BROWSER)("dashboard in Chromium", () => {
  it("logs in, fills the spend chart and top users from real traffic, and blocks a user with the button", async () => {
    // Bob spends the most (the expensive model, long answers); then the demo's traffic mix.
    for (let i = 0; i < 4; i++) expect((await asBob()).status).toBe(200);
    const stats = await generateTraffic(gw.url, { durationMs: TRAFFIC_MS, ratePerSecond: TRAFFIC_MS > 4_000 ? 6 : 25, seed: 7 });
    expect(stats.requests).toBeGreaterThan(40);
    expect(Object.keys(stats.byStatus)).toEqual(expect.arrayContaining(["200", "403"]));

    await page.goto(`${gw.url}/dashboard`);
    await page.fill("#login-key", "not-the-key");
    await page.click("#login-submit");
    await page.locator("#login-error").waitFor({ state: "visible" });
    await page.fill("#login-key", ADMIN_KEY);
    await page.click("#login-submit");
    await page.locator("#app").waitFor({ state: "visible" });
    if (TRAFFIC_MS > 4_000) await page.selectOption("#window", "15m");

    // The chart draws from the records: spend above zero, a canvas, and the routes in its legend.
    const chart = page.locator("#spend-chart");
    await expect.poll(async () => Number(await chart.getAttribute("data-spend")), { timeout: 10_000 }).toBeGreaterThan(0);
    await chart.locator("canvas").first().waitFor();
    expect(await chart.locator(".u-legend").innerText()).toContain("chat");

    const users = page.locator("#top-users tbody tr");
    await expect.poll(() => users.count(), { timeout: 10_000 }).toBeGreaterThan(3);
    expect(await page.locator("#top-users tbody td:first-child").allInnerTexts()).toContain("bob");
    await expect.poll(() => page.locator("#refusals tbody tr td.code").allInnerTexts(), { timeout: 10_000 }).toEqual(expect.arrayContaining(["blocked", "param_not_allowed"]));
    await expect.poll(() => page.locator("#flagged tbody tr td.signals").count(), { timeout: 10_000 }).toBeGreaterThan(0);
    // The same requests grouped by cohort and network: the demo's bad network is one row.
    await expect.poll(() => page.locator("#flagged-cohorts tbody tr td.signals").count(), { timeout: 10_000 }).toBeGreaterThan(0);
    await expect.poll(() => page.locator("#tail tbody tr").count(), { timeout: 10_000 }).toBeGreaterThan(10);
    expect(Number((await page.locator("#kpi-requests").innerText()).replace(/,/g, ""))).toBeGreaterThan(40);
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });

    // The button blocks bob; his next request is refused.
    expect((await asBob()).status).toBe(200);
    const button = page.locator('#top-users button[data-id="bob"]');
    expect(await button.innerText()).toBe("Block");
    await button.click();
    await expect.poll(() => page.locator('#top-users button[data-id="bob"]').innerText(), { timeout: 10_000 }).toBe("Unblock");
    expect(await page.locator("#block-result").innerText()).toContain("Blocked user bob");
    expect(await asBob()).toEqual({ status: 403, code: "blocked" });
    // Usage lines leave once per event-loop turn: wait for bob's refusal rather than take the last line.
    await expect.poll(() => gw.records.some((r) => r.user === "bob" && r.code === "blocked"), { timeout: 10_000 }).toBe(true);
    const refusal = gw.records.findLast((r) => r.user === "bob" && r.code === "blocked")!;
    expect(refusal).toMatchObject({ user: "bob", decision: "deny", code: "blocked", signals: ["admin_block:user"] });

    // The refusal reaches the live tail and the flagged callers, with the signal that fired.
    await expect.poll(() => page.locator("#flagged tbody tr", { hasText: "admin_block:user" }).count(), { timeout: 10_000 }).toBe(1);
    await page.screenshot({ path: join(SHOTS, "dashboard-blocked.png"), fullPage: false });

    // Unblock through the same button: bob is served again.
    await page.locator('#top-users button[data-id="bob"]').click();
    await expect.poll(() => page.locator('#top-users button[data-id="bob"]').innerText(), { timeout: 10_000 }).toBe("Block");
    expect((await asBob()).status).toBe(200);

    // Budgets: bob's org and key with what they spent, the org's day in its own zone.
    const acme = page.locator("#budgets tbody tr", { hasText: "acme" });
    await expect.poll(() => acme.count(), { timeout: 10_000 }).toBe(1);
    expect(await acme.innerText()).toContain("Europe/Berlin");
    expect(await acme.locator("td.state").innerText()).toBe("ok");
    const bobSpent = gw.records.filter((r) => r.user === "bob").reduce((a, r) => a + r.cost_usd, 0);
    expect(Number((await acme.locator("td.num").nth(1).innerText()).replace("$", ""))).toBeCloseTo(bobSpent, 3);
    // Nothing of bob's is in flight any more: reserved is zero, and remaining is the limit less what was spent.
    expect(Number((await acme.locator("td.num").nth(2).innerText()).replace("$", ""))).toBe(0);
    const limit = Number((await acme.locator("td.num").nth(0).innerText()).replace("$", ""));
    expect(Number((await acme.locator("td.num").nth(3).innerText()).replace("$", ""))).toBeCloseTo(limit - bobSpent, 3);
    const keyRows = page.locator("#budgets tbody tr", { hasText: "monthly" }).filter({ has: page.locator("td:first-child", { hasText: /^key$/ }) });
    await expect.poll(() => keyRows.count(), { timeout: 10_000 }).toBe(1);
    // An operator cuts the org to $0 for a minute: the row turns exhausted and bob is refused with 402.
    const put = await fetch(`${gw.url}/admin/budgets/org/acme`, { method: "PUT", headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" }, body: JSON.stringify({ daily_usd: 0, until: "1m" }) });
    expect(put.status).toBe(200);
    await expect.poll(() => acme.locator("td.state").innerText(), { timeout: 10_000 }).toBe("exhausted");
    expect(await acme.innerText()).toContain("override until");
    expect(await asBob()).toEqual({ status: 402, code: "budget_exceeded" });
    await page.locator("#budgets").screenshot({ path: join(SHOTS, "dashboard-budgets.png") });
    await fetch(`${gw.url}/admin/budgets/org/acme`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    await expect.poll(() => acme.locator("td.state").innerText(), { timeout: 10_000 }).toBe("ok");

    // The admin key never reached a log line.
    expect(gw.stdout + gw.stderr).not.toContain(ADMIN_KEY);
  }, TRAFFIC_MS + 60_000);

  it("shows the alerts the dead webhook gave up on, and Retry puts one back to pending", async () => {
    const admin = async (path: string, method = "GET") => (await fetch(`${gw.url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
    await page.locator("#app").waitFor({ state: "visible" });
    const failedRows = page.locator("#outbox-failed tbody tr", { has: page.locator("button.retry") });
    await expect.poll(() => failedRows.count(), { timeout: 30_000 }).toBeGreaterThan(0);
    const failed = await admin("/admin/outbox?state=failed&limit=500");
    expect(failed.total).toBeGreaterThan(0);

    // Counts per sink and kind agree with the API; the first failed row is the API's oldest.
    const counts = failed.counts as { sink: string; kind: string; state: string; count: number }[];
    const kind = failed.data[0].kind;
    expect(counts.find((c) => c.sink === "ops" && c.kind === kind && c.state === "failed")!.count).toBeGreaterThan(0);
    const countsRow = page.locator("#outbox-counts tbody tr", { has: page.locator("td.code", { hasText: new RegExp(`^${kind.replace(".", "\\.")}$`) }) });
    // Alerts from the first test's requests keep failing for up to retry_min (10 s) after them, so the
    // count can move between the API read and the page's next refresh: compare each page read with a fresh API read.
    const failedOfKindNow = async () => ((await admin("/admin/outbox?state=failed&limit=1")).counts as typeof counts).find((c) => c.sink === "ops" && c.kind === kind && c.state === "failed")!.count;
    await expect
      .poll(async () => { const cells = await countsRow.locator("td").allInnerTexts(); return { cells, api: await failedOfKindNow() }; }, { timeout: 20_000 })
      .toSatisfy(({ cells, api }: { cells: string[]; api: number }) => cells.length === 4 && cells[0] === "ops" && cells[1] === kind && cells[3] === String(api));
    const first = failed.data[0];
    const row = page.locator("#outbox-failed tbody tr", { has: page.locator("td:first-child", { hasText: first.id }) });
    const cells = await row.locator("td").allInnerTexts();
    expect(cells.slice(0, 4)).toEqual([first.id, "ops", first.kind, String(first.attempts)]);
    expect(first.kind).toMatch(/^(abuse|budget)\./);
    expect(cells[4]).toContain("connection failed (ECONNREFUSED)");
    expect(cells[4]).toContain("max_age");
    await page.locator("#outbox-counts").screenshot({ path: join(SHOTS, "dashboard-outbox.png") });

    // Neither the signing secret nor the receiver's URL is on the page.
    const text = await page.locator("body").innerText();
    expect(text).not.toContain(WEBHOOK_SECRET);
    expect(text).not.toContain(deadHook);

    await row.locator("button.retry").click();
    await expect.poll(() => page.locator("#outbox-result").innerText(), { timeout: 10_000 }).toBe(`Retried ${first.id} (ops): pending.`);
    const pending = await admin("/admin/outbox?state=pending&limit=500");
    expect(pending.data.find((i: { id: string; sink: string }) => i.id === first.id && i.sink === "ops")).toMatchObject({ state: "pending", kind: first.kind });
    expect((await admin("/admin/outbox?state=failed&limit=500")).data.map((i: { id: string }) => i.id)).not.toContain(first.id);
    // The refresh after the click took it off the failed list.
    await expect.poll(() => row.count(), { timeout: 10_000 }).toBe(0);
  }, 60_000);
});
