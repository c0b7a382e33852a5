// A browser app whose anonymous visitors pay for each chat request with a little proof of work:
// GET /api/challenge hands out a challenge (tg.fetchChallenge), the page solves it with altcha-lib's
// Web Crypto solver and sends the solution in x-tollgate-challenge; admission verifies it, once.
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { serve } from "@hono/node-server";
import OpenAI from "openai";
import { createTollgate } from "tollgate";
import "tollgate/fetch"; // tg.fetch(), tg.fetchChallenge()
import { simulatedFetch } from "tollgate/testing";

// One process signs and verifies, so a per-start secret will do here; replicas share one (env:).
process.env.TOLLGATE_CHALLENGE_SECRET ??= randomBytes(32).toString("hex");
const tg = await createTollgate({ config: new URL("./tollgate.yaml", import.meta.url).pathname });

// Web Requests carry no socket: the address each came from, for the gate's per-visitor identity.
const peers = new WeakMap();
const ip = (req) => peers.get(req) ?? "0.0.0.0";

const chat = tg.fetch(
  async (req, gate) => {
    const { prompt = "hello" } = await req.json().catch(() => ({}));
    const openai = new OpenAI({ apiKey: "unused", baseURL: "http://simulated/v1", fetch: gate.fetch(simulatedFetch()), maxRetries: 0 });
    const answer = await openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: String(prompt) }] });
    return Response.json({ answer: answer.choices[0].message.content });
  },
  { route: "chat", ip },
);
const challenge = tg.fetchChallenge({ route: "chat", ip });

// altcha-lib's browser solver, served from node_modules (nothing is fetched from the internet):
// the v2 proof of work and its Web Crypto PBKDF2, with the two modules they import.
const ALTCHA = join(dirname(createRequire(import.meta.url).resolve("altcha-lib")), "..", "..", "esm", "v2");
const SCRIPTS = new Set(["pow.js", "helpers.js", "types.js", "algorithms/web/pbkdf2.js"]);
const js = (text) => new Response(text, { headers: { "content-type": "text/javascript; charset=utf-8" } });

async function route(req, env) {
  peers.set(req, env.incoming.socket.remoteAddress);
  const { pathname } = new URL(req.url);
  if (pathname === "/" && req.method === "GET") return new Response(await readFile(new URL("./index.html", import.meta.url)), { headers: { "content-type": "text/html; charset=utf-8" } });
  if (pathname.startsWith("/altcha/") && SCRIPTS.has(pathname.slice(8))) return js(await readFile(join(ALTCHA, pathname.slice(8))));
  if (pathname === "/api/challenge" && req.method === "GET") return challenge(req);
  if (pathname === "/api/chat" && req.method === "POST") return chat(req);
  return new Response("not found", { status: 404 });
}

serve({ fetch: route, port: Number(process.env.PORT ?? 3000), hostname: "127.0.0.1" }, (info) => {
  console.log(`proof-of-work example listening on http://127.0.0.1:${info.port}`);
});
