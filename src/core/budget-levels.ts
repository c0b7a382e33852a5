import type { KeyBudget, ResolvedConfig } from "./config-types.js";
import { PERIOD_WINDOW_MS, periodOf } from "./calendar.js";
import type { HeldCounter } from "./exchange.js";
import type { Micros } from "./money.js";
import type { BudgetOverride } from "./policy.js";

/**
 * The budget counters of each level, one builder per level: gate 6 reserves those of a caller
 * together, and `tollgate budgets` / the dashboard read them subject by subject, so both name the
 * same counters, periods and zones. Each level's day ends at midnight in its own zone: the plan's
 * for its users, the org's for the org and its keys (else the plan's), the gateway's for itself.
 */

/** A key's `total` budget counts over this window: longer than any key lives. */
export const LIFETIME_MS = 100 * 365 * 86_400_000;

const SET = " (set by the operator)";

const planLabels = new Map<string, { daily: string; monthly: string }>();

/** "the free plan's daily budget", built once per plan name. */
function planLabel(plan: string, period: "daily" | "monthly"): string {
  let labels = planLabels.get(plan);
  if (labels === undefined) {
    // Plan names are the config's (a caller's plan must be one to get this far), but stay bounded.
    if (planLabels.size >= 1_000) planLabels.clear();
    planLabels.set(plan, (labels = { daily: `the ${plan} plan's daily budget`, monthly: `the ${plan} plan's monthly budget` }));
  }
  return labels[period];
}

/** The spend from which a budget is under pressure, in whole micro-dollars so the comparison stays integer. */
function softAt(max: Micros, soft: number | undefined): Micros | undefined {
  return soft === undefined ? undefined : Math.ceil(max * soft);
}

/**
 * Adds a calendar budget. Callers build its key and label only when it has a cap: budget counters
 * are built twice per request, and most levels have none.
 */
function calendar(out: HeldCounter[], now: number, amount: Micros, tz: string, max: Micros, unit: "day" | "month", key: string, label: string, soft: number | undefined): void {
  const p = periodOf(unit, now, tz);
  out.push({ key: `${key}:${p.key}`, max, amount, windowMs: PERIOD_WINDOW_MS, unit: "usd", label, resetsAt: p.resetsAt, timezone: tz, startsAt: p.startsAt, period: unit === "day" ? "daily" : "monthly", softAt: softAt(max, soft) });
}

/** A caller's per-user budgets: its plan's, or the operator's override. `who` is `u:USER` or `ip:GROUP`. */
export function userBudgets(out: HeldCounter[], config: ResolvedConfig, planName: string, who: string, override: BudgetOverride | undefined, now: number, amount: Micros): void {
  const plan = config.plans[planName];
  const tz = plan?.timezone ?? config.timezone;
  const daily = override?.daily ?? plan?.budget.daily;
  if (daily !== undefined) calendar(out, now, amount, tz, daily, "day", `bud:d:${who}`, override?.daily !== undefined ? "this caller's daily budget (set by the operator)" : planLabel(planName, "daily"), plan?.budget.soft);
  const monthly = override?.monthly ?? plan?.budget.monthly;
  if (monthly !== undefined) calendar(out, now, amount, tz, monthly, "month", `bud:m:${who}`, override?.monthly !== undefined ? "this caller's monthly budget (set by the operator)" : planLabel(planName, "monthly"), plan?.budget.soft);
}

export function orgBudgets(out: HeldCounter[], config: ResolvedConfig, name: string, override: BudgetOverride | undefined, now: number, amount: Micros): void {
  const org = config.orgs[name];
  if (!org) return;
  const daily = override?.daily ?? org.budget.daily;
  if (daily !== undefined) calendar(out, now, amount, org.timezone, daily, "day", `bud:o:d:${name}`, `org ${name}'s daily budget${override?.daily !== undefined ? SET : ""}`, org.budget.soft);
  const monthly = override?.monthly ?? org.budget.monthly;
  if (monthly !== undefined) calendar(out, now, amount, org.timezone, monthly, "month", `bud:o:m:${name}`, `org ${name}'s monthly budget${override?.monthly !== undefined ? SET : ""}`, org.budget.soft);
}

export function keyBudgets(
  out: HeldCounter[],
  config: ResolvedConfig,
  key: { id: string; budget?: KeyBudget; org?: string; plan: string },
  override: BudgetOverride | undefined,
  now: number,
  amount: Micros,
): void {
  const tz = (key.org !== undefined ? config.orgs[key.org]?.timezone : undefined) ?? config.plans[key.plan]?.timezone ?? config.timezone;
  const soft = key.budget?.soft;
  const daily = override?.daily ?? key.budget?.daily;
  if (daily !== undefined) calendar(out, now, amount, tz, daily, "day", `bud:k:d:${key.id}`, `this key's daily budget${override?.daily !== undefined ? SET : ""}`, soft);
  const monthly = override?.monthly ?? key.budget?.monthly;
  if (monthly !== undefined) calendar(out, now, amount, tz, monthly, "month", `bud:k:m:${key.id}`, `this key's monthly budget${override?.monthly !== undefined ? SET : ""}`, soft);
  const max = override?.total ?? key.budget?.total;
  if (max === undefined) return;
  // A lifetime: one counter that never changes its key, over a window no key outlives.
  out.push({ key: `bud:k:t:${key.id}`, max, amount, windowMs: LIFETIME_MS, unit: "usd", label: `this key's total budget${override?.total !== undefined ? SET : ""}`, period: "total", softAt: softAt(max, soft) });
}

export function gatewayBudgets(out: HeldCounter[], config: ResolvedConfig, now: number, amount: Micros): void {
  const gw = config.budget;
  if (gw.daily !== undefined) calendar(out, now, amount, config.timezone, gw.daily, "day", "bud:gw:d", "the gateway's daily budget", gw.soft);
  if (gw.monthly !== undefined) calendar(out, now, amount, config.timezone, gw.monthly, "month", "bud:gw:m", "the gateway's monthly budget", gw.soft);
}
