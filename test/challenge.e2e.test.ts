import OpenAI, { APIError } from "openai";
import { describe, expect, it } from "vitest";
import type { Challenge } from "altcha-lib";
import { solveChallengeHeader } from "../src/testing/solve-challenge.js";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useRedis, useUpstream } from "./use-gateway.js";

/**
 * The proof-of-work gate through the real gateway and the official OpenAI SDK: an anonymous
 * caller without a solution gets 403 challenge_required in OpenAI's error format with a fresh
 * challenge, solves it (altcha-lib, as the browser page does) and is served; the same solution a
 * second time is refused — also by another gateway process sharing the Redis store.
 */
const mock = useUpstream();
const gateways = useGateways({ after: "each" });

function config(store: string) {
  return {
    store,
    server: { trust_proxy: 1 },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { anonymous: { models: ["gpt-4o-mini"] }, pro: { models: ["gpt-4o-mini"] } },
    keys: [{ key: "tg_pow_pro", user: "payer", plan: "pro" }],
    routes: {
      chat: {
        path: "/chat",
        plans: ["anonymous", "pro"],
        default_model: "gpt-4o-mini",
        challenge: { for: "anonymous", difficulty: { base: 50, max: 5000 }, ttl: "2m", secret: "e2e-challenge-secret-0123456789abcdef" },
      },
    },
    // Refusals add nothing here: racing replays must not raise the winner's difficulty past its solution.
    abuse: { block_at: 100, signals: { refused: 0 } },
  };
}

/** One after the other: two processes starting at once on a loaded machine can miss the start timeout. */
async function start(store = "memory:", n = 1): Promise<GatewayProcess[]> {
  const started: GatewayProcess[] = [];
  for (let i = 0; i < n; i++) {
    started.push(await GatewayProcess.start(config(store)));
    gateways.push(started.at(-1)!);
  }
  return started;
}

function client(gw: GatewayProcess, ip: string, headers: Record<string, string> = {}, apiKey = "") {
  return new OpenAI({
    baseURL: `${gw.url}/chat/v1`,
    apiKey: apiKey || "unused",
    maxRetries: 0,
    // No key: anonymous (the SDK needs a non-empty apiKey, so the header is dropped).
    defaultHeaders: { "x-forwarded-for": ip, ...(apiKey ? {} : { authorization: null as unknown as string }), ...headers },
  });
}
const hello = { model: "gpt-4o-mini", messages: [{ role: "user" as const, content: "hello" }] };

/** The refusal the SDK raises, with the request id of its record. */
async function refusal(c: OpenAI): Promise<{ err: APIError; requestId: string }> {
  const err = await c.chat.completions.create(hello).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof APIError)) throw new Error(`expected a refusal, got ${String(err)}`);
  return { err, requestId: err.headers?.get("x-tollgate-request-id") ?? "" };
}

async function served(c: OpenAI): Promise<string> {
  const { data, response } = await c.chat.completions.create(hello).withResponse();
  expect(data.choices[0]!.message.content).toBeTruthy();
  return response.headers.get("x-tollgate-request-id")!;
}

describe("proof of work through the gateway (memory store)", () => {
  it("403 challenge_required in OpenAI's format with a fresh challenge; solved it is served and recorded; replayed it is refused", { timeout: 60_000 }, async () => {
    const [gw] = await start();
    const ip = "198.51.100.20";
    const { err, requestId } = await refusal(client(gw!, ip));
    expect(err.status).toBe(403);
    expect(err.code).toBe("challenge_required");
    expect(err.type).toBe("permission_error");
    const challenge = (err.error as { challenge: Challenge }).challenge;
    expect(challenge).toMatchObject({ parameters: { algorithm: "PBKDF2/SHA-256", data: { route: "chat", difficulty: 50 } }, signature: expect.any(String) });
    expect(await gw!.recordFor(requestId, 20_000)).toMatchObject({ decision: "deny", code: "challenge_required", cost_usd: 0, ip });
    expect(mock.requests).toHaveLength(0);

    const header = await solveChallengeHeader(challenge);
    const id = await served(client(gw!, ip, { "x-tollgate-challenge": header }));
    expect(await gw!.recordFor(id, 20_000)).toMatchObject({ decision: "allow", ended: "complete", code: null, ip });
    expect(mock.requests).toHaveLength(1);

    const replay = await refusal(client(gw!, ip, { "x-tollgate-challenge": header }));
    expect(replay.err.status).toBe(403);
    expect(replay.err.code).toBe("challenge_required");
    expect(replay.err.message).toContain("already used");
    expect((await gw!.recordFor(replay.requestId, 20_000)).signals).toContain("challenge:replayed");
    expect(mock.requests).toHaveLength(1);
  });

  it("GET /v1/challenge offers a challenge to any caller and says whether this one must solve it; Anthropic's format carries it too", { timeout: 60_000 }, async () => {
    const [gw] = await start();
    const anon = await fetch(`${gw!.url}/chat/v1/challenge`, { headers: { "x-forwarded-for": "198.51.100.21" } });
    expect(anon.status).toBe(200);
    expect(anon.headers.get("x-tollgate-challenge-required")).toBe("true");
    const offered = (await anon.json()) as Challenge;
    expect(offered.parameters.data).toMatchObject({ route: "chat", difficulty: 50 });
    // The offered challenge, solved, serves the caller it was offered to.
    await served(client(gw!, "198.51.100.21", { "x-tollgate-challenge": await solveChallengeHeader(offered) }));

    const paying = await fetch(`${gw!.url}/chat/v1/challenge`, { headers: { authorization: "Bearer tg_pow_pro" } });
    expect(paying.headers.get("x-tollgate-challenge-required")).toBe("false");
    await served(client(gw!, "198.51.100.22", {}, "tg_pow_pro"));

    const messages = await fetch(`${gw!.url}/chat/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", "x-forwarded-for": "198.51.100.23" },
      body: JSON.stringify({ model: "gpt-4o-mini", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(messages.status).toBe(403);
    expect(await messages.json()).toMatchObject({ type: "error", error: { type: "permission_error", code: "challenge_required", challenge: { parameters: { data: { route: "chat" } } } } });
  });
});

describe("proof of work on Redis with 2 gateway processes", () => {
  const redis = useRedis();

  it("a challenge issued by one process is solved for the other; a solution accepted by one is refused by the other", { timeout: 90_000 }, async () => {
    const [a, b] = await start(redis.url(), 2);
    const ip = "198.51.100.30";
    const offered = (await (await fetch(`${b!.url}/chat/v1/challenge`, { headers: { "x-forwarded-for": ip } })).json()) as Challenge;
    const header = await solveChallengeHeader(offered);
    const id = await served(client(a!, ip, { "x-tollgate-challenge": header }));
    expect(await a!.recordFor(id, 20_000)).toMatchObject({ decision: "allow" });
    const replay = await refusal(client(b!, ip, { "x-tollgate-challenge": header }));
    expect(replay.err.status).toBe(403);
    expect(replay.err.code).toBe("challenge_required");
    expect((await b!.recordFor(replay.requestId, 20_000)).signals).toContain("challenge:replayed");
    // Ten racing replays of one fresh solution across both processes: exactly one is served.
    const fresh = await solveChallengeHeader(((await refusal(client(a!, ip))).err.error as { challenge: Challenge }).challenge);
    const raced = await Promise.all(
      Array.from({ length: 10 }, (_, i) => client(i % 2 ? a! : b!, ip, { "x-tollgate-challenge": fresh }).chat.completions.create(hello).then(() => "200", (e: APIError) => `${e.status} ${e.message}`)),
    );
    expect(raced.filter((s) => s === "200"), raced.join("\n")).toHaveLength(1);
    expect(raced.filter((s) => s.includes("already used")), raced.join("\n")).toHaveLength(9);
  });
});
