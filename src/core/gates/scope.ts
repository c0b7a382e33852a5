import type { LimitScope, ResolvedLimit } from "../../config/resolve.js";
import { formatDuration } from "../../config/duration.js";
import type { Exchange } from "../exchange.js";

/** The value a `per:` scope counts by. An anonymous caller's user and key are its IP group. */
export function scopeValue(per: LimitScope, ex: Exchange): string {
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
  }
}

export function limitKey(limit: ResolvedLimit, ex: Exchange): string {
  return `lim:${limit.id}:${scopeValue(limit.per, ex)}`;
}

export function describeLimit(limit: ResolvedLimit, amount: string): string {
  const scope = limit.per === "route" ? "for the whole route" : `per ${limit.per}`;
  return `limit ${limit.id} (${amount} per ${formatDuration(limit.windowMs)} ${scope})`;
}
