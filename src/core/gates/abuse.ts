import { inNetworks } from "../client-ip.js";
import { TollgateError } from "../errors.js";
import type { Gate } from "../gate.js";

export const userScoreKey = (user: string) => `sus:u:${user}`;
export const ipScoreKey = (ipGroup: string) => `sus:ip:${ipGroup}`;

/** Gate 2: blocklists and the caller's suspicion score (SPEC §8): block, or mark for a cheaper model. */
export const abuse: Gate = async function abuse(ex, env) {
  const ip = ex.caller.ip;
  if (inNetworks(env.allowlist, ip)) return;
  if (inNetworks(env.blocklist, ip)) {
    ex.signals.push("blocklist");
    throw new TollgateError("blocked", "requests from this network are blocked");
  }
  const { downgradeAt, blockAt, halfLifeMs } = env.config.abuse;
  if (downgradeAt === undefined && blockAt === undefined) return;
  const id = ex.identity!;
  const [user, net] = await Promise.all([
    env.store.score(userScoreKey(id.user), 0, halfLifeMs),
    env.store.score(ipScoreKey(id.ipGroup), 0, halfLifeMs),
  ]);
  const score = Math.max(user, net);
  const why = `score:${Math.round(score)}(${user >= net ? "user" : "ip"})`;
  if (blockAt !== undefined && score >= blockAt) {
    ex.signals.push(why);
    throw new TollgateError("blocked", "this caller is blocked for suspicious activity");
  }
  if (downgradeAt !== undefined && score >= downgradeAt) {
    ex.signals.push(why);
    ex.downgrade = true;
  }
};
