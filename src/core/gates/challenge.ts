import { createHmac } from "node:crypto";
import { createChallenge, randomInt, verifySolution, type Challenge, type Payload } from "altcha-lib";
import { deriveKey } from "altcha-lib/algorithms/pbkdf2";
import type { ResolvedChallenge } from "../config-types.js";
import { inNetworks } from "../client-ip.js";
import { TollgateError } from "../errors.js";
import type { Exchange } from "../exchange.js";
import type { Gate, GateEnv } from "../gate.js";
import { abuseEnabled, suspicionScore } from "./abuse.js";

export type { Challenge };

/**
 * Each try is one PBKDF2 derivation: Web Crypto runs it natively in every browser, so an honest
 * page pays about what a native attacker pays per try (a bare SHA-256 would be tens of times
 * cheaper outside a browser). 100 iterations keep issuing a challenge (one derivation) as cheap
 * as any other refusal.
 */
export const CHALLENGE_ALGORITHM = "PBKDF2/SHA-256";
export const CHALLENGE_COST = 100;
/** Processes sharing a store may disagree on the time by this much; a used solution is remembered this much longer. */
const CLOCK_SKEW_MS = 60_000;
/** The score that asks for the hardest challenge when abuse.block_at is not set. */
const DEFAULT_FULL_SCORE = 100;

export type ChallengeProblem = "missing" | "invalid" | "expired" | "too_easy" | "replayed";

const MESSAGES: Record<ChallengeProblem, string> = {
  missing: "this route asks for a solved proof-of-work challenge in x-tollgate-challenge; solve the one in this error",
  invalid: "the x-tollgate-challenge solution is not valid for this route and caller; solve the one in this error",
  expired: "the solved challenge has expired; solve the one in this error",
  too_easy: "the solved challenge is easier than this caller now needs; solve the one in this error",
  replayed: "this challenge solution was already used; solve the one in this error",
};

export interface ChallengePressure {
  /** The caller's suspicion score as gate 2 took it (0 when no score is kept, or on the allowlist). */
  score: number;
  /** How full the anonymous pool is, 0 to 1, for an anonymous caller (abuse.signals.anon_pool_pressure above 0); else 0. */
  pressure: number;
}

/** What the difficulty follows: gate 2's reading of this request, taken once and shared. */
export async function challengePressure(ex: Exchange, env: GateEnv): Promise<ChallengePressure> {
  const scored = abuseEnabled(env) && !inNetworks(env.allowlist, ex.caller.ip);
  // Memoised per request: gate 2 took it already (and counted this request's pool demand once).
  const suspicion = scored ? await suspicionScore(ex, env) : undefined;
  return { score: suspicion?.score ?? 0, pressure: suspicion?.poolPressure ?? 0 };
}

/**
 * The largest counter this caller's challenge hides: `base` for a clean caller, rising
 * geometrically to `max` as the score nears block_at or the anonymous pool fills, so each step
 * of suspicion multiplies the work rather than adding to it.
 */
export function challengeDifficulty(c: ResolvedChallenge, env: GateEnv, { score, pressure }: ChallengePressure): number {
  const full = env.config.abuse.blockAt || DEFAULT_FULL_SCORE;
  const f = Math.min(1, Math.max(0, score / full, pressure));
  return Math.round(c.base * (c.max / c.base) ** f);
}

/** Whether this route asks this caller for a solved challenge (gate 2 has scored it). */
export function challengeRequired(c: ResolvedChallenge, ex: Exchange, { score }: ChallengePressure): boolean {
  if (c.for === "all") return true;
  if (c.minScore !== undefined && score >= c.minScore) return true;
  return c.for === "anonymous" && ex.identity?.kind === "anonymous";
}

/** A fresh challenge for this caller on this route, at its current difficulty. */
export function issueChallenge(ex: Exchange, env: GateEnv, pressure: ChallengePressure): Promise<Challenge> {
  const c = ex.route.challenge!;
  return mintChallenge(c, ex.route.name, ex.identity!.user, challengeDifficulty(c, env, pressure), Date.now() + c.ttlMs);
}

/**
 * Signs a challenge bound to one route and one caller (a keyed hash of its user, so the page
 * learns nothing about it): a challenge fetched by a clean identity cannot be spent by a
 * suspicious one. The solver's counter lies between half the difficulty and all of it.
 */
export function mintChallenge(c: ResolvedChallenge, route: string, user: string, difficulty: number, expiresAtMs: number): Promise<Challenge> {
  return createChallenge({
    algorithm: CHALLENGE_ALGORITHM,
    cost: CHALLENGE_COST,
    counter: randomInt(difficulty, Math.ceil(difficulty / 2)),
    deriveKey,
    expiresAt: Math.floor(expiresAtMs / 1000),
    data: { route, caller: callerTag(c, user), difficulty },
    hmacSignatureSecret: c.signatureSecret,
    hmacKeySignatureSecret: c.keySecret,
  });
}

function callerTag(c: ResolvedChallenge, user: string): string {
  return createHmac("sha256", c.signatureSecret).update(user).digest("hex").slice(0, 24);
}

/**
 * Gate 2b: on routes with `challenge`, the callers it names must present a solved challenge,
 * accepted once. Runs after gate 2 has the score and before gate 3 takes quota, so a refusal
 * here costs the caller nothing but the work and the gateway one store read at most.
 */
export const challenge: Gate = function challenge(ex, env) {
  const c = ex.route.challenge;
  // A route without a challenge waits for nothing: no promise.
  if (c) return challengeRoute(ex, env, c);
};

async function challengeRoute(ex: Exchange, env: GateEnv, c: ResolvedChallenge): Promise<void> {
  const pressure = await challengePressure(ex, env);
  if (!challengeRequired(c, ex, pressure)) return;
  const problem = await checkSolution(ex, env, c, challengeDifficulty(c, env, pressure));
  if (!problem) return;
  ex.signals.push(`challenge:${problem}`);
  throw new TollgateError("challenge_required", MESSAGES[problem], { challenge: await issueChallenge(ex, env, pressure), limit: `challenge:${problem}` });
}

/** The headers a challenge is served with (gateway and adapters): never cached, and whether this caller must solve it. */
export function offerHeaders(offer: { required: boolean }): Record<string, string> {
  return { "cache-control": "no-store", "x-tollgate-challenge-required": String(offer.required) };
}

/** Whether a refusal is the protocol's first step (no solution yet): it does not make the caller suspicious. */
export function isChallengeOffer(err: TollgateError): boolean {
  return err.code === "challenge_required" && err.limit === "challenge:missing";
}

async function checkSolution(ex: Exchange, env: GateEnv, c: ResolvedChallenge, difficulty: number): Promise<ChallengeProblem | undefined> {
  if (!ex.caller.challenge) return "missing";
  const payload = decodePayload(ex.caller.challenge);
  if (!payload) return "invalid";
  let result;
  try {
    result = await verifySolution({ challenge: payload.challenge, solution: payload.solution, deriveKey, hmacSignatureSecret: c.signatureSecret, hmacKeySignatureSecret: c.keySecret });
  } catch {
    // altcha throws on parameters it cannot use (an unknown algorithm): a forged payload.
    return "invalid";
  }
  if (result.expired) return "expired";
  if (!result.verified) return "invalid";
  // The signature covers `data`, so from here it is ours.
  const data = payload.challenge.parameters.data ?? {};
  if (data.route !== ex.route.name || data.caller !== callerTag(c, ex.identity!.user)) return "invalid";
  // Half the difficulty now due is enough: a score that rose a little while the page solved costs no second solve.
  if (typeof data.difficulty !== "number" || data.difficulty * 2 < difficulty) return "too_easy";
  // Accepted once: a counter of max 1 keyed by the signature is a set-once that outlives the challenge.
  const windowMs = c.ttlMs + CLOCK_SKEW_MS;
  const used = await env.store.reserve(`${ex.id}:challenge`, [{ key: `challenge:${ex.route.name}:${payload.challenge.signature}`, max: 1, amount: 1, windowMs }], windowMs);
  return used.ok ? undefined : "replayed";
}

/** altcha's widget payload: base64 of `{ challenge, solution }`. Anything else is no payload. */
function decodePayload(text: string): Payload | undefined {
  try {
    const p = JSON.parse(Buffer.from(text, "base64").toString("utf8")) as Payload;
    const ok = typeof p?.challenge?.signature === "string" && typeof p.challenge.parameters === "object" && p.challenge.parameters !== null && typeof p.solution === "object" && p.solution !== null;
    return ok ? p : undefined;
  } catch {
    return undefined;
  }
}
