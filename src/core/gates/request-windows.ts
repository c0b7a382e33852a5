import type { ResolvedLimit, ResolvedRoute } from "../config-types.js";
import type { Exchange, HeldCounter } from "../exchange.js";
import type { Identity } from "../identity.js";
import { appliesTo, limitKey, limitLabel, limitWindowMs, scopeValue, type LimitCaller } from "./scope.js";

/**
 * A caller's request and in-flight windows on a route, and what its RateLimit headers say of them.
 * They depend only on the caller's identity and the route, so a caller's requests share one
 * (read-only) set: no counter objects, key strings or arrays per request, and the stores and
 * recent totals meet the same key strings each time (their hashes already computed).
 */
export interface CallerWindows {
  readonly counters: readonly HeldCounter[];
  /** The RateLimit-Policy header; "" when no window counts requests. */
  readonly policy: string;
  /** Per counter counting requests: its RateLimit item up to `r=` and after the number; else undefined. */
  readonly stateHead: readonly (string | undefined)[];
  readonly stateTail: readonly (string | undefined)[];
}

/** A level of the cache: one per applicable limit, keyed by what the limit counts this caller by. */
type Level = Map<string, Level | CallerWindows>;

interface RouteWindows {
  /** The route's request windows, then its in-flight ones (the order counters and headers take). */
  readonly limits: readonly ResolvedLimit[];
  /** Named callers and anonymous ones apart, so a user and an IP group of the same name never meet. */
  levels: [Level, Level];
  size: number;
}

/** Callers remembered per route at most: a flood of distinct IPs cannot grow memory. */
const MAX_CALLERS = 10_000;
const NONE: CallerWindows = { counters: [], policy: "", stateHead: [], stateTail: [] };
const routes = new WeakMap<ResolvedRoute, RouteWindows>();

/**
 * This request's windows: built once per caller and route, then looked up with a few map reads.
 * Kept on `ex` (an exchange, or the route and identity alone: a refusal answered before one).
 */
export function requestWindows(ex: LimitCaller & Pick<Exchange, "windows">): CallerWindows {
  let windows = ex.windows;
  if (windows) return windows;
  let route = routes.get(ex.route);
  if (!route) {
    const limits = [...ex.route.limits.filter((l) => l.unit === "requests"), ...ex.route.limits.filter((l) => l.unit === "concurrent")];
    routes.set(ex.route, (route = { limits, levels: [new Map(), new Map()], size: 0 }));
  }
  if (!route.limits.length) return (ex.windows = NONE);
  const id = ex.identity!;
  let level = route.levels[id.kind === "anonymous" ? 1 : 0];
  // The plan decides which limits apply; then one level per limit that does.
  let name = id.plan;
  for (const limit of route.limits) {
    if (!appliesTo(limit, ex)) continue;
    let next = level.get(name) as Level | undefined;
    if (!next) level.set(name, (next = new Map()));
    level = next;
    name = scopeName(limit, id, ex);
  }
  windows = level.get(name) as CallerWindows | undefined;
  if (!windows) {
    if (++route.size > MAX_CALLERS) {
      route.levels = [new Map(), new Map()];
      route.size = 1;
      return (ex.windows = build(route.limits, ex));
    }
    level.set(name, (windows = build(route.limits, ex)));
  }
  return (ex.windows = windows);
}

/** What a limit counts this caller by, without building its key: the identity's own strings where they say it alone. */
function scopeName(limit: ResolvedLimit, id: Identity, ex: LimitCaller): string {
  switch (limit.per) {
    case "user":
      return id.kind === "anonymous" ? id.ipGroup : id.user;
    case "ip":
      return id.ipGroup;
    case "plan":
      return id.plan;
    case "route":
      return "";
    default:
      return scopeValue(limit.per, ex);
  }
}

function build(limits: readonly ResolvedLimit[], ex: LimitCaller): CallerWindows {
  const counters: HeldCounter[] = [];
  const policy: string[] = [];
  const stateHead: (string | undefined)[] = [];
  const stateTail: (string | undefined)[] = [];
  for (const l of limits) {
    if (!appliesTo(l, ex)) continue;
    const unit = l.unit as "requests" | "concurrent";
    const windowMs = limitWindowMs(l, ex);
    counters.push({ key: limitKey(l, ex), max: l.max, amount: 1, windowMs, unit, label: limitLabel(l), limitId: l.id });
    const seconds = Math.ceil(windowMs / 1000);
    if (unit === "requests") policy.push(`"${l.id}";q=${l.max};w=${seconds}`);
    stateHead.push(unit === "requests" ? `"${l.id}";r=` : undefined);
    stateTail.push(unit === "requests" ? `;t=${seconds}` : undefined);
  }
  return { counters, policy: policy.join(", "), stateHead, stateTail };
}

/** The RateLimit header for these totals of the windows' counters (IETF draft-ietf-httpapi-ratelimit-headers). */
export function rateLimitState(windows: CallerWindows, totals: readonly number[]): string {
  let state = "";
  const { counters, stateHead, stateTail } = windows;
  for (let i = 0; i < counters.length; i++) {
    const head = stateHead[i];
    if (head === undefined) continue;
    state += `${state ? ", " : ""}${head}${Math.max(0, counters[i]!.max - totals[i]!)}${stateTail[i]}`;
  }
  return state;
}
