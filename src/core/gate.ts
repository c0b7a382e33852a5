import type { ResolvedConfig } from "./config-types.js";
import type { Provider } from "./provider.js";
import type { Store } from "./store.js";
import type { Exchange } from "./exchange.js";
import type { Identifier } from "./identity.js";
import type { EngineEvents } from "./alerts.js";
import type { RecentTotals } from "./recent-totals.js";
import type { Networks } from "./client-ip.js";

/** What every gate may use: built once at start, shared by all requests. */
export interface GateEnv {
  config: ResolvedConfig;
  store: Store;
  identifier: Identifier;
  providers: Record<string, Provider>;
  blocklist: Networks;
  allowlist: Networks;
  now: () => number;
  /** Where alerts go (the store's outbox); absent: nobody listens, and nothing is computed for them. */
  alerts?: EngineEvents;
  /** Counter totals this process saw lately: lets the pre-body check skip the store (gates/quota.ts). */
  recent: RecentTotals;
}

/** A gate either returns (the request goes on) or throws a TollgateError (it ends here). */
export type Gate = (ex: Exchange, env: GateEnv) => Promise<void> | void;

/** Settling takes one store round trip after the wall-clock cap; this covers it with room to spare. */
export const LEASE_MARGIN_MS = 5_000;

/** How long a reservation outlives its request before the store gives it back (SPEC §7.4). */
export function leaseMs(ex: Pick<Exchange, "route">): number {
  return ex.route.timeoutMs + LEASE_MARGIN_MS;
}
