import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { configPrice, costOf } from "../core/metering/prices.js";
import { jsonFuzz, readBothWays } from "../testing/json-fuzz.js";
import { anthropicMessages as fmt, blockDelta } from "./anthropic-messages.js";
import { UPSTREAM_ERROR } from "./fields.js";
import type { StreamTail } from "../core/format.js";

const base = { model: "sonnet", max_tokens: 100, messages: [{ role: "user", content: "hi" }] };
const inspect = (body: object) => fmt.inspect(body);
const refusal = (body: unknown) => {
  try {
    fmt.inspect(body);
  } catch (err) {
    expect(TollgateError.is(err)).toBe(true);
    return err as TollgateError;
  }
  throw new Error("expected a refusal");
};
const b64 = (bytes: number) => Buffer.alloc(bytes, 7).toString("base64");
const ev = (type: string, fields: object = {}) => ({ event: type, data: JSON.stringify({ type, ...fields }) });

describe("anthropic messages format: what the model reads", () => {
  it("counts system (string or blocks), messages, tool use and tool results", () => {
    const i = inspect({
      ...base,
      system: [{ type: "text", text: "be brief", cache_control: { type: "ephemeral" } }],
      messages: [
        { role: "user", content: "weather?" },
        { role: "assistant", content: [{ type: "thinking", thinking: "hmm", signature: "sig" }, { type: "tool_use", id: "t1", name: "get_weather", input: { city: "Paris" } }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [{ type: "text", text: "sunny" }] }] },
      ],
      tools: [{ name: "get_weather", input_schema: { type: "object" } }],
    });
    expect(i.messages).toBe(4);
    expect(i.prompt.messages.map((m) => m.role)).toEqual(["system", "user", "assistant", "user"]);
    expect(i.prompt.messages[0]!.text).toBe("be brief");
    expect(i.prompt.messages[2]!.text).toBe('hmm\nget_weather\n{"city":"Paris"}');
    expect(i.prompt.messages[3]!.text).toBe("sunny");
    expect(i.tools).toBe(1);
    expect(i.prompt.toolDefinitions).toHaveLength(1);
    // The tool definition is billed as input too, as its JSON.
    const tool = JSON.stringify({ name: "get_weather", input_schema: { type: "object" } });
    expect(i.promptChars).toBe("be brief".length + "weather?".length + 'hmm\nget_weather\n{"city":"Paris"}'.length + "sunny".length + tool.length);
    expect(i.storedState).toEqual([]);
    expect(i.hiddenOutput).toBe(false);
  });

  it("counts images and documents as attachments with their decoded size, including inside tool results", () => {
    const i = inspect({
      ...base,
      messages: [
        {
          role: "user",
          content: [
            { type: "image", source: { type: "base64", media_type: "image/png", data: b64(300) } },
            { type: "document", source: { type: "base64", media_type: "application/pdf", data: b64(1000) }, title: "Q3" },
            { type: "document", source: { type: "text", media_type: "text/plain", data: "plain doc" } },
            { type: "tool_result", tool_use_id: "t", content: [{ type: "image", source: { type: "url", url: "https://x/y.png" } }] },
          ],
        },
      ],
    });
    expect(i.attachments).toEqual([
      { kind: "image", bytes: 300 },
      { kind: "file", bytes: 1000 },
      { kind: "file", bytes: 9 },
      { kind: "image", bytes: 0 },
    ]);
    // The text document's text is counted exactly as prompt text, so it is not priced again as a file.
    expect(i.prompt.attachments).toHaveLength(3);
    expect(i.prompt.messages[0]!.text).toContain("plain doc");
    expect(i.prompt.messages[0]!.text).toContain("Q3");
    // An image by URL is bounded by Anthropic's image rule, so it is not stored state.
    expect(i.storedState).toEqual([]);
  });

  it("lists what it cannot see: documents by URL or file id, server tools, MCP servers", () => {
    const i = inspect({
      ...base,
      messages: [{ role: "user", content: [{ type: "document", source: { type: "url", url: "https://x/big.pdf" } }, { type: "text", text: "summarise" }] }],
      tools: [{ name: "f", input_schema: {} }, { type: "web_search_20250305", name: "web_search" }, { type: "bash_20250124", name: "bash" }],
      mcp_servers: [{ type: "url", url: "https://mcp", name: "m" }],
    });
    expect(i.storedState).toEqual(["messages[0].content[0].source", "tools[1]", "mcp_servers"]);
  });

  it("counts blocks server tools left in earlier turns as their JSON", () => {
    const block = { type: "web_search_tool_result", tool_use_id: "s", content: [{ type: "web_search_result", title: "T", url: "u", encrypted_content: "abc" }] };
    const i = inspect({ ...base, messages: [{ role: "assistant", content: [block] }, { role: "user", content: "thanks" }] });
    expect(i.prompt.messages[0]!.text).toBe(JSON.stringify(block));
  });

  it("requires max_tokens, as Anthropic does, and refuses malformed bodies naming the field", () => {
    expect(refusal({ messages: base.messages }).param).toBe("max_tokens");
    expect(refusal({ ...base, max_tokens: 0 }).param).toBe("max_tokens");
    expect(refusal({ ...base, max_tokens: 2.5 }).param).toBe("max_tokens");
    expect(refusal({ ...base, messages: [] }).param).toBe("messages");
    expect(refusal({ ...base, messages: [{ role: "system", content: "x" }] }).param).toBe("messages[0].role");
    expect(refusal({ ...base, messages: [{ role: "user", content: 5 }] }).param).toBe("messages[0].content");
    expect(refusal({ ...base, messages: [{ role: "user", content: [{ type: "video" }] }] }).param).toBe("messages[0].content[0].type");
    expect(refusal({ ...base, messages: [{ role: "user", content: [{ type: "image", source: { type: "base64" } }] }] }).param).toBe("messages[0].content[0].source.data");
    expect(refusal({ ...base, thinking: { type: "enabled" } }).param).toBe("thinking.budget_tokens");
    expect(refusal({ ...base, thinking: { type: "enabled", budget_tokens: 100 } }).param).toBe("thinking.budget_tokens");
  });
});

describe("anthropic messages format: the body that goes upstream", () => {
  it("puts tollgate's model and clamped max_tokens upstream without touching the client's body", () => {
    const body = { ...base, max_tokens: 100000, stream: true };
    const i = inspect(body);
    expect(i.outputTokens).toEqual({ max_tokens: 100000 });
    const out = fmt.rewrite(body, { model: "claude-sonnet-4-5", maxOutputTokens: 800, reasoning: false }, i);
    expect(out).toMatchObject({ model: "claude-sonnet-4-5", max_tokens: 800, stream: true });
    expect(body.max_tokens).toBe(100000);
  });

  it("keeps the thinking budget below the clamped max_tokens, and refuses when no budget fits", () => {
    const body = { ...base, max_tokens: 20000, thinking: { type: "enabled", budget_tokens: 16000 } };
    const i = inspect(body);
    expect(i.hiddenOutput).toBe(true);
    const out = fmt.rewrite(body, { model: "m", maxOutputTokens: 4096, reasoning: false }, i);
    expect(out).toMatchObject({ max_tokens: 4096, thinking: { type: "enabled", budget_tokens: 4095 } });
    const roomy = fmt.rewrite(body, { model: "m", maxOutputTokens: 20000, reasoning: false }, i);
    expect(roomy).toMatchObject({ max_tokens: 20000, thinking: { budget_tokens: 16000 } });
    let err: unknown;
    try {
      fmt.rewrite(body, { model: "m", maxOutputTokens: 800, reasoning: false }, i);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: "output_tokens_exceeded", param: "thinking.budget_tokens" });
  });
});

describe("anthropic messages format: usage and cost", () => {
  it("adds cache reads and writes to input_tokens, which Anthropic reports without them", () => {
    const r = fmt.readResponse({
      id: "msg_1",
      content: [{ type: "text", text: "Hello" }, { type: "tool_use", id: "t", name: "f", input: { a: 1 } }],
      usage: { input_tokens: 100, cache_read_input_tokens: 2000, cache_creation_input_tokens: 500, output_tokens: 40 },
    });
    expect(r).toMatchObject({ text: 'Hellof{"a":1}', toolCalls: 1, id: "msg_1" });
    expect(r.usage).toEqual({ inputTokens: 2600, cachedInputTokens: 2000, cacheWriteTokens: 500, outputTokens: 40 });
    // $3 input, $0.30 cache read, $3.75 cache write, $15 output per 1M.
    const price = configPrice({ input: 3, output: 15, cached_input: 0.3, cache_write: 3.75 });
    const cost = costOf(price, { inputTokens: r.usage!.inputTokens!, outputTokens: 40, cachedInputTokens: 2000, cacheWriteTokens: 500 });
    expect(cost).toBe(Math.ceil(100 * 3 + 2000 * 0.3 + 500 * 3.75) + 40 * 15);
  });

  it("reads a stream: input at message_start (never its placeholder output), output at message_delta", () => {
    const i = inspect({ ...base, stream: true });
    const tail: StreamTail = {};
    const start = fmt.readEvent(ev("message_start", { message: { id: "msg_9", model: "claude-x", usage: { input_tokens: 10, cache_read_input_tokens: 5, output_tokens: 1 } } }), i, tail);
    expect(start).toMatchObject({ id: "msg_9", model: "claude-x", usage: { inputTokens: 15, cachedInputTokens: 5 } });
    expect(start.usage!.outputTokens).toBeUndefined();
    expect(fmt.readEvent(ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } }), i, tail)).toMatchObject({ text: "", toolCalls: 0 });
    expect(fmt.readEvent(ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: "Hi" } }), i, tail).text).toBe("Hi");
    expect(fmt.readEvent(ev("content_block_start", { index: 1, content_block: { type: "tool_use", id: "t", name: "f", input: {} } }), i, tail)).toMatchObject({ text: "f", toolCalls: 1 });
    expect(fmt.readEvent(ev("content_block_delta", { index: 1, delta: { type: "input_json_delta", partial_json: '{"a"' } }), i, tail).text).toBe('{"a"');
    expect(fmt.readEvent(ev("content_block_delta", { index: 1, delta: { type: "thinking_delta", thinking: "so" } }), i, tail).text).toBe("so");
    expect(fmt.readEvent(ev("ping"), i, tail)).toEqual({});
    const delta = fmt.readEvent(ev("message_delta", { delta: { stop_reason: "end_turn" }, usage: { output_tokens: 12 } }), i, tail);
    // The cache counters of message_start still hold when message_delta does not repeat them.
    expect(delta.usage).toEqual({ inputTokens: 15, cachedInputTokens: 5, cacheWriteTokens: undefined, outputTokens: 12 });
    // The provider's own message is never kept: it can name the key (SPEC §5.2).
    expect(fmt.readEvent(ev("error", { error: { type: "overloaded_error", message: "Overloaded sk-ant-x" } }), i, tail).error).toBe(UPSTREAM_ERROR);
    expect(fmt.readEvent({ event: "content_block_delta", data: "{nope" }, i, tail).error).toBeDefined();
  });
});

describe("anthropic messages format: ending a stream tollgate cut", () => {
  it("closes the open block and stops with max_tokens at the output cap, every event named", () => {
    const i = inspect({ ...base, stream: true });
    const tail: StreamTail = {};
    fmt.readEvent(ev("message_start", { message: { id: "m", usage: { input_tokens: 1 } } }), i, tail);
    fmt.readEvent(ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } }), i, tail);
    fmt.readEvent(ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: "a" } }), i, tail);
    tail.outputTokens = 50;
    const events = fmt.endStream("output_cap", tail, "");
    expect(events.map((e) => e.event)).toEqual(["content_block_stop", "message_delta", "message_stop"]);
    expect(JSON.parse(events[0]!.data)).toEqual({ type: "content_block_stop", index: 0 });
    expect(JSON.parse(events[1]!.data)).toEqual({ type: "message_delta", delta: { stop_reason: "max_tokens", stop_sequence: null }, usage: { output_tokens: 50 } });
  });

  it("does not close a block whose start the meter withheld", () => {
    const i = inspect({ ...base, stream: true });
    const tail: StreamTail = {};
    fmt.readEvent(ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } }), i, tail);
    fmt.readEvent(ev("content_block_stop", { index: 0 }), i, tail);
    // This start is the event that crossed the cap: the client never sees it.
    fmt.readEvent(ev("content_block_start", { index: 1, content_block: { type: "tool_use", name: "long_tool_name", input: {} } }), i, tail);
    expect(fmt.endStream("output_cap", tail, "").map((e) => e.event)).toEqual(["message_delta", "message_stop"]);
  });

  it("ends a failed stream with an Anthropic error event", () => {
    const [e] = fmt.endStream("upstream_error", {}, "the provider's stream failed");
    expect(e!.event).toBe("error");
    expect(JSON.parse(e!.data)).toEqual({ type: "error", error: { type: "api_error", message: "the provider's stream failed", code: "upstream_error" } });
    expect(JSON.parse(fmt.endStream("timeout", {}, "late")[0]!.data).error).toMatchObject({ type: "timeout_error", code: "upstream_timeout" });
  });
});

describe("anthropic messages stream events: the block delta read without JSON.parse", () => {
  const i = inspect({ ...base, stream: true });
  const f = jsonFuzz(7);
  const DELTAS = [
    () => `{"type":"text_delta","text":${f.text()}}`,
    () => `{"type":"input_json_delta","partial_json":${f.text()}}`,
    () => `{"type":"thinking_delta","thinking":${f.text()}}`,
    () => `{"type":"signature_delta","signature":${f.text()}}`,
    () => `{"type":"text_delta","text":null}`,
    () => `{"type":"text_delta","text":${f.text()},"text":"dup"}`,
    () => `{"text":${f.text()},"type":"text_delta"}`,
  ];
  const EVENTS = [
    () => `{"type":"content_block_delta","index":${f.next(3)},"delta":${f.pick(DELTAS)()}}`,
    () => `{"type":"content_block_delta","index":${f.next(3)},"delta":${f.pick(DELTAS)()}}`,
    () => `{"type":"content_block_delta","index":${f.next(3)},"delta":${f.pick(DELTAS)()}}`,
    () => `{"type":"content_block_start","index":${f.next(3)},"content_block":{"type":"${f.pick(["text", "tool_use", "thinking"])}","text":${f.text()},"name":"f","input":{}}}`,
    () => `{"type":"content_block_stop","index":${f.next(3)}}`,
    () => `{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":${f.next(99)},"output_tokens":1}}}`,
    () => `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":${f.next(99)}}}`,
    () => `{"type":"content_block_delta","index":0,"delta":${f.pick(DELTAS)()},"error":{"message":"sk-x"}}`,
    () => `{"type":"error","error":{"type":"overloaded_error","message":"x"}}`,
    () => `{"type":"ping"}`,
  ];

  it("reads exactly what JSON.parse reads, event by event through whole streams, and leaves the rest to it", () => {
    const { recognised, mismatch } = readBothWays({ format: fmt, inspection: i, event: () => f.damage(f.pick(EVENTS)()), recognise: blockDelta, streams: 400, length: 50 });
    expect(mismatch?.quick, `${mismatch?.what} of ${mismatch?.data}`).toStrictEqual(mismatch?.full);
    // About one event in twelve is a plain delta that survives the damage.
    expect(recognised).toBeGreaterThan(1000);
  });

  it("recognises Anthropic's own text, tool input and thinking deltas", () => {
    expect(blockDelta('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello \\"you\\" \\u00e9"}}')).toBe('Hello "you" é');
    expect(blockDelta('{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"San Fra"}}')).toBe('{"location": "San Fra');
    expect(blockDelta('{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}')).toBe("Let me");
    expect(blockDelta('{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}')).toBeUndefined();
  });
});
