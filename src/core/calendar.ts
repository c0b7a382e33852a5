/**
 * Calendar periods for plan budgets: "daily" and "monthly" reset at local midnight in the
 * configured time zone, not 24 hours after the first request.
 */
export interface Period {
  /** e.g. "2026-11-28" or "2026-11"; part of the counter key, so a new period is a new counter. */
  key: string;
  /** Epoch ms when the next period starts. */
  resetsAt: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function parts(ms: number, timeZone: string) {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    formatters.set(timeZone, f);
  }
  const p: Record<string, number> = {};
  for (const { type, value } of f.formatToParts(ms)) if (type !== "literal") p[type] = Number(value);
  return p as { year: number; month: number; day: number; hour: number; minute: number; second: number };
}

/** Offset of `timeZone` from UTC at `ms`, in ms. */
function offset(ms: number, timeZone: string): number {
  const p = parts(ms, timeZone);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
}

const DAY_MS = 86_400_000;

/**
 * Epoch ms when a local calendar day begins: its wall-clock midnight, or, where a DST change skips
 * midnight (America/Santiago in September), the first instant the clock shows that day. Where
 * midnight happens twice (a change back at 01:00), the first. Offsets a day either side bound
 * every zone's changes, which never come closer together than that.
 */
function localMidnight(year: number, month: number, day: number, timeZone: string): number {
  const guess = Date.UTC(year, month - 1, day);
  let first = Infinity;
  for (const o of new Set([offset(guess - DAY_MS, timeZone), offset(guess + DAY_MS, timeZone)])) {
    // The clock reads 00:00:00 at guess - o exactly when the offset there is o.
    if (offset(guess - o, timeZone) === o) first = Math.min(first, guess - o);
  }
  if (first !== Infinity) return first;
  // Midnight was skipped: the day begins at the change, found by bisection between the offsets.
  const target = Date.UTC(year, month - 1, day);
  let lo = guess - offset(guess + DAY_MS, timeZone);
  let hi = guess - offset(guess - DAY_MS, timeZone);
  if (lo > hi) [lo, hi] = [hi, lo];
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const p = parts(mid, timeZone);
    if (Date.UTC(p.year, p.month - 1, p.day) >= target) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** The last period computed per zone, one map per unit, reused until it ends: Intl formatting is slow. */
const days = new Map<string, Period & { startsAt: number }>();
const months = new Map<string, Period & { startsAt: number }>();

/**
 * The period holding `now`, with when it began (a burn rate is measured from it). The object is
 * shared until the period ends: read it, never change it. Budget counters are built twice per
 * request, so this is one map lookup, without a key string or a copy.
 */
export function periodOf(unit: "day" | "month", now: number, timeZone: string): Readonly<Period & { startsAt: number }> {
  const cache = unit === "day" ? days : months;
  const hit = cache.get(timeZone);
  if (hit && now >= hit.startsAt && now < hit.resetsAt) return hit;
  const computed = computePeriod(unit, now, timeZone);
  cache.set(timeZone, computed);
  return computed;
}

export function period(unit: "day" | "month", now: number, timeZone: string): Period {
  const p = periodOf(unit, now, timeZone);
  return { key: p.key, resetsAt: p.resetsAt };
}

/** When the period that holds `now` began: a burn rate is measured from it. */
export function periodStart(unit: "day" | "month", now: number, timeZone: string): number {
  return periodOf(unit, now, timeZone).startsAt;
}

function computePeriod(unit: "day" | "month", now: number, timeZone: string): Period & { startsAt: number } {
  const p = parts(now, timeZone);
  const mm = String(p.month).padStart(2, "0");
  if (unit === "day") {
    return { key: `${p.year}-${mm}-${String(p.day).padStart(2, "0")}`, startsAt: localMidnight(p.year, p.month, p.day, timeZone), resetsAt: localMidnight(p.year, p.month, p.day + 1, timeZone) };
  }
  return { key: `${p.year}-${mm}`, startsAt: localMidnight(p.year, p.month, 1, timeZone), resetsAt: localMidnight(p.year, p.month + 1, 1, timeZone) };
}

/** A window long enough to hold a whole period: the key changes before it can slide. */
export const PERIOD_WINDOW_MS = 32 * 86_400_000;
