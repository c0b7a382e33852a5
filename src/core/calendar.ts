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

/** Epoch ms of a local wall-clock midnight. */
function localMidnight(year: number, month: number, day: number, timeZone: string): number {
  const guess = Date.UTC(year, month - 1, day);
  const first = guess - offset(guess, timeZone);
  return guess - offset(first, timeZone);
}

/** The last period computed per unit and zone, reused until it ends: Intl formatting is slow. */
const cache = new Map<string, Period & { startsAt: number }>();

export function period(unit: "day" | "month", now: number, timeZone: string): Period {
  const id = `${unit}|${timeZone}`;
  const hit = cache.get(id);
  if (hit && now >= hit.startsAt && now < hit.resetsAt) return { key: hit.key, resetsAt: hit.resetsAt };
  const computed = computePeriod(unit, now, timeZone);
  cache.set(id, computed);
  return { key: computed.key, resetsAt: computed.resetsAt };
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
