import { describe, expect, it } from "vitest";
import type { Challenge } from "altcha-lib";
import { ConfigError } from "../../config/errors.js";
import { testEngine, type TestEngine } from "../../testing/test-engine.js";
import { solveChallengeHeader } from "../../testing/solve-challenge.js";
import { userScoreKey } from "./abuse.js";
import { mintChallenge } from "./challenge.js";

const SECRET = "test-challenge-secret-0123456789abcdef";
const config = (challenge: Record<string, unknown> = {}) => ({
  providers: { sim: { type: "simulated" } },
  models: { cheap: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 0.1, output: 0.4 } } },
  plans: { anonymous: { models: ["cheap"] }, free: { models: ["cheap"] } },
  keys: [{ key: "tg_pow_ann", user: "ann", plan: "free" }],
  routes: {
    chat: {
      path: "/chat",
      plans: ["anonymous", "free"],
      default_model: "cheap",
      // One request a minute per address: a refused challenge must not use it up.
      limits: [{ per: "ip", requests: 1, window: "1m" }],
      challenge: { for: "anonymous", difficulty: { base: 20, max: 2000 }, secret: SECRET, ...challenge },
    },
  },
  abuse: { block_at: 100, downgrade_at: 90, signals: { refused: 10 } },
});
const hello = { messages: [{ role: "user", content: "hello" }] };
const IP = "198.51.100.7";

async function offered(t: TestEngine, ip = IP, key?: string): Promise<Challenge> {
  const ex = t.engine.open({ route: "chat", endpoint: "models", ip, credentials: { token: key } });
  return (await t.engine.challengeFor(ex)).challenge;
}

describe("gate 2b, proof of work", () => {
  it("an anonymous caller without a solution is refused 403 challenge_required carrying a fresh challenge, costing no quota and no suspicion", async () => {
    const t = testEngine(config());
    const first = await t.send({ ip: IP, body: hello });
    expect(first.refusal).toMatchObject({ code: "challenge_required", status: 403 });
    const challenge = first.refusal!.challenge as Challenge;
    expect(challenge.parameters).toMatchObject({ algorithm: "PBKDF2/SHA-256", data: { route: "chat", difficulty: 20 } });
    expect(challenge.signature).toMatch(/^[0-9a-f]{64}$/);
    expect(first.record).toMatchObject({ decision: "deny", code: "challenge_required", input_tokens: 0, cost_usd: 0 });
    expect(first.record.signals).toContain("challenge:missing");
    await t.send({ ip: IP, body: hello });
    expect(await t.store.score(userScoreKey(IP), 0, 3_600_000)).toBe(0);

    // The challenge from the refusal, solved: served, with the ip window's one request still free.
    const served = await t.send({ ip: IP, body: hello, challenge: await solveChallengeHeader(challenge) });
    expect(served.refusal).toBeUndefined();
    expect(served.record).toMatchObject({ decision: "allow", ended: "complete" });
    expect(served.record.cost_usd).toBeGreaterThan(0);
  });

  it("a solution is accepted once: the replay is refused with a fresh challenge", async () => {
    const t = testEngine(config({}));
    const header = await solveChallengeHeader(await offered(t));
    expect((await t.send({ ip: IP, body: hello, challenge: header })).refusal).toBeUndefined();
    t.clock.advance(61_000);
    const replay = await t.send({ ip: IP, body: hello, challenge: header });
    expect(replay.refusal).toMatchObject({ code: "challenge_required", message: expect.stringContaining("already used") });
    expect(replay.refusal!.challenge).toMatchObject({ parameters: { data: { route: "chat" } } });
    expect(replay.record.signals).toContain("challenge:replayed");
  });

  it("a wrong solution, a forged payload or one solved for another caller is refused, and counts as suspicious", async () => {
    const t = testEngine(config());
    const challenge = await offered(t);
    const solved = JSON.parse(Buffer.from(await solveChallengeHeader(challenge), "base64").toString()) as { solution: { counter: number; derivedKey: string } };
    const wrong = { challenge, solution: { ...solved.solution, derivedKey: "00".repeat(32) } };
    const refusedWith = async (header: string, ip = IP) => (await t.send({ ip, body: hello, challenge: header })).refusal;
    expect(await refusedWith(Buffer.from(JSON.stringify(wrong)).toString("base64"))).toMatchObject({ code: "challenge_required", limit: "challenge:invalid" });
    // The difficulty in the signed data lowered: the signature no longer matches.
    const cheaper = { ...challenge, parameters: { ...challenge.parameters, data: { ...challenge.parameters.data, difficulty: 1 } } };
    expect(await refusedWith(Buffer.from(JSON.stringify({ challenge: cheaper, solution: solved.solution })).toString("base64"))).toMatchObject({ limit: "challenge:invalid" });
    expect(await refusedWith("not base64 json")).toMatchObject({ limit: "challenge:invalid" });
    // A challenge fetched by one address and spent from another.
    expect(await refusedWith(await solveChallengeHeader(challenge), "198.51.100.8")).toMatchObject({ limit: "challenge:invalid" });
    expect(await t.store.score(userScoreKey(IP), 0, 3_600_000)).toBeGreaterThan(0);
  });

  it("an expired challenge is refused as expired", async () => {
    const t = testEngine(config());
    const c = t.config.routes[0]!.challenge!;
    const stale = await mintChallenge(c, "chat", IP, 20, Date.now() - 1_000);
    expect((await t.send({ ip: IP, body: hello, challenge: await solveChallengeHeader(stale) })).refusal).toMatchObject({ code: "challenge_required", limit: "challenge:expired" });
  });

  it("the difficulty rises with the caller's score, and a challenge fetched while clean is too easy once the score rose", async () => {
    const t = testEngine(config());
    const clean = await offered(t);
    expect(clean.parameters.data!.difficulty).toBe(20);
    await t.store.score(userScoreKey(IP), 50, 3_600_000);
    const half = (await offered(t)).parameters.data!.difficulty as number;
    // Geometric: halfway to block_at is halfway between base and max on a log scale.
    expect(half).toBe(200);
    await t.store.score(userScoreKey(IP), 40, 3_600_000);
    expect((await offered(t)).parameters.data!.difficulty).toBeGreaterThan(half);
    expect((await t.send({ ip: IP, body: hello, challenge: await solveChallengeHeader(clean) })).refusal).toMatchObject({ limit: "challenge:too_easy" });
  });

  it("a full anonymous pool asks every anonymous caller for the hardest challenge, a clean address included", async () => {
    const cfg = config();
    cfg.routes.chat.limits = [{ per: "plan", plans: ["anonymous"], requests: 10, window: "1m" } as never];
    (cfg.abuse.signals as Record<string, number>).anon_pool_pressure = 20;
    const t = testEngine(cfg);
    // Its own request is the pool's only demand so far: a tenth of the pool, a step above base.
    expect((await offered(t, "198.51.100.50")).parameters.data!.difficulty).toBeLessThan(40);
    // Twenty anonymous requests from twenty addresses: the pool's demand is twice its rate.
    for (let i = 0; i < 20; i++) await t.send({ ip: `203.0.113.${i}`, body: hello });
    expect((await offered(t, "198.51.100.51")).parameters.data!.difficulty).toBe(2000);
  });

  it("for: anonymous leaves keyed callers alone; min_score asks them too once they are suspect", async () => {
    const t = testEngine(config({ min_score: 30 }));
    expect((await t.send({ key: "tg_pow_ann", ip: IP, body: hello })).refusal).toBeUndefined();
    await t.store.score(userScoreKey("ann"), 30, 3_600_000);
    const asked = await t.send({ key: "tg_pow_ann", ip: "198.51.100.9", body: hello });
    expect(asked.refusal).toMatchObject({ code: "challenge_required" });
    const header = await solveChallengeHeader(asked.refusal!.challenge as Challenge);
    expect((await t.send({ key: "tg_pow_ann", ip: "198.51.100.9", body: hello, challenge: header })).refusal).toBeUndefined();
  });

  it("a challenge nobody could be asked for is a config error", () => {
    expect(() => testEngine(config({ for: "suspect" }))).toThrow(ConfigError);
    expect(() => testEngine({ ...config({ min_score: 10 }), abuse: undefined })).toThrow(/no suspicion score is kept/);
    const keyedOnly = config();
    keyedOnly.routes.chat.plans = ["free"];
    expect(() => testEngine(keyedOnly)).toThrow(/admits no anonymous callers/);
    expect(() => testEngine(config({ difficulty: { base: 10, max: 5 } }))).toThrow(/difficulty.base/);
    expect(() => testEngine(config({ secret: "short" }))).toThrow(/32 characters/);
  });
});
