import { describe, expect, it } from "vitest";
import type { UsageRecord } from "../src/core/usage-record.js";
import { flaggedCohorts } from "../src/core/usage-report.js";
import { markFirstSeen } from "../src/core/gates/signals/new-identities.js";
import { fakeClock, testEngine } from "../src/testing/test-engine.js";
import { campaignConfig } from "./campaigns/configs.js";
import { figures, HOUR, OUTPUT_TOKENS, population, type Call, type Outcome } from "./campaigns/traffic.js";
import { honestDuringFlood, judge, type Run } from "./campaigns/verdict.js";
import { useUpstream } from "./use-gateway.js";

/**
 * Issue 17's five distributed campaigns against a seeded day of honest traffic, in process on the
 * memory store with a clock that walks the day: the same calls against the gateway as it was
 * (per-route limit, one-caller signals) and as it is (plan pools, cross-network and cohort signals).
 */
const DAY0 = Date.parse("2026-03-02T06:00:00Z");
const pop = population();
// Each day resets it and sets its behavior itself.
const mock = useUpstream({ reset: false });

async function day(protectedConfig: boolean): Promise<Run & { records: UsageRecord[] }> {
  mock.reset();
  mock.setBehavior({ outputTokens: OUTPUT_TOKENS });
  const clock = fakeClock(DAY0 - 3 * 24 * HOUR);
  const t = testEngine(campaignConfig({ upstream: mock.url, pop, protected: protectedConfig }), { clock });
  // The deployment's history: its established users were first seen days ago.
  for (const user of pop.established) await markFirstSeen(t, user, 3 * 24 * HOUR);
  const outcomes: Outcome[] = [];
  for (const c of pop.calls) {
    clock.set(DAY0 + c.at);
    outcomes.push(await send(t, c));
  }
  return { figures: figures(pop.calls, outcomes, mock.requests), calls: pop.calls, outcomes, records: t.records };
}

async function send(t: ReturnType<typeof testEngine>, c: Call): Promise<Outcome> {
  const { record, refusal } = await t.send({ key: c.key, ip: c.ip, route: c.route, runId: c.runId, body: c.body });
  return refusal ? { status: refusal.status } : { status: 200, model: record.model ?? undefined };
}

describe("distributed campaigns, memory store", () => {
  it(
    "each campaign's frontier calls and spend fall to a small fraction of the unprotected run's; honest calls, the launch surge's included, are served",
    async () => {
      const before = await day(false);
      const after = await day(true);
      judge("campaigns on the memory store, one simulated day", before, after);
      // Campaign 2: the per-route limit, the only global lever before, starved honest callers while the flood ran.
      const starved = honestDuringFlood(before);
      expect(starved.served / starved.calls).toBeLessThan(0.9);
      // What the dashboard shows: each campaign one row, however many callers and networks it used.
      const cohorts = flaggedCohorts(after.records, 10);
      console.log(cohorts.map((c) => `${c.cohort} ${c.group}: ${c.users} users, ${c.networks} networks, ${c.downgraded} downgraded, ${c.blocked} blocked`).join("\n"));
      const row = (cohort: string, group: string) => cohorts.find((c) => c.cohort === cohort && c.group === group);
      expect(row("new_identity_velocity", "new_identity_velocity")!.users).toBeGreaterThanOrEqual(120);
      // Most of the flood's refusals are counted in per-second summaries (max_refusal_records_per_s), not one by one.
      expect(row("anon_pool_pressure", "anon_pool_pressure")!.networks).toBeGreaterThan(100);
      expect(row("key_many_networks", "sharer")!.networks).toBeGreaterThan(5);
      // Identities with a history are untouched by the cohort signals.
      expect(after.figures.honest.downgraded).toBe(0);
    },
    240_000,
  );
});
