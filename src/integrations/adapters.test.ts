import { serve } from "@hono/node-server";
import express from "express";
import Fastify from "fastify";
import { Hono } from "hono";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../config/errors.js";
import { expressErrorHandler, expressMiddleware } from "../entry/express.js";
import { fastifyPlugin } from "../entry/fastify.js";
import { fetchHandler } from "../entry/fetch.js";
import { honoMiddleware } from "../entry/hono.js";
import type { Gate } from "../library/gate.js";
import { createTollgate, type Tollgate } from "../library/tollgate.js";

// The handlers below read the Gate with no cast: these lines only compile while the adapters'
// type augmentations exist (TS2339 on `req.tollgate` without them), and `npm test` type-checks first.

const CONFIG = {
  store: "memory:",
  providers: { sim: { type: "simulated" } },
  models: { "gpt-4o-mini": { provider: "sim" } },
  plans: { free: { models: ["gpt-4o-mini"] } },
  keys: [{ key: "tg_adapter_key", user: "ada", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"] } },
};

let tg: Tollgate;
beforeAll(async () => {
  tg = await createTollgate({ config: CONFIG });
});
afterAll(() => tg?.close());

const gateInfo = (gate: Gate) => ({ user: gate.identity.user, route: gate.record.route });
const post = (url: string, key = "tg_adapter_key") => fetch(url, { method: "POST", headers: { authorization: `Bearer ${key}` } });

/** POSTs /chat to a Node server once it listens, then closes it. */
async function postChat(server: Server): Promise<unknown> {
  if (!server.listening) await new Promise((r) => server.once("listening", r));
  try {
    return await (await post(`http://127.0.0.1:${(server.address() as AddressInfo).port}/chat`)).json();
  } finally {
    server.close();
  }
}

describe("an adapter names an unknown route when it is made, not at the first request", () => {
  const unknown = { route: "chta" };
  it("express, hono, fetch and tg.* throw a ConfigError listing the config's routes", () => {
    for (const make of [() => expressMiddleware(tg, unknown), () => honoMiddleware(tg, unknown), () => fetchHandler(tg, () => new Response(), unknown), () => tg.express(unknown), () => tg.hono(unknown)]) {
      expect(make).toThrow(ConfigError);
      expect(make).toThrow('no route named "chta" in the config (its routes: chat)');
    }
  });
  it("fastify fails the registration, before the app listens", async () => {
    const app = Fastify();
    const start = async () => {
      await app.register(fastifyPlugin(tg), unknown);
      await app.ready();
    };
    await expect(start()).rejects.toThrow('no route named "chta"');
  });
});

describe("each framework's handler reads the request's Gate, typed", () => {
  it("express: req.tollgate", async () => {
    const app = express();
    app.post("/chat", expressMiddleware(tg, { route: "chat" }), (req, res) => {
      res.json(gateInfo(req.tollgate));
    });
    app.use(expressErrorHandler());
    expect(await postChat(app.listen(0, "127.0.0.1"))).toEqual({ user: "ada", route: "chat" });
  });

  it("fastify: request.tollgate", async () => {
    const app = Fastify();
    await app.register(async (scope) => {
      await scope.register(tg.fastify, { route: "chat" });
      scope.post("/chat", async (req) => gateInfo(req.tollgate));
    });
    try {
      const url = await app.listen({ port: 0, host: "127.0.0.1" });
      expect(await (await post(`${url}/chat`)).json()).toEqual({ user: "ada", route: "chat" });
    } finally {
      await app.close();
    }
  });

  it('hono: c.get("tollgate")', async () => {
    const app = new Hono();
    app.post("/chat", honoMiddleware(tg, { route: "chat" }), (c) => c.json(gateInfo(c.get("tollgate"))));
    expect(await postChat(serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }) as Server)).toEqual({ user: "ada", route: "chat" });
  });

  it("fetch: the handler's second argument; a refusal is the adapter's answer", async () => {
    const handler = tg.fetch(async (_req, gate) => Response.json(gateInfo(gate)), { route: "chat" });
    expect(await (await handler(new Request("http://app/chat", { method: "POST", headers: { authorization: "Bearer tg_adapter_key" } }))).json()).toEqual({ user: "ada", route: "chat" });
    const refused = await handler(new Request("http://app/chat", { method: "POST", headers: { authorization: "Bearer tg_nobody" } }));
    expect(refused.status).toBe(401);
  });
});
