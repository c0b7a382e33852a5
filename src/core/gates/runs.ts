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

/** How long a run's counters live: its max_duration, or a day. */
export function runWindowMs(ex: Exchange): number {
  return ex.route.runs?.maxDurationMs ?? DAY_MS;
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
  return out;
}

/** A run's first step also counts against the caller's runs-per-window limit. */
export async function startRunIfNew(ex: Exchange, env: GateEnv, stepTotal: number, stepsTaken: number): Promise<void> {
  const runs = ex.route.runs!;
  if (stepTotal !== stepsTaken || runs.max === undefined) return;
  const windowMs = runs.windowMs ?? DAY_MS;
  const counter: HeldCounter = { key: `runs:${ex.route.name}:${scopeValue(runs.per, ex)}`, max: runs.max, amount: 1, windowMs, unit: "runs", label: `${runs.max} runs per window` };
  const id = `${ex.id}:r`;
  const result = await env.store.reserve(id, [counter], leaseMs(ex));
  if (!result.ok) {
    throw runLimit(`this caller has started ${runs.max} runs in the window, the route's limit`, result.retryAfterMs);
  }
  ex.runStart = { id, counters: [counter] };
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
