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

/** The spend from which a budget is under pressure, in whole micro-dollars so the comparison stays integer. */
function softAt(max: Micros, soft: number | undefined): Micros | undefined {
  return soft === undefined ? undefined : Math.ceil(max * soft);
}

function calendar(out: HeldCounter[], now: number, amount: Micros, tz: string) {
  return (max: Micros | undefined, unit: "day" | "month", key: string, label: string, soft: number | undefined) => {
    if (max === undefined) return;
    const p = periodOf(unit, now, tz);
    out.push({ key: `${key}:${p.key}`, max, amount, windowMs: PERIOD_WINDOW_MS, unit: "usd", label, resetsAt: p.resetsAt, timezone: tz, startsAt: p.startsAt, period: unit === "day" ? "daily" : "monthly", softAt: softAt(max, soft) });
  };
}

/** A caller's per-user budgets: its plan's, or the operator's override. `who` is `u:USER` or `ip:GROUP`. */
export function userBudgets(out: HeldCounter[], config: ResolvedConfig, planName: string, who: string, override: BudgetOverride | undefined, now: number, amount: Micros): void {
  const plan = config.plans[planName];
  const add = calendar(out, now, amount, plan?.timezone ?? config.timezone);
  add(override?.daily ?? plan?.budget.daily, "day", `bud:d:${who}`, override?.daily !== undefined ? "this caller's daily budget (set by the operator)" : `the ${planName} plan's daily budget`, plan?.budget.soft);
  add(override?.monthly ?? plan?.budget.monthly, "month", `bud:m:${who}`, override?.monthly !== undefined ? "this caller's monthly budget (set by the operator)" : `the ${planName} plan's monthly budget`, plan?.budget.soft);
}

export function orgBudgets(out: HeldCounter[], config: ResolvedConfig, name: string, override: BudgetOverride | undefined, now: number, amount: Micros): void {
  const org = config.orgs[name];
  if (!org) return;
  const add = calendar(out, now, amount, org.timezone);
  add(override?.daily ?? org.budget.daily, "day", `bud:o:d:${name}`, `org ${name}'s daily budget${override?.daily !== undefined ? SET : ""}`, org.budget.soft);
  add(override?.monthly ?? org.budget.monthly, "month", `bud:o:m:${name}`, `org ${name}'s monthly budget${override?.monthly !== undefined ? SET : ""}`, org.budget.soft);
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
  const add = calendar(out, now, amount, tz);
  add(override?.daily ?? key.budget?.daily, "day", `bud:k:d:${key.id}`, `this key's daily budget${override?.daily !== undefined ? SET : ""}`, soft);
  add(override?.monthly ?? key.budget?.monthly, "month", `bud:k:m:${key.id}`, `this key's monthly budget${override?.monthly !== undefined ? SET : ""}`, soft);
  const max = override?.total ?? key.budget?.total;
  if (max === undefined) return;
  // A lifetime: one counter that never changes its key, over a window no key outlives.
  out.push({ key: `bud:k:t:${key.id}`, max, amount, windowMs: LIFETIME_MS, unit: "usd", label: `this key's total budget${override?.total !== undefined ? SET : ""}`, period: "total", softAt: softAt(max, soft) });
}

export function gatewayBudgets(out: HeldCounter[], config: ResolvedConfig, now: number, amount: Micros): void {
  const gw = config.budget;
  const add = calendar(out, now, amount, config.timezone);
  add(gw.daily, "day", "bud:gw:d", "the gateway's daily budget", gw.soft);
  add(gw.monthly, "month", "bud:gw:m", "the gateway's monthly budget", gw.soft);
}
