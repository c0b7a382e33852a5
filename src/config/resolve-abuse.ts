import type { ResolvedAbuse } from "../core/config-types.js";
import type { Resolution } from "./resolution.js";

/** `abuse:` — block and allow lists and the suspicion score's thresholds, half-life and weights. */
export function resolveAbuse(res: Resolution): ResolvedAbuse {
  const a = res.raw.abuse;
  if (a.downgrade_to) res.checkModel(a.downgrade_to, "abuse.downgrade_to");
  if (a.downgrade_at !== undefined && a.block_at !== undefined && a.downgrade_at > a.block_at) res.issue("abuse.downgrade_at", "must not be above block_at");
  const s = a.signals;
  return {
    blocklist: a.blocklist,
    allowlist: a.allowlist,
    downgradeTo: a.downgrade_to,
    downgradeAt: a.downgrade_at,
    blockAt: a.block_at,
    halfLifeMs: res.ms(a.half_life),
    manyUsersThreshold: a.many_users_threshold,
    manyNetworksThreshold: a.many_networks_threshold,
    manyNetworksWindowMs: res.ms(a.many_networks_window),
    newIdentityAgeMs: res.ms(a.new_identity_age),
    newIdentityWindowMs: res.ms(a.new_identity_window),
    newIdentityBaselinePerHour: a.new_identity_baseline_per_hour,
    newIdentitySurgeFactor: a.new_identity_surge_factor,
    poolPressureAt: a.pool_pressure_at,
    runChurnThreshold: a.run_churn_threshold,
    runChurnWindowMs: res.ms(a.run_churn_window),
    weights: {
      refused: s.refused,
      nearCapPrompt: s.near_cap_prompt,
      ipManyUsers: s.ip_many_users,
      burstUnderLimit: s.burst_under_limit,
      newIdentityExpensiveModel: s.new_identity_expensive_model,
      keyManyNetworks: s.key_many_networks,
      newIdentityVelocity: s.new_identity_velocity,
      anonPoolPressure: s.anon_pool_pressure,
      runChurn: s.run_churn,
    },
  };
}
