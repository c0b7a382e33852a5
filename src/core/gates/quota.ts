import { TollgateError } from "../errors.js";
import { leaseMs, type Gate } from "../gate.js";
import type { HeldCounter } from "../exchange.js";
import { fireSignal } from "./abuse.js";
import { budgetCounters, budgetRefusal } from "./budget.js";
import { checkRunAge, runLimit, startRunIfNew, stepCounters } from "./runs.js";
import { describeLimit, limitKey } from "./scope.js";

/** Riding a window to within 10% of its limit is a signal; tiny limits fill up innocently. */
const BURST_SHARE = 0.9;
const BURST_MIN_LIMIT = 5;

/**
 * Gate 3: request-count windows, taken before the body is read, so a limited caller's flood of
 * large bodies costs one store round trip each. Also a cheap "budget already spent" check.
 * Token, file and spend limits need the body and are reserved at gate 6.
 */
export const quota: Gate = async function quota(ex, env) {
  const limits: HeldCounter[] = ex.route.limits
    .filter((l) => l.unit === "requests")
    .map((l) => ({ key: limitKey(l, ex), max: l.max, amount: 1, windowMs: l.windowMs, unit: "requests", label: describeLimit(l, `${l.max} requests`), limitId: l.id }));
  const steps = stepCounters(ex);
  const counters = [...limits, ...steps];

  // The spent-budget check reserves nothing, so it runs alongside the window reservation: one
  // store round trip on the admission path instead of two.
  const spent = budgetCounters(ex, env, 0).filter((c) => c.unit === "usd");
  const spentTotals = spent.length ? env.store.peek(spent) : undefined;
  spentTotals?.catch(() => {});

  if (counters.length) {
    const id = `${ex.id}:q`;
    const result = await env.store.reserve(id, counters, leaseMs(ex));
    if (!result.ok) {
      const c = counters[result.index]!;
      if (c.unit === "steps" || c.unit === "tool_calls") {
        throw runLimit(`this run has reached ${c.label}`);
      }
      const retry = Math.max(1, Math.ceil((result.retryAfterMs ?? c.windowMs) / 1000));
      rateLimitHeaders(ex.headers, counters, counters.map((x, i) => (i === result.index ? x.max : 0)));
      ex.headers["ratelimit"] = `"${c.limitId}";r=0;t=${retry}`;
      throw new TollgateError("rate_limited", `rate limited by ${c.label}; retry in ${retry}s`, { retryAfterSeconds: retry, limit: c.limitId });
    }
    ex.quota = { id, counters };
    if (limits.length) rateLimitHeaders(ex.headers, limits, result.totals);
    if (limits.some((c, i) => c.max >= BURST_MIN_LIMIT && result.totals[i]! >= BURST_SHARE * c.max)) await fireSignal(ex, env, "burst_under_limit");
    if (steps.length) {
      const step = result.totals[limits.length]!;
      ex.record.run_step = step;
      checkRunAge(ex, steps, result.totals.slice(limits.length), step, steps[0]!.amount);
      await startRunIfNew(ex, env, step, steps[0]!.amount);
    }
  }

  // Refuse a caller whose budget is already gone without reading the body.
  if (spentTotals) {
    const totals = await spentTotals;
    const full = totals.findIndex((t, i) => t >= spent[i]!.max);
    if (full >= 0) throw budgetRefusal(spent[full]!, totals[full]!, 0, env.now());
  }
};

/** IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers). */
function rateLimitHeaders(headers: Record<string, string>, counters: HeldCounter[], totals: number[]): void {
  headers["ratelimit-policy"] = counters.map((c) => `"${c.limitId}";q=${c.max};w=${Math.ceil(c.windowMs / 1000)}`).join(", ");
  headers["ratelimit"] = counters
    .map((c, i) => `"${c.limitId}";r=${Math.max(0, c.max - totals[i]!)};t=${Math.ceil(c.windowMs / 1000)}`)
    .join(", ");
}
