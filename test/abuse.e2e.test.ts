import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

const SECRET = "signup-farm-test-secret-long-enough-for-hs256";
const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    server: { trust_proxy: 1 },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o": { provider: "up" }, "gpt-4o-mini": { provider: "up" } },
    plans: { free: { models: ["gpt-4o", "gpt-4o-mini"] } },
    jwt: { secret: SECRET },
    routes: { chat: { path: "/chat", plans: ["free"], input: { max_prompt_chars: 2000, max_output_tokens: 50 } } },
    // One /24's farm, answered by its network's score. Thirty-one new identities in seconds are
    // also a surge of new ones, which would downgrade the (equally new) ordinary user with them:
    // that cohort signal is measured in campaigns.e2e.test.ts, so it weighs nothing here.
    abuse: {
      blocklist: ["192.0.2.0/24"],
      allowlist: ["100.64.0.0/10"],
      downgrade_to: "gpt-4o-mini",
      downgrade_at: 50,
      block_at: 100,
      many_users_threshold: 5,
      signals: { new_identity_velocity: 0 },
    },
  }),
  upstream: { reset: false },
});

const token = (sub: string) =>
  new SignJWT({ plan: "free" }).setProtectedHeader({ alg: "HS256" }).setSubject(sub).setExpirationTime("10m").sign(new TextEncoder().encode(SECRET));

async function ask(sub: string, ip: string, prompt: string) {
  const res = await fetch(`${gw.url}/chat/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${await token(sub)}`, "content-type": "application/json", "x-forwarded-for": ip },
    body: JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: prompt }] }),
  });
  const body = await res.json();
  return { status: res.status, model: res.headers.get("x-tollgate-model"), id: res.headers.get("x-tollgate-request-id"), code: body.error?.code };
}

describe("abuse signals", () => {
  it("downgrades, then blocks a signup farm on one /24 while an ordinary user elsewhere is served", async () => {
    const farm: Awaited<ReturnType<typeof ask>>[] = [];
    const ordinary: Awaited<ReturnType<typeof ask>>[] = [];
    for (let i = 0; i < 30; i++) {
      // A fresh account per request, each from another address in 203.0.113.0/24, each prompt at the cap.
      farm.push(await ask(`farm-${i}`, `203.0.113.${10 + i}`, "x".repeat(1990)));
      if (i % 3 === 0) ordinary.push(await ask("regular-user", "198.51.100.20", "What is the capital of France?"));
    }
    const outcome = farm.map((r) => (r.status === 403 ? "blocked" : r.model === "gpt-4o" ? "served" : r.model === "gpt-4o-mini" ? "downgraded" : `?${r.status}`));
    // The order is the point: full service, then a cheaper model, then refusal — never back.
    const firstDowngrade = outcome.indexOf("downgraded");
    const firstBlock = outcome.indexOf("blocked");
    expect(outcome[0]).toBe("served");
    expect(firstDowngrade).toBeGreaterThan(0);
    expect(firstBlock).toBeGreaterThan(firstDowngrade);
    expect(outcome.slice(firstBlock).every((o) => o === "blocked")).toBe(true);
    expect(outcome.slice(firstDowngrade, firstBlock).every((o) => o === "downgraded")).toBe(true);
    expect(farm[firstBlock]!.code).toBe("blocked");

    expect(ordinary.every((r) => r.status === 200 && r.model === "gpt-4o")).toBe(true);

    // The records explain each decision.
    const down = await gw.recordFor(farm[firstDowngrade]!.id);
    expect(down).toMatchObject({ decision: "downgrade", model_requested: "gpt-4o", model: "gpt-4o-mini" });
    expect(down.signals.some((s) => s.startsWith("score:"))).toBe(true);
    const blocked = await gw.recordFor(farm[firstBlock]!.id);
    expect(blocked).toMatchObject({ decision: "deny", code: "blocked" });
    expect(blocked.signals.some((s) => /^score:\d+\(network\)$/.test(s))).toBe(true);
    const farmSignals = new Set(gw.records.filter((r) => r.user?.startsWith("farm-")).flatMap((r) => r.signals));
    for (const s of ["ip_many_users", "near_cap_prompt", "new_identity_expensive_model"]) expect(farmSignals).toContain(s);
  });

  it("never downgrades or blocks an allowlisted network, whatever its traffic looks like", async () => {
    const results = [];
    for (let i = 0; i < 15; i++) results.push(await ask(`office-${i}`, `100.64.7.${10 + i}`, "x".repeat(1990)));
    expect(results.every((r) => r.status === 200 && r.model === "gpt-4o")).toBe(true);
  });

  it("refuses a blocklisted network with 403 blocked before anything else", async () => {
    const r = await ask("someone", "192.0.2.77", "hi");
    expect(r.status).toBe(403);
    expect(r.code).toBe("blocked");
    expect((await gw.recordFor(r.id)).signals).toEqual(["blocklist"]);
  });
});
