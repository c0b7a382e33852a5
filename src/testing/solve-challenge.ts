import { solveChallenge, type Challenge } from "altcha-lib";
import { deriveKey } from "altcha-lib/algorithms/pbkdf2";

/**
 * Solves a proof-of-work challenge (from GET {path}/v1/challenge or a 403 challenge_required
 * body) as a browser would, and returns the x-tollgate-challenge header value: altcha's payload,
 * base64 of `{ challenge, solution }`.
 */
export async function solveChallengeHeader(challenge: Challenge): Promise<string> {
  const solution = await solveChallenge({ challenge, deriveKey });
  if (!solution) throw new Error("the challenge was not solved within altcha's timeout");
  return Buffer.from(JSON.stringify({ challenge, solution })).toString("base64");
}
