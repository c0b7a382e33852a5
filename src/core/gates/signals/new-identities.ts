import type { GateEnv } from "../../gate.js";

const HOUR_MS = 3_600_000;
/** The baseline is the rate of the past week or so. */
const BASELINE_HALF_LIFE_MS = 7 * 24 * HOUR_MS;
const RECENT = "cohort:new:recent";
const BASELINE = "cohort:new:baseline";

export const bornKey = (user: string) => `born:u:${user}`;
/** The evidence against a young identity, kept with new_identity_age as its half-life. */
export const youngScoreKey = (user: string) => `sus:young:${user}`;
/** Left at an identity's first sighting during a surge of new identities. */
const surgeBornKey = (user: string) => `born:surge:${user}`;

export interface NewIdentityCohort {
  /** First seen less than new_identity_age ago. */
  young: boolean;
  /**
   * Young, and new identities are arriving at new_identity_surge_factor times their baseline or
   * faster, now or when this one was first seen: a farm's keys stay suspect after the farm stops
   * making them, for as long as they are young.
   */
  surge: boolean;
  /** The evidence against it while it is young (0 once it is not). */
  evidence: number;
}

/**
 * Whether this identity is new, and whether it belongs to a surge of new identities. An
 * identity's first sighting leaves a birth mark of 1 that halves every new_identity_age, so the
 * identity is younger than that while the mark reads above one half, and no store needs a new
 * primitive to know an age. A mark is forgotten after 64 half-lives (two months at a day): an
 * identity unseen for that long comes back as new. Two first requests at once may both leave a
 * mark (and count the birth twice), which only keeps that identity new for one more half-life.
 */
export async function newIdentityCohort(env: GateEnv, user: string, record = true): Promise<NewIdentityCohort> {
  const { newIdentityAgeMs, newIdentityWindowMs, newIdentityBaselinePerHour, newIdentitySurgeFactor } = env.config.abuse;
  const store = env.store;
  const read = (delta: number) =>
    Promise.all([store.score(bornKey(user), delta, newIdentityAgeMs), store.score(RECENT, delta, newIdentityWindowMs), store.score(BASELINE, delta, BASELINE_HALF_LIFE_MS)]);
  const kept = Promise.all([store.score(youngScoreKey(user), 0, newIdentityAgeMs), store.score(surgeBornKey(user), 0, newIdentityAgeMs)]);
  let [born, recent, baseline] = await read(0);
  // `record` false: a request that only reads is no first sighting.
  const birth = born === 0 && record;
  if (birth) [born, recent, baseline] = await read(1);
  const rate = (recent * Math.LN2) / newIdentityWindowMs;
  const base = Math.max((baseline * Math.LN2) / BASELINE_HALF_LIFE_MS, newIdentityBaselinePerHour / HOUR_MS);
  const surgeNow = rate / base >= newIdentitySurgeFactor;
  if (birth && surgeNow) await store.score(surgeBornKey(user), 1, newIdentityAgeMs);
  const young = born > 0.5 || born === 0;
  const [evidence, surgeBorn] = await kept;
  return { young, surge: young && (surgeNow || surgeBorn > 0.5), evidence: young ? evidence : 0 };
}

/**
 * Marks `user` as first seen `ageMs` ago without counting a birth: for a deployment's history
 * (tests and imports of existing users), since no store can backdate a mark.
 */
export async function markFirstSeen(env: Pick<GateEnv, "store" | "config">, user: string, ageMs: number): Promise<void> {
  const half = env.config.abuse.newIdentityAgeMs;
  await env.store.score(bornKey(user), 2 ** (-ageMs / half), half);
}
