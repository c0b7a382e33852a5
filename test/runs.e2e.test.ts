import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/** Long enough that two back-to-back steps fit in it on a loaded machine. */
const RUN_MAX_DURATION = "5s";
const RUN_MAX_DURATION_MS = 5_000;

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    keys: [
      { key: "tg_agent_a", user: "ann", plan: "free" },
      { key: "tg_agent_b", user: "ben", plan: "free" },
      { key: "tg_agent_c", user: "cid", plan: "free" },
    ],
    routes: {
      agent: { path: "/agent", plans: ["free"], default_model: "gpt-4o-mini", runs: { per: "user", max: 3, window: "1d", max_steps: 5, max_tool_calls: 5, max_usd: 0.0005 } },
      slow: { path: "/slow", plans: ["free"], default_model: "gpt-4o-mini", runs: { max_steps: 100, max_duration: RUN_MAX_DURATION } },
    },
  }),
});

async function step(key: string, run?: string, body: object = {}, route = "agent") {
  const res = await fetch(`${gw.url}/${route}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...(run ? { "x-tollgate-run": run } : {}) },
    body: JSON.stringify({ messages: [{ role: "user", content: "plan the next step" }], max_tokens: 20, ...body }),
  });
  const json = await res.json();
  return { status: res.status, code: json.error?.code, message: json.error?.message as string | undefined, id: res.headers.get("x-tollgate-request-id") };
}

describe("agent runs in the gateway", () => {
  it("stops a run at max_steps with run_limit_exceeded, and records run_id and run_step", async () => {
    const results = [];
    for (let i = 0; i < 7; i++) results.push(await step("tg_agent_a", "run-1"));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(results[5]).toMatchObject({ code: "run_limit_exceeded" });
    expect(results[5]!.message).toMatch(/max_steps of 5/);
    expect(mock.requests).toHaveLength(5);
    const recs = await Promise.all(results.slice(0, 5).map((r) => gw.recordFor(r.id)));
    expect(recs.map((r) => r.run_step)).toEqual([1, 2, 3, 4, 5]);
    expect(recs.every((r) => r.run_id === "run-1")).toBe(true);
  });

  it("counts the tool calls the model made and refuses the step after the run passed max_tool_calls", async () => {
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: "{}" }, { name: "search", arguments: "{}" }, { name: "fetch", arguments: "{}" }] });
    const r1 = await step("tg_agent_b", "run-tools");
    const r2 = await step("tg_agent_b", "run-tools");
    const r3 = await step("tg_agent_b", "run-tools");
    expect([r1.status, r2.status, r3.status]).toEqual([200, 200, 429]);
    expect(r3.message).toMatch(/max_tool_calls of 5/);
    expect((await gw.recordFor(r1.id)).tool_calls).toBe(3);
  });

  it("limits runs per caller per window; a call without a run id is a run of its own", async () => {
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await step("tg_agent_c")).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
    // Further steps of a run already started are not new runs.
    const again = await step("tg_agent_c", "run-new");
    expect(again.status).toBe(429);
  });

  it("refuses the steps of a run older than its max_duration, even one step at a time", async () => {
    const first = await step("tg_agent_a", "slow-run", {}, "slow");
    expect(first.status).toBe(200);
    expect((await step("tg_agent_a", "slow-run", {}, "slow")).status).toBe(200);
    // Past max_duration on the gateway's clock: the run began before its first step ended.
    const rec = await gw.recordFor(first.id);
    const firstEnded = Date.parse(rec.ts) + rec.duration_ms;
    await new Promise((r) => setTimeout(r, Math.max(0, firstEnded + RUN_MAX_DURATION_MS + 100 - Date.now())));
    const late = await step("tg_agent_a", "slow-run", {}, "slow");
    expect(late.status).toBe(429);
    expect(late.message).toMatch(/max_duration/);
    // Another run is fine.
    expect((await step("tg_agent_a", "fresh-run", {}, "slow")).status).toBe(200);
  }, 30_000);

  it("reserves the run's max_usd like a budget", async () => {
    // $0.0005 per run; each step at max_tokens 2000 reserves about $0.0012 at gpt-4o-mini's price.
    const r = await step("tg_agent_a", "run-usd", { max_tokens: 2000 });
    expect(r.status).toBe(429);
    expect(r.code).toBe("run_limit_exceeded");
    expect(r.message).toMatch(/max_usd/);
  });
});
