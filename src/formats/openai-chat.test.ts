import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { openaiChat } from "./openai-chat.js";

const inspect = (body: unknown) => openaiChat.inspect(body);
const refusal = (body: unknown) => {
  try {
    inspect(body);
  } catch (err) {
    expect(TollgateError.is(err)).toBe(true);
    return err as TollgateError;
  }
  throw new Error("expected a refusal");
};

describe("openai chat format", () => {
  it("reads every text the model sees, counted in code points", () => {
    const i = inspect({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: [{ type: "text", text: "a\u200Bb" }, { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
        { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }] },
        { role: "tool", tool_call_id: "c1", content: "result" },
      ],
      tools: [{ type: "function", function: { name: "f", parameters: {} } }],
    });
    expect(i.messages).toBe(4);
    expect(i.tools).toBe(1);
    expect(i.attachments).toEqual([{ kind: "image", bytes: 3, detail: undefined }]);
    expect(i.prompt.messages[1]!.text).toBe("a\u200Bb");
    // The zero-width space is a character like any other.
    expect(i.promptChars).toBeGreaterThanOrEqual("be brief".length + 3 + "result".length);
  });

  it("lists a file sent by id as stored state: its size is unknown to the gateway", () => {
    const i = inspect({ messages: [{ role: "user", content: [{ type: "file", file: { file_id: "file-abc" } }] }] });
    expect(i.storedState).toEqual(["messages[0].content[0].file.file_id"]);
  });

  it("counts an astral character once", () => {
    const i = inspect({ messages: [{ role: "user", content: "😀😀" }] });
    expect(i.promptChars).toBe(2);
  });

  it("collects every output-budget field and the cost multipliers", () => {
    const i = inspect({ messages: [{ role: "user", content: "x" }], max_tokens: 100000, max_completion_tokens: 20, n: 3, logprobs: true, logit_bias: { "1": 5 } });
    expect(i.outputTokens).toEqual({ max_tokens: 100000, max_completion_tokens: 20 });
    expect(i.choices).toBe(3);
    expect(i.sensitiveParams).toEqual(["logprobs", "logit_bias"]);
  });

  it("refuses negative, fractional and unrepresentable token counts, naming the field", () => {
    expect(refusal({ messages: [{ role: "user", content: "x" }], max_tokens: -1 }).param).toBe("max_tokens");
    expect(refusal({ messages: [{ role: "user", content: "x" }], max_tokens: 2.5 }).param).toBe("max_tokens");
    expect(refusal({ messages: [{ role: "user", content: "x" }], max_tokens: Infinity }).param).toBe("max_tokens");
    expect(refusal({ messages: [{ role: "user", content: "x" }], max_completion_tokens: "100" }).param).toBe("max_completion_tokens");
  });

  it("refuses malformed messages with the path of the bad field", () => {
    expect(refusal({}).param).toBe("messages");
    expect(refusal({ messages: [] }).param).toBe("messages");
    expect(refusal({ messages: [{ role: "wizard", content: "x" }] }).param).toBe("messages[0].role");
    expect(refusal({ messages: [{ role: "user", content: 5 }] }).param).toBe("messages[0].content");
    expect(refusal({ messages: [{ role: "user", content: [{ type: "video" }] }] }).param).toBe("messages[0].content[0].type");
    expect(refusal([1, 2]).code).toBe("invalid_request");
  });

  it("rewrites the model and every output field to tollgate's values, and asks for stream usage", () => {
    const body = { model: "alias", messages: [{ role: "user", content: "x" }], max_tokens: 100000, max_completion_tokens: 50, stream: true };
    const i = inspect(body);
    const out = openaiChat.rewrite(body, { model: "gpt-4o-mini-2024-07-18", maxOutputTokens: 800, reasoning: false }, i);
    expect(out).toMatchObject({ model: "gpt-4o-mini-2024-07-18", max_tokens: 800, max_completion_tokens: 800, stream_options: { include_usage: true } });
    expect(body.max_tokens).toBe(100000);
  });

  it("sets an output cap when the client sent none, in the field the model family takes", () => {
    const body = { messages: [{ role: "user", content: "x" }] };
    expect(openaiChat.rewrite(body, { model: "o3", maxOutputTokens: 300, reasoning: true }, inspect(body))).toMatchObject({ max_completion_tokens: 300 });
    expect(openaiChat.rewrite(body, { model: "gpt-4o", maxOutputTokens: 300, reasoning: false }, inspect(body))).toMatchObject({ max_tokens: 300 });
  });

  it("reads deltas, tool calls and usage from stream chunks, and drops the usage chunk nobody asked for", () => {
    const i = inspect({ messages: [{ role: "user", content: "x" }], stream: true });
    const r1 = openaiChat.readEvent({ data: JSON.stringify({ id: "c", choices: [{ delta: { content: "Hi" } }] }) }, i);
    expect(r1).toMatchObject({ text: "Hi", toolCalls: 0, drop: false, id: "c" });
    const r2 = openaiChat.readEvent({ data: JSON.stringify({ choices: [{ delta: { tool_calls: [{ index: 0, id: "t", function: { name: "f", arguments: "{\"a\"" } }] } }] }) }, i);
    expect(r2).toMatchObject({ toolCalls: 1, text: 'f{"a"' });
    const r3 = openaiChat.readEvent({ data: JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 7 } }) }, i);
    expect(r3).toMatchObject({ drop: true, usage: { inputTokens: 5, outputTokens: 7 } });
    expect(openaiChat.readEvent({ data: "{broken" }, i).error).toBeDefined();
  });
});
