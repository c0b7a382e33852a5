import type { GateEnv } from "../../gate.js";

const HOUR_MS = 3_600_000;
/** "New identities of the past hour or so": the recent rate is a moving count with this half-life. */
const RECENT_HALF_LIFE_MS = HOUR_MS;
/** The baseline is the rate of the past week or so. */
const BASELINE_HALF_LIFE_MS = 7 * 24 * HOUR_MS;
const RECENT = "cohort:new:recent";
const BASELINE = "cohort:new:baseline";

export const bornKey = (user: string) => `born:u:${user}`;

export interface NewIdentityCohort {
  /** First seen less than new_identity_age ago. */
  young: boolean;
  /** The rate of new identities now over their baseline rate. */
  velocity: number;
}

/**
 * Whether this identity is new, and how fast new identities are appearing. An identity's first
 * sighting leaves a birth mark of 1 that halves every new_identity_age, so the identity is younger
 * than that while the mark reads above one half, and no store needs a new primitive to know an age.
 * A mark is forgotten after 64 half-lives (two months at a day): an identity unseen for that long
 * comes back as new. Two first requests at once may both leave a mark (and count the birth twice),
 * which only keeps that identity new for one more half-life.
 */
export async function newIdentityCohort(env: GateEnv, user: string): Promise<NewIdentityCohort> {
  const { newIdentityAgeMs, newIdentityBaselinePerHour } = env.config.abuse;
  const store = env.store;
  const read = (delta: number) =>
    Promise.all([store.score(bornKey(user), delta, newIdentityAgeMs), store.score(RECENT, delta, RECENT_HALF_LIFE_MS), store.score(BASELINE, delta, BASELINE_HALF_LIFE_MS)]);
  let [born, recent, baseline] = await read(0);
  if (born === 0) [born, recent, baseline] = await read(1);
  const rate = (recent * Math.LN2) / RECENT_HALF_LIFE_MS;
  const base = Math.max((baseline * Math.LN2) / BASELINE_HALF_LIFE_MS, newIdentityBaselinePerHour / HOUR_MS);
  return { young: born > 0.5, velocity: rate / base };
}

/**
 * Marks `user` as first seen `ageMs` ago without counting a birth: for a deployment's history
 * (tests and imports of existing users), since no store can backdate a mark.
 */
export async function markFirstSeen(env: Pick<GateEnv, "store" | "config">, user: string, ageMs: number): Promise<void> {
  const half = env.config.abuse.newIdentityAgeMs;
  await env.store.score(bornKey(user), 2 ** (-ageMs / half), half);
}
