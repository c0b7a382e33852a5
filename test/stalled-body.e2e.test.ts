import { connect, type Socket } from "node:net";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * SPEC §7.8: a request whose body never arrives holds no quota. An anonymous caller opening
 * sockets that send headers and `{` and then stall must not keep a paying user at 429.
 */
const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    // Long enough that the paying user is served, even on a loaded machine, before it cuts the stalled sockets.
    server: { body_timeout: "6s" },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { anonymous: { models: ["gpt-4o-mini"] }, pro: { models: ["gpt-4o-mini"] } },
    keys: [{ key: "tg_paying", user: "payer", plan: "pro" }],
    routes: {
      chat: { path: "/chat", plans: ["anonymous", "pro"], default_model: "gpt-4o-mini", limits: [{ per: "route", requests: 3, window: "1m" }] },
      full: { path: "/full", plans: ["anonymous", "pro"], default_model: "gpt-4o-mini", limits: [{ per: "route", requests: 1, window: "1m" }] },
    },
  }),
  upstream: { reset: false },
});

/** Sends the headers and the first byte of a 200-byte body, then nothing: the socket stays open. */
function stall(route = "/chat"): Promise<{ socket: Socket; answer: Promise<string>; answered: () => boolean }> {
  const { port } = new URL(gw.url);
  let answered = false;
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => {
      socket.write(`POST ${route}/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{`);
      let text = "";
      const answer = new Promise<string>((done) => {
        socket.setEncoding("utf8").on("data", (d: string) => {
          text += d;
          // A refusal may leave the socket open (keep-alive): its error body is the answer.
          if (/"code":"\w+"/.test(text)) done(text);
        });
        socket.on("close", () => done(text));
      });
      void answer.then(() => (answered = true));
      resolve({ socket, answer, answered: () => answered });
    });
    socket.on("error", reject);
  });
}

/** A gauge's value summed over its labels, from the gateway's /metrics. */
async function gauge(name: string): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

describe("a stalled request body", () => {
  it("holds no route slot: a paying user is served while three stalled sockets wait, and they are cut at body_timeout", async () => {
    const stalled = await Promise.all([stall(), stall(), stall()]);
    // All three are in the gateway, past admission and waiting for their bodies, holding no reservation.
    await expect.poll(() => gauge("tollgate_requests_in_flight"), { timeout: 10_000 }).toBe(3);
    expect(await gauge("tollgate_reservations_in_flight")).toBe(0);
    const client = new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: "tg_paying", maxRetries: 0 });
    const served = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    expect(served.choices[0]!.message.content).toBeTruthy();
    // Served while the stalled sockets still wait: not after body_timeout gave their slots back.
    expect(stalled.map((s) => s.answered())).toEqual([false, false, false]);

    // The stalled bodies are refused at body_timeout, in the API's error format.
    const answers = await Promise.all(stalled.map((s) => s.answer));
    for (const a of answers) {
      expect(a).toMatch(/^HTTP\/1\.1 400/);
      expect(a).toContain('"code":"invalid_request"');
      expect(a).toContain("did not arrive within 6s");
    }
    await gw.waitForRecords(4);
    const refusals = gw.records.filter((r) => r.code === "invalid_request");
    expect(refusals).toHaveLength(3);
    expect(refusals.every((r) => r.decision === "deny" && r.user === "127.0.0.1")).toBe(true);

    // The route's window counts the one request that was served: two more fit, the third is 429.
    const ok = await Promise.all([1, 2].map(() => client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] })));
    expect(ok).toHaveLength(2);
    const refused = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).catch((e) => e);
    expect(refused.status).toBe(429);
    expect(refused.error.code).toBe("rate_limited");
  }, 30_000);

  it("a full window still refuses before the body is read, holding nothing", async () => {
    // Its own route's window, filled here, so this does not lean on the test before it.
    const client = new OpenAI({ baseURL: `${gw.url}/full/v1`, apiKey: "tg_paying", maxRetries: 0 });
    await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    // The refusal comes back without the body (the body never comes: a 400 would mean it waited for it).
    const s = await stall("/full");
    const answer = await s.answer.catch(() => "");
    expect(answer).toMatch(/^HTTP\/1\.1 429/);
    expect(answer.toLowerCase()).toContain("retry-after:");
    s.socket.destroy();
  });
});
