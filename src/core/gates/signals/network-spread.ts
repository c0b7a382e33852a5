import { wideNetwork } from "../../client-ip.js";
import type { Exchange } from "../../exchange.js";
import type { GateEnv } from "../../gate.js";

/**
 * Whose networks key_many_networks counts: a plain key's, or a signed-in user's (a JWT, an app's
 * session). Not an anonymous caller (its identity is its address) and not a service key, whose
 * address is its backend's: a backend on a cloud's egress may span many networks honestly.
 */
function credential(ex: Exchange): string | undefined {
  const id = ex.identity!;
  if (id.kind === "key") return `k:${id.keyId}`;
  if (id.kind === "jwt" || id.kind === "app") return `u:${id.user}`;
  return undefined;
}

/**
 * Records the network this request came from against its credential and returns how many distinct
 * networks (IPv4 /16s, IPv6 /32s) the credential was seen from within many_networks_window; 0 for
 * callers it does not count. One person's home, office and phone are two or three networks; a key
 * sold on a forum or shared across a proxy pool is dozens.
 */
export function credentialNetworks(ex: Exchange, env: GateEnv): Promise<number> {
  const who = credential(ex);
  if (!who || env.config.abuse.weights.keyManyNetworks <= 0) return Promise.resolve(0);
  return env.store.distinct(`nets:${who}`, wideNetwork(ex.identity!.ip), env.config.abuse.manyNetworksWindowMs);
}
