import type { Identity } from "../identity.js";
import type { Exchange } from "../exchange.js";
import type { Gate } from "../gate.js";

/** Gate 1: who is calling. Returns nothing (no promise) when the key needed no store lookup. */
export const identify: Gate = function identify(ex, env) {
  const identity = env.identifier.identifyNow(ex.caller.credentials, ex.route, ex.caller.ip);
  if (identity instanceof Promise) return identity.then((id) => adopt(ex, id));
  adopt(ex, identity);
};

function adopt(ex: Exchange, identity: Identity): void {
  ex.identity = identity;
  ex.record.user = identity.user;
  ex.record.key_id = identity.keyId;
  ex.record.org = identity.org ?? null;
  ex.record.plan = identity.plan;
}
