import type { Exchange } from "../../exchange.js";
import type { GateEnv } from "../../gate.js";

/**
 * Records this request's agent run against its caller and returns how many distinct runs the
 * caller started within run_churn_window (0 on routes without `runs`). A call without
 * x-tollgate-run is a run of its own (SPEC §5.1), so leaving the header off counts as much as
 * rotating it: both dodge the per-run envelope, and both are what run_churn looks for.
 */
export function callerRuns(ex: Exchange, env: GateEnv): Promise<number> {
  if (!ex.route.runs || env.config.abuse.weights.runChurn <= 0) return Promise.resolve(0);
  const run = ex.caller.runId ?? `req:${ex.id}`;
  return env.store.distinct(`runs:u:${ex.identity!.user}`, run, env.config.abuse.runChurnWindowMs);
}
