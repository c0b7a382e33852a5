import { connect } from "node:net";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    server: { max_body_bytes: 1_048_576 },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    keys: [{ key: "tg_in", user: "ina", plan: "free" }],
    routes: {
      chat: {
        path: "/chat",
        plans: ["free"],
        default_model: "gpt-4o-mini",
        input: { max_prompt_chars: 8000, max_output_tokens: 800, max_messages: 5, max_tools: 2, max_attachments: 2, max_attachment_bytes: 1000 },
      },
      strict: { path: "/strict", plans: ["free"], default_model: "gpt-4o-mini", input: { max_output_tokens: 800, on_excess_output_tokens: "reject" } },
    },
  }),
});

const user = (content: unknown) => ({ messages: [{ role: "user", content }] });
async function post(body: unknown, route = "chat", init: RequestInit = {}) {
  const res = await fetch(`${gw.url}/${route}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: "Bearer tg_in", "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
  return { status: res.status, headers: res.headers, body: await res.json().catch(() => null) };
}

/** The refusal reached nobody upstream, and the gateway still serves. */
async function expectRefusedThenServing(r: { status: number; body: any }, status: number, code: string) {
  expect(r.status).toBe(status);
  expect(r.body.error.code).toBe(code);
  expect(mock.requests).toHaveLength(0);
  expect((await post(user("still there?"))).status).toBe(200);
}

describe("input caps", () => {
  it("admits 8,000 characters and refuses 8,001, naming the cap and the value", async () => {
    expect((await post(user("a".repeat(8000)))).status).toBe(200);
    mock.reset();
    const r = await post(user("a".repeat(8001)));
    expect(r.body.error.message).toMatch(/8001.*8000.*max_prompt_chars/);
    await expectRefusedThenServing(r, 413, "input_too_large");
  });

  it("counts zero-width and combining padding as characters", async () => {
    await expectRefusedThenServing(await post(user("a" + "\u200B".repeat(8000))), 413, "input_too_large");
    mock.reset();
    await expectRefusedThenServing(await post(user("e" + "\u0301".repeat(8000))), 413, "input_too_large");
  });

  it("counts every text the model reads: system, tool results, text parts", async () => {
    const body = {
      messages: [
        { role: "system", content: "s".repeat(3000) },
        { role: "user", content: [{ type: "text", text: "u".repeat(3000) }] },
        { role: "tool", tool_call_id: "x", content: "t".repeat(2001) },
      ],
    };
    await expectRefusedThenServing(await post(body), 413, "input_too_large");
  });

  it("refuses an attachment whose base64 decodes past the cap, and too many attachments", async () => {
    const img = (bytes: number) => ({ type: "image_url", image_url: { url: `data:image/png;base64,${Buffer.alloc(bytes, 7).toString("base64")}` } });
    const r = await post(user([{ type: "text", text: "look" }, img(1001)]));
    expect(r.body.error.message).toMatch(/max_attachment_bytes/);
    await expectRefusedThenServing(r, 413, "input_too_large");
    mock.reset();
    await expectRefusedThenServing(await post(user([img(10), img(10), img(10)])), 413, "input_too_large");
  });

  it("refuses too many messages and tools", async () => {
    await expectRefusedThenServing(await post({ messages: Array.from({ length: 6 }, () => ({ role: "user", content: "x" })) }), 413, "input_too_large");
    mock.reset();
    const tool = (n: string) => ({ type: "function", function: { name: n, parameters: { type: "object" } } });
    await expectRefusedThenServing(await post({ ...user("x"), tools: [tool("a"), tool("b"), tool("c")] }), 413, "input_too_large");
  });

  it("refuses a 10 MB body while reading it", async () => {
    const r = await post(user("x".repeat(10_000_000)));
    await expectRefusedThenServing(r, 413, "input_too_large");
  });

  it("refuses a Content-Length over the cap before reading, and a Content-Length that lies low", async () => {
    const raw = (head: string, body: string) =>
      new Promise<string>((resolve, reject) => {
        const url = new URL(gw.url);
        const socket = connect(Number(url.port), url.hostname, () => socket.write(head + body));
        let out = "";
        socket.setEncoding("utf8").on("data", (d) => (out += d));
        socket.on("end", () => resolve(out)).on("close", () => resolve(out)).on("error", reject);
        setTimeout(() => socket.destroy(), 2000);
      });
    const over = await raw(`POST /chat/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tg_in\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n`, "{");
    expect(over).toMatch(/^HTTP\/1\.1 413/);
    const body = JSON.stringify(user("hello"));
    const lie = await raw(`POST /chat/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tg_in\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n`, body);
    expect(lie).toMatch(/^HTTP\/1\.1 400/);
    expect(lie).toContain("invalid_request");
    expect(mock.requests).toHaveLength(0);
    expect((await post(user("next"))).status).toBe(200);
  });

  it("refuses 100,000 nested arrays and duplicate keys", async () => {
    await expectRefusedThenServing(await post(`{"messages":${"[".repeat(100_000)}${"]".repeat(100_000)}}`), 400, "invalid_request");
    mock.reset();
    await expectRefusedThenServing(await post(`{"messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_tokens":100000}`), 400, "invalid_request");
  });

  it("refuses wrong types, negative and fractional token counts, naming the field", async () => {
    const r = await post({ ...user("x"), max_tokens: -5 });
    expect(r.body.error.param).toBe("max_tokens");
    await expectRefusedThenServing(r, 400, "invalid_request");
    mock.reset();
    await expectRefusedThenServing(await post({ ...user("x"), max_tokens: 1.5 }), 400, "invalid_request");
    mock.reset();
    await expectRefusedThenServing(await post(`{"messages":[{"role":"user","content":"x"}],"max_tokens":1e400}`), 400, "invalid_request");
  });
});

describe("output clamp and cost multipliers", () => {
  const client = (route = "chat") => new OpenAI({ baseURL: `${gw.url}/${route}/v1`, apiKey: "tg_in", maxRetries: 0 });

  it("serves max_tokens: 100000 with the route cap upstream, and says so", async () => {
    const { response } = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: 100000 }).withResponse();
    expect(mock.requests[0]!.body.max_tokens).toBe(800);
    expect(response.headers.get("x-tollgate-clamped")).toBe("max_tokens=100000->800");
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec.clamped).toEqual({ max_tokens: { from: 100000, to: 800 } });
  });

  it("sends every output field with one value when max_tokens and max_completion_tokens disagree", async () => {
    await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: 100000, max_completion_tokens: 300 });
    expect(mock.requests[0]!.body).toMatchObject({ max_tokens: 300, max_completion_tokens: 300 });
  });

  it("rejects excess output tokens on a route that says reject", async () => {
    const err = await client("strict").chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_completion_tokens: 801 }).catch((e) => e);
    expect(err.status).toBe(400);
    expect(err.code).toBe("output_tokens_exceeded");
    expect(mock.requests).toHaveLength(0);
  });

  it("refuses n: 5 and logprobs with param_not_allowed, sending nothing upstream", async () => {
    const n = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], n: 5 }).catch((e) => e);
    expect(n.status).toBe(400);
    expect(n.code).toBe("param_not_allowed");
    expect(n.param).toBe("n");
    const lp = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], logprobs: true, top_logprobs: 5 }).catch((e) => e);
    expect(lp.code).toBe("param_not_allowed");
    const bias = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], logit_bias: { "50256": -100 } }).catch((e) => e);
    expect(bias.code).toBe("param_not_allowed");
    expect(mock.requests).toHaveLength(0);
  });
});
