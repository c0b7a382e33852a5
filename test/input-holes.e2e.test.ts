import express from "express";
import type { Server } from "node:http";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTollgate, type Tollgate } from "../src/index.js";
import "../src/entry/express.js";
import "../src/entry/fetch.js";
import { useGateway } from "./use-gateway.js";

/**
 * The smaller holes of issue 13 (defect 8): unusable credentials served as anonymous, oversized
 * embeddings batches, respelled IPv4 addresses dodging per-ip limits and blocklists, and bodies
 * that are not well-formed Unicode. A real `tollgate serve`, the openai SDK, and the library's
 * Web and Express adapters.
 */

const KEY = "tg_holes_alice";

let tg: Tollgate;
let app: Server;
let appUrl = "";
/** The Web-standard adapter (Next.js route handlers), called with Requests the test builds. */
let webHandler: (req: Request) => Promise<Response>;

const config = (upstream: string) => ({
  store: "memory:",
  server: { trust_proxy: 1 },
  providers: { up: { type: "openai", base_url: `${upstream}/v1`, api_key: "sk-up" } },
  models: { "gpt-4o-mini": { provider: "up" }, "text-embedding-3-small": { provider: "up", price: { input: 0.02, output: 0 } } },
  plans: { anonymous: { models: ["gpt-4o-mini"] }, free: { models: ["gpt-4o-mini", "text-embedding-3-small"] } },
  keys: [{ key: KEY, user: "alice", plan: "free" }],
  abuse: { blocklist: ["203.0.113.0/24"] },
  routes: {
    open: { path: "/open", plans: ["anonymous", "free"], default_model: "gpt-4o-mini" },
    perip: { path: "/perip", plans: ["anonymous"], default_model: "gpt-4o-mini", limits: [{ per: "ip", requests: 3, window: "1m" }] },
    embed: { path: "/embed", plans: ["free"], default_model: "text-embedding-3-small" },
  },
});

const { gw, mock } = useGateway({ config: (mock) => config(mock.url) });
// The library's adapters on the same config, in this process.
beforeAll(async () => {
  tg = await createTollgate({ config: config(mock.url) });
  webHandler = tg.fetch(() => Response.json({ ok: true }), { route: "open" });
  const server = express();
  server.post("/express", tg.express({ route: "open" }), (_req, res) => void res.json({ ok: true }));
  server.use(tg.expressErrors());
  app = server.listen(0, "127.0.0.1");
  await new Promise((r) => app.once("listening", r));
  appUrl = `http://127.0.0.1:${(app.address() as { port: number }).port}`;
});
afterAll(async () => {
  if (app) await new Promise((r) => app.close(r));
  await tg?.close();
});

function chat(route: string, headers: Record<string, string> = {}, body: string = JSON.stringify({ messages: [{ role: "user", content: "hi" }] })) {
  return fetch(`${gw.url}/${route}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
}

describe("credentials present but unusable are unauthorized, never anonymous", () => {
  const unusable = { basic: { authorization: "Basic dXNlcjpwYXNzd29yZA==" }, "empty bearer": { authorization: "Bearer " } };

  it("serves a caller with no credentials as anonymous on an anonymous route", async () => {
    expect((await chat("open")).status).toBe(200);
  });

  for (const [name, headers] of Object.entries(unusable)) {
    it(`gateway: ${name} is 401 unauthorized, in OpenAI's and Anthropic's format`, async () => {
      const r = await chat("open", headers);
      expect(r.status).toBe(401);
      const body = await r.json();
      expect(body.error.code).toBe("unauthorized");
      expect(JSON.stringify(body)).not.toContain("dXNlcjpwYXNzd29yZA==");
      const a = await fetch(`${gw.url}/open/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ model: "gpt-4o-mini", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
      });
      expect(a.status).toBe(401);
      expect(await a.json()).toMatchObject({ type: "error", error: { type: "authentication_error", code: "unauthorized" } });
      expect((await fetch(`${gw.url}/open/v1/models`, { headers })).status).toBe(401);
      expect(mock.requests).toHaveLength(0);
    });

    it(`library: ${name} is 401 unauthorized through the Web and Express adapters`, async () => {
      const web = await webHandler(new Request("http://app.test/api", { method: "POST", headers }));
      expect(web.status).toBe(401);
      expect((await web.json()).error.code).toBe("unauthorized");
      const node = await fetch(`${appUrl}/express`, { method: "POST", headers });
      expect(node.status).toBe(401);
      expect((await node.json()).error.code).toBe("unauthorized");
      // And without credentials both adapters admit the anonymous caller.
      expect((await webHandler(new Request("http://app.test/api", { method: "POST" }))).status).toBe(200);
      expect((await fetch(`${appUrl}/express`, { method: "POST" })).status).toBe(200);
    });
  }
});

describe("embeddings batches", () => {
  const embed = (n: number) =>
    new OpenAI({ baseURL: `${gw.url}/embed/v1`, apiKey: KEY, maxRetries: 0 }).embeddings.create({ model: "text-embedding-3-small", input: Array(n).fill("hi") });

  it("refuses 4,096 inputs with 400 param_not_allowed and serves 2,048", async () => {
    const err = await embed(4096).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.code).toBe("param_not_allowed");
    expect(err.param).toBe("input");
    expect(mock.requests).toHaveLength(0);
    expect((await embed(2048)).data).toHaveLength(2048);
  });
});

describe("one caller, however its address is spelled", () => {
  it("admits 3 of 5 requests from mixed spellings of one IPv4 address under a per-ip limit of 3", async () => {
    const spellings = ["198.51.100.7", "::ffff:198.51.100.7", "0:0:0:0:0:ffff:198.51.100.7", "::ffff:c633:6407", "0000:0000:0000:0000:0000:FFFF:198.51.100.7"];
    const statuses: number[] = [];
    for (const ip of spellings) statuses.push((await chat("perip", { "x-forwarded-for": ip })).status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    expect(statuses.filter((s) => s === 429)).toHaveLength(2);
    expect(mock.requests).toHaveLength(3);
  });

  it("blocks a blocklisted network under its IPv4-mapped spellings", async () => {
    for (const ip of ["::ffff:203.0.113.9", "0:0:0:0:0:ffff:203.0.113.9"]) {
      const r = await chat("open", { "x-forwarded-for": ip });
      expect(r.status).toBe(403);
      expect((await r.json()).error.code).toBe("blocked");
    }
    expect(mock.requests).toHaveLength(0);
  });
});

describe("bodies that are not well-formed Unicode", () => {
  const auth = { authorization: `Bearer ${KEY}` };

  it("refuses a lone surrogate escape with 400 invalid_request, sending nothing upstream", async () => {
    const r = await chat("open", auth, '{"messages":[{"role":"user","content":"a\\ud800b"}]}');
    expect(r.status).toBe(400);
    expect((await r.json()).error.code).toBe("invalid_request");
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses invalid UTF-8 bytes with 400 invalid_request, sending nothing upstream", async () => {
    const body = Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"a'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('b"}]}')]);
    const r = await fetch(`${gw.url}/open/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body });
    expect(r.status).toBe(400);
    expect((await r.json()).error.code).toBe("invalid_request");
    expect(mock.requests).toHaveLength(0);
  });

  it("serves an escaped surrogate pair and forwards the character it stands for", async () => {
    const r = await chat("open", auth, '{"messages":[{"role":"user","content":"smile \\ud83d\\ude00"}]}');
    expect(r.status).toBe(200);
    expect(mock.requests[0]!.body.messages[0].content).toBe("smile \u{1F600}");
  });
});
