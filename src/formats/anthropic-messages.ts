import { TollgateError } from "../core/errors.js";
import type { Attachment, PromptShape } from "../core/metering/tokens.js";
import { anthropicErrorBody } from "./errors.js";
import { addDefinition, answerIsError, asObject, base64Bytes, codePoints, invalid, optArray, optBool, optCount, optString, UPSTREAM_ERROR, usageCount } from "./fields.js";
import { COUNT, decodeString, STRING_BODY } from "./json-scan.js";
import type { Reading, RequestFormat, ReportedUsage, SseEvent, StreamTail } from "../core/format.js";

const ROLES = new Set(["user", "assistant"]);
/** Anthropic refuses a thinking budget below this, so a clamp must not produce one. */
export const MIN_THINKING_BUDGET = 1024;
/**
 * Blocks that server-side tools left in earlier turns (web search results, code execution output):
 * the model reads them again, so their JSON is counted as text.
 */
const SERVER_BLOCK = /^(server_tool_use|mcp_tool_use|mcp_tool_result|container_upload|[a-z_]+_tool_result)$/;
/**
 * Tools the client runs itself; anything else (web_search, web_fetch, code_execution, ...) runs at
 * Anthropic and reads content tollgate never sees, so it is listed as stored state.
 */
const CLIENT_TOOL = /^(custom|(bash|text_editor|computer|memory)_\w+)$/;

/**
 * Anthropic Messages: POST /v1/messages.
 *
 * Counting: `system` is one message; every text block, tool_use input, tool_result and thinking
 * block is prompt text. Images and documents are attachments (so `max_attachments`,
 * `max_attachment_bytes` and `files` limits apply to both); a base64 source counts its decoded
 * size. A text document's text is counted exactly as prompt text, so it is not priced again as a
 * file. A document or image by URL or file id is listed in `storedState` (its size is unknown) —
 * refused unless the route allows stored state, and then reserved at the model's context window.
 *
 * `max_tokens` is required, as Anthropic requires it: a request that works through tollgate works
 * against Anthropic too. `thinking.budget_tokens` is kept below the clamped `max_tokens`.
 */
export const anthropicMessages: RequestFormat = {
  endpoint: "messages",
  api: "anthropic",
  // Anthropic's base URL carries no version path (https://api.anthropic.com).
  upstreamPath: "/v1/messages",

  inspect(raw) {
    const body = asObject(raw, "body");
    const messages = optArray(body, "messages");
    if (!messages || messages.length === 0) throw invalid("messages", "expected a non-empty array of messages");
    const maxTokens = optCount(body, "max_tokens", 1);
    if (maxTokens === undefined) throw invalid("max_tokens", "required: the number of tokens the reply may use");
    const c = new Collector();
    const hasSystem = body.system !== undefined && body.system !== null;
    if (hasSystem) c.message("system", body.system, "system");
    messages.forEach((m, i) => {
      const msg = asObject(m, `messages[${i}]`);
      const role = optString(msg, "role", `messages[${i}].role`);
      if (!role || !ROLES.has(role)) throw invalid(`messages[${i}].role`, "expected user or assistant");
      c.message(role, msg.content, `messages[${i}].content`);
    });
    const tools = optArray(body, "tools") ?? [];
    tools.forEach((t, i) => {
      const tool = asObject(t, `tools[${i}]`);
      const type = optString(tool, "type", `tools[${i}].type`);
      if (type !== undefined && !CLIENT_TOOL.test(type)) c.storedState.push(`tools[${i}]`);
      // Name, description and input_schema are rendered into the prompt and billed as input.
      c.chars += addDefinition(c.prompt, tool);
    });
    if ((optArray(body, "mcp_servers") ?? []).length > 0) c.storedState.push("mcp_servers");
    const thinking = readThinking(body);

    return {
      model: optString(body, "model"),
      stream: optBool(body, "stream") ?? false,
      prompt: c.prompt,
      promptChars: c.chars,
      messages: messages.length + (hasSystem ? 1 : 0),
      tools: tools.length,
      attachments: c.attachments,
      outputTokens: { max_tokens: maxTokens },
      choices: 1,
      sensitiveParams: [],
      storedState: c.storedState,
      clientWantsStreamUsage: true,
      hiddenOutput: thinking !== undefined && thinking !== "disabled",
    };
  },

  rewrite(body, plan, inspection) {
    return { ...body, ...this.upstreamFields!(body, plan, inspection) };
  },

  upstreamFields(body, plan) {
    const out: Record<string, unknown> = { model: plan.model, max_tokens: plan.maxOutputTokens };
    const thinking = body.thinking as { type?: unknown; budget_tokens?: unknown } | undefined;
    if (thinking?.type === "enabled" && typeof thinking.budget_tokens === "number") {
      // Anthropic counts thinking inside max_tokens and wants the budget strictly below it.
      const budget = Math.min(thinking.budget_tokens, plan.maxOutputTokens - 1);
      if (budget < MIN_THINKING_BUDGET) {
        throw new TollgateError(
          "output_tokens_exceeded",
          `thinking.budget_tokens: extended thinking needs at least ${MIN_THINKING_BUDGET} tokens below max_tokens, and this request may use ${plan.maxOutputTokens} output tokens`,
          { param: "thinking.budget_tokens" },
        );
      }
      out.thinking = { ...thinking, budget_tokens: budget };
    }
    return out;
  },

  readResponse(raw) {
    if (answerIsError(raw)) return { error: UPSTREAM_ERROR };
    const body = raw as { id?: string; model?: string; usage?: AnthropicUsage; content?: unknown[] };
    let text = "";
    let toolCalls = 0;
    for (const block of body.content ?? []) {
      const r = readBlockStart(block);
      text += r.text;
      toolCalls += r.toolCalls;
    }
    return { text, toolCalls, usage: fromAnthropicUsage(body.usage), id: body.id, model: body.model };
  },

  readEvent(event, _inspection, tail = {}) {
    const delta = blockDelta(event.data);
    if (delta !== undefined) {
      const s = streamState(tail);
      s.pending?.();
      s.pending = undefined;
      return { text: delta };
    }
    let data: StreamEvent;
    try {
      data = JSON.parse(event.data);
    } catch {
      return { error: "malformed event from upstream" };
    }
    // An OpenAI-style `{"error": …}` from a compatible proxy is as much an error as the API's own event.
    if (answerIsError(data)) return { error: UPSTREAM_ERROR };
    const s = streamState(tail);
    // What this event changes in the stream's shape is applied once the next event is read: if the
    // meter withholds this one (output cap), the end we write must not mention it.
    s.pending?.();
    s.pending = undefined;
    switch (data.type ?? event.event) {
      case "message_start": {
        const u = data.message?.usage;
        s.input = { input: usageCount(u?.input_tokens), read: usageCount(u?.cache_read_input_tokens), write: usageCount(u?.cache_creation_input_tokens) };
        // message_start's output_tokens is a placeholder (usually 1), never the final count.
        return { id: data.message?.id, model: data.message?.model, usage: inputUsage(s.input) };
      }
      case "content_block_start": {
        const index = data.index;
        s.pending = () => (s.open = index);
        return readBlockStart(data.content_block);
      }
      case "content_block_delta": {
        const d = data.delta ?? {};
        const text = d.type === "text_delta" ? d.text : d.type === "input_json_delta" ? d.partial_json : d.type === "thinking_delta" ? d.thinking : undefined;
        return { text: typeof text === "string" ? text : "" };
      }
      case "content_block_stop":
        s.pending = () => (s.open = undefined);
        return {};
      case "message_delta": {
        const u = data.usage;
        // Newer API versions repeat the input counters here as whole-message totals; absent ones keep
        // what message_start said.
        s.input = {
          input: usageCount(u?.input_tokens) ?? s.input.input,
          read: usageCount(u?.cache_read_input_tokens) ?? s.input.read,
          write: usageCount(u?.cache_creation_input_tokens) ?? s.input.write,
        };
        return { usage: { ...inputUsage(s.input), outputTokens: usageCount(u?.output_tokens) } };
      }
      case "error":
        return { error: UPSTREAM_ERROR };
      default:
        return {};
    }
  },

  endStream(stop, last, message): SseEvent[] {
    if (stop === "upstream_error" || stop === "timeout") {
      // The Anthropic SDK raises an APIError for an `event: error`, typed by error.type.
      const err = new TollgateError(stop === "timeout" ? "upstream_timeout" : "upstream_error", message);
      return [named("error", anthropicErrorBody(err))];
    }
    const s = streamState(last);
    const events: SseEvent[] = [];
    if (s.open !== undefined) events.push(named("content_block_stop", { type: "content_block_stop", index: s.open }));
    events.push(
      named("message_delta", {
        type: "message_delta",
        delta: { stop_reason: "max_tokens", stop_sequence: null },
        usage: { output_tokens: last.outputTokens ?? 0 },
      }),
      named("message_stop", { type: "message_stop" }),
    );
    return events;
  },

  errorBody: anthropicErrorBody,
};

/**
 * A content block delta of text, tool input or thinking, in the form the API sends (its fields in
 * their order, no spacing). Anything else, a signature delta or another field included, does not
 * match and is read with JSON.parse.
 */
const BLOCK_DELTA = new RegExp(
  String.raw`^\{"type":"content_block_delta","index":${COUNT},"delta":\{"type":"(?:text_delta","text|input_json_delta","partial_json|thinking_delta","thinking)":"(${STRING_BODY})"\}\}$`,
);

/**
 * readEvent's text for a content block delta, or undefined for any other event. Nearly every
 * event of a stream is one, and matching it costs a fraction of JSON.parse and the objects it builds.
 */
export function blockDelta(data: string): string | undefined {
  const m = BLOCK_DELTA.exec(data);
  return m === null ? undefined : decodeString(m[1]!);
}

/** Every Anthropic SSE event carries an `event:` line; the SDK ignores events without one. */
function named(event: string, data: unknown): SseEvent {
  return { event, data: JSON.stringify(data) };
}

function readThinking(body: Record<string, unknown>): string | undefined {
  if (body.thinking === undefined || body.thinking === null) return undefined;
  const thinking = asObject(body.thinking, "thinking");
  const type = optString(thinking, "type", "thinking.type");
  if (!type) throw invalid("thinking.type", "expected a string such as enabled or disabled");
  if (type === "enabled") {
    const budget = optCount(thinking, "budget_tokens", MIN_THINKING_BUDGET, "thinking.budget_tokens");
    if (budget === undefined) throw invalid("thinking.budget_tokens", "required when thinking is enabled");
  }
  return type;
}

/** Gathers what the model reads from system, messages and nested tool results. */
class Collector {
  readonly prompt: PromptShape = { messages: [], toolDefinitions: [], attachments: [] };
  /** Every attachment, for the caps; `prompt.attachments` holds only those priced as attachments. */
  readonly attachments: Attachment[] = [];
  readonly storedState: string[] = [];
  chars = 0;

  message(role: string, content: unknown, param: string): void {
    const texts: string[] = [];
    this.content(content, param, texts);
    const text = texts.join("\n");
    this.chars += codePoints(text);
    this.prompt.messages.push({ role, text });
  }

  private content(content: unknown, param: string, texts: string[]): void {
    if (typeof content === "string") {
      texts.push(content);
      return;
    }
    if (!Array.isArray(content)) throw invalid(param, "expected a string or an array of content blocks");
    content.forEach((b, i) => this.block(asObject(b, `${param}[${i}]`), `${param}[${i}]`, texts));
  }

  private block(block: Record<string, unknown>, param: string, texts: string[]): void {
    const type = optString(block, "type", `${param}.type`);
    const str = (key: string) => optString(block, key, `${param}.${key}`);
    switch (type) {
      case "text":
        texts.push(required(str("text"), `${param}.text`));
        return;
      case "image":
        this.image(block, param);
        return;
      case "document":
        this.document(block, param, texts);
        return;
      case "search_result":
        texts.push(str("title") ?? "", str("source") ?? "");
        this.content(block.content ?? [], `${param}.content`, texts);
        return;
      case "tool_use":
        texts.push(str("name") ?? "", JSON.stringify(block.input ?? {}));
        return;
      case "tool_result":
        if (block.content !== undefined && block.content !== null) this.content(block.content, `${param}.content`, texts);
        return;
      case "thinking":
        texts.push(str("thinking") ?? "");
        return;
      case "redacted_thinking":
        texts.push(str("data") ?? "");
        return;
      default:
        if (type && SERVER_BLOCK.test(type)) {
          texts.push(JSON.stringify(block));
          return;
        }
        throw invalid(`${param}.type`, `unsupported content block type ${JSON.stringify(type)}`);
    }
  }

  private image(block: Record<string, unknown>, param: string): void {
    const source = asObject(block.source, `${param}.source`);
    const kind = optString(source, "type", `${param}.source.type`);
    const data = kind === "base64" ? optString(source, "data", `${param}.source.data`) : undefined;
    if (kind === "base64" && data === undefined) throw invalid(`${param}.source.data`, "expected base64 data");
    // An image by URL or file id is still bounded: Anthropic scales every image to ~1,600 tokens.
    this.attach({ kind: "image", bytes: data === undefined ? 0 : base64Bytes(data) }, true);
  }

  private document(block: Record<string, unknown>, param: string, texts: string[]): void {
    const source = asObject(block.source, `${param}.source`);
    const kind = optString(source, "type", `${param}.source.type`);
    for (const key of ["title", "context"]) texts.push(optString(block, key, `${param}.${key}`) ?? "");
    switch (kind) {
      case "base64":
        this.attach({ kind: "file", bytes: base64Bytes(required(optString(source, "data", `${param}.source.data`), `${param}.source.data`)) }, true);
        return;
      case "text": {
        const text = required(optString(source, "data", `${param}.source.data`), `${param}.source.data`);
        texts.push(text);
        this.attach({ kind: "file", bytes: Buffer.byteLength(text) }, false);
        return;
      }
      case "content": {
        const inner: string[] = [];
        this.content(source.content, `${param}.source.content`, inner);
        texts.push(...inner);
        this.attach({ kind: "file", bytes: Buffer.byteLength(inner.join("\n")) }, false);
        return;
      }
      case "url":
      case "file":
        this.storedState.push(`${param}.source`);
        this.attach({ kind: "file", bytes: 0 }, true);
        return;
      default:
        throw invalid(`${param}.source.type`, `unsupported document source ${JSON.stringify(kind)}`);
    }
  }

  private attach(a: Attachment, priced: boolean): void {
    this.attachments.push(a);
    if (priced) this.prompt.attachments.push(a);
  }
}

function required(v: string | undefined, param: string): string {
  if (v === undefined) throw invalid(param, "expected a string");
  return v;
}

/** Output text and tool calls a content block starts with (a whole block in a non-stream reply). */
function readBlockStart(raw: unknown): Reading & { text: string; toolCalls: number } {
  const block = (raw ?? {}) as { type?: unknown; text?: unknown; thinking?: unknown; name?: unknown; input?: unknown };
  switch (block.type) {
    case "text":
      return { text: typeof block.text === "string" ? block.text : "", toolCalls: 0 };
    case "thinking":
      return { text: typeof block.thinking === "string" ? block.thinking : "", toolCalls: 0 };
    case "tool_use":
    case "server_tool_use":
    case "mcp_tool_use": {
      // A streamed block starts with input {} and sends its JSON as deltas; a whole block has it all.
      const input = block.input && typeof block.input === "object" && Object.keys(block.input).length ? JSON.stringify(block.input) : "";
      return { text: `${typeof block.name === "string" ? block.name : ""}${input}`, toolCalls: 1 };
    }
    default:
      return { text: "", toolCalls: 0 };
  }
}

interface StreamEvent {
  type?: string;
  index?: number;
  message?: { id?: string; model?: string; usage?: AnthropicUsage };
  content_block?: unknown;
  delta?: { type?: string; text?: unknown; partial_json?: unknown; thinking?: unknown };
  usage?: AnthropicUsage;
  error?: { message?: string };
}

interface InputCounts {
  input?: number;
  read?: number;
  write?: number;
}

interface StreamState {
  /** The content block the client has seen start and not stop. */
  open?: number;
  /** The latest event's effect on `open`, applied when the next event is read. */
  pending?: () => void;
  input: InputCounts;
}

function streamState(tail: StreamTail): StreamState {
  tail.state ??= { input: {} } satisfies StreamState;
  return tail.state as StreamState;
}

export interface AnthropicUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

/**
 * Anthropic reports input_tokens WITHOUT the cache reads and writes; tollgate's inputTokens is
 * every prompt token, so the three are added (prices.ts, TokenUsage).
 */
export function fromAnthropicUsage(u: AnthropicUsage | undefined): ReportedUsage | undefined {
  if (!u || typeof u !== "object") return undefined;
  const input: InputCounts = { input: usageCount(u.input_tokens), read: usageCount(u.cache_read_input_tokens), write: usageCount(u.cache_creation_input_tokens) };
  return { ...inputUsage(input), outputTokens: usageCount(u.output_tokens) };
}

function inputUsage(c: InputCounts): ReportedUsage {
  return {
    inputTokens: c.input === undefined ? undefined : c.input + (c.read ?? 0) + (c.write ?? 0),
    cachedInputTokens: c.read,
    cacheWriteTokens: c.write,
  };
}

