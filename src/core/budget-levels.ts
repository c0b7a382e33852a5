import type { KeyBudget, ResolvedConfig } from "./config-types.js";
import { PERIOD_WINDOW_MS, periodOf, type Period } from "./calendar.js";
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

/** A calendar budget's counter as last built for one subject and level, reused while nothing it says changes. */
interface Built {
  period: Readonly<Period & { startsAt: number }>;
  max: Micros;
  label: string;
  soft: number | undefined;
  tz: string;
  /** With amount 0 (gate 3's spent check), and as last built with another amount (gate 6's estimate). */
  zero: HeldCounter;
  last: HeldCounter;
}

/** By the key's head ("bud:d:u:"), then the subject's name: no key string is built to look one up. */
const built = new Map<string, Map<string, Built>>();
let builtCount = 0;
/** Subjects remembered at most: a flood of distinct callers (anonymous IP groups) cannot grow memory. */
const MAX_BUILT = 10_000;

/**
 * Adds a calendar budget, keyed `${head}${name}:${period}`. Callers build its label only when it
 * has a cap: budget counters are built twice per request, and most levels have none. The counter
 * is shared while its period, cap, label, soft share and zone stay (counters are never changed
 * once built), so a caller's requests meet the same key string in the store and recent totals
 * (its hash computed once) and allocate no key or counter per request.
 */
function calendar(out: HeldCounter[], now: number, amount: Micros, tz: string, max: Micros, unit: "day" | "month", head: string, name: string, label: string, soft: number | undefined): void {
  const p = periodOf(unit, now, tz);
  let byName = built.get(head);
  if (byName === undefined) built.set(head, (byName = new Map()));
  let b = byName.get(name);
  if (b === undefined || b.period !== p || b.max !== max || b.label !== label || b.soft !== soft || b.tz !== tz) {
    if (b === undefined && ++builtCount > MAX_BUILT) {
      built.clear();
      built.set(head, byName);
      byName.clear();
      builtCount = 1;
    }
    const zero: HeldCounter = { key: `${head}${name}:${p.key}`, max, amount: 0, windowMs: PERIOD_WINDOW_MS, unit: "usd", label, resetsAt: p.resetsAt, timezone: tz, startsAt: p.startsAt, period: unit === "day" ? "daily" : "monthly", softAt: softAt(max, soft) };
    byName.set(name, (b = { period: p, max, label, soft, tz, zero, last: zero }));
  }
  if (amount === 0) return void out.push(b.zero);
  if (b.last.amount !== amount) b.last = { ...b.zero, amount };
  out.push(b.last);
}

/** A caller's per-user budgets: its plan's, or the operator's override. The subject is `u:USER` or `ip:GROUP`. */
export function userBudgets(out: HeldCounter[], config: ResolvedConfig, planName: string, anonymous: boolean, name: string, override: BudgetOverride | undefined, now: number, amount: Micros): void {
  const plan = config.plans[planName];
  const tz = plan?.timezone ?? config.timezone;
  const daily = override?.daily ?? plan?.budget.daily;
  if (daily !== undefined) calendar(out, now, amount, tz, daily, "day", anonymous ? "bud:d:ip:" : "bud:d:u:", name, override?.daily !== undefined ? "this caller's daily budget (set by the operator)" : planLabel(planName, "daily"), plan?.budget.soft);
  const monthly = override?.monthly ?? plan?.budget.monthly;
  if (monthly !== undefined) calendar(out, now, amount, tz, monthly, "month", anonymous ? "bud:m:ip:" : "bud:m:u:", name, override?.monthly !== undefined ? "this caller's monthly budget (set by the operator)" : planLabel(planName, "monthly"), plan?.budget.soft);
}

export function orgBudgets(out: HeldCounter[], config: ResolvedConfig, name: string, override: BudgetOverride | undefined, now: number, amount: Micros): void {
  const org = config.orgs[name];
  if (!org) return;
  const daily = override?.daily ?? org.budget.daily;
  if (daily !== undefined) calendar(out, now, amount, org.timezone, daily, "day", "bud:o:d:", name, `org ${name}'s daily budget${override?.daily !== undefined ? SET : ""}`, org.budget.soft);
  const monthly = override?.monthly ?? org.budget.monthly;
  if (monthly !== undefined) calendar(out, now, amount, org.timezone, monthly, "month", "bud:o:m:", name, `org ${name}'s monthly budget${override?.monthly !== undefined ? SET : ""}`, org.budget.soft);
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
  if (daily !== undefined) calendar(out, now, amount, tz, daily, "day", "bud:k:d:", key.id, `this key's daily budget${override?.daily !== undefined ? SET : ""}`, soft);
  const monthly = override?.monthly ?? key.budget?.monthly;
  if (monthly !== undefined) calendar(out, now, amount, tz, monthly, "month", "bud:k:m:", key.id, `this key's monthly budget${override?.monthly !== undefined ? SET : ""}`, soft);
  const max = override?.total ?? key.budget?.total;
  if (max === undefined) return;
  // A lifetime: one counter that never changes its key, over a window no key outlives.
  out.push({ key: `bud:k:t:${key.id}`, max, amount, windowMs: LIFETIME_MS, unit: "usd", label: `this key's total budget${override?.total !== undefined ? SET : ""}`, period: "total", softAt: softAt(max, soft) });
}

export function gatewayBudgets(out: HeldCounter[], config: ResolvedConfig, now: number, amount: Micros): void {
  const gw = config.budget;
  if (gw.daily !== undefined) calendar(out, now, amount, config.timezone, gw.daily, "day", "bud:gw:d", "", "the gateway's daily budget", gw.soft);
  if (gw.monthly !== undefined) calendar(out, now, amount, config.timezone, gw.monthly, "month", "bud:gw:m", "", "the gateway's monthly budget", gw.soft);
}
