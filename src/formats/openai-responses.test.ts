import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { UPSTREAM_ERROR } from "./fields.js";
import type { StreamTail } from "../core/format.js";
import { jsonFuzz, readBothWays } from "../testing/json-fuzz.js";
import { openaiResponses as fmt, textDelta } from "./openai-responses.js";

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
let seq = 0;
const ev = (type: string, fields: object = {}) => ({ event: type, data: JSON.stringify({ type, sequence_number: seq++, ...fields }) });

describe("openai responses format: what the model reads", () => {
  it("reads instructions and a string input", () => {
    const i = inspect({ model: "gpt-4o-mini", instructions: "be brief", input: "hello" });
    expect(i.prompt.messages).toEqual([
      { role: "developer", text: "be brief" },
      { role: "user", text: "hello" },
    ]);
    expect(i.messages).toBe(2);
    expect(i.promptChars).toBe(13);
    expect(i.storedState).toEqual([]);
    expect(i.outputTokens).toEqual({});
  });

  it("reads message items with parts, function calls and their outputs, and tools", () => {
    const i = inspect({
      input: [
        { role: "user", content: [{ type: "input_text", text: "look" }, { type: "input_image", image_url: "data:image/png;base64,AAAA", detail: "low" }] },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "calling" }] },
        { type: "function_call", call_id: "c1", name: "lookup", arguments: '{"q":1}' },
        { type: "function_call_output", call_id: "c1", output: "found" },
      ],
      tools: [{ type: "function", name: "lookup", parameters: {} }],
      max_output_tokens: 100000,
    });
    expect(i.messages).toBe(4);
    expect(i.prompt.messages.map((m) => m.text)).toEqual(["look", "calling", 'lookup\n{"q":1}', "found"]);
    expect(i.attachments).toEqual([{ kind: "image", bytes: 3, detail: "low" }]);
    expect(i.tools).toBe(1);
    expect(i.outputTokens).toEqual({ max_output_tokens: 100000 });
    expect(i.storedState).toEqual([]);
  });

  it("lists state it cannot see, and marks background responses as detached", () => {
    const i = inspect({
      previous_response_id: "resp_1",
      conversation: "conv_1",
      background: true,
      input: [{ type: "item_reference", id: "msg_1" }, { role: "user", content: [{ type: "input_file", file_id: "file-1" }] }],
      tools: [{ type: "web_search" }, { type: "function", name: "f" }],
    });
    expect(i.storedState).toEqual(["input[0]", "input[1].content[0]", "tools[0]", "previous_response_id", "conversation", "background"]);
    expect(i.detached).toBe(true);
    expect(inspect({ input: "x", background: false }).detached).toBe(false);
    // A file sent inline is an attachment of known size.
    const inline = inspect({ input: [{ role: "user", content: [{ type: "input_file", filename: "a.pdf", file_data: "data:application/pdf;base64,AAAAAAAA" }] }] });
    expect(inline.attachments).toEqual([{ kind: "file", bytes: 6 }]);
    expect(inline.storedState).toEqual([]);
  });

  it("counts tools and the output schema toward the prompt caps", () => {
    const tool = { type: "function", name: "f", description: "d".repeat(4000), parameters: {} };
    const format = { type: "json_schema", name: "s", schema: { type: "object", description: "s".repeat(4000) } };
    const i = inspect({ input: "hello", tools: [tool], text: { format } });
    expect(i.promptChars).toBe(5 + JSON.stringify(tool).length + JSON.stringify(format).length);
    expect(i.prompt.toolDefinitions).toEqual([JSON.stringify(tool), JSON.stringify(format)]);
  });

  it("flags logprobs and priority tiers for the route to allow", () => {
    const i = inspect({ input: "x", top_logprobs: 5, include: ["message.output_text.logprobs"], service_tier: "priority" });
    expect(i.sensitiveParams).toEqual(["top_logprobs", "logprobs", "service_tier"]);
  });

  it("refuses malformed bodies naming the field", () => {
    expect(refusal({}).param).toBe("input");
    expect(refusal({ input: 5 }).param).toBe("input");
    expect(refusal({ input: [{ role: "wizard", content: "x" }] }).param).toBe("input[0].role");
    expect(refusal({ input: [{ role: "user", content: [{ type: "video" }] }] }).param).toBe("input[0].content[0].type");
    expect(refusal({ input: [{ type: "teleport" }] }).param).toBe("input[0].type");
    expect(refusal({ input: "x", max_output_tokens: -1 }).param).toBe("max_output_tokens");
  });

  it("counts items of built-in tools from earlier turns as their JSON", () => {
    const item = { type: "web_search_call", id: "ws_1", status: "completed", action: { type: "search", query: "q" } };
    expect(inspect({ input: [item] }).prompt.messages[0]!.text).toBe(JSON.stringify(item));
  });
});

describe("openai responses format: upstream body and replies", () => {
  it("puts tollgate's model and output cap upstream without touching the client's body", () => {
    const body = { model: "alias", input: "x", max_output_tokens: 100000, stream: true };
    const out = fmt.rewrite(body, { model: "gpt-4o-mini", maxOutputTokens: 800, reasoning: false }, inspect(body));
    expect(out).toMatchObject({ model: "gpt-4o-mini", max_output_tokens: 800, stream: true });
    expect(body.max_output_tokens).toBe(100000);
    expect(fmt.rewrite({ input: "x" }, { model: "o3", maxOutputTokens: 300, reasoning: true }, inspect({ input: "x" }))).toMatchObject({ max_output_tokens: 300 });
  });

  it("reads text, function calls and usage from a reply", () => {
    const r = fmt.readResponse({
      id: "resp_1",
      model: "gpt-4o-mini",
      output: [
        { type: "message", content: [{ type: "output_text", text: "Hi" }] },
        { type: "function_call", name: "f", arguments: "{}" },
      ],
      usage: { input_tokens: 20, input_tokens_details: { cached_tokens: 8 }, output_tokens: 9, output_tokens_details: { reasoning_tokens: 2 } },
    });
    expect(r).toMatchObject({ text: "Hif{}", toolCalls: 1, id: "resp_1", model: "gpt-4o-mini" });
    expect(r.usage).toEqual({ inputTokens: 20, cachedInputTokens: 8, outputTokens: 9, reasoningTokens: 2 });
  });
});

describe("openai responses format: streams", () => {
  const started = () => {
    const i = inspect({ input: "x", stream: true });
    const tail: StreamTail = {};
    const created = fmt.readEvent(ev("response.created", { response: { id: "resp_7", object: "response", model: "gpt-4o-mini", status: "in_progress", output: [] } }), i, tail);
    fmt.readEvent(ev("response.output_item.added", { output_index: 0, item: { id: "msg_1", type: "message", status: "in_progress", role: "assistant", content: [] } }), i, tail);
    fmt.readEvent(ev("response.content_part.added", { item_id: "msg_1", output_index: 0, content_index: 0, part: { type: "output_text", text: "", annotations: [] } }), i, tail);
    return { i, tail, created };
  };

  it("reads deltas, tool calls and the usage of response.completed", () => {
    const { i, tail, created } = started();
    expect(created).toMatchObject({ id: "resp_7", model: "gpt-4o-mini" });
    expect(fmt.readEvent(ev("response.output_text.delta", { output_index: 0, content_index: 0, delta: "Hel" }), i, tail).text).toBe("Hel");
    expect(fmt.readEvent(ev("response.output_item.added", { output_index: 1, item: { type: "function_call", name: "f", arguments: "" } }), i, tail)).toMatchObject({ text: "f", toolCalls: 1 });
    expect(fmt.readEvent(ev("response.function_call_arguments.delta", { output_index: 1, delta: "{}" }), i, tail).text).toBe("{}");
    // .done events repeat what the deltas said: nothing more to count.
    expect(fmt.readEvent(ev("response.output_text.done", { output_index: 0, text: "Hel" }), i, tail)).toEqual({});
    const done = fmt.readEvent(ev("response.completed", { response: { usage: { input_tokens: 5, output_tokens: 4 } } }), i, tail);
    expect(done.usage).toMatchObject({ inputTokens: 5, outputTokens: 4 });
    expect(done.drop).toBeUndefined();
    // The provider's own message is never kept: it can name the key (SPEC §5.2).
    expect(fmt.readEvent(ev("response.failed", { response: { error: { message: "boom sk-x" } } }), i, tail).error).toBe(UPSTREAM_ERROR);
    expect(fmt.readEvent(ev("error", { message: "bad sk-x" }), i, tail).error).toBe(UPSTREAM_ERROR);
  });

  it("ends a capped stream with response.incomplete holding what the client saw, not the withheld delta", () => {
    const { i, tail } = started();
    fmt.readEvent(ev("response.output_text.delta", { output_index: 0, content_index: 0, delta: "Hello" }), i, tail);
    fmt.readEvent(ev("response.output_text.delta", { output_index: 0, content_index: 0, delta: " world" }), i, tail);
    const last = fmt.readEvent(ev("response.output_text.delta", { output_index: 0, content_index: 0, delta: " withheld" }), i, tail);
    expect(last.text).toBe(" withheld");
    const [end, ...rest] = fmt.endStream("output_cap", tail, "");
    expect(rest).toHaveLength(0);
    expect(end!.event).toBe("response.incomplete");
    const data = JSON.parse(end!.data);
    expect(data.sequence_number).toBe(seq);
    expect(data.response).toMatchObject({ id: "resp_7", model: "gpt-4o-mini", status: "incomplete", incomplete_details: { reason: "max_output_tokens" } });
    expect(data.response.output).toEqual([{ id: "msg_1", type: "message", status: "incomplete", role: "assistant", content: [{ type: "output_text", text: "Hello world", annotations: [] }] }]);
  });

  it("ends a failed stream with an error event the openai SDK raises", () => {
    const [e] = fmt.endStream("upstream_error", { id: "r" }, "the provider's stream failed");
    expect(e!.event).toBe("error");
    const data = JSON.parse(e!.data);
    expect(data).toMatchObject({ type: "error", code: "upstream_error", message: "the provider's stream failed" });
    expect(data.error).toMatchObject({ code: "upstream_error", type: "api_error" });
  });
});

describe("openai responses stream events: the text delta read without JSON.parse", () => {
  const i = inspect({ input: "x", stream: true });
  const f = jsonFuzz(5);
  const count = () => f.pick(["0", "1", "2", `${f.next(2 ** 31)}`]);
  /** An output text delta's fields: in the API's order, sequence number last, or shuffled; some left out, repeated or mistyped. */
  const deltaFields = () => {
    const fields = [
      `"sequence_number":${count()}`,
      `"item_id":"msg_${f.next(9)}"`,
      `"output_index":${f.pick(["0", "0", "1", "5"])}`,
      `"content_index":${f.pick(["0", "0", "1"])}`,
      `"delta":${f.text()}`,
      `"logprobs":[]`,
      `"obfuscation":"${f.pick(["Xy", "", "a\\nb"])}"`,
      `"sequence_number":${count()}`,
      `"delta":"dup"`,
      `"delta":null`,
      `"output_index":"0"`,
      `"logprobs":[{"token":"a"}]`,
    ].filter((_, k) => (k < 7 ? f.next(8) > 0 : f.next(k === 7 ? 4 : 12) === 0));
    if (f.next(4) === 0) fields.sort(() => f.next(3) - 1);
    return fields.length ? `,${fields.join(",")}` : "";
  };
  const item = (n: number) => `{"id":"msg_${n}","type":"message","status":"in_progress","role":"assistant","content":[]}`;
  const EVENTS = [
    () => `{"type":"response.output_text.delta"${deltaFields()}}`,
    () => `{"type":"response.output_text.delta"${deltaFields()}}`,
    () => `{"type":"response.output_text.delta"${deltaFields()}}`,
    () => `{"type":"response.output_text.delta"${deltaFields()}}`,
    () => `{"type":"response.created","sequence_number":${count()},"response":{"id":"resp_1","model":"gpt","output":[]}}`,
    () => `{"type":"response.output_item.added","sequence_number":${count()},"output_index":${f.next(2)},"item":${item(f.next(2))}}`,
    () => `{"type":"response.content_part.added","sequence_number":${count()},"output_index":${f.next(2)},"content_index":${f.next(2)},"part":{"type":"output_text","text":"","annotations":[]}}`,
    () => `{"type":"response.refusal.delta","sequence_number":${count()},"output_index":0,"content_index":0,"delta":${f.text()}}`,
    () => `{"type":"response.output_text.delta","sequence_number":${count()},"output_index":0,"delta":${f.text()},"error":{"message":"sk-x"}}`,
    () => `{"type":"error","sequence_number":${count()},"message":"x"}`,
  ];

  it("reads exactly what JSON.parse reads, event by event through whole streams, and leaves the rest to it", () => {
    const { recognised, mismatch } = readBothWays({ format: fmt, inspection: i, event: () => f.damage(f.pick(EVENTS)()), recognise: textDelta, streams: 400, length: 50 });
    expect(mismatch?.quick, `${mismatch?.what} of ${mismatch?.data}`).toStrictEqual(mismatch?.full);
    expect(recognised).toBeGreaterThan(1500);
  });

  it("recognises the API's text deltas, obfuscation and empty logprobs included, the sequence number first or last", () => {
    const api = '{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_68","output_index":0,"content_index":0,"delta":"Hello \\"x\\"","logprobs":[],"obfuscation":"Xy"}';
    expect(textDelta(api)).toStrictEqual({ type: "response.output_text.delta", sequence_number: 4, output_index: 0, content_index: 0, delta: 'Hello "x"' });
    const last = '{"type":"response.output_text.delta","item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hi","sequence_number":9}';
    expect(textDelta(last)).toStrictEqual({ type: "response.output_text.delta", sequence_number: 9, output_index: 1, content_index: 0, delta: "Hi" });
  });
});
