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
    server: { body_timeout: "2s" },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { anonymous: { models: ["gpt-4o-mini"] }, pro: { models: ["gpt-4o-mini"] } },
    keys: [{ key: "tg_paying", user: "payer", plan: "pro" }],
    routes: {
      chat: { path: "/chat", plans: ["anonymous", "pro"], default_model: "gpt-4o-mini", limits: [{ per: "route", requests: 3, window: "1m" }] },
    },
  }),
  upstream: { reset: false },
});

/** Sends the headers and the first byte of a 200-byte body, then nothing: the socket stays open. */
function stall(): Promise<{ socket: Socket; answer: Promise<string> }> {
  const { port } = new URL(gw.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => {
      socket.write("POST /chat/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{");
      let text = "";
      const answer = new Promise<string>((done) => {
        socket.setEncoding("utf8").on("data", (d: string) => {
          text += d;
          // A refusal may leave the socket open (keep-alive): its error body is the answer.
          if (/"code":"\w+"/.test(text)) done(text);
        });
        socket.on("close", () => done(text));
      });
      resolve({ socket, answer });
    });
    socket.on("error", reject);
  });
}

describe("a stalled request body", () => {
  it("holds no route slot: a paying user is served while three stalled sockets wait, and they are cut at body_timeout", async () => {
    const stalled = await Promise.all([stall(), stall(), stall()]);
    // Give the gateway time to run admission for all three.
    await new Promise((r) => setTimeout(r, 300));
    const client = new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: "tg_paying", maxRetries: 0 });
    const started = performance.now();
    const served = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    expect(served.choices[0]!.message.content).toBeTruthy();
    expect(performance.now() - started).toBeLessThan(1500);

    // The stalled bodies are refused at body_timeout (2 s), in the API's error format.
    const answers = await Promise.all(stalled.map((s) => s.answer));
    for (const a of answers) {
      expect(a).toMatch(/^HTTP\/1\.1 400/);
      expect(a).toContain('"code":"invalid_request"');
      expect(a).toContain("did not arrive within 2s");
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
  });

  it("a full window still refuses before the body is read, holding nothing", async () => {
    // The window is full from the previous test: the refusal comes back without the body.
    const s = await stall();
    const answer = await s.answer.catch(() => "");
    expect(answer).toMatch(/^HTTP\/1\.1 429/);
    expect(answer.toLowerCase()).toContain("retry-after:");
    s.socket.destroy();
  });
});
