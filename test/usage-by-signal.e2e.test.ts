import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "./gateway-process.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/** `tollgate usage --by signal`: why callers were flagged, from the records in the store. */
const { gw, mock } = useGateway({
  config: (mock) => ({
    store: `sqlite:${join(mkdtempSync(join(tmpdir(), "tollgate-signal-")), "t.db")}`,
    server: { trust_proxy: 1 },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o": { provider: "up" }, "gpt-4o-mini": { provider: "up" } },
    plans: { pro: { models: ["gpt-4o", "gpt-4o-mini"] } },
    keys: [{ key: "tg_passed_around", user: "sharer", plan: "pro" }],
    routes: { chat: { path: "/chat", plans: ["pro"], default_model: "gpt-4o" } },
    abuse: { downgrade_to: "gpt-4o-mini", downgrade_at: 50, block_at: 100, many_networks_threshold: 3 },
  }),
  upstream: { reset: false },
});

describe("tollgate usage --by signal", () => {
  it("groups the requests by the signals that fired on them, a shared key's included", async () => {
    // One key from eight /16s: key_many_networks fires from the fourth on, downgrades, then blocks.
    const statuses = [];
    for (let i = 0; i < 8; i++) {
      const res = await fetch(`${gw.url}/chat/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer tg_passed_around", "content-type": "application/json", "x-forwarded-for": `10.${i}.0.1` },
        body: JSON.stringify({ messages: [{ role: "user", content: "hello" }] }),
      });
      statuses.push(`${res.status} ${res.headers.get("x-tollgate-model") ?? ""}`.trim());
      await res.arrayBuffer();
    }
    expect(statuses).toEqual(["200 gpt-4o", "200 gpt-4o", "200 gpt-4o", "200 gpt-4o", "200 gpt-4o", "200 gpt-4o-mini", "200 gpt-4o-mini", "403"]);
    await gw.waitForRequests(8);

    const json = await runCli(["usage", "--config", gw.configPath, "--since", "1h", "--by", "signal", "--json"]);
    expect(json.code).toBe(0);
    const rows = Object.fromEntries(JSON.parse(json.stdout).rows.map((r: { signal: string }) => [r.signal, r]));
    expect(rows.key_many_networks).toMatchObject({ requests: 4, downgraded: 2, denied: 0 });
    expect(rows["score(user)"]).toMatchObject({ requests: 3, downgraded: 2, denied: 1 });
    // The key's first three requests came from a new identity asking for an expensive model.
    expect(rows.new_identity_expensive_model).toMatchObject({ requests: 3, denied: 0, downgraded: 0 });
    expect(Object.keys(rows)).toHaveLength(3);

    const text = await runCli(["usage", "--config", gw.configPath, "--since", "1h", "--by", "signal"]);
    expect(text.stdout).toMatch(/^signal\s+requests\s+denied\s+downgraded/m);
    expect(text.stdout).toMatch(/^key_many_networks\s+4\s+0\s+2/m);
    expect((await runCli(["usage", "--config", gw.configPath, "--by", "signals"])).stderr).toMatch(/--by: expected one of user, route, model, ip, signal/);
  }, 60_000);
});
