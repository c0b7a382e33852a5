import type { Exchange, HeldCounter } from "./exchange.js";
import type { GateEnv } from "./gate.js";
import { budgetCounters } from "./gates/budget.js";
import { appliesTo, describeLimit, limitKey, limitWindowMs } from "./gates/scope.js";
import type { Counter, CounterDetail, Store } from "./store.js";

/** One budget that applies to the caller: money over a calendar period. */
export interface BudgetStatus {
  /** "plan free daily budget", "the gateway's daily budget". */
  name: string;
  limit_usd: number;
  /** Settled spend: what requests that ended were charged. */
  used_usd: number;
  /** Held by requests still in flight, until they settle at their actual cost. */
  reserved_usd: number;
  /** limit − used − reserved, never below 0. */
  remaining_usd: number;
  /** When the period ends and the budget starts again (ISO 8601, UTC): midnight in `timezone`. */
  resets_at: string | null;
  /** The IANA zone whose calendar day / month this budget follows; null for a lifetime cap. */
  timezone: string | null;
  /** Spend past which the caller is under budget pressure (the `soft` share); null without one. */
  soft_usd: number | null;
  /** ok; soft: past the soft share (cheaper model served); exhausted: nothing left (402). */
  state: BudgetState;
}

export type BudgetState = "ok" | "soft" | "exhausted";

/** Where a budget stands at this total: the same comparisons gates 3 and 6 make. */
export function budgetState(max: number, softAt: number | undefined, total: number): BudgetState {
  if (total >= max) return "exhausted";
  return softAt !== undefined && total >= softAt ? "soft" : "ok";
}

/** One route limit that applies to the caller. */
export interface LimitStatus {
  /** The limit's id in the config ("chat.0"), as in RateLimit headers and refusals. */
  id: string;
  description: string;
  per: string;
  unit: string;
  limit: number;
  /** Settled in the sliding window (for `concurrent`, always 0: a slot is only ever reserved). */
  used: number;
  /** Held by requests still in flight (for `concurrent`, the requests open now). */
  reserved: number;
  /** limit − used − reserved, never below 0. */
  remaining: number;
  /** The sliding window, in seconds; null for `concurrent`. */
  window_s: number | null;
}

/** What `GET {path}/v1/me` answers: who the caller is and how much it has left on this route. */
export interface QuotaReport {
  user: string;
  plan: string;
  key_id: string | null;
  verified: boolean;
  route: string;
  budgets: BudgetStatus[];
  limits: LimitStatus[];
}

const usd = (micros: number) => micros / 1e6;

/**
 * Counters' totals with the part requests in flight hold, in one store round trip: a store that
 * cannot tell them apart (no peekDetail) has its totals taken as settled.
 */
export async function peekReserved(store: Store, counters: Pick<Counter, "key" | "windowMs">[]): Promise<CounterDetail[]> {
  if (store.peekDetail) return store.peekDetail(counters);
  return (await store.peek(counters)).map((total) => ({ total, reserved: 0 }));
}

/** A budget counter at this total, as /v1/me, `tollgate budgets` and the dashboard show it. */
export function budgetStatus(b: HeldCounter, { total, reserved }: CounterDetail): BudgetStatus {
  return {
    name: b.label,
    limit_usd: usd(b.max),
    used_usd: usd(total - reserved),
    reserved_usd: usd(reserved),
    remaining_usd: usd(Math.max(0, b.max - total)),
    resets_at: b.resetsAt !== undefined ? new Date(b.resetsAt).toISOString() : null,
    timezone: b.timezone ?? null,
    soft_usd: b.softAt !== undefined ? usd(b.softAt) : null,
    state: budgetState(b.max, b.softAt, total),
  };
}

/**
 * The caller's budgets and limits on one route, read in one store round trip (a peek: nothing is
 * reserved or recorded), settled spend apart from what requests in flight hold. The identity and abuse gates have run, so operator overrides apply.
 */
export async function quotaReport(ex: Exchange, env: GateEnv): Promise<QuotaReport> {
  const id = ex.identity!;
  const budgets = budgetCounters(ex, env, 0);
  const limits = ex.route.limits.filter((l) => appliesTo(l, ex));
  const totals = await peekReserved(env.store, [
    ...budgets,
    ...limits.map((l) => ({ key: limitKey(l, ex), windowMs: limitWindowMs(l, ex) })),
  ]);
  return {
    user: id.user,
    plan: id.plan,
    key_id: id.keyId,
    verified: id.verified,
    route: ex.route.name,
    budgets: budgets.map((b, i) => budgetStatus(b, totals[i]!)),
    limits: limits.map((l, i) => {
      const { total, reserved } = totals[budgets.length + i]!;
      const money = l.unit === "usd";
      const amount = (micros: number) => (money ? usd(micros) : micros);
      return {
        id: l.id,
        description: describeLimit(l, money ? `$${usd(l.max)}` : `${l.max} ${l.unit}`),
        per: l.per,
        unit: l.unit,
        limit: money ? usd(l.max) : l.max,
        used: amount(total - reserved),
        reserved: amount(reserved),
        remaining: amount(Math.max(0, l.max - total)),
        window_s: l.unit === "concurrent" ? null : Math.round(l.windowMs / 1000),
      };
    }),
  };
}
