import { TollgateError } from "../errors.js";
import { leaseMs, type Gate, type GateEnv } from "../gate.js";
import type { Exchange, HeldCounter } from "../exchange.js";
import type { ReserveResult } from "../store.js";
import { fireSignal } from "./abuse.js";
import { budgetTotalsSeen } from "../alerts.js";
import { budgetCounters, budgetRefusal, cheapestCall, pastSoft } from "./budget.js";
import { checkRunAge, runLimit, startRunIfNew, stepCounters } from "./runs.js";
import { rateLimitState, requestWindows, type CallerWindows } from "./request-windows.js";

const NO_COUNTERS: HeldCounter[] = [];

/** Riding a window to within 10% of its limit is a signal; tiny limits fill up innocently. */
const BURST_SHARE = 0.9;
const BURST_MIN_LIMIT = 5;

/**
 * Gate 3: request-count windows and the run's step counters, reserved. Also a cheap "budget
 * already spent" check when the body is not read yet (the library's app requests have none):
 * once it is, gate 6 reserves the budget anyway.
 */
export const quota: Gate = async function quota(ex, env) {
  const windows = requestWindows(ex);
  const limits = windows.counters;
  const steps = stepCounters(ex);
  const counters = steps.length ? [...limits, ...steps] : limits;

  // The spent-budget check reserves nothing, so it runs alongside the window reservation: one
  // store round trip on the admission path instead of two.
  const spent = ex.quotaDeferred ? NO_COUNTERS : budgetCounters(ex, env, 0);
  const spentTotals = spent.length ? env.store.peek(spent) : undefined;
  spentTotals?.catch(() => {});

  if (counters.length) {
    const id = `${ex.id}:q`;
    // A window this process just saw full refuses without the store (RecentTotals.noteFull).
    const known = env.recent.refusal(counters);
    if (known) throw windowRefusal(ex, counters, known);
    const result = await env.store.reserve(id, counters, leaseMs(ex), true);
    if (!result.ok) throw windowRefusal(ex, counters, result, env);
    env.recent.note(counters, result.totals);
    ex.quota = { id, counters };
    const burst = windowsTaken(ex, env, windows, result.totals);
    if (burst) await burst;
    if (steps.length) {
      const step = result.totals[limits.length]!;
      ex.record.run_step = step;
      checkRunAge(ex, steps, result.totals.slice(limits.length), step, steps[0]!.amount);
      await startRunIfNew(ex, env, step, steps[0]!.amount);
    }
  }

  // Refuse a caller whose budget is already gone without reading the body. An app request has no
  // body to size: it needs what its cheapest model call would reserve.
  if (spentTotals) {
    const totals = await spentTotals;
    const need = ex.caller.library ? cheapestCall(ex, env) : 0;
    const full = totals.findIndex((t, i) => t >= spent[i]!.max || t + need > spent[i]!.max);
    if (full >= 0) throw budgetRefusal(spent[full]!, totals[full]!, need, env.now());
    ex.budgetPressure = pastSoft(spent, totals);
    budgetTotalsSeen(ex, env, spent, totals);
  }
};

/**
 * Gate 3 while the body has not arrived yet (the gateway): refuses a caller whose windows or
 * budget are already full, without reading the body, but holds nothing — a slow or stalled body
 * must not keep a slot that a paying caller could use (SPEC §7.8). The reservation itself is
 * taken by `quota` once the body is in (`ex.quotaDeferred`). One store round trip, a peek.
 */
export const quotaPeek: Gate = function quotaPeek(ex, env) {
  const limits = requestWindows(ex).counters;
  // Most routes keep no runs: no step counters to build or filter.
  const steps = ex.route.runs ? stepCounters(ex).filter((c) => c.unit !== "runs") : NO_COUNTERS;
  const counters = steps.length ? limits.concat(steps) : limits;
  // Budget counters are all usd: the ones a spent check reads.
  const spent = budgetCounters(ex, env, 0);
  ex.quotaDeferred = true;
  if (!counters.length && !spent.length) return;
  // A request window this process just found full refuses as the store would, without it.
  if (env.recent.anyFull) knownFull(ex, env, counters);
  const all = spent.length ? counters.concat(spent) : counters;
  // Plenty of room by this process's recent totals (an upper bound, see RecentTotals): no store
  // trip, and no promise either.
  const totals = env.recent.totals(all);
  if (totals && hasRoom(counters, spent, totals)) return spentSeen(ex, env, counters, spent, totals);
  return peekStore(ex, env, counters, spent, all);
};

/** quotaPeek's store trip: a peek, and a reservation to name a window that looks full. */
async function peekStore(ex: Exchange, env: GateEnv, counters: readonly HeldCounter[], spent: HeldCounter[], all: readonly HeldCounter[]): Promise<void> {
  const totals = await env.store.peek(all);
  env.recent.note(all, totals);
  if (counters.some((c, i) => totals[i]! + c.amount > c.max)) {
    // Full, as far as a peek can tell: a reservation (which holds nothing when refused) names the
    // counter and how long until it has room. Should a slot have freed meanwhile, give it back.
    const id = `${ex.id}:p`;
    const result = await env.store.reserve(id, counters, leaseMs(ex), true);
    if (!result.ok) throw windowRefusal(ex, counters, result, env);
    await env.store.release(id);
  }
  spentSeen(ex, env, counters, spent, totals);
}

/** quotaPeek's verdict on the budgets at these totals (the windows' first): spent, or under pressure. */
function spentSeen(ex: Exchange, env: GateEnv, counters: readonly HeldCounter[], spent: HeldCounter[], totals: number[]): void {
  const full = spent.findIndex((c, i) => totals[counters.length + i]! >= c.max);
  if (full >= 0) {
    const used = totals[counters.length + full]!;
    throw budgetRefusal(spent[full]!, used, 0, env.now());
  }
  if (!spent.length) return;
  const spentTotals = totals.slice(counters.length);
  ex.budgetPressure = pastSoft(spent, spentTotals);
  budgetTotalsSeen(ex, env, spent, spentTotals);
}

/**
 * Gate 3's windows took this request, at these totals (the windows' counters first): the RateLimit
 * headers say what is left, and riding a window to its brim is a signal. `signalAt`: where in
 * `ex.signals` gate 3's signal goes when gates after it already ran (a joint reservation), so the
 * record lists signals in gate order whichever way the reservation was taken.
 */
export function windowsTaken(ex: Exchange, env: GateEnv, windows: CallerWindows, totals: readonly number[], signalAt?: number): Promise<void> | undefined {
  if (windows.policy) {
    ex.headers["ratelimit-policy"] = windows.policy;
    ex.headers["ratelimit"] = rateLimitState(windows, totals);
  }
  const limits = windows.counters;
  if (!limits.some((c, i) => c.unit === "requests" && c.max >= BURST_MIN_LIMIT && totals[i]! >= BURST_SHARE * c.max)) return undefined;
  const before = ex.signals.length;
  // fireSignal names the signal before its first await.
  const fired = fireSignal(ex, env, "burst_under_limit");
  if (signalAt !== undefined && signalAt < before && ex.signals.length > before) ex.signals.splice(signalAt, 0, ex.signals.pop()!);
  return fired;
}

/**
 * Every window fits one more request and no budget is spent or past its soft share, at these
 * totals (counters, then budgets). An upper bound below the soft share is below it in the store
 * too; at or above it, only the store can say whether the caller is under pressure (a model
 * downgrade, an alert), so the check asks it.
 */
function hasRoom(counters: readonly HeldCounter[], spent: HeldCounter[], totals: number[]): boolean {
  return (
    counters.every((c, i) => totals[i]! + c.amount <= c.max) &&
    spent.every((c, i) => totals[counters.length + i]! < Math.min(c.max, c.softAt ?? Infinity))
  );
}

/**
 * Gate 3's refusal from this process's memory of full request windows, before any store trip.
 * Throws it; returns when only the store can tell.
 */
function knownFull(ex: Exchange, env: GateEnv, counters: readonly HeldCounter[]): void {
  const full = env.recent.refusal(counters);
  if (full) throw windowRefusal(ex, counters, full);
}

/**
 * The refusal for a window reservation that did not fit, with RateLimit headers naming it. Given
 * `env`, the store's answer is remembered, so the next request for this window is refused without
 * the store (RecentTotals.noteFull); an answer that came from that memory is not noted again. Not
 * an in-flight window: its slot frees whenever a request ends, in any process.
 */
export function windowRefusal(ex: Pick<Exchange, "headers">, counters: readonly HeldCounter[], result: Extract<ReserveResult, { ok: false }>, env?: GateEnv): TollgateError {
  const c = counters[result.index]!;
  // Only a request window's total stays put: each request it holds settles at the 1 it reserved.
  // A budget's or a token window's holds are estimates that settle lower, in any process, so a
  // total seen full can have room a moment later (two gateways on one org budget admitted a
  // quarter of what fitted while one remembered the other's holds).
  if (c.unit === "requests") env?.recent.noteFull(c.key, result.used, result.retryAfterMs, c.amount);
  if (c.unit === "steps" || c.unit === "tool_calls") return runLimit(`this run has reached ${c.label}`);
  // An in-flight slot frees when some request ends, which no store can foresee: try again soon.
  const retry = c.unit === "concurrent" ? 1 : Math.max(1, Math.ceil((result.retryAfterMs ?? c.windowMs) / 1000));
  rateLimitHeaders(ex.headers, counters, counters.map((x) => (x === c ? x.max : 0)));
  if (c.unit === "requests") ex.headers["ratelimit"] = `"${c.limitId}";r=0;t=${retry}`;
  return new TollgateError("rate_limited", `rate limited by ${c.label}; retry in ${retry}s`, { retryAfterSeconds: retry, limit: c.limitId });
}

/** The last early 429 of a caller's windows: the same counter and wait give the same refusal. */
const lastFull = new WeakMap<readonly HeldCounter[], { index: number; retry: number; refusal: { error: TollgateError; headers: Readonly<Record<string, string>> } }>();

/**
 * windowRefusal for a window known full (RecentTotals.refusal), for a refusal answered before an
 * exchange: made once per counter and wait in seconds and frozen, so a flood's 429s share one
 * error, header set and serialised body (the gateway renders a frozen refusal once per API).
 */
export function knownWindowRefusal(counters: readonly HeldCounter[], result: Extract<ReserveResult, { ok: false }>): { error: TollgateError; headers: Readonly<Record<string, string>> } {
  const c = counters[result.index]!;
  const retry = c.unit === "concurrent" ? 1 : Math.max(1, Math.ceil((result.retryAfterMs ?? c.windowMs) / 1000));
  const last = lastFull.get(counters);
  if (last && last.index === result.index && last.retry === retry) return last.refusal;
  const headers: Record<string, string> = {};
  const error = Object.freeze(windowRefusal({ headers }, counters, result));
  const refusal = { error, headers: Object.freeze(headers) };
  lastFull.set(counters, { index: result.index, retry, refusal });
  return refusal;
}

/** IETF RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers), for request windows. */
function rateLimitHeaders(headers: Record<string, string>, counters: readonly HeldCounter[], totals: number[]): void {
  const policy: string[] = [];
  const state: string[] = [];
  counters.forEach((c, i) => {
    if (c.unit !== "requests") return;
    policy.push(`"${c.limitId}";q=${c.max};w=${Math.ceil(c.windowMs / 1000)}`);
    state.push(`"${c.limitId}";r=${Math.max(0, c.max - totals[i]!)};t=${Math.ceil(c.windowMs / 1000)}`);
  });
  if (!policy.length) return;
  headers["ratelimit-policy"] = policy.join(", ");
  headers["ratelimit"] = state.join(", ");
}
