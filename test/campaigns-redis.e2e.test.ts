import { Agent, fetch } from "undici";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../src/config/load.js";
import { resolveConfig } from "../src/config/resolve.js";
import { markFirstSeen } from "../src/core/gates/signals/new-identities.js";
import { openStore } from "../src/stores/open.js";
import { fakeClock, testEngine } from "../src/testing/test-engine.js";
import { campaignConfig } from "./campaigns/configs.js";
import { figures, HOUR, OUTPUT_TOKENS, population, type Call, type Outcome } from "./campaigns/traffic.js";
import { judge, type Run } from "./campaigns/verdict.js";
import { GatewayProcess } from "./gateway-process.js";
import { useGateways, useRedis, useUpstream } from "./use-gateway.js";

/**
 * Issue 17's five campaigns against two `tollgate serve` processes sharing one Redis: every
 * counter, score and cohort the signals read is shared, so a campaign spread over both processes
 * is seen whole. Real processes cannot walk a simulated clock, so the day is replayed as fast as
 * they answer, in its order; the yardstick is the same seeded day unprotected, at its own pace
 * (in process, memory store, a clock that walks the day).
 */
const DAY0 = Date.parse("2026-03-02T06:00:00Z");
const CONCURRENCY = 16;
const pop = population();
const redis = useRedis();
// Each day resets it and sets its behavior itself.
const mock = useUpstream({ behavior: { outputTokens: OUTPUT_TOKENS }, reset: false });
const gateways = useGateways({ after: "all" });

async function unprotectedDay(): Promise<Run> {
  mock.reset();
  mock.setBehavior({ outputTokens: OUTPUT_TOKENS });
  const clock = fakeClock(DAY0);
  const t = testEngine(campaignConfig({ upstream: mock.url, pop, protected: false }), { clock });
  const outcomes: Outcome[] = [];
  for (const c of pop.calls) {
    clock.set(DAY0 + c.at);
    const { record, refusal } = await t.send({ key: c.key, ip: c.ip, route: c.route, runId: c.runId, body: c.body });
    outcomes.push(refusal ? { status: refusal.status } : { status: 200, model: record.model ?? undefined });
  }
  return { figures: figures(pop.calls, outcomes, mock.requests), calls: pop.calls, outcomes };
}

/**
 * The gateway closes a keep-alive connection idle for 5 s (node's default). A client that reuses
 * one at that moment gets "other side closed" for a request the gateway never saw (a CI run at
 * load 20 did, with both gateways alive): undici's default reuses connections idle for up to ~4-5 s
 * by its coarse timers, so a starved test process loses the race. Connections idle for 1 s are dropped.
 */
const client = new Agent({ keepAliveTimeout: 1_000, keepAliveMaxTimeout: 1_000 });
afterAll(() => client.close());

async function send(gw: GatewayProcess, c: Call): Promise<Outcome> {
  const headers: Record<string, string> = { "content-type": "application/json", "x-forwarded-for": c.ip };
  if (c.key) headers.authorization = `Bearer ${c.key}`;
  if (c.runId) headers["x-tollgate-run"] = c.runId;
  const res = await fetch(`${gw.url}/${c.route}/v1/chat/completions`, { method: "POST", headers, body: JSON.stringify(c.body), dispatcher: client }).catch((err: Error) => {
    // Whether the gateway is still alive is what tells a crash from a dropped connection.
    const state = gw.child.exitCode ?? gw.child.signalCode ?? "alive";
    throw new Error(`call to ${gw.url} failed (gateway ${state}): ${err.message} ${(err.cause as Error | undefined)?.message ?? ""}\n${gw.stderr.slice(-2_000)}`, { cause: err });
  });
  await res.arrayBuffer();
  return { status: res.status, model: res.headers.get("x-tollgate-model") ?? undefined };
}

describe("distributed campaigns, Redis with two gateway processes", () => {
  it(
    "each campaign's frontier calls and spend fall to a small fraction of the unprotected day's; honest calls are served",
    async () => {
      const before = await unprotectedDay();

      mock.reset();
      mock.setBehavior({ outputTokens: OUTPUT_TOKENS });
      const config = campaignConfig({ upstream: mock.url, pop, protected: true, store: redis.url(), compressed: true });
      // The deployment's history: its established users were first seen days ago.
      const store = await openStore(redis.url());
      const resolved = resolveConfig(parseConfig(config));
      for (const user of pop.established) await markFirstSeen({ store, config: resolved }, user, 3 * 24 * HOUR);
      await store.close();
      await Promise.all([gateways.start(config), gateways.start(config)]);

      const outcomes: Outcome[] = new Array(pop.calls.length);
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < pop.calls.length) {
            const i = next++;
            outcomes[i] = await send(gateways[i % 2]!, pop.calls[i]!);
          }
        }),
      );
      const after = { figures: figures(pop.calls, outcomes, mock.requests), calls: pop.calls, outcomes };
      judge("campaigns on Redis, two gateway processes (the day replayed at full speed)", before, after);
      // Both processes served the day.
      expect(gateways.every((g) => g.records.length > 0)).toBe(true);
    },
    300_000,
  );
});
