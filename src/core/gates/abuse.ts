import { inNetworks, ipNetwork } from "../client-ip.js";
import { TollgateError } from "../errors.js";
import type { Exchange } from "../exchange.js";
import type { Gate, GateEnv } from "../gate.js";
import { callerPolicy } from "../policy.js";

export const userScoreKey = (user: string) => `sus:u:${user}`;
export const ipScoreKey = (ipGroup: string) => `sus:ip:${ipGroup}`;
export const netScoreKey = (network: string) => `sus:net:${network}`;

const DAY_MS = 86_400_000;
/** Requests a user has made (decaying over a month) below which it counts as a new identity. */
const NEW_IDENTITY_REQUESTS = 3;
const SEEN_HALF_LIFE_MS = 30 * DAY_MS;

export type SignalName = "ip_many_users" | "near_cap_prompt" | "burst_under_limit" | "new_identity_expensive_model";

/** Is suspicion tracked at all? Without downgrade_at or block_at nothing would read the scores. */
export function abuseEnabled(env: GateEnv): boolean {
  return env.config.abuse.downgradeAt !== undefined || env.config.abuse.blockAt !== undefined;
}

/**
 * Records a signal on this request and adds its weight to the caller's scores: the user's, the
 * address group's and the network's (/24 or /48), so a farm of fresh accounts behind one network
 * raises one score together.
 */
export async function fireSignal(ex: Exchange, env: GateEnv, name: SignalName): Promise<void> {
  if (!abuseEnabled(env) || !ex.identity) return;
  const weights = env.config.abuse.weights;
  const weight = { ip_many_users: weights.ipManyUsers, near_cap_prompt: weights.nearCapPrompt, burst_under_limit: weights.burstUnderLimit, new_identity_expensive_model: weights.newIdentityExpensiveModel }[name];
  if (weight <= 0) return;
  ex.signals.push(name);
  const { halfLifeMs } = env.config.abuse;
  const id = ex.identity;
  await Promise.all([
    env.store.score(userScoreKey(id.user), weight, halfLifeMs),
    env.store.score(ipScoreKey(id.ipGroup), weight, halfLifeMs),
    env.store.score(netScoreKey(ipNetwork(id.ip)), weight, halfLifeMs),
  ]);
}

/** Gate 2: blocklists and the caller's suspicion score (SPEC §8): block, or mark for a cheaper model. */
export const abuse: Gate = async function abuse(ex, env) {
  const ip = ex.caller.ip;
  // An operator's block (admin API) outranks every network rule, the allowlist included; only the
  // admin API sets policies, so a gateway without an admin_key has nothing to read. An app shares
  // its store with a gateway whose config it need not carry, so library requests always read them.
  if (env.config.adminKey !== undefined || ex.caller.library) {
    ex.policy = await callerPolicy(env.store, ex.identity!);
    if (ex.policy.blocked.length) {
      ex.signals.push(...ex.policy.blocked.map((kind) => `admin_block:${kind}`));
      throw new TollgateError("blocked", "this caller is blocked by the operator");
    }
  }
  if (inNetworks(env.allowlist, ip)) return;
  if (inNetworks(env.blocklist, ip)) {
    ex.signals.push("blocklist");
    throw new TollgateError("blocked", "requests from this network are blocked");
  }
  if (!abuseEnabled(env)) return;
  const { downgradeAt, blockAt, halfLifeMs, manyUsersThreshold } = env.config.abuse;
  const id = ex.identity!;
  const network = ipNetwork(id.ip);
  const [user, addr, net, seen, usersOnNetwork] = await Promise.all([
    env.store.score(userScoreKey(id.user), 0, halfLifeMs),
    env.store.score(ipScoreKey(id.ipGroup), 0, halfLifeMs),
    env.store.score(netScoreKey(network), 0, halfLifeMs),
    env.store.score(`seen:u:${id.user}`, 1, SEEN_HALF_LIFE_MS),
    id.kind === "anonymous" ? Promise.resolve(0) : env.store.distinct(`users:net:${network}`, id.user, DAY_MS),
  ]);
  ex.newIdentity = seen <= NEW_IDENTITY_REQUESTS;
  const score = Math.max(user, addr, net);
  const source = score === user ? "user" : score === addr ? "ip" : "network";
  const verdict = `score:${Math.round(score)}(${source})`;
  if (blockAt !== undefined && score >= blockAt) {
    ex.signals.push(verdict);
    throw new TollgateError("blocked", "this caller is blocked for suspicious activity");
  }
  if (downgradeAt !== undefined && score >= downgradeAt) {
    ex.signals.push(verdict);
    ex.downgrade = true;
  }
  if (usersOnNetwork > manyUsersThreshold) await fireSignal(ex, env, "ip_many_users");
};
