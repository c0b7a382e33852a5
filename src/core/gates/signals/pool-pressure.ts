import type { ResolvedLimit, ResolvedRoute } from "../../config-types.js";
import type { GateEnv } from "../../gate.js";

const ANONYMOUS = "anonymous";

/** The route's `per: plan` request limits that anonymous callers share: the anonymous pool. */
function anonymousPools(route: ResolvedRoute): ResolvedLimit[] {
  return route.limits.filter((l) => l.per === "plan" && l.unit === "requests" && (!l.plans || l.plans.has(ANONYMOUS)));
}

const demandKey = (pool: ResolvedLimit) => `pool:demand:${pool.id}:${ANONYMOUS}`;

/**
 * The anonymous pool's pressure on this route: anonymous demand over what the pool admits, 0 to 1
 * (0 on a route without one). Demand is every anonymous request that reached gate 2, the refused
 * and blocked ones too, as a moving count that halves every window: a steady demand of exactly the
 * pool's rate reads 1, and so does a burst of about 1.4 windows' worth arriving at once. Counting
 * what was turned away is the point: were pressure measured by what the pool admitted, blocking
 * the flood would lower it and let the flood back in. `record` adds this request to the demand
 * (the abuse gate does, once per request); without it the pressure is only read, as the
 * proof-of-work gate does to set a challenge's difficulty.
 */
export async function anonPoolPressure(env: Pick<GateEnv, "store">, route: ResolvedRoute, record = false): Promise<number> {
  const pools = anonymousPools(route);
  if (!pools.length) return 0;
  const demand = await Promise.all(pools.map((pool) => env.store.score(demandKey(pool), record ? 1 : 0, pool.windowMs)));
  // A moving count with half-life W of a steady rate r settles at r * W / ln 2; the pool admits max per W.
  return Math.min(1, Math.max(...pools.map((pool, i) => (demand[i]! * Math.LN2) / pool.max)));
}
