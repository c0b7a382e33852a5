import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { UPSTREAM_ERROR } from "./fields.js";
import type { Inspection, Reading, StreamTail } from "../core/format.js";
import { openaiChat, plainEnd, plainTextDelta, readChunk, sameShapeDelta } from "./openai-chat.js";

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

  it("counts every billed field toward the prompt caps: tools, legacy functions, the output schema, the prediction", () => {
    const msg = { messages: [{ role: "user", content: "x" }] };
    const big = "d".repeat(5000);
    const tool = { type: "function", function: { name: "f", description: big, parameters: { type: "object" } } };
    const fn = { name: "g", parameters: { type: "object", properties: { a: { type: "string", description: big } } } };
    const schema = { type: "json_schema", json_schema: { name: "s", schema: { type: "object", description: big } } };
    expect(inspect({ ...msg, tools: [tool] }).promptChars).toBe(1 + JSON.stringify(tool).length);
    const withFunctions = inspect({ ...msg, functions: [fn] });
    expect(withFunctions.promptChars).toBe(1 + JSON.stringify(fn).length);
    expect(withFunctions.tools).toBe(1);
    expect(withFunctions.prompt.toolDefinitions).toEqual([JSON.stringify(fn)]);
    const withSchema = inspect({ ...msg, response_format: schema });
    expect(withSchema.promptChars).toBe(1 + JSON.stringify(schema).length);
    expect(withSchema.prompt.toolDefinitions).toEqual([JSON.stringify(schema)]);
    const predicted = inspect({ ...msg, prediction: { type: "content", content: big } });
    expect(predicted.promptChars).toBe(1 + 5000);
    expect(predicted.predictedOutput).toBe(big);
    expect(inspect({ ...msg, prediction: { type: "content", content: [{ type: "text", text: "ab" }, { type: "text", text: "c" }] } }).predictedOutput).toBe("abc");
    expect(refusal({ ...msg, prediction: { type: "content", content: 5 } }).param).toBe("prediction.content");
    expect(refusal({ ...msg, response_format: "json" }).param).toBe("response_format");
  });

  it("counts legacy function calls and refusals in earlier assistant turns", () => {
    const call = { name: "f", arguments: "a".repeat(3000) };
    const i = inspect({ messages: [{ role: "assistant", content: null, function_call: call, refusal: "no" }] });
    expect(i.promptChars).toBe("no".length + 1 + JSON.stringify(call).length);
  });

  it("lists cost drivers it cannot estimate: web search and audio output", () => {
    const msg = { messages: [{ role: "user", content: "x" }] };
    expect(inspect({ ...msg, web_search_options: {} }).storedState).toEqual(["web_search_options"]);
    expect(inspect({ ...msg, modalities: ["text", "audio"], audio: { voice: "alloy", format: "wav" } }).storedState).toEqual(["modalities"]);
    expect(inspect({ ...msg, audio: { voice: "alloy", format: "wav" } }).storedState).toEqual(["audio"]);
    expect(inspect({ ...msg, modalities: ["text"] }).storedState).toEqual([]);
    expect(inspect({ messages: [{ role: "assistant", audio: { id: "audio_1" } }] }).storedState).toEqual(["messages[0].audio"]);
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

  it("reads any error object as an error, whatever the status, and keeps none of its text", () => {
    const leak = { error: { message: "Incorrect API key provided: Bearer sk-abc", type: "invalid_request_error" } };
    expect(openaiChat.readResponse(leak)).toEqual({ error: UPSTREAM_ERROR });
    expect(openaiChat.readResponse({ type: "error", error: { message: "sk-abc" } }).error).toBe(UPSTREAM_ERROR);
    expect(openaiChat.readResponse("sk-abc").error).toBe(UPSTREAM_ERROR);
    const i = inspect({ messages: [{ role: "user", content: "x" }], stream: true });
    expect(openaiChat.readEvent({ data: JSON.stringify(leak) }, i)).toEqual({ error: UPSTREAM_ERROR });
  });

  it("tells usage that cannot be true (NaN) from usage that never came (undefined)", () => {
    const usage = (u: object) => openaiChat.readResponse({ choices: [], usage: u }).usage;
    expect(usage({ prompt_tokens: 5, completion_tokens: 7 })).toMatchObject({ inputTokens: 5, outputTokens: 7 });
    for (const bad of [1e308, -5, 2.5, "12", {}]) expect(usage({ prompt_tokens: 5, completion_tokens: bad })!.outputTokens).toBeNaN();
    expect(usage({ prompt_tokens: 5 })!.outputTokens).toBeUndefined();
  });
});

describe("openai chat stream events: the plain text delta read without JSON.parse", () => {
  const inspection = openaiChat.inspect({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true });
  let seed = 11;
  // The high bits of the LCG: its low bits repeat with short periods.
  const next = (n: number) => Math.floor(((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * n);
  const pick = <T>(xs: T[]): T => xs[next(xs.length)]!;
  // Content as a provider encodes it: escapes, \u sequences, raw unicode, surrogates, quotes.
  const TEXTS = ["", " tok", "Hello", 'say "hi"', "a\\b", "line\nnext", "tab\tx", "\u0000\u001f", "caf\u00e9 \u6f22", "\ud83d\ude00", "lone \ud800", "</script>", "{\"json\":1}"];
  const content = () => (next(4) === 0 ? JSON.stringify(pick(TEXTS)).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`) : JSON.stringify(pick(TEXTS)));

  /** A text delta in the compact form, only the content and optional fields varying. */
  function plain(): string {
    const role = pick(["", '"role":"assistant",']);
    const refusal = pick(["", ',"refusal":null']);
    const fp = pick(["", ',"system_fingerprint":"fp_1"', ',"system_fingerprint":null']);
    const tail = pick(["", ',"usage":null', ',"obfuscation":"abc"', ',"usage":null,"obfuscation":"x"']);
    return `{"id":"chatcmpl-${next(1000)}","object":"chat.completion.chunk","created":${next(2 ** 31)},"model":"gpt-4o"${fp},"choices":[{"index":0,"delta":{${role}"content":${content()}${refusal}},"logprobs":null,"finish_reason":null}]${tail}}`;
  }

  function chunk(): string {
    if (next(2) === 0) return plain();
    const head = `{"id":${JSON.stringify(pick(["chatcmpl-1", "x", "", 'q"uote']))},"object":${pick(['"chat.completion.chunk"', '"chat.completion"'])},"created":${pick(["1", "1694268190", "-1", "1.5"])},"model":${JSON.stringify(pick(["gpt-4o-mini", "m\\odel", ""]))}`;
    const tier = pick(["", ',"service_tier":"default"']);
    const fp = pick(["", ',"system_fingerprint":"fp_1"', ',"system_fingerprint":null']);
    const delta = pick([
      `{"content":${content()}}`,
      `{"role":"assistant","content":${content()},"refusal":null}`,
      `{"role":"assistant","content":${content()}}`,
      `{"content":${content()},"refusal":"no"}`,
      `{"refusal":${content()}}`,
      `{}`,
      `{"content":null}`,
      `{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":${content()}}}]}`,
      `{"content":${content()},"content":"dup"}`,
    ]);
    const choice = `{"index":${pick(["0", "1"])},"delta":${delta},"logprobs":null,"finish_reason":${pick(["null", "null", '"stop"'])}}`;
    const choices = pick([`[${choice}]`, `[${choice}]`, "[]", `[${choice},${choice}]`]);
    const tail = pick(["", ',"usage":null', ',"obfuscation":"abc"', ',"usage":null,"obfuscation":"x"', ',"usage":{"prompt_tokens":3,"completion_tokens":4}', ',"error":{"message":"sk-secret"}']);
    let data = `${head}${tier}${fp},"choices":${choices}${tail}}`;
    if (next(10) === 0) data = data.replace(",", ", ");
    if (next(20) === 0) data = data.replace(/"content":"/, '"content":"\n');
    if (next(20) === 0) data = data.slice(0, -1);
    return data;
  }

  /** readEvent reads `data` as readChunk (JSON.parse) does, and so does `quick` when it reads it: 1 then, else 0. */
  function agrees(data: string, insp: Inspection, quick: Reading | undefined, tail?: StreamTail): number {
    const full = readChunk(data, insp);
    expect(openaiChat.readEvent({ data }, insp, tail), data).toStrictEqual(full);
    if (quick === undefined) return 0;
    expect(quick, data).toStrictEqual(full);
    return 1;
  }

  /** A stream's finish or usage chunk, compact as OpenAI sends it, now and then damaged. */
  function end(): string {
    const fp = pick(["", ',"system_fingerprint":"fp_1"', ',"system_fingerprint":null']);
    const finish = `{"index":0,"delta":{},"logprobs":null,"finish_reason":${pick(['"stop"', '"length"', '"tool_calls"', "null"])}}`;
    const choices = pick(["[]", `[${finish}]`, `[${finish}]`]);
    const n = () => pick(["0", "7", "12345", "007", "1.5", "-1", "99999999999999999"]);
    const prompt = pick(["", `,"prompt_tokens_details":{"cached_tokens":${n()}}`, `,"prompt_tokens_details":{"cached_tokens":${n()},"audio_tokens":0}`]);
    const completion = pick(["", `,"completion_tokens_details":{"reasoning_tokens":${n()},"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}`, `,"completion_tokens_details":{"reasoning_tokens":${n()}}`]);
    const usage = pick(["", ',"usage":null', `,"usage":{"prompt_tokens":${n()},"completion_tokens":${n()},"total_tokens":${n()}${prompt}${completion}}`, `,"usage":{"prompt_tokens":${n()},"completion_tokens":${n()}}`]);
    const tail = pick(["", "", ',"obfuscation":"Xy"', ',"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}', ',"error":{"message":"sk-secret"}']);
    let data = `{"id":"chatcmpl-${next(1000)}","object":"chat.completion.chunk","created":${next(2 ** 31)},"model":"gpt-4o"${pick(["", ',"service_tier":"default"'])}${fp},"choices":${choices}${usage}${tail}}`;
    if (next(10) === 0) data = data.replace(",", ", ");
    if (next(20) === 0) data = data.slice(0, -1);
    return data;
  }

  it("reads a stream's finish and usage chunks exactly as JSON.parse does, usage details and the caller's wish for usage included", () => {
    const wantsUsage = openaiChat.inspect({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } });
    let recognised = 0;
    for (let i = 0; i < 6_000; i++) {
      const data = next(40) === 0 ? end().replace(/"created":(\d)/, '"created":0$1') : end();
      for (const insp of [inspection, wantsUsage]) recognised += agrees(data, insp, plainEnd(data, insp));
    }
    expect(recognised).toBeGreaterThan(2500);
  });

  it("reads a stream's later deltas by their shape exactly as JSON.parse does, whatever their content or damage", () => {
    let byShape = 0;
    /** Deltas whose obfuscation changes from chunk to chunk, read by their shape. */
    let obfuscatedByShape = 0;
    for (let stream = 0; stream < 300; stream++) {
      const tail: StreamTail = {};
      const head = `{"id":"chatcmpl-${next(1000)}","object":"chat.completion.chunk","created":${next(2 ** 31)},"model":"gpt-4o"${pick(["", ',"system_fingerprint":"fp_1"'])},"choices":[{"index":0,"delta":{"content":`;
      const rest = `},"logprobs":null,"finish_reason":null}]${pick(["", ',"usage":null', ',"obfuscation":"abc"', ',"usage":null,"obfuscation":"'])}`;
      // OpenAI's obfuscation is another string in each chunk (its length too), as here.
      const close = () => (rest.endsWith(':"') ? `${rest}${"xY9-".slice(0, next(5))}${next(3) === 0 ? "" : "Qz"}"}` : `${rest}}`);
      for (let i = 0; i < 30; i++) {
        // As OpenAI streams: the first chunk carries the role (its shape is not the others').
        let data = i === 0 ? `${head.replace('"delta":{', '"delta":{"role":"assistant",')}""${close().replace("}", ',"refusal":null}')}` : `${head}${content()}${close()}`;
        // Damage that keeps the bytes around the content: a raw control character, a raw quote,
        // a backslash escaping the closing quote, an escape JSON does not have; and damage that does not.
        const hurt = next(12);
        if (hurt === 0) data = data.replace(/"content":"/, '"content":"\t');
        else if (hurt === 1) data = data.replace(/"content":"/, '"content":"x"');
        else if (hurt === 2) data = data.replace(/"content":"(.*?)"\}/, '"content":"$1\\"}');
        else if (hurt === 3) data = data.replace(/"content":"/, '"content":"\\q');
        else if (hurt === 4) data = data.replace(/"created":\d+/, '"created":7');
        else if (hurt === 5) data = data.replace(/"obfuscation":"/, '"obfuscation":"\\"');
        else if (hurt === 6) data = data.replace(/"obfuscation":"([^"]*)"\}$/, '"obfuscation":"$1","x":1}');
        const shape = tail.state as Parameters<typeof sameShapeDelta>[1] | undefined;
        const read = agrees(data, inspection, shape && sameShapeDelta(data, shape), tail);
        byShape += read;
        if (data.includes('"usage":null,"obfuscation"')) obfuscatedByShape += read;
      }
    }
    // Most deltas after each stream's first are read by their shape, obfuscated ones too (a quarter
    // of the streams, where the shape's bytes stop before the obfuscation).
    expect(byShape).toBeGreaterThan(3000);
    expect(obfuscatedByShape).toBeGreaterThan(500);
  });

  it("recognises OpenAI's own usage chunk, with its token details", () => {
    const data = '{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"a"}';
    const usage = { inputTokens: 19, outputTokens: 10, cachedInputTokens: 0, reasoningTokens: 0 };
    expect(plainEnd(data, inspection)).toStrictEqual({ text: "", toolCalls: 0, usage, drop: true, id: "chatcmpl-B9", model: "gpt-4o-mini-2024-07-18" });
  });

  it("reads exactly what JSON.parse reads, for every chunk it recognises, and leaves the rest to it", () => {
    let recognised = 0;
    for (let i = 0; i < 20_000; i++) {
      // A leading zero is not JSON, in a chunk of either kind.
      const data = next(40) === 0 ? chunk().replace(/"created":(\d)/, '"created":0$1') : chunk();
      recognised += agrees(data, inspection, plainTextDelta(data));
    }
    // Most of the generated plain deltas are recognised (the rest carry other fields or spacing).
    expect(recognised).toBeGreaterThan(5000);
  });

  it("recognises OpenAI's own text chunks, usage null and obfuscation included", () => {
    const data = '{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741000000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Xy"}';
    expect(plainTextDelta(data)).toStrictEqual({ text: " there", toolCalls: 0, usage: undefined, drop: false, id: "chatcmpl-B9", model: "gpt-4o-mini-2024-07-18" });
  });
});
