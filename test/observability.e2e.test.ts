import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { GatewayProcess, runCli } from "./gateway-process.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/** Every secret of this gateway: none may appear in any output but the one response that creates a key. */
const SECRETS = {
  provider: "sk-upstream-0bs3rv4b1l1ty-secret",
  admin: "admin-0bs3rv4b1l1ty-secret",
  alice: "tg_alice_0bs3rv4b1l1ty_secret",
  bob: "tg_bob_0bs3rv4b1l1ty_secret",
  carol: "tg_carol_0bs3rv4b1l1ty_secret",
  dave: "tg_dave_0bs3rv4b1l1ty_secret",
};
const createdKeys: string[] = [];
/** Everything tollgate said during the test that is not a usage line, collected for the secret grep. */
const said: string[] = [];

const { gw, mock } = useGateway({
  upstream: {
    reset: false,
    // A provider that, asked to, echoes the credentials it was sent, as some do in their errors.
    behavior: (req) =>
      req.body?.messages?.[0]?.content === "leak" ? { status: 401, errorBody: JSON.stringify({ error: { message: `Incorrect API key provided: ${req.headers.authorization}` } }) } : {},
  },
  env: { OBS_ADMIN_KEY: SECRETS.admin, OBS_PROVIDER_KEY: SECRETS.provider },
  config: (mock) => ({
    store: `sqlite:${join(mkdtempSync(join(tmpdir(), "tollgate-obs-")), "t.db")}`,
    admin_key: "env:OBS_ADMIN_KEY",
    server: { trust_proxy: 1 },
    providers: { up: openaiUpstream(mock, "env:OBS_PROVIDER_KEY") },
    models: { "gpt-4o-mini": { provider: "up" }, "gpt-4o": { provider: "up" } },
    plans: { free: { models: ["gpt-4o-mini"], budget: { daily: 1 } }, pro: { models: ["gpt-4o-mini", "gpt-4o"], budget: { daily: 5 } } },
    keys: [
      { key: SECRETS.alice, user: "alice", plan: "free" },
      { key: SECRETS.bob, user: "bob", plan: "pro" },
      { key: SECRETS.carol, user: "carol", plan: "free" },
      { key: SECRETS.dave, user: "dave", plan: "free" },
    ],
    routes: {
      chat: { path: "/chat", plans: ["free", "pro"], input: { max_output_tokens: 200 } },
      tight: { path: "/tight", plans: ["free", "pro"], limits: [{ per: "user", requests: 2, window: "1m" }] },
    },
    abuse: { downgrade_at: 50, block_at: 100 },
  }),
});
let configPath: string;
beforeAll(() => {
  configPath = gw.configPath;
});

interface Ask {
  key?: string;
  route?: string;
  ip?: string;
  body?: Record<string, unknown>;
}

async function chat({ key, route = "chat", ip = "198.51.100.1", body = {} }: Ask) {
  const res = await fetch(`${gw.url}/${route}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": ip, ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello there" }], ...body }),
  });
  const text = await res.text();
  said.push(text);
  const json = text.startsWith("{") ? JSON.parse(text) : undefined;
  return { status: res.status, code: json?.error?.code as string | undefined, message: json?.error?.message as string | undefined, id: res.headers.get("x-tollgate-request-id")! };
}

async function admin(method: string, path: string, body?: unknown, key = SECRETS.admin) {
  const res = await fetch(`${gw.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!(method === "POST" && path === "/admin/keys")) said.push(text);
  return { status: res.status, body: text.startsWith("{") ? JSON.parse(text) : text };
}

async function scrape(path = "/metrics", headers: Record<string, string> = {}) {
  const res = await fetch(`${gw.url}${path}`, { headers });
  const text = await res.text();
  said.push(text);
  return { status: res.status, text };
}

/** Sums a metric's samples over all label sets. */
function metricSum(text: string, name: string, filter: (labels: string) => boolean = () => true): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && filter(m[2] ?? "")) sum += Number(m[3]);
  }
  return sum;
}

/** A streamed request the client abandons after the first chunk. */
async function abandon(key: string) {
  const abort = new AbortController();
  const res = await fetch(`${gw.url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: "gpt-4o-mini", stream: true, max_tokens: 150, messages: [{ role: "user", content: "slow please" }] }),
    signal: abort.signal,
  });
  const reader = res.body!.getReader();
  await reader.read();
  abort.abort();
  await reader.closed.catch(() => {});
  return res.headers.get("x-tollgate-request-id")!;
}

describe("observability", () => {
  it("scrapes /metrics whose spend, tokens and request counts match the usage records exactly", async () => {
    mock.setBehavior((req) => {
      if (req.body?.messages?.[0]?.content === "leak") return { status: 401, errorBody: JSON.stringify({ error: { message: `Incorrect API key provided: ${req.headers.authorization}` } }) };
      if (req.body?.messages?.[0]?.content === "slow please") return { tokenIntervalMs: 30, outputTokens: 150 };
      return {};
    });
    const before = gw.records.length;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await chat({ key: SECRETS.alice, body: { max_tokens: 20 + i, stream: i % 2 === 0 } })).id);
    ids.push((await chat({ key: SECRETS.bob, body: { model: "gpt-4o", max_tokens: 30 } })).id);
    ids.push((await chat({ key: SECRETS.alice, body: { model: "gpt-4o" } })).id); // model_not_allowed
    ids.push((await chat({ key: SECRETS.alice, body: { logprobs: true } })).id); // param_not_allowed
    ids.push((await chat({ key: "tg_not_a_real_key_at_all" })).id); // unauthorized
    for (let i = 0; i < 3; i++) ids.push((await chat({ key: SECRETS.bob, route: "tight" })).id); // the third: rate_limited
    const leak = await chat({ key: SECRETS.bob, body: { messages: [{ role: "user", content: "leak" }] } });
    expect(leak).toMatchObject({ status: 502, code: "upstream_error" });
    ids.push(leak.id);
    ids.push(await abandon(SECRETS.bob));
    const records = await Promise.all(ids.map((id) => gw.recordFor(id)));
    await gw.waitForRecords(before + ids.length);
    expect(records.map((r) => r.code)).toEqual(expect.arrayContaining(["model_not_allowed", "param_not_allowed", "unauthorized", "rate_limited", "upstream_error"]));
    expect(records.at(-1)!.ended).toBe("client_disconnect");

    const { status, text } = await scrape();
    expect(status).toBe(200);
    const all = gw.records;
    const spend = all.reduce((s, r) => s + r.cost_usd, 0);
    const input = all.reduce((s, r) => s + r.input_tokens, 0);
    const output = all.reduce((s, r) => s + r.output_tokens, 0);
    expect(spend).toBeGreaterThan(0);
    expect(metricSum(text, "tollgate_spend_usd_total")).toBeCloseTo(spend, 9);
    expect(metricSum(text, "tollgate_tokens_total", (l) => l.includes('direction="input"'))).toBe(input);
    expect(metricSum(text, "tollgate_tokens_total", (l) => l.includes('direction="output"'))).toBe(output);
    expect(metricSum(text, "tollgate_requests_total")).toBe(all.length);
    expect(metricSum(text, "tollgate_requests_total", (l) => l.includes('code="rate_limited"'))).toBe(all.filter((r) => r.code === "rate_limited").length);
    expect(metricSum(text, "tollgate_cancellations_total", (l) => l.includes('ended="client_disconnect"'))).toBe(all.filter((r) => r.ended === "client_disconnect").length);
    expect(metricSum(text, "tollgate_time_to_first_token_seconds_count")).toBe(all.filter((r) => r.ttft_ms !== null).length);
    expect(metricSum(text, "tollgate_reservations_in_flight")).toBe(0);
    expect(text).toContain("tollgate_store_operation_seconds_bucket");
    // Bounded labels: no user, key or address ever names a series.
    for (const caller of ["alice", "bob", "198.51.100.1", "cfg_"]) expect(text).not.toContain(caller);
  });

  it("answers usage queries that agree with the records: totals, top spenders, series, refusals", async () => {
    const all = [...gw.records];
    const micros = (xs: { cost_usd: number }[]) => Math.round(xs.reduce((s, r) => s + r.cost_usd * 1e6, 0));

    const byUser = await admin("GET", "/admin/usage?since=1h&by=user&top=1");
    expect(byUser.status).toBe(200);
    expect(byUser.body.rows).toHaveLength(1);
    const byName = new Map<string, typeof all>();
    for (const r of all) byName.set(r.user ?? "-", [...(byName.get(r.user ?? "-") ?? []), r]);
    const topSpender = [...byName].sort((a, b) => micros(b[1]) - micros(a[1]) || b[1].length - a[1].length)[0]!;
    expect(byUser.body.rows[0]).toMatchObject({ group: topSpender[0], requests: topSpender[1].length });
    expect(Math.round(byUser.body.totals.cost_usd * 1e6)).toBe(micros(all));
    expect(byUser.body.totals.requests).toBe(all.length);

    const series = await admin("GET", "/admin/usage/series?since=1h&bucket=5m&by=model");
    expect(series.body.bucket_ms).toBe(300_000);
    expect(series.body.buckets).toHaveLength(series.body.total.cost_usd.length);
    expect(Math.round(series.body.total.cost_usd.reduce((a: number, b: number) => a + b, 0) * 1e6)).toBe(micros(all));
    expect(series.body.series.map((s: { group: string }) => s.group)).toEqual(expect.arrayContaining(["gpt-4o-mini", "gpt-4o"]));

    const refusals = await admin("GET", "/admin/refusals?since=1h");
    const denied = all.filter((r) => r.decision === "deny");
    expect(refusals.body.rows.reduce((n: number, r: { count: number }) => n + r.count, 0)).toBe(denied.length);
    expect(refusals.body.rows.find((r: { code: string }) => r.code === "rate_limited").count).toBe(denied.filter((r) => r.code === "rate_limited").length);

    const recent = await admin("GET", "/admin/records?since=1h&limit=5&user=alice");
    expect(recent.body.data).toHaveLength(5);
    expect(recent.body.data.every((r: { user: string }) => r.user === "alice")).toBe(true);

    expect((await admin("GET", "/admin/usage?since=yesterday-ish")).status).toBe(400);
    expect((await admin("GET", "/admin/usage/series?since=7d&bucket=1s")).body.error.code).toBe("invalid_request");
  });

  it("blocks a user, then an address, with 403 blocked on the very next request; lifts both", async () => {
    expect((await chat({ key: SECRETS.carol })).status).toBe(200);
    const placed = await admin("POST", "/admin/blocks", { user: "carol", reason: "test" });
    expect(placed).toMatchObject({ status: 201, body: { kind: "user", id: "carol", blocked: true } });
    const refused = await chat({ key: SECRETS.carol });
    expect(refused).toMatchObject({ status: 403, code: "blocked" });
    expect((await gw.recordFor(refused.id)).signals).toEqual(["admin_block:user"]);
    expect((await chat({ key: SECRETS.alice })).status).toBe(200);
    expect((await admin("GET", "/admin/blocks")).body.data).toContainEqual({ kind: "user", id: "carol" });
    expect((await admin("GET", "/admin/blocks/user/carol")).body.blocked).toBe(true);

    // An address block covers every key from it, for as long as it was placed.
    const placedAt = Date.now();
    await admin("POST", "/admin/blocks", { ip: "203.0.113.50", for: "2s" });
    expect(await chat({ key: SECRETS.bob, ip: "203.0.113.50" })).toMatchObject({ status: 403, code: "blocked" });
    expect((await chat({ key: SECRETS.bob, ip: "203.0.113.51" })).status).toBe(200);

    const callers = await admin("GET", "/admin/callers?since=1h");
    expect(callers.body.rows).toContainEqual(expect.objectContaining({ user: "carol", blocked: 1, signals: { "admin_block:user": 1 }, blocked_now: { user: true, ip: false } }));

    expect((await admin("DELETE", "/admin/blocks/user/carol")).body.blocked).toBe(false);
    expect((await chat({ key: SECRETS.carol })).status).toBe(200);
    // The gateway lifts it on its own clock: wait for it to say so, then check it held 2 s.
    await expect.poll(async () => (await admin("GET", "/admin/blocks/ip/203.0.113.50")).body.blocked, { timeout: 15_000, interval: 100 }).toBe(false);
    expect(Date.now() - placedAt).toBeGreaterThanOrEqual(2_000);
    expect((await chat({ key: SECRETS.bob, ip: "203.0.113.50" })).status).toBe(200);

    expect((await admin("POST", "/admin/blocks", { user: "x", ip: "203.0.113.1" })).status).toBe(400);
    expect((await admin("POST", "/admin/blocks", { ip: "not-an-address" })).status).toBe(400);
  });

  it("overrides one user's budget: $0 refuses with budget_exceeded, clearing it restores the plan's", async () => {
    expect((await chat({ key: SECRETS.dave })).status).toBe(200);
    const set = await admin("PUT", "/admin/budgets/user/dave", { daily_usd: 0 });
    expect(set).toMatchObject({ status: 200, body: { kind: "user", id: "dave", daily_usd: 0, monthly_usd: null } });
    const refused = await chat({ key: SECRETS.dave });
    expect(refused).toMatchObject({ status: 402, code: "budget_exceeded" });
    expect(refused.message).toContain("set by the operator");
    // A generous override lets a request through that the plan would have too.
    await admin("PUT", "/admin/budgets/user/dave", { daily_usd: "0.50" });
    expect((await chat({ key: SECRETS.dave })).status).toBe(200);
    expect((await admin("DELETE", "/admin/budgets/user/dave")).body).toMatchObject({ daily_usd: null, monthly_usd: null });
    expect((await admin("PUT", "/admin/budgets/user/dave", { daily_usd: -1 })).status).toBe(400);
  });

  it("shows current suspicion scores and lets an operator reset one", async () => {
    // Refusals the caller caused raise its score.
    for (let i = 0; i < 3; i++) await chat({ key: SECRETS.alice, body: { logprobs: true } });
    const scores = await admin("GET", "/admin/scores?user=alice");
    expect(scores.body).toMatchObject({ downgrade_at: 50, block_at: 100 });
    const alice = scores.body.data.find((r: { kind: string; id: string }) => r.kind === "user" && r.id === "alice");
    expect(alice.score).toBeGreaterThan(10);
    const listed = await admin("GET", "/admin/scores?since=1h");
    expect(listed.body.data.some((r: { id: string }) => r.id === "alice")).toBe(true);
    await admin("DELETE", "/admin/scores/user/alice");
    const after = await admin("GET", "/admin/scores?user=alice");
    expect(after.body.data.find((r: { kind: string }) => r.kind === "user")).toBeUndefined();
  });

  it("streams the live tail as server-sent events", async () => {
    const abort = new AbortController();
    const res = await fetch(`${gw.url}/admin/tail?backlog=1`, { headers: { authorization: `Bearer ${SECRETS.admin}` }, signal: abort.signal });
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const { id } = await chat({ key: SECRETS.bob });
    let buffer = "";
    while (!buffer.includes(id)) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
    }
    abort.abort();
    said.push(buffer);
    const frame = buffer.split("\n\n").find((f) => f.includes(id))!;
    expect(frame.startsWith("event: usage\ndata: ")).toBe(true);
    expect(JSON.parse(frame.slice(frame.indexOf("data: ") + 6))).toMatchObject({ request_id: id, user: "bob" });
  });

  it("refuses the admin API without the key, and serves the dashboard page with a strict CSP", async () => {
    expect((await admin("GET", "/admin/usage", undefined, "wrong-key")).status).toBe(401);
    const none = await fetch(`${gw.url}/admin/usage`);
    expect(none.status).toBe(401);
    said.push(await none.text());
    const page = await fetch(`${gw.url}/dashboard`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).toContain("/dashboard/app.js");
    const uplot = await fetch(`${gw.url}/dashboard/vendor/uPlot.esm.js`);
    expect(uplot.status).toBe(200);
    expect(await uplot.text()).toContain("uPlot");
    expect((await fetch(`${gw.url}/dashboard/package.json`)).status).toBe(404);
  });

  it("creates a key through the admin API and logs its id, never the key", async () => {
    const created = await admin("POST", "/admin/keys", { user: "erin", plan: "free" });
    expect(created.status).toBe(201);
    createdKeys.push(created.body.key);
    expect((await chat({ key: created.body.key })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    expect(gw.stderr).toContain(created.body.id);
  });

  it("tollgate usage --top and --series read the same records", async () => {
    const top = await runCli(["usage", "--config", configPath, "--since", "1h", "--by", "user", "--top", "2", "--json"], { OBS_ADMIN_KEY: SECRETS.admin, OBS_PROVIDER_KEY: SECRETS.provider });
    said.push(top.stdout, top.stderr);
    expect(top.code).toBe(0);
    expect(JSON.parse(top.stdout).rows).toHaveLength(2);
    const series = await runCli(["usage", "--config", configPath, "--since", "1h", "--series", "10m", "--by", "route"], { OBS_ADMIN_KEY: SECRETS.admin, OBS_PROVIDER_KEY: SECRETS.provider });
    said.push(series.stdout, series.stderr);
    expect(series.code).toBe(0);
    const lines = series.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^bucket \(UTC\)\s+requests\s+denied\s+tokens\s+cost_usd\s+route:chat/);
    expect(lines.filter((l) => /^\d{4}-\d\d-\d\d \d\d:\d0 /.test(l)).length).toBeGreaterThanOrEqual(6);
    const json = await runCli(["usage", "--config", configPath, "--since", "1h", "--series", "10m", "--json"], { OBS_ADMIN_KEY: SECRETS.admin, OBS_PROVIDER_KEY: SECRETS.provider });
    const total = JSON.parse(json.stdout).buckets.reduce((n: number, b: { requests: number }) => n + b.requests, 0);
    expect(total).toBeGreaterThanOrEqual(gw.records.length);
    expect((await runCli(["usage", "--config", configPath, "--series", "1s", "--since", "7d"], { OBS_ADMIN_KEY: SECRETS.admin, OBS_PROVIDER_KEY: SECRETS.provider })).code).toBe(2);
  });

  it("no output — usage lines, operational logs, responses, metrics, CLI — contains a provider or tollgate key", async () => {
    const stdout = gw.stdout;
    const stderr = gw.stderr;
    expect(stdout.split("\n").filter(Boolean).length).toBeGreaterThan(20);
    const everything = [stdout, stderr, ...said].join("\n");
    for (const secret of [...Object.values(SECRETS), ...createdKeys]) expect(everything).not.toContain(secret);
  });
});

describe("metrics behind the admin key", () => {
  it("asks Prometheus for the bearer when server.metrics is admin, and is absent when off", async () => {
    const base = {
      store: "memory:",
      admin_key: "metrics-admin-secret",
      providers: { sim: { type: "simulated" } },
      models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
      plans: { free: { models: ["m"] } },
      routes: { chat: { path: "/chat", plans: ["free"] } },
    };
    // Started together: two starts one after the other took most of 20 s on a loaded machine.
    const [guarded, off] = await GatewayProcess.startAll([
      { ...base, server: { metrics: "admin" } },
      { ...base, server: { metrics: "off" } },
    ]);
    try {
      expect((await fetch(`${guarded.url}/metrics`)).status).toBe(401);
      const ok = await fetch(`${guarded.url}/metrics`, { headers: { authorization: "Bearer metrics-admin-secret" } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("tollgate_requests_in_flight");
      expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
    } finally {
      await Promise.all([guarded!.stop(), off!.stop()]);
    }
  }, 90_000);
});
