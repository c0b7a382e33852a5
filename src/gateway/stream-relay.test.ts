import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { Engine } from "../core/engine.js";
import type { UsageRecord } from "../core/usage-record.js";
import { createProviders } from "../providers/registry.js";
import { MemoryStore } from "../stores/memory.js";
import { createGateway, type Gateway } from "./server.js";

/**
 * The relay writes what the provider sent: the bytes of each event it passes on, as they came,
 * however the provider spaced its JSON. It still cuts exactly at the output cap and stops at an
 * error event, including when they fall in the middle of one read that carries many events.
 */

const CAP = 5;
const SECRET = "sk-upstream-relay-0123456789";
const ev = (data: object | string) => `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
const role = `data:{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n`;
/** Spaced unlike JSON.stringify would, with a field tollgate does not know: re-serialising would show. */
const word = (i: number) => `data: {"id":"c1", "object":"chat.completion.chunk", "created":1, "model":"gpt-4o-mini", "choices":[{"index":0, "delta":{"content":" word"}, "finish_reason":null}], "x_seq": ${i}}\r\n\r\n`;
const finish = ev({ id: "c1", object: "chat.completion.chunk", created: 1, model: "gpt-4o-mini", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] });
const usage = (n: number) => ev({ id: "c1", object: "chat.completion.chunk", created: 1, model: "gpt-4o-mini", choices: [], usage: { prompt_tokens: 9, completion_tokens: n, total_tokens: 9 + n } });
const done = "data: [DONE]\n\n";
const providerError = ev({ error: { message: `Incorrect API key provided: ${SECRET}`, type: "invalid_request_error" } });

/** What the upstream writes for the next request: each string is one write (one read, mostly). */
let script: string[] = [];
let upstreamClosed: Promise<void> = Promise.resolve();
let upstream: Server;
let gateway: Gateway;
let base: string;
const records: UsageRecord[] = [];

beforeAll(async () => {
  upstream = createServer((req, res) => {
    req.resume();
    let closed!: () => void;
    upstreamClosed = new Promise((r) => (closed = r));
    res.on("close", () => closed());
    res.writeHead(200, { "content-type": "text/event-stream" });
    const writes = [...script];
    const next = () => {
      const w = writes.shift();
      if (w === undefined) return void res.end();
      res.write(w);
      setTimeout(next, 5);
    };
    next();
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { up: { type: "openai", base_url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, api_key: SECRET } },
      models: { m: { provider: "up", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
      plans: { free: { models: ["m"], budget: { daily: 100 } } },
      keys: [{ key: "tg_relay_user", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", input: { max_output_tokens: CAP } } },
    }),
  );
  const engine = new Engine({ config, store: new MemoryStore(), providers: createProviders(config), onRecord: (r) => records.push(r), warn: () => {} });
  gateway = createGateway(engine);
  await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}/chat/v1`;
});

afterAll(async () => {
  await gateway?.drain(100);
  await new Promise((r) => upstream?.close(r));
});

beforeEach(() => {
  records.length = 0;
});

/** One streamed request; the body the client read and the request's usage record. */
function stream(body: object = {}): Promise<{ body: string; record: UsageRecord | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/chat/completions`, { method: "POST", headers: { authorization: "Bearer tg_relay_user", "content-type": "application/json" } }, (res) => {
      const id = String(res.headers["x-tollgate-request-id"]);
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ body: Buffer.concat(parts).toString(), record: records.find((r) => r.request_id === id) }));
    });
    req.on("error", reject);
    req.end(JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true, ...body }));
  });
}

describe("stream relay: the provider's bytes, metered", () => {
  it("passes the events on byte for byte, and leaves out only the usage chunk the client did not ask for", async () => {
    const words = [1, 2, 3].map(word);
    script = [role + words[0], words[1]! + words[2] + finish + usage(3) + done];
    const asked = await stream({ stream_options: { include_usage: true } });
    expect(asked.body).toBe(script.join(""));
    expect(asked.record).toMatchObject({ ended: "complete", usage_source: "provider", output_tokens: 3, input_tokens: 9 });

    const plain = await stream();
    expect(plain.body).toBe(role + words.join("") + finish + done);
    expect(plain.record).toMatchObject({ ended: "complete", usage_source: "provider", output_tokens: 3 });
  });

  it("cuts at exactly the cap in the middle of one read of many events, then ends the stream properly", async () => {
    const words = Array.from({ length: 9 }, (_, i) => word(i + 1));
    script = [role + words.join("") + finish + done];
    const { body, record } = await stream();
    // The events before the cap as they came, and none after.
    const kept = role + words.slice(0, CAP).join("");
    expect(body.startsWith(kept)).toBe(true);
    expect(body).not.toContain(`"x_seq": ${CAP + 1}`);
    const rest = body.slice(kept.length).split("\n\n").filter(Boolean);
    expect(rest).toHaveLength(2);
    expect(JSON.parse(rest[0]!.slice("data: ".length)).choices[0].finish_reason).toBe("length");
    expect(rest[1]).toBe("data: [DONE]");
    expect(record).toMatchObject({ ended: "output_cap", usage_source: "counted", output_tokens: CAP });
    await upstreamClosed;
  });

  for (const sameRead of [true, false]) {
    it(`stops at an error event from the provider ${sameRead ? "inside one read" : "in a later read"}: its message never reaches the client`, async () => {
      const words = [1, 2].map(word);
      script = sameRead ? [role + words.join("") + providerError + word(3) + done] : [role + words.join(""), providerError + word(3) + done];
      const { body, record } = await stream();
      expect(body.startsWith(role + words.join(""))).toBe(true);
      expect(body).not.toContain(SECRET);
      expect(body).not.toContain('"x_seq": 3');
      const rest = body.slice((role + words.join("")).length).split("\n\n").filter(Boolean);
      expect(JSON.parse(rest[0]!.slice("data: ".length))).toMatchObject({ error: { code: "upstream_error" } });
      expect(rest[1]).toBe("data: [DONE]");
      expect(record).toMatchObject({ ended: "upstream_error", usage_source: "counted", output_tokens: 2 });
    });
  }

  it("the official SDK reads the forwarded stream, and raises the error event as an APIError", async () => {
    const client = new OpenAI({ baseURL: base, apiKey: "tg_relay_user", maxRetries: 0, logLevel: "off" });
    script = [role + [1, 2, 3].map(word).join("") + finish + done];
    let text = "";
    for await (const c of await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true })) text += c.choices[0]?.delta.content ?? "";
    expect(text).toBe(" word word word");

    script = [role + word(1), providerError];
    let seen = "";
    const read = async () => {
      for await (const c of await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true })) seen += c.choices[0]?.delta.content ?? "";
    };
    await expect(read()).rejects.toBeInstanceOf(OpenAI.APIError);
    expect(seen).toBe(" word");
  });
});
