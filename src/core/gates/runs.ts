import { TollgateError } from "../errors.js";
import type { Exchange, HeldCounter } from "../exchange.js";
import { leaseMs, type GateEnv } from "../gate.js";
import { scopeValue } from "./scope.js";

const DAY_MS = 86_400_000;

/**
 * The per-run envelope (`routes.*.runs`): how many runs a caller may start per window, and within
 * one run the steps (model calls), tool calls, documents and dollars it may use. In the gateway a
 * run is the calls that share an `x-tollgate-run` id; a call without one is a run of its own. The
 * model never decides when enough work has been done: these counters do.
 */
export function runPrefix(ex: Exchange): string | undefined {
  const runs = ex.route.runs;
  if (!runs) return undefined;
  const runId = ex.record.run_id ?? ex.id;
  return `run:${ex.route.name}:${scopeValue(runs.per, ex)}:${runId}`;
}

/**
 * How long a run's counters live. Longer than max_duration on purpose: once the run is past its
 * max_duration (its age marker has expired) its steps must still be on record so the next step is
 * refused, not mistaken for the first step of a fresh run.
 */
export function runWindowMs(ex: Exchange): number {
  return 2 * (ex.route.runs?.maxDurationMs ?? DAY_MS);
}

/** The marker a run's first step sets; it lives exactly max_duration, so its absence means "too old". */
function ageMarker(ex: Exchange, prefix: string, amount: number): HeldCounter | undefined {
  const max = ex.route.runs?.maxDurationMs;
  if (max === undefined) return undefined;
  return { key: `${prefix}:age`, max: 1, amount, windowMs: max, unit: "runs", label: "the run's max_duration" };
}

/**
 * Counters one step takes, reserved with the request windows at gate 3. A gateway call is one
 * step; a library request is admitted with none, and each model call inside it takes its own.
 */
export function stepCounters(ex: Exchange, steps = ex.caller.library ? 0 : 1): HeldCounter[] {
  const runs = ex.route.runs;
  const prefix = runPrefix(ex);
  if (!runs || !prefix) return [];
  const windowMs = runWindowMs(ex);
  const out: HeldCounter[] = [];
  // Steps: one per model call. Without max_steps the count is still kept, for run_step.
  out.push({ key: `${prefix}:steps`, max: runs.maxSteps ?? Number.MAX_SAFE_INTEGER, amount: steps, windowMs, unit: "steps", label: `the run's max_steps of ${runs.maxSteps}` });
  // Tool calls are known only from the model's answer: a step reserves none and is refused once
  // earlier steps went past the cap; the answer's tool calls are added when it settles.
  if (runs.maxToolCalls !== undefined) {
    out.push({ key: `${prefix}:tools`, max: runs.maxToolCalls, amount: 0, windowMs, unit: "tool_calls", label: `the run's max_tool_calls of ${runs.maxToolCalls}` });
  }
  const age = ageMarker(ex, prefix, 0);
  if (age) out.push(age);
  return out;
}

/** Refuses a step of a run that is older than its max_duration (its age marker has expired). */
export function checkRunAge(ex: Exchange, counters: HeldCounter[], totals: number[], stepTotal: number, stepsTaken: number): void {
  const i = counters.findIndex((c) => c.key.endsWith(":age"));
  if (i < 0 || stepTotal === stepsTaken) return;
  if (totals[i] === 0) throw runLimit(`this run is older than its max_duration of ${Math.round(ex.route.runs!.maxDurationMs! / 1000)}s`);
}

/** A run's first step also counts against the caller's runs-per-window limit. */
export async function startRunIfNew(ex: Exchange, env: GateEnv, stepTotal: number, stepsTaken: number): Promise<void> {
  const runs = ex.route.runs!;
  if (stepTotal !== stepsTaken) return;
  const counters: HeldCounter[] = [];
  if (runs.max !== undefined) {
    counters.push({ key: `runs:${ex.route.name}:${scopeValue(runs.per, ex)}`, max: runs.max, amount: 1, windowMs: runs.windowMs ?? DAY_MS, unit: "runs", label: `${runs.max} runs per window` });
  }
  const age = ageMarker(ex, runPrefix(ex)!, 1);
  if (age) counters.push(age);
  if (!counters.length) return;
  const id = `${ex.id}:r`;
  const result = await env.store.reserve(id, counters, leaseMs(ex), true);
  if (!result.ok) {
    throw runLimit(`this caller has started ${runs.max} runs in the window, the route's limit`, result.retryAfterMs);
  }
  ex.runStart = { id, counters };
}

export function runLimit(message: string, retryAfterMs?: number): TollgateError {
  return new TollgateError("run_limit_exceeded", message, { retryAfterSeconds: retryAfterMs !== undefined ? Math.max(1, Math.ceil(retryAfterMs / 1000)) : undefined });
}

/** The run's max_usd, reserved at gate 6 like any budget. */
export function runBudgetCounter(ex: Exchange, estimate: number): HeldCounter[] {
  const maxUsd = ex.route.runs?.maxUsd;
  const prefix = runPrefix(ex);
  if (maxUsd === undefined || !prefix) return [];
  return [{ key: `${prefix}:usd`, max: maxUsd, amount: estimate, windowMs: runWindowMs(ex), unit: "usd", label: "the run's max_usd" }];
}
