import type { LimitScope, ResolvedLimit } from "../config-types.js";
import { formatDuration } from "../duration.js";
import { ipNetwork } from "../client-ip.js";
import type { Exchange } from "../exchange.js";
import { leaseMs } from "../gate.js";
import { formatUsd } from "../money.js";

/** What a limit's scope and key depend on: the route and the caller's identity (an Exchange, or less). */
export type LimitCaller = Pick<Exchange, "route" | "identity">;

/** The value a `per:` scope counts by. An anonymous caller's user and key are its IP group. */
export function scopeValue(per: LimitScope, ex: LimitCaller): string {
  const id = ex.identity!;
  switch (per) {
    case "user":
      return id.kind === "anonymous" ? `ip:${id.ipGroup}` : `u:${id.user}`;
    case "ip":
      return `ip:${id.ipGroup}`;
    case "key":
      return id.keyId ? `k:${id.keyId}` : `ip:${id.ipGroup}`;
    case "route":
      return "*";
    case "plan":
      return `p:${id.plan}`;
    case "network":
      return `net:${ipNetwork(id.ip)}`;
  }
}

/**
 * The window a limit's counter spans: its own, or for `concurrent` the request's lease — an
 * in-flight slot counts while its lease runs and settles to 0 when the request ends.
 */
export function limitWindowMs(limit: ResolvedLimit, ex: LimitCaller): number {
  return limit.unit === "concurrent" ? leaseMs(ex) : limit.windowMs;
}

/** Whether a limit counts this caller: a limit may name the plans whose callers it pools. */
export function appliesTo(limit: ResolvedLimit, ex: LimitCaller): boolean {
  return !limit.plans || limit.plans.has(ex.identity!.plan);
}

/** The route's limits of one unit that apply to this caller. */
export function limitsFor(ex: Exchange, unit: ResolvedLimit["unit"]): ResolvedLimit[] {
  return ex.route.limits.filter((l) => l.unit === unit && appliesTo(l, ex));
}

export function limitKey(limit: ResolvedLimit, ex: LimitCaller): string {
  return `lim:${limit.id}:${scopeValue(limit.per, ex)}`;
}

export function describeLimit(limit: ResolvedLimit, amount: string): string {
  const scope =
    limit.per === "route"
      ? "for the whole route"
      : limit.per === "plan"
        ? `shared by every caller of plan ${limit.plans?.size === 1 ? [...limit.plans][0] : "(each plan its own pool)"}`
        : `per ${limit.per}`;
  const window = limit.unit === "concurrent" ? "at once" : `per ${formatDuration(limit.windowMs)}`;
  return `limit ${limit.id} (${amount} ${window} ${scope})`;
}

const labels = new WeakMap<ResolvedLimit, string>();

/**
 * describeLimit with the limit's own size ("100 requests", "$5.00"): the counters of every request
 * carry it for a refusal's message, so it is built once per limit rather than once per request.
 */
export function limitLabel(limit: ResolvedLimit): string {
  let label = labels.get(limit);
  if (label === undefined) {
    const { unit, max } = limit;
    const size = unit === "usd" ? `$${formatUsd(max)}` : unit === "concurrent" ? `${max} concurrent requests` : `${max} ${unit}`;
    labels.set(limit, (label = describeLimit(limit, size)));
  }
  return label;
}
