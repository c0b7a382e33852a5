import { noteExhausted } from "../alerts.js";
import { gatewayBudgets, keyBudgets, orgBudgets, userBudgets } from "../budget-levels.js";
import { TollgateError } from "../errors.js";
import type { Exchange, HeldCounter } from "../exchange.js";
import { leaseMs, type Gate, type GateEnv } from "../gate.js";
import { boundingTokenizer, countTextTokens, estimateInputTokens } from "../metering/tokens.js";
import { catalogLimits, worstCaseCost } from "../metering/prices.js";
import { formatUsd, type Micros } from "../money.js";
import { runBudgetCounter, runLimit } from "./runs.js";
import { appliesTo, limitKey, limitLabel } from "./scope.js";

/**
 * Gate 6: the pre-flight reservation. The estimate is an upper bound of what the call can cost —
 * input tokens counted (or bounded by bytes) at the input rate, plus the clamped output tokens for
 * every choice at the output rate — and it is reserved atomically against every budget and spend,
 * token and file window that applies. If any would overdraw, nothing goes upstream.
 */
export const budget: Gate = async function budget(ex, env) {
  const counters = budgetReservation(ex, env);
  if (!counters.length) return;
  const id = `${ex.id}:b`;
  const result = await env.store.reserve(id, counters, leaseMs(ex), true);
  if (!result.ok) throw overdrawn(ex, env, counters, result.index, result);
  env.recent.note(counters, result.totals);
  budgetHeld(ex, id, counters, result.totals);
};

/**
 * Gate 6's estimate, put on the exchange and its record, and the counters it reserves: every
 * budget (usd), and the windows this call adds something to. Touches no store.
 */
export function budgetReservation(ex: Exchange, env: GateEnv): HeldCounter[] {
  const inspection = ex.inspection!;
  const model = ex.model!;
  const tokenizer = boundingTokenizer(model.tokenizer);
  let inputTokens = estimateInputTokens(inspection.prompt, tokenizer, model.upstream);
  // State the gateway cannot see (previous_response_id, a file by URL) can make the prompt as long
  // as the model's context window, and no longer. Gate 4 let it through only if the route allows it.
  if (inspection.storedState.length) inputTokens = Math.max(inputTokens, catalogLimits(model.upstream, model.providerType)?.context ?? UNKNOWN_CONTEXT_TOKENS);
  // A prediction the model does not use is billed as output, beyond what the clamp lets it write.
  const predicted = inspection.predictedOutput ? countTextTokens(inspection.predictedOutput, tokenizer) : 0;
  const outputTokens = (ex.upstream!.maxOutputTokens + predicted) * inspection.choices;
  const estimate = worstCaseCost(model.price, inputTokens, outputTokens);
  ex.estimatedInputTokens = inputTokens;
  ex.estimate = estimate;
  ex.record.estimated_cost_usd = estimate / 1e6;

  const counters = budgetCounters(ex, env, estimate);
  windowCounters(counters, ex, inputTokens + outputTokens, inspection.attachments.length, estimate);
  if (ex.route.runs?.maxUsd !== undefined) counters.push(...runBudgetCounter(ex, estimate));
  return counters;
}

/**
 * Gate 6's refusal: `counters[index]` would overdraw (`used` and `retryAfterMs` are the store's).
 * Not remembered as full (quota.ts windowRefusal says why): the next request asks the store.
 */
export function overdrawn(ex: Exchange, env: GateEnv, counters: readonly HeldCounter[], index: number, result: { used: number; retryAfterMs?: number }): TollgateError {
  const c = counters[index]!;
  const estimate = ex.estimate;
  if (c.key.startsWith("run:")) return runLimit(`this run would pass ${c.label} of $${formatUsd(c.max)}: $${formatUsd(Math.max(0, c.max - result.used))} left, this call may cost up to $${formatUsd(estimate)}`);
  if (c.unit === "usd") return budgetRefusal(c, result.used, estimate, env.now(), result.retryAfterMs);
  const retry = Math.max(1, Math.ceil((result.retryAfterMs ?? c.windowMs) / 1000));
  const need = c.unit === "tokens" ? `${c.amount} tokens` : `${c.amount} files`;
  return new TollgateError("rate_limited", `rate limited by ${c.label}: this request needs up to ${need}, ${Math.max(0, c.max - result.used)} left; retry in ${retry}s`, {
    retryAfterSeconds: retry,
    limit: c.limitId,
  });
}

/**
 * Gate 6 took its counters under reservation `id`: the exchange holds them, and the budget left is
 * a header. `totals` are theirs from `offset` on (a joint reservation holds gate 3's before them).
 */
export function budgetHeld(ex: Exchange, id: string, counters: HeldCounter[], totals: number[], offset = 0): void {
  ex.budget = { id, counters, totals: offset ? totals.slice(offset) : totals };
  let remaining = Infinity;
  for (let i = 0; i < counters.length; i++) if (counters[i]!.unit === "usd") remaining = Math.min(remaining, counters[i]!.max - totals[offset + i]!);
  if (remaining !== Infinity) ex.headers["x-tollgate-budget-remaining"] = formatUsd(Math.max(0, remaining));
}

/**
 * The least a model call on this route can reserve: one input token and the route's output cap on
 * the cheapest model this caller's plan may use there.
 */
export function cheapestCall(ex: Exchange, env: GateEnv): Micros {
  const plan = env.config.plans[ex.identity!.plan];
  const costs = (plan?.models ?? [])
    .filter((name) => !ex.route.models || ex.route.models.includes(name))
    .map((name) => env.config.models[name])
    .filter((m) => m !== undefined)
    .map((m) => worstCaseCost(m.price, 1, ex.route.input.maxOutputTokens));
  return costs.length ? Math.min(...costs) : 0;
}

/** The context window assumed for stored state on a model the catalog does not know: the largest offered. */
export const UNKNOWN_CONTEXT_TOKENS = 2_000_000;

/**
 * Calendar budgets, every level that applies, reserved together in one atomic step: the user's
 * (the plan's daily/monthly, or the operator's override), the org's, the key's own (daily,
 * monthly, lifetime total) and the gateway's. No level is skipped because another exists.
 */
export function budgetCounters(ex: Pick<Exchange, "identity" | "policy">, env: GateEnv, amount: Micros): HeldCounter[] {
  const now = env.now();
  const { config } = env;
  const id = ex.identity!;
  const out: HeldCounter[] = [];
  const anonymous = id.kind === "anonymous";
  userBudgets(out, config, id.plan, anonymous, anonymous ? id.ipGroup : id.user, ex.policy?.budget, now, amount);
  if (id.org !== undefined) orgBudgets(out, config, id.org, ex.policy?.org, now, amount);
  if (id.keyId !== null) keyBudgets(out, config, { id: id.keyId, budget: id.keyBudget, org: id.org, plan: id.plan }, ex.policy?.key, now, amount);
  gatewayBudgets(out, config, now, amount);
  return out;
}

/** Is any of these budgets, at these spent totals, past its `soft` share? */
export function pastSoft(counters: HeldCounter[], totals: Micros[]): boolean {
  return counters.some((c, i) => c.softAt !== undefined && totals[i]! >= c.softAt);
}

/** Adds the route's usd windows, and its tokens and files windows this call adds something to. */
function windowCounters(out: HeldCounter[], ex: Exchange, tokens: number, files: number, usd: Micros): void {
  for (const l of ex.route.limits) {
    if ((l.unit !== "usd" && l.unit !== "tokens" && l.unit !== "files") || !appliesTo(l, ex)) continue;
    const amount = l.unit === "usd" ? usd : l.unit === "tokens" ? tokens : files;
    if (amount > 0 || l.unit === "usd") out.push({ key: limitKey(l, ex), max: l.max, amount, windowMs: l.windowMs, unit: l.unit, label: limitLabel(l), limitId: l.id });
  }
}

export function budgetRefusal(c: HeldCounter, used: Micros, estimate: Micros, now: number, retryAfterMs?: number): TollgateError {
  // A lifetime budget never resets: the store's wait for its spend to leave the window is a century.
  const resetsAt = c.resetsAt ?? (retryAfterMs !== undefined && c.period !== "total" ? now + retryAfterMs : undefined);
  const zone = c.resetsAt !== undefined && c.timezone && c.timezone !== "UTC" ? ` (midnight ${c.timezone})` : "";
  const when = resetsAt ? `; it resets at ${new Date(resetsAt).toISOString()}${zone}` : "";
  const left = Math.max(0, c.max - used);
  const message =
    estimate > 0
      ? `${c.label} of $${formatUsd(c.max)} would be exceeded: $${formatUsd(left)} left, this request may cost up to $${formatUsd(estimate)}${when}`
      : `${c.label} of $${formatUsd(c.max)} is spent${when}`;
  const err = new TollgateError("budget_exceeded", message, {
    limit: c.limitId ?? c.key.split(":").slice(0, 2).join(":"),
    retryAfterSeconds: resetsAt ? Math.max(1, Math.ceil((resetsAt - now) / 1000)) : undefined,
  });
  return noteExhausted(err, c, used);
}
