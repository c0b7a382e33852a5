import express from "express";
import Fastify from "fastify";
import type { AddressInfo } from "node:net";
import type { Challenge } from "altcha-lib";
import { afterAll, beforeAll, expect, it } from "vitest";
import { expressChallenge, expressErrorHandler } from "../entry/express.js";
import { fastifyChallenge } from "../entry/fastify.js";
import { createTollgate, type Tollgate } from "../library/tollgate.js";
import { solveChallengeHeader } from "../testing/solve-challenge.js";

/** Library mode's side of the proof-of-work gate: the app serves the challenge, admission verifies the solution. */
let tg: Tollgate;
beforeAll(async () => {
  tg = await createTollgate({
    config: {
      store: "memory:",
      server: { log: "none" },
      providers: { sim: { type: "simulated" } },
      models: { "gpt-4o-mini": { provider: "sim" } },
      plans: { anonymous: { models: ["gpt-4o-mini"] } },
      routes: { chat: { path: "/chat", plans: ["anonymous"], challenge: { for: "anonymous", difficulty: { base: 20, max: 200 }, secret: "adapter-challenge-secret-0123456789abcdef" } } },
    },
  });
});
afterAll(() => tg?.close());

it("express: tg.expressChallenge() offers a challenge, the middleware admits its solution once and refuses the replay with a fresh one", async () => {
  const app = express();
  app.get("/challenge", expressChallenge(tg, { route: "chat" }));
  app.post("/chat", tg.express({ route: "chat" }), (req, res) => void res.json({ user: req.tollgate.identity.user }));
  app.use(expressErrorHandler());
  const server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const offer = await fetch(`${base}/challenge`);
    expect(offer.headers.get("x-tollgate-challenge-required")).toBe("true");
    const header = await solveChallengeHeader((await offer.json()) as Challenge);
    const chat = (h?: string) => fetch(`${base}/chat`, { method: "POST", headers: h ? { "x-tollgate-challenge": h } : {} });

    const missing = await chat();
    expect(missing.status).toBe(403);
    expect(await missing.json()).toMatchObject({ error: { code: "challenge_required", challenge: { parameters: { data: { route: "chat" } } } } });
    const ok = await chat(header);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ user: "127.0.0.1" });
    const replay = await chat(header);
    expect(replay.status).toBe(403);
    expect(await replay.json()).toMatchObject({ error: { code: "challenge_required", message: expect.stringContaining("already used"), challenge: { signature: expect.any(String) } } });
  } finally {
    server.close();
  }
});

it("fastify: tg.fastifyChallenge() outside the plugin's scope offers the challenge; the plugin admits its solution once", async () => {
  const app = Fastify();
  app.get("/challenge", fastifyChallenge(tg, { route: "chat" }));
  await app.register(async (scope) => {
    await scope.register(tg.fastify, { route: "chat" });
    scope.post("/chat", async (req) => ({ user: req.tollgate.identity.user }));
  });
  const base = await app.listen({ port: 0, host: "127.0.0.1" });
  try {
    const offer = await fetch(`${base}/challenge`);
    expect(offer.status).toBe(200);
    expect(offer.headers.get("x-tollgate-challenge-required")).toBe("true");
    const header = await solveChallengeHeader((await offer.json()) as Challenge);
    const chat = (h?: string) => fetch(`${base}/chat`, { method: "POST", headers: h ? { "x-tollgate-challenge": h } : {} });
    expect((await chat()).status).toBe(403);
    expect((await chat(header)).status).toBe(200);
    const replay = await chat(header);
    expect(replay.status).toBe(403);
    expect(await replay.json()).toMatchObject({ error: { code: "challenge_required", message: expect.stringContaining("already used") } });
  } finally {
    await app.close();
  }
});
