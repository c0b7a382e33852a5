import Anthropic from "@anthropic-ai/sdk";
import { encode } from "gpt-tokenizer/encoding/o200k_base";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { MOCK_WORDS, MockUpstream, countPromptTokens, countTokens, mockChunk, mockText } from "./mock-upstream.js";

let mock: MockUpstream;
let openai: OpenAI;
let anthropic: Anthropic;

beforeAll(async () => {
  mock = await MockUpstream.start();
  openai = new OpenAI({ baseURL: `${mock.url}/v1`, apiKey: "x", maxRetries: 0, logLevel: "off" });
  anthropic = new Anthropic({ baseURL: mock.url, apiKey: "x", maxRetries: 0, logLevel: "off" });
});
afterAll(() => mock.close());
beforeEach(() => mock.reset());

const messages = [
  { role: "system" as const, content: "You are terse." },
  { role: "user" as const, content: "Say something." },
];

describe("token accounting", () => {
  it("uses chunks that are exactly one o200k token each", () => {
    for (const w of MOCK_WORDS) {
      expect(encode(w)).toHaveLength(1);
      expect(encode(` ${w}`)).toHaveLength(1);
    }
    for (const n of [1, 20, 100]) expect(encode(mockText(n))).toHaveLength(n);
    expect(mockText(3)).toBe(mockChunk(0) + mockChunk(1) + mockChunk(2));
  });

  it("counts prompt tokens as 3 + Σ(4 + text tokens) + tools JSON", () => {
    const expected = 3 + (4 + countTokens("You are terse.")) + (4 + countTokens("Say something."));
    expect(countPromptTokens("chat", { messages })).toBe(expected);
    expect(countPromptTokens("messages", { system: "You are terse.", messages: [messages[1]] })).toBe(expected);
    expect(countPromptTokens("responses", { instructions: "You are terse.", input: "Say something." })).toBe(expected);
    const tools = [{ type: "function", function: { name: "f", parameters: {} } }];
    expect(countPromptTokens("chat", { messages, tools })).toBe(expected + countTokens(JSON.stringify(tools)));
  });
});

describe("chat completions", () => {
  it("answers non-stream requests and records them", async () => {
    const res = await openai.chat.completions.create({ model: "gpt-4o-mini", messages });
    expect(res.object).toBe("chat.completion");
    expect(res.model).toBe("gpt-4o-mini");
    expect(res.choices[0].message.content).toBe(mockText(20));
    expect(res.choices[0].finish_reason).toBe("stop");
    const prompt = countPromptTokens("chat", { messages });
    expect(res.usage).toMatchObject({ prompt_tokens: prompt, completion_tokens: 20, total_tokens: prompt + 20 });

    expect(mock.requests).toHaveLength(1);
    const rec = mock.requests[0];
    expect(rec).toMatchObject({ method: "POST", path: "/v1/chat/completions" });
    expect(rec.headers.authorization).toBe("Bearer x");
    expect(rec.body.messages).toEqual(messages);
    expect(JSON.parse(rec.rawBody)).toEqual(rec.body);
    expect(rec.finishedAt).toBeGreaterThanOrEqual(rec.receivedAt);
    expect(rec.closedAt).toBeUndefined();
  });

  it("honours max tokens unless told to misbehave, and reports reasoning tokens", async () => {
    const cut = await openai.chat.completions.create({ model: "m", messages, max_completion_tokens: 5 });
    expect(cut.choices[0]).toMatchObject({ finish_reason: "length", message: { content: mockText(5) } });
    expect(cut.usage?.completion_tokens).toBe(5);

    mock.setBehavior({ outputTokens: 30, ignoreMaxTokens: true, reasoningTokens: 7 });
    const over = await openai.chat.completions.create({ model: "m", messages, max_tokens: 5 });
    expect(over.choices[0].message.content).toBe(mockText(30));
    expect(over.usage?.completion_tokens).toBe(37);
    expect(over.usage?.completion_tokens_details?.reasoning_tokens).toBe(7);
  });

  it("streams one token per chunk with usage last when asked", async () => {
    mock.setBehavior({ outputTokens: 8 });
    const stream = await openai.chat.completions.create({
      model: "m",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0].choices[0].delta.role).toBe("assistant");
    const deltas = chunks.flatMap((c) => (c.choices[0]?.delta.content ? [c.choices[0].delta.content] : []));
    expect(deltas).toHaveLength(8);
    expect(deltas.every((d) => encode(d).length === 1)).toBe(true);
    expect(deltas.join("")).toBe(mockText(8));
    expect(chunks.at(-2)?.choices[0].finish_reason).toBe("stop");
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage?.completion_tokens).toBe(8);
    expect(mock.requests[0].chunksSent).toBe(8);
  });

  it("omits usage when asked, even with include_usage", async () => {
    mock.setBehavior({ omitUsage: true, outputTokens: 2 });
    const stream = await openai.chat.completions.create({
      model: "m",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const c of stream) expect(c.usage ?? undefined).toBeUndefined();
    const res = await openai.chat.completions.create({ model: "m", messages });
    expect(res.usage).toBeUndefined();
  });

  it("streams tool calls that the SDK stream helper can assemble", async () => {
    const args = JSON.stringify({ city: "Paris", unit: "celsius" });
    mock.setBehavior({ toolCalls: [{ name: "get_weather", arguments: args }] });
    const final = await openai.chat.completions.stream({ model: "m", messages }).finalChatCompletion();
    expect(final.choices[0].finish_reason).toBe("tool_calls");
    const call = final.choices[0].message.tool_calls?.[0];
    expect(call?.type === "function" && call.function).toEqual({ name: "get_weather", arguments: args });
    expect(mock.requests[0].chunksSent).toBe(encode(args).length);
  });

  it("splits custom text into one-token chunks without breaking characters", async () => {
    const text = "Grüße 👋 from the mock — ünïcödé!";
    mock.setBehavior({ text });
    const stream = await openai.chat.completions.create({ model: "m", messages, stream: true });
    let got = "";
    for await (const c of stream) got += c.choices[0]?.delta.content ?? "";
    expect(got).toBe(text);
    const res = await openai.chat.completions.create({ model: "m", messages });
    expect(res.usage?.completion_tokens).toBe(encode(text).length);
  });
});

describe("responses", () => {
  it("answers non-stream requests", async () => {
    mock.setBehavior({ outputTokens: 6, reasoningTokens: 2 });
    const res = await openai.responses.create({ model: "gpt-4o", instructions: "Be brief.", input: "Hi" });
    expect(res.status).toBe("completed");
    expect(res.output_text).toBe(mockText(6));
    const prompt = countPromptTokens("responses", { instructions: "Be brief.", input: "Hi" });
    expect(res.usage).toMatchObject({ input_tokens: prompt, output_tokens: 8, total_tokens: prompt + 8 });
    expect(res.usage?.output_tokens_details.reasoning_tokens).toBe(2);
  });

  it("streams events the SDK stream helper accepts", async () => {
    mock.setBehavior({ outputTokens: 5 });
    const stream = openai.responses.stream({ model: "gpt-4o", input: "Hi" });
    const types: string[] = [];
    const deltas: string[] = [];
    stream.on("event", (e) => types.push(e.type));
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    expect(final.output_text).toBe(mockText(5));
    expect(final.usage?.output_tokens).toBe(5);
    expect(deltas).toHaveLength(5);
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(types).toContain("response.output_item.done");
  });

  it("streams function calls", async () => {
    const args = JSON.stringify({ q: "tollgate" });
    mock.setBehavior({ toolCalls: [{ name: "search", arguments: args }] });
    const final = await openai.responses.stream({ model: "gpt-4o", input: "Hi" }).finalResponse();
    expect(final.output).toHaveLength(1);
    expect(final.output[0]).toMatchObject({ type: "function_call", name: "search", arguments: args });
  });

  it("reports truncation as an incomplete response", async () => {
    const res = await openai.responses.create({ model: "gpt-4o", input: "Hi", max_output_tokens: 16 });
    expect(res.status).toBe("incomplete");
    expect(res.incomplete_details?.reason).toBe("max_output_tokens");
    expect(res.usage?.output_tokens).toBe(16);
  });
});

describe("anthropic messages", () => {
  const params = { model: "claude-haiku-4-5", max_tokens: 100, system: "Be brief.", messages: [{ role: "user" as const, content: "Hi" }] };
  const prompt = countPromptTokens("messages", params);

  it("answers non-stream requests", async () => {
    const res = await anthropic.messages.create(params);
    expect(res.content).toEqual([{ type: "text", text: mockText(20) }]);
    expect(res.stop_reason).toBe("end_turn");
    expect(res.usage).toMatchObject({ input_tokens: prompt, output_tokens: 20 });
    expect(mock.requests[0].headers["anthropic-version"]).toBeTruthy();
    expect(mock.requests[0].headers["x-api-key"]).toBe("x");
  });

  it("streams events that MessageStream turns into a final message", async () => {
    mock.setBehavior({ outputTokens: 4 });
    const stream = anthropic.messages.stream(params);
    const texts: string[] = [];
    stream.on("text", (t) => texts.push(t));
    const final = await stream.finalMessage();
    expect(texts).toEqual([0, 1, 2, 3].map(mockChunk));
    expect(final.content).toEqual([{ type: "text", text: mockText(4) }]);
    expect(final.usage).toMatchObject({ input_tokens: prompt, output_tokens: 4 });
    expect(final.stop_reason).toBe("end_turn");
  });

  it("streams tool_use blocks and stops at max_tokens", async () => {
    mock.setBehavior({ toolCalls: [{ name: "lookup", arguments: '{"id":42}' }] });
    const final = await anthropic.messages.stream(params).finalMessage();
    expect(final.stop_reason).toBe("tool_use");
    expect(final.content[0]).toMatchObject({ type: "tool_use", name: "lookup", input: { id: 42 } });

    mock.setBehavior({});
    const cut = await anthropic.messages.create({ ...params, max_tokens: 3 });
    expect(cut.stop_reason).toBe("max_tokens");
    expect(cut.usage.output_tokens).toBe(3);
  });
});

describe("embeddings and models", () => {
  it("returns deterministic vectors in float and base64 encodings", async () => {
    const input = ["first text", "second text"];
    const b64 = await openai.embeddings.create({ model: "text-embedding-3-small", input }); // SDK asks for base64
    const flt = await openai.embeddings.create({ model: "text-embedding-3-small", input, encoding_format: "float" });
    expect(mock.requests[0].body.encoding_format).toBe("base64");
    expect(flt.data).toHaveLength(2);
    expect(flt.data[0].embedding).toHaveLength(8);
    expect(b64.data.map((d) => d.embedding)).toEqual(flt.data.map((d) => d.embedding));
    expect(flt.data[0].embedding).not.toEqual(flt.data[1].embedding);
    expect(flt.usage.prompt_tokens).toBe(countTokens("first text") + countTokens("second text"));
    const single = await openai.embeddings.create({ model: "e", input: "first text", encoding_format: "float" });
    expect(single.data[0].embedding).toEqual(flt.data[0].embedding);
  });

  it("lists models and 404s unknown routes", async () => {
    const page = await openai.models.list();
    expect(page.data.map((m) => m.id)).toContain("gpt-4o-mini");
    const res = await fetch(`${mock.url}/v1/nope`, { method: "POST" });
    expect(res.status).toBe(404);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(/no route/);
  });
});

describe("failure behaviors", () => {
  it("surfaces status errors through both SDKs in each API's format", async () => {
    mock.setBehavior({ status: 500 });
    const err = await openai.chat.completions.create({ model: "m", messages }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect((err as InstanceType<typeof OpenAI.APIError>).error).toMatchObject({ type: "server_error" });

    mock.setBehavior({ status: 529 });
    const aerr = await anthropic.messages
      .create({ model: "c", max_tokens: 5, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(aerr).toBeInstanceOf(Anthropic.APIError);
    expect((aerr as InstanceType<typeof Anthropic.APIError>).status).toBe(529);
    expect((aerr as InstanceType<typeof Anthropic.APIError>).error).toMatchObject({ error: { type: "overloaded_error" } });

    mock.setBehavior({ status: 429, errorBody: '{"error":{"message":"slow down","type":"tokens"}}' });
    const rl = await openai.chat.completions.create({ model: "m", messages }).catch((e: unknown) => e);
    expect(rl).toBeInstanceOf(OpenAI.RateLimitError);
    expect((rl as Error).message).toMatch(/slow down/);
  });

  it("sends malformed bodies that the SDKs reject", async () => {
    mock.setBehavior({ malformedJson: true });
    await expect(openai.chat.completions.create({ model: "m", messages })).rejects.toThrow();
    mock.setBehavior({ malformedSse: true });
    const stream = await openai.chat.completions.create({ model: "m", messages, stream: true });
    await expect((async () => {
      for await (const _ of stream) void _;
    })()).rejects.toThrow();
  });

  it("records a client abort mid-stream and stops generating", async () => {
    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 5 });
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: "m", messages, stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    for await (const c of stream) {
      if (c.choices[0]?.delta.content && ++seen === 3) break; // break aborts the request
    }
    const rec = mock.requests[0];
    const closedAt = await mock.waitForClose(rec);
    expect(rec.closedAt).toBe(closedAt);
    expect(rec.finishedAt).toBeUndefined();
    const sent = rec.chunksSent;
    await new Promise((r) => setTimeout(r, 40));
    expect(rec.chunksSent).toBe(sent); // timers were stopped
  });

  it("detects an abort while waiting for the first byte", async () => {
    mock.setBehavior({ firstByteDelayMs: 1000 });
    const controller = new AbortController();
    const pending = anthropic.messages
      .create({ model: "c", max_tokens: 5, messages: [{ role: "user", content: "x" }] }, { signal: controller.signal })
      .catch((e: unknown) => e);
    await mock.waitForRequests(1);
    controller.abort();
    expect(await pending).toBeInstanceOf(Anthropic.APIUserAbortError);
    const closedAt = await mock.waitForClose(mock.requests[0]);
    expect(closedAt - mock.requests[0].receivedAt).toBeLessThan(500);
  });

  it("holds replies until told, and notices a client that leaves while held", async () => {
    let release!: () => void;
    mock.setBehavior({ holdUntil: new Promise<void>((r) => (release = r)), outputTokens: 3 });
    let answered = false;
    const held = openai.chat.completions.create({ model: "m", messages }).then((r) => ((answered = true), r));
    const controller = new AbortController();
    const leaving = openai.chat.completions
      .create({ model: "m", messages: [{ role: "user", content: "leaving" }] }, { signal: controller.signal })
      .catch((e: unknown) => e);
    await mock.waitForRequests(2);
    const left = mock.requests.find((r) => r.body.messages[0].content === "leaving")!;
    const kept = mock.requests.find((r) => r !== left)!;
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    controller.abort();
    expect(await leaving).toBeInstanceOf(OpenAI.APIUserAbortError);
    await mock.waitForClose(left);
    expect(left.closedAt).toBeDefined();
    release();
    expect((await held).usage?.completion_tokens).toBe(3);
    expect(kept.finishedAt).toBeDefined();
  });

  it("breaks the connection after N chunks", async () => {
    mock.setBehavior({ failAfterChunks: 3, outputTokens: 10 });
    const stream = anthropic.messages.stream({ model: "c", max_tokens: 50, messages: [{ role: "user", content: "x" }] });
    await expect(stream.finalMessage()).rejects.toThrow();
    const rec = mock.requests[0];
    await mock.waitForClose(rec);
    expect(rec.chunksSent).toBe(3);
    expect(rec.finishedAt).toBeDefined();
    expect(rec.closedAt).toBeUndefined();
  });

  it("paces tokens with real timers and delays the first byte", async () => {
    mock.setBehavior((req) => ({ outputTokens: 5, tokenIntervalMs: 20, firstByteDelayMs: req.body?.stream ? 30 : 0 }));
    const t0 = performance.now();
    const stream = await openai.chat.completions.create({ model: "m", messages, stream: true });
    const tHeaders = performance.now() - t0;
    const times: number[] = [];
    for await (const c of stream) if (c.choices[0]?.delta.content) times.push(performance.now());
    expect(tHeaders).toBeGreaterThanOrEqual(25);
    expect(times).toHaveLength(5);
    // Timers never fire early: 30 ms to the first byte, then 20 ms before each of 5 tokens.
    expect(times[4] - t0).toBeGreaterThanOrEqual(125);
  });

  it("times out waiting for requests that never come", async () => {
    await expect(mock.waitForRequests(1, 20)).rejects.toThrow(/only 0/);
  });
});

describe("hostile-upstream fault modes", () => {
  const post = (path: string, body: object) =>
    fetch(`${mock.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

  it("answers 200 with an error object, whole or as a stream event after the planned tokens", async () => {
    mock.setBehavior({ errorIn200: "Incorrect API key provided: sk-leak" });
    const chat = await post("/v1/chat/completions", { model: "gpt-4o-mini", messages });
    expect(chat.status).toBe(200);
    expect(((await chat.json()) as { error: { message: string } }).error.message).toContain("sk-leak");
    const claude = await post("/v1/messages", { model: "claude-haiku-4-5", max_tokens: 10, messages: [messages[1]] });
    expect(await claude.json()).toMatchObject({ type: "error", error: { message: expect.stringContaining("sk-leak") } });

    mock.setBehavior({ errorIn200: "sk-leak", outputTokens: 0 });
    const alone = await (await post("/v1/chat/completions", { model: "gpt-4o-mini", stream: true, messages })).text();
    expect(alone).toMatch(/^data: \{"error":\{"message":"sk-leak"/);
    const framed = await (await post("/v1/messages", { model: "claude-haiku-4-5", max_tokens: 10, stream: true, messages: [messages[1]] })).text();
    expect(framed).toMatch(/^event: message_start\n/);
    expect(framed).toMatch(/event: error\ndata: .*sk-leak.*\n\n$/);
    mock.setBehavior({ errorIn200: "sk-leak", outputTokens: 2 });
    const mid = await (await post("/v1/chat/completions", { model: "gpt-4o-mini", stream: true, messages })).text();
    const events = mid.trim().split("\n\n").map((e) => JSON.parse(e.slice("data: ".length)));
    expect(events.filter((e) => e.choices?.[0]?.delta?.content)).toHaveLength(2);
    expect(events.at(-1).error.message).toBe("sk-leak");
  });

  it("reports the usage and the model it is told to, in every format", async () => {
    mock.setBehavior({ reportUsage: { input: -5, output: 1e308 }, answerModel: "gpt-4o" });
    const chat = await openai.chat.completions.create({ model: "gpt-4o-mini", messages });
    expect(chat.model).toBe("gpt-4o");
    expect(chat.usage).toMatchObject({ prompt_tokens: -5, completion_tokens: 1e308 });
    const resp = await openai.responses.create({ model: "gpt-4o-mini", input: "hi" });
    expect(resp.usage).toMatchObject({ input_tokens: -5, output_tokens: 1e308 });
    mock.setBehavior({ reportUsage: { output: 2.5 } });
    const stream = anthropic.messages.stream({ model: "claude-haiku-4-5", max_tokens: 10, messages: [messages[1]] });
    expect((await stream.finalMessage()).usage.output_tokens).toBe(2.5);
  });

  it("stalls a stream after N chunks and a whole reply halfway through its body", async () => {
    mock.setBehavior({ stallAfterChunks: 2 });
    const res = await post("/v1/chat/completions", { model: "gpt-4o-mini", stream: true, messages });
    const reader = res.body!.getReader();
    let seen = "";
    const read = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        seen += new TextDecoder().decode(value);
      }
    })().catch(() => {});
    await new Promise((r) => setTimeout(r, 200));
    expect(mock.requests[0].chunksSent).toBe(2);
    expect(mock.requests[0].finishedAt).toBeUndefined();
    expect(seen).not.toContain("[DONE]");
    await reader.cancel();
    await read;

    mock.reset();
    mock.setBehavior({ stallAfterChunks: 0 });
    const whole = await post("/v1/chat/completions", { model: "gpt-4o-mini", messages });
    expect(whole.status).toBe(200);
    const bodyReader = whole.body!.getReader();
    const first = await bodyReader.read();
    expect(new TextDecoder().decode(first.value)).toMatch(/^\{"id":"chatcmpl-mock-1"/);
    const next = await Promise.race([bodyReader.read(), new Promise((r) => setTimeout(() => r("silent"), 200))]);
    expect(next).toBe("silent");
    await bodyReader.cancel();
    await mock.waitForClose(mock.requests[0]);
    expect(mock.requests[0].closedAt).toBeDefined();
  });
});
