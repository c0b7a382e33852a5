import { inNetworks, ipNetwork } from "../client-ip.js";
import { TollgateError } from "../errors.js";
import type { Exchange } from "../exchange.js";
import type { Gate, GateEnv } from "../gate.js";
import { callerPolicy } from "../policy.js";
import { credentialNetworks } from "./signals/network-spread.js";
import { newIdentityCohort, youngScoreKey } from "./signals/new-identities.js";
import { anonPoolPressure } from "./signals/pool-pressure.js";
import { callerRuns } from "./signals/run-churn.js";
import { abuseAlert } from "../alerts.js";

export const userScoreKey = (user: string) => `sus:u:${user}`;
export const ipScoreKey = (ipGroup: string) => `sus:ip:${ipGroup}`;
export const netScoreKey = (network: string) => `sus:net:${network}`;

const DAY_MS = 86_400_000;
/** Requests a user has made (decaying over a month) below which it counts as a new identity. */
const NEW_IDENTITY_REQUESTS = 3;
const SEEN_HALF_LIFE_MS = 30 * DAY_MS;

export type SignalName = "ip_many_users" | "near_cap_prompt" | "burst_under_limit" | "new_identity_expensive_model" | "key_many_networks" | "run_churn";
/** Signals whose points belong to a cohort, not to one caller: read live, never stored in a caller's score. */
export type CohortSignal = "new_identity_velocity" | "anon_pool_pressure";

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
  const weight = {
    ip_many_users: weights.ipManyUsers,
    near_cap_prompt: weights.nearCapPrompt,
    burst_under_limit: weights.burstUnderLimit,
    new_identity_expensive_model: weights.newIdentityExpensiveModel,
    key_many_networks: weights.keyManyNetworks,
    run_churn: weights.runChurn,
  }[name];
  if (weight <= 0) return;
  ex.signals.push(name);
  const { halfLifeMs, newIdentityAgeMs } = env.config.abuse;
  const id = ex.identity;
  const young = (await suspicions.get(ex.parent ?? ex))?.young;
  await Promise.all([
    env.store.score(userScoreKey(id.user), weight, halfLifeMs),
    env.store.score(ipScoreKey(id.ipGroup), weight, halfLifeMs),
    env.store.score(netScoreKey(ipNetwork(id.ip)), weight, halfLifeMs),
    young && env.store.score(youngScoreKey(id.user), weight, newIdentityAgeMs),
  ]);
}

/**
 * A refusal the caller caused counts against it (SPEC §7.8): its user's and its address's scores,
 * and while it is young the evidence kept against it. Not the network's score: one careless user
 * behind a shared NAT must not block the /24.
 */
export async function scoreRefusal(ex: Exchange, env: GateEnv): Promise<void> {
  const { weights, halfLifeMs, newIdentityAgeMs } = env.config.abuse;
  const id = ex.identity!;
  const young = (await suspicions.get(ex.parent ?? ex)?.catch(() => undefined))?.young;
  await Promise.all([
    env.store.score(userScoreKey(id.user), weights.refused, halfLifeMs),
    env.store.score(ipScoreKey(id.ipGroup), weights.refused, halfLifeMs),
    young && env.store.score(youngScoreKey(id.user), weights.refused, newIdentityAgeMs),
  ]);
}

export interface Suspicion {
  /** The caller's worst own score (user, address group, network, a young identity's kept evidence) plus its cohorts' points. */
  score: number;
  /** What the score mostly comes from: the caller's own scores, or its cohorts. */
  source: "user" | "ip" | "network" | "cohort";
  /** The cohort terms that apply to this caller, with the points each adds. */
  cohorts: { signal: CohortSignal; points: number }[];
  /** The identity was first seen less than new_identity_age ago. */
  young: boolean;
  /** The anonymous pool's pressure, 0 to 1 (0 for a caller outside it or a route without one). */
  poolPressure: number;
  /** Counts the caller-level signals fire on, once the verdict is taken. */
  observed: { usersOnNetwork: number; credentialNetworks: number; runs: number };
}

const suspicions = new WeakMap<Exchange, Promise<Suspicion>>();
const lookups = new WeakSet<Exchange>();

/**
 * Marks a request that only reads (GET /v1/models, /v1/me, a challenge): it is judged by the
 * caller's scores like any other, but counts toward none of the signals — an app polling /v1/me
 * is not starting runs, joining networks or being born again.
 */
export function lookOnly(ex: Exchange): void {
  lookups.add(ex);
}

/**
 * The caller's suspicion (SPEC §8) for this request, taken once: it also records what this request
 * adds to the counts the signals read (its network, run, birth, the anonymous pool's demand), so a
 * second reading of the same request returns the first. Gate 2 decides from it, and other gates
 * (the proof-of-work gate's difficulty) read the same figures.
 */
export function suspicionScore(ex: Exchange, env: GateEnv): Promise<Suspicion> {
  let s = suspicions.get(ex);
  if (!s) {
    s = observe(ex, env);
    suspicions.set(ex, s);
  }
  return s;
}

async function observe(ex: Exchange, env: GateEnv): Promise<Suspicion> {
  const { halfLifeMs, weights, poolPressureAt } = env.config.abuse;
  const id = ex.identity!;
  const anonymous = id.kind === "anonymous";
  const network = ipNetwork(id.ip);
  const counts = !lookups.has(ex);
  const [user, addr, net, seen, usersOnNetwork, nets, runs, cohort, poolPressure] = await Promise.all([
    env.store.score(userScoreKey(id.user), 0, halfLifeMs),
    env.store.score(ipScoreKey(id.ipGroup), 0, halfLifeMs),
    env.store.score(netScoreKey(network), 0, halfLifeMs),
    env.store.score(`seen:u:${id.user}`, counts ? 1 : 0, SEEN_HALF_LIFE_MS),
    anonymous || !counts ? 0 : env.store.distinct(`users:net:${network}`, id.user, DAY_MS),
    counts ? credentialNetworks(ex, env) : 0,
    counts ? callerRuns(ex, env) : 0,
    anonymous ? undefined : newIdentityCohort(env, id.user, counts),
    anonymous && weights.anonPoolPressure > 0 ? anonPoolPressure(env, ex.route, counts) : 0,
  ]);
  ex.newIdentity = seen <= NEW_IDENTITY_REQUESTS;
  const cohorts: Suspicion["cohorts"] = [];
  if (cohort?.surge && weights.newIdentityVelocity > 0) cohorts.push({ signal: "new_identity_velocity", points: weights.newIdentityVelocity });
  if (poolPressure > 0 && poolPressure >= poolPressureAt) cohorts.push({ signal: "anon_pool_pressure", points: weights.anonPoolPressure * poolPressure });
  const own = Math.max(user, cohort?.evidence ?? 0, addr, net);
  const shared = cohorts.reduce((sum, c) => sum + c.points, 0);
  const source = shared > own ? "cohort" : own === user || own === cohort?.evidence ? "user" : own === addr ? "ip" : "network";
  return { score: own + shared, source, cohorts, young: cohort?.young ?? false, poolPressure, observed: { usersOnNetwork, credentialNetworks: nets, runs } };
}

/** Gate 2: blocklists and the caller's suspicion score (SPEC §8): block, or mark for a cheaper model. */
export const abuse: Gate = function abuse(ex, env) {
  // An operator's block (admin API) outranks every network rule, the allowlist included; only the
  // admin API sets policies, so a gateway without an admin_key has nothing to read. An app shares
  // its store with a gateway whose config it need not carry, so library requests always read them.
  if (env.config.adminKey !== undefined || ex.caller.library) return operatorPolicy(ex, env).then(() => networks(ex, env));
  // Without a policy to read or a score to keep, the gate waits for nothing and returns no promise.
  return networks(ex, env);
};

async function operatorPolicy(ex: Exchange, env: GateEnv): Promise<void> {
  ex.policy = await callerPolicy(env.store, ex.identity!);
  if (ex.policy.blocked.length) {
    ex.signals.push(...ex.policy.blocked.map((kind) => `admin_block:${kind}`));
    throw new TollgateError("blocked", "this caller is blocked by the operator");
  }
}

function networks(ex: Exchange, env: GateEnv): Promise<void> | void {
  const ip = ex.caller.ip;
  if (inNetworks(env.allowlist, ip)) return;
  if (inNetworks(env.blocklist, ip)) {
    ex.signals.push("blocklist");
    throw new TollgateError("blocked", "requests from this network are blocked");
  }
  if (abuseEnabled(env)) return scored(ex, env);
}

async function scored(ex: Exchange, env: GateEnv): Promise<void> {
  const { downgradeAt, blockAt, manyUsersThreshold, manyNetworksThreshold, runChurnThreshold } = env.config.abuse;
  const suspicion = await suspicionScore(ex, env);
  const { score, source, observed } = suspicion;
  // A cohort's points are not the caller's own doing, so they are named on every request they
  // touch: an operator can tell a farm caught by its cohort from a caller caught by its own record.
  ex.signals.push(...suspicion.cohorts.map((c) => c.signal));
  const verdict = `score:${Math.round(score)}(${source})`;
  if (blockAt !== undefined && score >= blockAt) {
    ex.signals.push(verdict);
    throw new TollgateError("blocked", "this caller is blocked for suspicious activity");
  }
  if (downgradeAt !== undefined && score >= downgradeAt) {
    ex.signals.push(verdict);
    ex.downgrade = true;
    abuseAlert(ex, env, "abuse.downgrade");
  }
  await Promise.all([
    observed.usersOnNetwork > manyUsersThreshold && fireSignal(ex, env, "ip_many_users"),
    observed.credentialNetworks > manyNetworksThreshold && fireSignal(ex, env, "key_many_networks"),
    observed.runs > runChurnThreshold && fireSignal(ex, env, "run_churn"),
  ]);
}
