import type { Gate } from "../gate.js";

/** Gate 1: who is calling. */
export const identify: Gate = async function identify(ex, env) {
  const identity = await env.identifier.identify(ex.caller.credentials, ex.route, ex.caller.ip);
  ex.identity = identity;
  ex.record.user = identity.user;
  ex.record.key_id = identity.keyId;
  ex.record.org = identity.org ?? null;
  ex.record.plan = identity.plan;
};
