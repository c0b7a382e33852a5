import { TollgateError } from "../core/errors.js";
import type { Attachment } from "../core/metering/tokens.js";
import { openaiErrorBody } from "./errors.js";
import { addDefinition, answerIsError, asObject, base64Bytes, codePoints, invalid, optArray, optBool, optCount, optString, UPSTREAM_ERROR, usageCount } from "./fields.js";
import { COUNT, decodeString, PLAIN_STRING_BODY, STRING_BODY } from "./json-scan.js";
import type { Inspection, Reading, RequestFormat, ReportedUsage, SseEvent, StreamTail, UpstreamPlan } from "../core/format.js";

const ROLES = new Set(["system", "developer", "user", "assistant", "tool", "function"]);
const OUTPUT_FIELDS = ["max_tokens", "max_completion_tokens"] as const;
/** Parameters that cost more or extract more than a plain completion; routes opt in. */
const SENSITIVE = ["logprobs", "top_logprobs", "logit_bias"] as const;

/** OpenAI Chat Completions: POST /v1/chat/completions. */
export const openaiChat: RequestFormat = {
  endpoint: "chat_completions",
  api: "openai",
  upstreamPath: "/chat/completions",

  inspect(raw) {
    const body = asObject(raw, "body");
    const messages = optArray(body, "messages");
    if (!messages || messages.length === 0) throw invalid("messages", "expected a non-empty array of messages");
    const prompt: Inspection["prompt"] = { messages: [], toolDefinitions: [], attachments: [] };
    const storedState: string[] = [];
    let promptChars = 0;
    messages.forEach((m, i) => {
      const msg = asObject(m, `messages[${i}]`);
      const role = optString(msg, "role", `messages[${i}].role`);
      if (!role || !ROLES.has(role)) throw invalid(`messages[${i}].role`, `expected one of ${[...ROLES].join(", ")}`);
      const texts: string[] = [];
      readContent(msg.content, `messages[${i}].content`, texts, prompt.attachments, storedState);
      const name = optString(msg, "name", `messages[${i}].name`);
      if (name) texts.push(name);
      const refusal = optString(msg, "refusal", `messages[${i}].refusal`);
      if (refusal) texts.push(refusal);
      const calls = optArray(msg, "tool_calls", `messages[${i}].tool_calls`) ?? [];
      calls.forEach((c, j) => texts.push(JSON.stringify(asObject(c, `messages[${i}].tool_calls[${j}]`))));
      if (msg.function_call !== undefined && msg.function_call !== null) texts.push(JSON.stringify(asObject(msg.function_call, `messages[${i}].function_call`)));
      // An earlier audio reply by id: the provider re-reads audio tollgate never saw.
      if (msg.audio !== undefined && msg.audio !== null) storedState.push(`messages[${i}].audio`);
      const text = texts.join("\n");
      promptChars += codePoints(text);
      prompt.messages.push({ role, text });
    });
    // Tools (descriptions and parameters), legacy functions and the output schema are all rendered
    // into the prompt and billed as input.
    const tools = optArray(body, "tools") ?? [];
    const functions = optArray(body, "functions") ?? [];
    tools.forEach((t, i) => (promptChars += addDefinition(prompt, asObject(t, `tools[${i}]`))));
    functions.forEach((f, i) => (promptChars += addDefinition(prompt, asObject(f, `functions[${i}]`))));
    if (body.response_format !== undefined && body.response_format !== null) promptChars += addDefinition(prompt, asObject(body.response_format, "response_format"));
    const predictedOutput = readPrediction(body.prediction);
    if (predictedOutput !== undefined) promptChars += codePoints(predictedOutput);
    // Cost drivers with no estimate: searches the provider runs and bills, and audio output billed
    // at audio rates. Refused unless the route allows unseen cost (input.stored_state: allow).
    if (body.web_search_options !== undefined && body.web_search_options !== null) storedState.push("web_search_options");
    const modalities = optArray(body, "modalities") ?? [];
    if (modalities.includes("audio")) storedState.push("modalities");
    else if (body.audio !== undefined && body.audio !== null) storedState.push("audio");

    const outputTokens: Record<string, number> = {};
    for (const f of OUTPUT_FIELDS) {
      const v = optCount(body, f, 1);
      if (v !== undefined) outputTokens[f] = v;
    }
    const stream = optBool(body, "stream") ?? false;
    const streamOptions = body.stream_options === undefined || body.stream_options === null ? undefined : asObject(body.stream_options, "stream_options");
    const sensitiveParams: string[] = SENSITIVE.filter((p) => body[p] !== undefined && body[p] !== null && body[p] !== false);
    const tier = optString(body, "service_tier");
    if (tier && tier !== "auto" && tier !== "default") sensitiveParams.push("service_tier");
    return {
      model: optString(body, "model"),
      stream,
      prompt,
      promptChars,
      messages: messages.length,
      tools: tools.length + functions.length,
      attachments: prompt.attachments,
      outputTokens,
      choices: optCount(body, "n", 1) ?? 1,
      sensitiveParams,
      storedState,
      predictedOutput,
      clientWantsStreamUsage: streamOptions?.include_usage === true,
    };
  },

  rewrite(body, plan, inspection) {
    return { ...body, ...this.upstreamFields!(body, plan, inspection) };
  },

  upstreamFields(body, plan, inspection) {
    const out: Record<string, unknown> = { model: plan.model };
    let sent = false;
    // Keep the field the client used (providers differ in which they accept); with none, pick the
    // one the model family requires. Every field present carries the same clamped value.
    for (const f of OUTPUT_FIELDS) {
      if (inspection.outputTokens[f] === undefined) continue;
      out[f] = plan.maxOutputTokens;
      sent = true;
    }
    if (!sent) out[plan.reasoning ? "max_completion_tokens" : "max_tokens"] = plan.maxOutputTokens;
    if (inspection.stream) out.stream_options = { ...(body.stream_options as object | undefined), include_usage: true };
    return out;
  },

  readResponse(raw) {
    if (answerIsError(raw)) return { error: UPSTREAM_ERROR };
    const body = raw as { id?: string; model?: string; usage?: OpenAIUsage; choices?: { message?: { content?: unknown; tool_calls?: unknown[]; refusal?: unknown } }[] };
    let text = "";
    let toolCalls = 0;
    for (const c of body.choices ?? []) {
      if (typeof c.message?.content === "string") text += c.message.content;
      if (typeof c.message?.refusal === "string") text += c.message.refusal;
      for (const call of c.message?.tool_calls ?? []) {
        toolCalls++;
        const args = (call as { function?: { arguments?: unknown } }).function?.arguments;
        if (typeof args === "string") text += args;
      }
    }
    return { text, toolCalls, usage: fromOpenAIUsage(body.usage), id: body.id, model: body.model };
  },

  readEvent(event, inspection, tail) {
    if (event.data === "[DONE]") return {};
    const shape = tail?.state as DeltaShape | undefined;
    return (shape && sameShapeDelta(event.data, shape)) ?? plainTextDelta(event.data, tail) ?? plainEnd(event.data, inspection) ?? readChunk(event.data, inspection);
  },

  endStream(stop, last, message): SseEvent[] {
    if (stop === "upstream_error" || stop === "timeout") {
      // The openai SDK raises an APIError for a chunk carrying `error`.
      const err = new TollgateError(stop === "timeout" ? "upstream_timeout" : "upstream_error", message);
      return [{ data: JSON.stringify(openaiErrorBody(err)) }, { data: "[DONE]" }];
    }
    const chunk = {
      id: last.id ?? "chatcmpl-tollgate",
      object: "chat.completion.chunk",
      created: Math.floor(Date.now() / 1000),
      model: last.model ?? "",
      choices: [{ index: 0, delta: {}, finish_reason: "length" }],
    };
    return [{ data: JSON.stringify(chunk) }, { data: "[DONE]" }];
  },

  errorBody: openaiErrorBody,
};

/** A stream chunk read in full: JSON.parse, then every choice's text, tool calls and usage. */
export function readChunk(data: string, inspection: Inspection): Reading {
  let chunk: { id?: string; model?: string; usage?: OpenAIUsage | null; choices?: ChunkChoice[] };
  try {
    chunk = JSON.parse(data);
  } catch {
    return { error: "malformed event from upstream" };
  }
  if (answerIsError(chunk)) return { error: UPSTREAM_ERROR };
  let text = "";
  let toolCalls = 0;
  for (const c of chunk.choices ?? []) {
    if (typeof c.delta?.content === "string") text += c.delta.content;
    if (typeof c.delta?.refusal === "string") text += c.delta.refusal;
    for (const call of c.delta?.tool_calls ?? []) {
      if (call.id) toolCalls++;
      if (typeof call.function?.name === "string") text += call.function.name;
      if (typeof call.function?.arguments === "string") text += call.function.arguments;
    }
  }
  const usage = chunk.usage ? fromOpenAIUsage(chunk.usage) : undefined;
  const usageOnly = !!usage && (chunk.choices?.length ?? 0) === 0;
  return { text, toolCalls, usage, drop: usageOnly && !inspection.clientWantsStreamUsage, id: chunk.id, model: chunk.model };
}

/**
 * A chunk that only adds text to choice 0, in the compact form OpenAI and most compatible servers
 * send (fields in their order; `usage: null` and `obfuscation` allowed at the end). Anything else,
 * including other spacing, another field or a string with a raw control character, does not match
 * and is read by readChunk.
 */
const PLAIN_TEXT_DELTA = new RegExp(
  String.raw`^\{"id":"(${PLAIN_STRING_BODY})","object":"chat\.completion\.chunk","created":${COUNT},"model":"(${PLAIN_STRING_BODY})"(?:,"service_tier":"${PLAIN_STRING_BODY}")?(?:,"system_fingerprint":(?:"${PLAIN_STRING_BODY}"|null))?,"choices":\[\{"index":0,"delta":\{(?:"role":"assistant",)?"content":"(${STRING_BODY})"(?:,"refusal":null)?\},"logprobs":null,"finish_reason":null\}\](?:,"usage":null|,"obfuscation":"${PLAIN_STRING_BODY}")*\}$`,
);

/**
 * readChunk's reading of a plain text delta, or undefined for any other chunk. Nearly every event
 * of a stream is one, and matching it costs a fraction of JSON.parse and the objects it builds.
 * Given the stream's tail, the delta's shape is kept there for sameShapeDelta.
 */
export function plainTextDelta(data: string, tail?: StreamTail): Reading | undefined {
  const m = PLAIN_TEXT_DELTA.exec(data);
  if (m === null) return undefined;
  const body = m[3]!;
  const text = decodeString(body);
  if (text === undefined) return undefined;
  if (tail) {
    // The delta the next ones are compared with: the latest the pattern read (a stream's first
    // chunk carries the role, the rest not). Neither the id, the model nor any field before the
    // content holds a quote, so the first `"content":"` is where the content starts.
    const start = data.indexOf('"content":"') + 11;
    let suffix = data.slice(start + body.length);
    // OpenAI's obfuscation differs in every chunk: the shape ends before it (sameShapeDelta checks it apart).
    const obfuscation = suffix.lastIndexOf(OBFUSCATION);
    if (obfuscation >= 0) suffix = suffix.slice(0, obfuscation);
    tail.state = { prefix: data.slice(0, start), suffix, obfuscated: obfuscation >= 0, id: m[1]!, model: m[2]! } satisfies DeltaShape;
  }
  return { text, toolCalls: 0, usage: undefined, drop: false, id: m[1], model: m[2] };
}

/**
 * A stream's text deltas differ only in their content: each chunk repeats the id, the creation
 * time, the model and the fields around the content. The latest delta the pattern read is kept cut
 * around its content; a later chunk with the same bytes before and after its content is the same
 * JSON with another string in it, read without running the pattern or building its match.
 */
interface DeltaShape {
  /** The chunk up to the content's first character (its opening quote included). */
  prefix: string;
  /** The chunk from the content's closing quote on (up to its obfuscation field, when it has one). */
  suffix: string;
  /** The chunk ends with `,"obfuscation":"…"}`, a string of its own in each chunk. */
  obfuscated: boolean;
  id: string;
  model: string;
}

const OBFUSCATION = ',"obfuscation":"';

/** plainTextDelta's reading of a chunk shaped as the delta it kept last, or undefined. */
export function sameShapeDelta(data: string, shape: DeltaShape): Reading | undefined {
  let end = data.length;
  if (shape.obfuscated) {
    // The last `,"obfuscation":"` is the field's own: its value holds no quote, and the content's
    // raw quotes are refused below. The value is a plain string closing the chunk.
    end = data.lastIndexOf(OBFUSCATION);
    if (end < 0 || data.charCodeAt(data.length - 1) !== 0x7d || data.charCodeAt(data.length - 2) !== 0x22) return undefined;
    for (let i = end + OBFUSCATION.length; i < data.length - 2; i++) {
      const c = data.charCodeAt(i);
      if (c === 0x22 || c === 0x5c || c < 0x20) return undefined;
    }
  }
  const from = shape.prefix.length;
  const to = end - shape.suffix.length;
  // Compared as slices: V8's startsWith walks a long prefix several times slower than string equality.
  if (to < from || data.slice(0, from) !== shape.prefix || data.slice(to, end) !== shape.suffix) return undefined;
  // Between them a JSON string's body: no raw quote or control character; a backslash takes the
  // next character with it (decodeString then refuses an escape JSON does not have).
  for (let i = from; i < to; i++) {
    const c = data.charCodeAt(i);
    if (c === 0x22 || c < 0x20) return undefined;
    if (c === 0x5c && ++i >= to) return undefined;
  }
  const text = decodeString(data.slice(from, to));
  if (text === undefined) return undefined;
  return { text, toolCalls: 0, usage: undefined, drop: false, id: shape.id, model: shape.model };
}

/**
 * The chunks that close a stream, in the compact form OpenAI sends: the finish chunk (choice 0
 * with an empty delta and its finish_reason) and the usage chunk (no choices, or that finish
 * choice, and `usage` with the counts and their details). Anything else goes to readChunk.
 */
const PLAIN_END = new RegExp(
  String.raw`^\{"id":"(${PLAIN_STRING_BODY})","object":"chat\.completion\.chunk","created":${COUNT},"model":"(${PLAIN_STRING_BODY})"(?:,"service_tier":"${PLAIN_STRING_BODY}")?(?:,"system_fingerprint":(?:"${PLAIN_STRING_BODY}"|null))?,"choices":\[(\{"index":0,"delta":\{\},"logprobs":null,"finish_reason":"${PLAIN_STRING_BODY}"\})?\]` +
    String.raw`(?:,"usage":(?:null|\{"prompt_tokens":(${COUNT}),"completion_tokens":(${COUNT}),"total_tokens":${COUNT}(?:,"prompt_tokens_details":\{"cached_tokens":(${COUNT})(?:,"audio_tokens":${COUNT})?\})?(?:,"completion_tokens_details":\{"reasoning_tokens":(${COUNT})(?:,"audio_tokens":${COUNT})?(?:,"accepted_prediction_tokens":${COUNT})?(?:,"rejected_prediction_tokens":${COUNT})?\})?\}))?(?:,"obfuscation":"${PLAIN_STRING_BODY}")?\}$`,
);

/**
 * readChunk's reading of a stream's finish or usage chunk, or undefined for any other chunk: the
 * two chunks every stream ends with cost a pattern instead of JSON.parse and its objects.
 */
export function plainEnd(data: string, inspection: Inspection): Reading | undefined {
  const m = PLAIN_END.exec(data);
  if (m === null) return undefined;
  const n = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  // As fromOpenAIUsage builds it: every field present, undefined where the chunk has none.
  const usage: ReportedUsage | undefined = m[4] === undefined ? undefined : { inputTokens: n(m[4]), outputTokens: n(m[5]), cachedInputTokens: n(m[6]), reasoningTokens: n(m[7]) };
  const usageOnly = usage !== undefined && m[3] === undefined;
  return { text: "", toolCalls: 0, usage, drop: usageOnly && !inspection.clientWantsStreamUsage, id: m[1], model: m[2] };
}

interface ChunkChoice {
  delta?: { content?: unknown; refusal?: unknown; tool_calls?: { id?: string; function?: { name?: unknown; arguments?: unknown } }[] };
}

export interface OpenAIUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number };
  completion_tokens_details?: { reasoning_tokens?: number };
}

export function fromOpenAIUsage(u: OpenAIUsage | undefined): ReportedUsage | undefined {
  if (!u || typeof u !== "object") return undefined;
  return {
    inputTokens: usageCount(u.prompt_tokens),
    outputTokens: usageCount(u.completion_tokens),
    cachedInputTokens: usageCount(u.prompt_tokens_details?.cached_tokens),
    reasoningTokens: usageCount(u.completion_tokens_details?.reasoning_tokens),
  };
}


/** `prediction: { type: "content", content }`: the text the reply is expected to repeat. */
function readPrediction(raw: unknown): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  const prediction = asObject(raw, "prediction");
  const content = prediction.content;
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw invalid("prediction.content", "expected a string or an array of text parts");
  return content
    .map((p, i) => {
      const text = optString(asObject(p, `prediction.content[${i}]`), "text", `prediction.content[${i}].text`);
      if (text === undefined) throw invalid(`prediction.content[${i}].text`, "expected a string");
      return text;
    })
    .join("");
}

/** Collects the text and attachments of one message's content (string or parts). */
function readContent(content: unknown, param: string, texts: string[], attachments: Attachment[], storedState: string[]): void {
  if (content === undefined || content === null) return;
  if (typeof content === "string") {
    texts.push(content);
    return;
  }
  if (!Array.isArray(content)) throw invalid(param, "expected a string or an array of content parts");
  content.forEach((p, i) => {
    const part = asObject(p, `${param}[${i}]`);
    const type = optString(part, "type", `${param}[${i}].type`);
    switch (type) {
      case "text":
      case "input_text":
      case "refusal": {
        const text = optString(part, type === "refusal" ? "refusal" : "text", `${param}[${i}].text`);
        if (text === undefined) throw invalid(`${param}[${i}].text`, "expected a string");
        texts.push(text);
        break;
      }
      case "image_url": {
        const img = asObject(part.image_url, `${param}[${i}].image_url`);
        const url = optString(img, "url", `${param}[${i}].image_url.url`) ?? "";
        const detail = optString(img, "detail", `${param}[${i}].image_url.detail`) as Attachment["detail"];
        attachments.push({ kind: "image", bytes: url.startsWith("data:") ? base64Bytes(url) : 0, detail });
        break;
      }
      case "input_audio": {
        const audio = asObject(part.input_audio, `${param}[${i}].input_audio`);
        attachments.push({ kind: "audio", bytes: base64Bytes(optString(audio, "data", `${param}[${i}].input_audio.data`) ?? "") });
        break;
      }
      case "file": {
        const file = asObject(part.file, `${param}[${i}].file`);
        // A file by id was uploaded to the provider earlier: its size, and so its tokens, are unknown here.
        if (optString(file, "file_id", `${param}[${i}].file.file_id`) !== undefined) storedState.push(`${param}[${i}].file.file_id`);
        attachments.push({ kind: "file", bytes: base64Bytes(optString(file, "file_data", `${param}[${i}].file.file_data`) ?? "") });
        break;
      }
      default:
        throw invalid(`${param}[${i}].type`, `unsupported content part type ${JSON.stringify(type)}`);
    }
  });
}
