import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";
import { describe, expect, it } from "vitest";
import { runCli } from "./gateway-process.js";
import { useGateway } from "./use-gateway.js";

/**
 * SPEC §6, issue 13 defect 9: a flood of refused requests can neither fill the store nor go
 * uncounted. Beyond server.max_refusal_records_per_s refusals of a code in a second, one summary
 * record per code (and route, endpoint) and second carries `count`; /metrics and `tollgate usage`
 * still count every refusal.
 */

const CAP = 50;
const BAD = 10_000;
const LIMITED = 10_000;
const dir = mkdtempSync(join(tmpdir(), "tollgate-flood-"));
const db = join(dir, "flood.db");
const config = {
  store: `sqlite:${db}`,
  server: { max_refusal_records_per_s: CAP },
  providers: { local: { type: "simulated" } },
  models: { house: { provider: "local", price: { input: 0.5, output: 1.5 } } },
  plans: { free: { models: ["house"] } },
  keys: [{ key: "tg_flood_limited", user: "lim", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "house", limits: [{ per: "user", requests: 1, window: "1d" }] } },
};
const body = JSON.stringify({ model: "house", messages: [{ role: "user", content: "hi" }] });
const url = () => `${gw.url}/chat/v1/chat/completions`;

const { gw } = useGateway({ config, upstream: false });

/** User + system CPU of a process, in µs, from /proc. */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

function flood(key: string, amount: number): Promise<autocannon.Result> {
  return autocannon({ url: url(), method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body, connections: 16, amount });
}

describe("a flood of refused requests", () => {
  it("leaves a bounded number of stored records and exact refusal counts in /metrics and tollgate usage", async () => {
    // The limited key's one request of the day is served; everything after it is 429.
    expect((await fetch(url(), { method: "POST", headers: { authorization: "Bearer tg_flood_limited", "content-type": "application/json" }, body })).status).toBe(200);
    const cpu0 = cpuMicros(gw.child.pid!);
    const t0 = Date.now();
    const [bad, limited] = await Promise.all([flood("tg_not_a_key", BAD), flood("tg_flood_limited", LIMITED)]);
    const seconds = Math.ceil((Date.now() - t0) / 1000) + 1;
    const cpuPerRefusal = (cpuMicros(gw.child.pid!) - cpu0) / (BAD + LIMITED);
    expect(bad.non2xx + limited.non2xx).toBe(BAD + LIMITED);
    expect(bad.errors + limited.errors).toBe(0);

    // Summaries are written once their second is over: wait until the printed records and the
    // stored ones stand for every request (the served one and each refusal), however late that is.
    await gw.waitForRequests(BAD + LIMITED + 1, 30_000);
    const { SqliteStore } = await import("../src/stores/sqlite.js");
    const stored = async () => {
      const store = SqliteStore.open(db);
      try {
        return await store.queryUsage({ since: 0 });
      } finally {
        await store.close();
      }
    };
    let records = await stored();
    for (const deadline = Date.now() + 30_000; records.reduce((n, r) => n + (r.count ?? 1), 0) < BAD + LIMITED + 1 && Date.now() < deadline; records = await stored()) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const summaries = records.filter((r) => r.count !== undefined);
    const bound = (2 * CAP + 2) * seconds + 1;
    console.log(
      `refusal flood: ${BAD + LIMITED} refusals in ~${seconds - 1} s, ${records.length} records stored (${summaries.length} summaries; bound ${bound}); gateway CPU ${cpuPerRefusal.toFixed(0)} µs per refusal`,
    );
    expect(records.length).toBeLessThanOrEqual(bound);
    expect(summaries.length).toBeGreaterThan(0);
    const counted = (code: string) => records.filter((r) => r.code === code).reduce((n, r) => n + (r.count ?? 1), 0);
    expect(counted("unauthorized")).toBe(BAD);
    expect(counted("rate_limited")).toBe(LIMITED);
    // The stdout usage stream carries the same records, not one line per refusal.
    expect(gw.records.length).toBe(records.length);

    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    const requestsTotal = (code: string) =>
      metrics
        .split("\n")
        .filter((l) => l.startsWith("tollgate_requests_total{") && l.includes(`code="${code}"`))
        .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    expect(requestsTotal("unauthorized")).toBe(BAD);
    expect(requestsTotal("rate_limited")).toBe(LIMITED);

    const usage = await runCli(["usage", "--config", gw.configPath, "--since", "1h", "--by", "route", "--json"]);
    expect(usage.code, usage.stderr).toBe(0);
    const rows = (JSON.parse(usage.stdout) as { rows: { requests: number; denied: number }[] }).rows;
    expect(rows.reduce((n, r) => n + r.requests, 0)).toBe(BAD + LIMITED + 1);
    expect(rows.reduce((n, r) => n + r.denied, 0)).toBe(BAD + LIMITED);
  }, 120_000);
});
