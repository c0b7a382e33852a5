import type { TollgateError } from "./errors.js";
import type { Exchange, HeldCounter } from "./exchange.js";
import type { GateEnv } from "./gate.js";
import type { UsageRecord } from "./usage-record.js";

/** What a webhook may subscribe to (`alerts.webhooks[].events`). */
export const ALERT_TYPES = ["budget.soft", "budget.exhausted", "budget.burn_rate", "abuse.downgrade", "abuse.block"] as const;
export type AlertType = (typeof ALERT_TYPES)[number];

/**
 * Something an operator wants to hear about, decided by the engine. `id` is deterministic: every
 * process that notices the same crossing names it the same, so the outbox sends it once.
 */
export interface Alert {
  id: string;
  type: AlertType;
  /** Engine clock, epoch ms. */
  at: number;
  data: Record<string, unknown>;
}

/**
 * The engine's one hook to the outside: alerts as they are decided, and each served request's
 * usage record before it is logged. The runtime puts them in the store's outbox; nothing here
 * knows HTTP.
 */
export interface EngineEvents {
  /** Must not throw or block: the request goes on. */
  alert(alert: Alert): void;
  /** Resolves once the record is durably queued for export; the engine waits for it with the store write. */
  usage?(record: UsageRecord): Promise<void>;
}

/** Budgets of which at least this share is spent can raise budget.burn_rate: one early call projects nothing. */
export const BURN_RATE_MIN_SHARE = 0.1;

type Level = "user" | "org" | "key" | "gateway" | "route";

interface BudgetRef {
  level: Level;
  /** "user:alice", "ip:203.0.113.7", "org:acme", "key:k_1", "gateway", "route:chat.2:user:alice". */
  subject: string;
  period: "daily" | "monthly" | "total" | "window";
  /** The period's name: "2026-12-07", "2026-12", "lifetime", or the window's start. */
  periodKey: string;
}

const scopeSubject = (s: string) => (s.startsWith("u:") ? `user:${s.slice(2)}` : s.startsWith("k:") ? `key:${s.slice(2)}` : s.startsWith("p:") ? `plan:${s.slice(2)}` : s);

/** Which budget a counter is, from its key (gates/budget.ts names them). */
export function budgetRef(c: HeldCounter, now: number): BudgetRef | undefined {
  const k = c.key;
  const tail = (rest: string) => {
    const cut = rest.lastIndexOf(":");
    return { who: rest.slice(0, cut), periodKey: rest.slice(cut + 1) };
  };
  const periodOf = (p: string) => (p === "d" ? "daily" : "monthly") as "daily" | "monthly";
  let m: RegExpExecArray | null;
  if ((m = /^bud:gw:([dm]):(.+)$/.exec(k))) return { level: "gateway", subject: "gateway", period: periodOf(m[1]!), periodKey: m[2]! };
  if ((m = /^bud:o:([dm]):(.+)$/.exec(k))) {
    const t = tail(m[2]!);
    return { level: "org", subject: `org:${t.who}`, period: periodOf(m[1]!), periodKey: t.periodKey };
  }
  if ((m = /^bud:k:t:(.+)$/.exec(k))) return { level: "key", subject: `key:${m[1]}`, period: "total", periodKey: "lifetime" };
  if ((m = /^bud:k:([dm]):(.+)$/.exec(k))) {
    const t = tail(m[2]!);
    return { level: "key", subject: `key:${t.who}`, period: periodOf(m[1]!), periodKey: t.periodKey };
  }
  if ((m = /^bud:([dm]):(.+)$/.exec(k))) {
    const t = tail(m[2]!);
    return { level: "user", subject: scopeSubject(t.who), period: periodOf(m[1]!), periodKey: t.periodKey };
  }
  if (c.unit === "usd" && (m = /^lim:([^:]+):(.+)$/.exec(k))) {
    const start = Math.floor(now / c.windowMs) * c.windowMs;
    return { level: "route", subject: `route:${m[1]}:${scopeSubject(m[2]!)}`, period: "window", periodKey: new Date(start).toISOString() };
  }
  return undefined;
}

const usd = (micros: number) => micros / 1e6;

function budgetAlert(type: AlertType, ex: Exchange, c: HeldCounter, ref: BudgetRef, spent: number, now: number, extra: Record<string, unknown> = {}): Alert {
  const id = ex.identity;
  return {
    id: `${type}:${ref.subject}:${ref.period}:${ref.periodKey}`,
    type,
    at: now,
    data: {
      level: ref.level,
      subject: ref.subject,
      budget: c.label,
      period: ref.period,
      period_key: ref.periodKey,
      limit_usd: usd(c.max),
      spent_usd: usd(Math.max(0, spent)),
      soft_usd: c.softAt !== undefined ? usd(c.softAt) : null,
      resets_at: c.resetsAt !== undefined ? new Date(c.resetsAt).toISOString() : null,
      ...extra,
      user: id?.user ?? null,
      org: id?.org ?? null,
      key_id: id?.keyId ?? null,
      plan: id?.plan ?? null,
      route: ex.route.name,
      request_id: ex.id,
    },
  };
}

/**
 * budget.soft and budget.burn_rate from budget totals that are spent (or reserved by requests in
 * flight). Soft: the total reached the budget's `soft` share. Burn rate: a daily or monthly
 * budget at least BURN_RATE_MIN_SHARE spent, whose spent share is larger than the share of its
 * period gone by — the average rate so far, kept up, would spend it all before the period ends.
 */
function pressureAlerts(ex: Exchange, env: GateEnv, counters: HeldCounter[], totals: number[]): void {
  const sink = env.alerts;
  if (!sink) return;
  const now = env.now();
  counters.forEach((c, i) => {
    const spent = totals[i]!;
    if (c.unit !== "usd" || c.max <= 0) return;
    const softCrossed = c.softAt !== undefined && spent >= c.softAt;
    const burning = c.startsAt !== undefined && c.resetsAt !== undefined && spent < c.max && spent >= BURN_RATE_MIN_SHARE * c.max && spent * (c.resetsAt - c.startsAt) > c.max * (now - c.startsAt);
    if (!softCrossed && !burning) return;
    const ref = budgetRef(c, now);
    if (!ref) return;
    if (softCrossed) sink.alert(budgetAlert("budget.soft", ex, c, ref, spent, now, { share: c.softAt! / c.max }));
    if (burning) {
      // At the rate so far the budget is spent at startsAt + elapsed * max / spent.
      const exhaustsAt = c.startsAt! + Math.ceil(((now - c.startsAt!) * c.max) / spent);
      sink.alert(budgetAlert("budget.burn_rate", ex, c, ref, spent, now, { spent_share: spent / c.max, elapsed_share: (now - c.startsAt!) / (c.resetsAt! - c.startsAt!), projected_exhaustion_at: new Date(exhaustsAt).toISOString() }));
    }
  });
}

/** Gate 3 saw these budget totals (before this request): alert on them, and remember them for afterSettle. */
export function budgetTotalsSeen(ex: Exchange, env: GateEnv, counters: HeldCounter[], totals: number[]): void {
  if (!env.alerts) return;
  ex.budgetSeen = new Map(counters.map((c, i) => [c.key, totals[i]!]));
  pressureAlerts(ex, env, counters, totals);
}

/**
 * After a served request settled: if its reservation could have taken a budget past its soft share
 * that gate 3 saw below it, read the settled totals and alert on them, so the request that crosses
 * the line raises the alert (not the next one, which may never come). Only such requests pay the
 * extra read; a burn rate is a projection, and gate 3 looks at it on every request.
 */
export function afterSettle(ex: Exchange, env: GateEnv): Promise<void> | undefined {
  const held = ex.budget;
  if (!env.alerts || !held?.totals) return undefined;
  const seen = ex.budgetSeen;
  const candidates = held.counters.filter((c, i) => c.unit === "usd" && c.softAt !== undefined && held.totals![i]! >= c.softAt && (seen?.get(c.key) ?? 0) < c.softAt);
  // Most settled requests cross nothing: no read, and no promise for the engine to wait on.
  if (!candidates.length) return undefined;
  return alertCrossings(ex, env, candidates);
}

async function alertCrossings(ex: Exchange, env: GateEnv, candidates: HeldCounter[]): Promise<void> {
  pressureAlerts(ex, env, candidates, await env.store.peek(candidates));
}

/** What a 402 refused on, kept beside the error (budgetRefusal builds it; the engine reports it). */
const exhausted = new WeakMap<TollgateError, { counter: HeldCounter; used: number }>();

export function noteExhausted(err: TollgateError, counter: HeldCounter, used: number): TollgateError {
  exhausted.set(err, { counter, used });
  return err;
}

/** After a refusal: budget.exhausted for a 402, abuse.block for a block. */
export function refusalAlert(ex: Exchange, env: GateEnv, err: TollgateError): void {
  if (!env.alerts) return;
  const now = env.now();
  const hit = err.code === "budget_exceeded" ? exhausted.get(err) : undefined;
  if (hit) {
    const ref = budgetRef(hit.counter, now);
    if (ref) env.alerts.alert(budgetAlert("budget.exhausted", ex, hit.counter, ref, hit.used, now, { message: err.message }));
  } else if (err.code === "blocked") {
    abuseAlert(ex, env, "abuse.block");
  }
}

/** abuse.downgrade / abuse.block, at most one per caller and type in each `alerts.abuse_every` window. */
export function abuseAlert(ex: Exchange, env: GateEnv, type: "abuse.downgrade" | "abuse.block"): void {
  const id = ex.identity;
  if (!env.alerts) return;
  const now = env.now();
  const every = env.config.alerts.abuseEveryMs;
  const window = new Date(Math.floor(now / every) * every).toISOString();
  const subject = !id ? `ip:${ex.caller.ip}` : id.kind === "anonymous" ? `ip:${id.ipGroup}` : `user:${id.user}`;
  env.alerts.alert({
    id: `${type}:${subject}:${window}`,
    type,
    at: now,
    data: { subject, window_start: window, user: id?.user ?? null, ip: ex.caller.ip, key_id: id?.keyId ?? null, plan: id?.plan ?? null, route: ex.route.name, signals: [...ex.signals], request_id: ex.id },
  });
}
