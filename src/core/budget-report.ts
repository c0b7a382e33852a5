import type { ResolvedConfig } from "./config-types.js";
import { formatDuration } from "./duration.js";
import { gatewayBudgets, keyBudgets, orgBudgets, userBudgets } from "./budget-levels.js";
import type { HeldCounter } from "./exchange.js";
import { readBudgetOverrides, type BudgetOverride, type BudgetSubject } from "./policy.js";
import { budgetState, budgetStatus, peekReserved, type BudgetState } from "./quota-report.js";
import type { Store } from "./store.js";
import type { UsageRecord } from "./usage-record.js";
import { recordMicros } from "./usage-report.js";

export type BudgetLevel = "gateway" | "route" | "org" | "user" | "key";

/** One budget of one subject, as `tollgate budgets` and the dashboard show it. */
export interface BudgetLevelRow {
  level: BudgetLevel;
  /** The org, user or key id; the route's name; null for the gateway. */
  subject: string | null;
  /** "daily", "monthly", "total", or a route limit's window ("1h"). */
  period: string;
  /** What a 402 calls it: "org acme's daily budget (set by the operator)". */
  name: string;
  limit_usd: number;
  /** Settled spend; null (as the two below) where the limit counts each caller apart. */
  used_usd: number | null;
  /** Held by requests still in flight. */
  reserved_usd: number | null;
  remaining_usd: number | null;
  resets_at: string | null;
  timezone: string | null;
  soft_usd: number | null;
  state: BudgetState | null;
  /** When an operator's override of this subject lapses; null: none, or one without an end. */
  until: string | null;
}

const usd = (micros: number) => micros / 1e6;

/**
 * Every budget level and where it stands, in two store round trips (overrides, then totals): the
 * gateway's, each route's usd limits, every org, the users seen in `records` (the `topUsers` who
 * spent most), and every key that has a budget of its own or an override.
 */
export async function budgetReport(config: ResolvedConfig, store: Store, records: UsageRecord[], opts: { now?: number; topUsers?: number } = {}): Promise<BudgetLevelRow[]> {
  const now = opts.now ?? store.clock?.() ?? Date.now();
  const users = topUsers(records, opts.topUsers ?? 20);
  const live = (await store.listKeys()).filter((k) => !k.revokedAt && !(k.expiresAt !== undefined && k.expiresAt <= now));
  const keys = [...config.keys, ...live].map((k) => ({ id: k.id, budget: k.budget, org: k.org, plan: k.plan }));
  const orgs = Object.keys(config.orgs);

  const subjects: BudgetSubject[] = [...orgs.map((id) => ({ kind: "org" as const, id })), ...users.map((u) => ({ kind: "user" as const, id: u.user })), ...keys.map((k) => ({ kind: "key" as const, id: k.id }))];
  const overrides = await readBudgetOverrides(store, subjects);
  const overrideOf = (kind: BudgetSubject["kind"], id: string): BudgetOverride | undefined => overrides[subjects.findIndex((s) => s.kind === kind && s.id === id)];

  const rows: { level: BudgetLevel; subject: string | null; counter: HeldCounter; until?: number }[] = [];
  const collect = (level: BudgetLevel, subject: string | null, override: BudgetOverride | undefined, build: (out: HeldCounter[]) => void) => {
    const out: HeldCounter[] = [];
    build(out);
    for (const counter of out) rows.push({ level, subject, counter, until: counter.label.endsWith("(set by the operator)") ? override?.until : undefined });
  };
  collect("gateway", null, undefined, (out) => gatewayBudgets(out, config, now, 0));
  for (const id of orgs) collect("org", id, overrideOf("org", id), (out) => orgBudgets(out, config, id, overrideOf("org", id), now, 0));
  for (const u of users) collect("user", u.user, overrideOf("user", u.user), (out) => userBudgets(out, config, u.plan, false, u.user, overrideOf("user", u.user), now, 0));
  for (const k of keys) collect("key", k.id, overrideOf("key", k.id), (out) => keyBudgets(out, config, k, overrideOf("key", k.id), now, 0));

  // A route's usd limit is one counter only when it counts the whole route; per-caller ones are listed without usage.
  const routeLimits = config.routes.flatMap((r) => r.limits.filter((l) => l.unit === "usd").map((l) => ({ route: r.name, l })));
  const shared = routeLimits.filter(({ l }) => l.per === "route");
  const totals = await peekReserved(store, [...rows.map((r) => r.counter), ...shared.map(({ l }) => ({ key: `lim:${l.id}:*`, windowMs: l.windowMs }))]);

  const out: BudgetLevelRow[] = rows.map(({ level, subject, counter: c, until }, i) => ({
    level,
    subject,
    period: c.period ?? "total",
    ...budgetStatus(c, totals[i]!),
    until: until !== undefined ? new Date(until).toISOString() : null,
  }));
  for (const { route, l } of routeLimits) {
    const j = shared.findIndex((s) => s.l === l);
    const detail = j >= 0 ? totals[rows.length + j]! : undefined;
    const used = detail?.total;
    out.push({
      level: "route",
      subject: route,
      period: formatDuration(l.windowMs),
      name: `limit ${l.id} ($${usd(l.max)} per ${formatDuration(l.windowMs)} ${l.per === "route" ? "for the whole route" : `per ${l.per}`})`,
      limit_usd: usd(l.max),
      used_usd: detail === undefined ? null : usd(detail.total - detail.reserved),
      reserved_usd: detail === undefined ? null : usd(detail.reserved),
      remaining_usd: used === undefined ? null : usd(Math.max(0, l.max - used)),
      resets_at: null,
      timezone: null,
      soft_usd: null,
      state: used === undefined ? null : budgetState(l.max, undefined, used),
      until: null,
    });
  }
  return out;
}

/** Users seen in the records (not anonymous callers), most spend first, each with its latest plan. */
function topUsers(records: UsageRecord[], n: number): { user: string; plan: string }[] {
  const seen = new Map<string, { plan: string; spent: number }>();
  for (const r of records) {
    if (!r.user || !r.plan || r.plan === "anonymous") continue;
    const u = seen.get(r.user);
    seen.set(r.user, { plan: r.plan, spent: (u?.spent ?? 0) + recordMicros(r) });
  }
  return [...seen.entries()]
    .sort((a, b) => b[1].spent - a[1].spent)
    .slice(0, n)
    .map(([user, { plan }]) => ({ user, plan }));
}
