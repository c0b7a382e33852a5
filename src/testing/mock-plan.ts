/** What the mock upstream answers and how it counts: behaviors, tokens, and the plan of one reply. */
import { decode, encode } from "gpt-tokenizer/encoding/o200k_base";

/** How the mock answers a request. Every field is optional; `{}` is a well-behaved provider. */
export interface MockBehavior {
  /** Reply with this HTTP status and an error body in the API's format (any value other than 200). */
  status?: number;
  /** Raw body to send with `status` instead of the default error body. */
  errorBody?: string;
  /** Completion text; streamed as chunks of one o200k token each. Default: words from {@link MOCK_WORDS}. */
  text?: string;
  /** Tokens to generate. Default: min(requested max tokens, 20), or all of `text` when given. */
  outputTokens?: number;
  /** Generate `outputTokens` even when the request asked for fewer (a misbehaving provider). */
  ignoreMaxTokens?: boolean;
  /** Delay before every streamed token; a non-stream reply waits tokens × interval before answering. */
  tokenIntervalMs?: number;
  /** Delay before sending status and headers. */
  firstByteDelayMs?: number;
  /**
   * Hold the reply (before status and headers) until this settles: a test keeps the requests
   * that got through in flight until it has seen what happened to the others, whatever the load.
   */
  holdUntil?: Promise<unknown>;
  /** Stream forever (every `tokenIntervalMs`, 10 ms when unset); a non-stream reply sends headers and hangs. */
  neverEnd?: boolean;
  /** Stream: send an event whose data is not JSON (`data: {not json`), then end. */
  malformedSse?: boolean;
  /** Non-stream: reply 200 with an invalid JSON body. */
  malformedJson?: boolean;
  /** Stream: destroy the socket once N token chunks have been written. Non-stream: destroy it instead of replying. */
  failAfterChunks?: number;
  /**
   * Never report usage (also ignores `stream_options.include_usage`). Anthropic replies then lack
   * `usage` entirely, which the Anthropic SDK's stream helper cannot handle, as with a broken provider.
   */
  omitUsage?: boolean;
  /** Answer with tool calls (chat: tool_calls; Anthropic: tool_use blocks; Responses: function_call items). */
  toolCalls?: { name: string; arguments: string }[];
  /** Hidden reasoning tokens to report; added to completion/output tokens, as OpenAI does. */
  reasoningTokens?: number;
  /**
   * Answer HTTP 200 with an error object carrying this message, as some OpenAI-compatible backends
   * do (often echoing the key they were sent). Streams send it as an error event after the planned
   * tokens (`outputTokens: 0`: right after the framing events; on Chat Completions, alone).
   */
  errorIn200?: string;
  /** Report these raw values as input / output tokens instead of the true counts (1e308, -5, 2.5, "12"). */
  reportUsage?: { input?: unknown; output?: unknown };
  /** The `model` the answer names, instead of the one asked for. */
  answerModel?: string;
  /**
   * Go silent without closing: a stream after N token chunks, a non-stream reply after its headers
   * and the first half of its body.
   */
  stallAfterChunks?: number;
}

/** One request as the mock saw it, updated while the response is in flight. */
export interface RecordedRequest {
  method: string;
  /** The request target as received, including any query string. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  rawBody: string;
  /** `rawBody` parsed as JSON when it parses, else undefined. */
  body: any;
  /** performance.now() when the request arrived. */
  receivedAt: number;
  /** performance.now() when the *client* closed the connection before the mock finished (abort detection). */
  closedAt?: number;
  /**
   * performance.now() when the mock finished its response normally. Also set when the mock
   * deliberately broke the connection (`failAfterChunks`), since that is the scripted end.
   */
  finishedAt?: number;
  /** Token chunks written (text tokens and tool-call argument tokens). */
  chunksSent: number;
}

export type BehaviorSource = MockBehavior | ((req: RecordedRequest) => MockBehavior);

/**
 * Words that are each exactly one o200k token both bare and with a leading space, so the default
 * completion "hello world the quick ..." is exactly one token per chunk and N tokens in total.
 */
export const MOCK_WORDS: readonly string[] = [
  "hello", "world", "the", "quick", "brown", "fox", "over", "lazy",
  "dog", "alpha", "beta", "gamma", "delta", "red", "blue", "green",
];

/** The i-th default token chunk: the first word is bare, later ones carry a leading space. */
export function mockChunk(i: number): string {
  const word = MOCK_WORDS[i % MOCK_WORDS.length];
  return i === 0 ? word : ` ${word}`;
}

/** The default completion text of `n` tokens, for asserting on what a client received. */
export function mockText(n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += mockChunk(i);
  return s;
}

/** o200k token count; special-token strings in user text count as plain text rather than throwing. */
export function countTokens(text: string): number {
  return text ? encode(text, { disallowedSpecial: new Set() }).length : 0;
}

/**
 * Prompt tokens the mock reports for a request body, so tests can predict usage exactly.
 *
 * Formula (OpenAI-like, the same for all three APIs so one conversation costs the same anywhere):
 *   3 (reply priming)
 *   + Σ over messages (4 + o200k tokens of the message's text)
 *   + o200k tokens of JSON.stringify(tools) when tools are given.
 * "Messages" are: chat `messages`; Responses `instructions` (one message) and `input` (a string is
 * one message, else one per item); Anthropic `system` (one message when present) and `messages`.
 * A message's text is its string content, the `text` of its parts, tool-call names and arguments
 * (tool_use: name + JSON of input), and tool results/outputs. Images and other media count 0.
 */
export function countPromptTokens(api: "chat" | "responses" | "messages", body: any): number {
  const messages: unknown[] = [];
  if (api === "chat") {
    if (Array.isArray(body?.messages)) messages.push(...body.messages);
  } else if (api === "responses") {
    if (typeof body?.instructions === "string") messages.push({ content: body.instructions });
    if (typeof body?.input === "string") messages.push({ content: body.input });
    else if (Array.isArray(body?.input)) messages.push(...body.input);
  } else {
    if (body?.system !== undefined) messages.push({ content: body.system });
    if (Array.isArray(body?.messages)) messages.push(...body.messages);
  }
  let total = 3;
  for (const m of messages) total += 4 + textsOf(m).reduce((n, t) => n + countTokens(t), 0);
  const tools = body?.tools ?? body?.functions;
  if (Array.isArray(tools) && tools.length > 0) total += countTokens(JSON.stringify(tools));
  return total;
}

/** Text of a message, content part or item, by the rules documented on {@link countPromptTokens}. */
function textsOf(v: unknown): string[] {
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.flatMap(textsOf);
  if (!v || typeof v !== "object") return [];
  const o = v as Record<string, any>;
  const out: string[] = [];
  if (typeof o.name === "string" && (o.type === "tool_use" || o.type === "function_call" || o.role !== undefined)) {
    out.push(o.name);
  }
  if (typeof o.text === "string") out.push(o.text);
  if (o.content !== undefined) out.push(...textsOf(o.content));
  if (o.type === "tool_use") out.push(JSON.stringify(o.input ?? {}));
  if (typeof o.arguments === "string") out.push(o.arguments);
  if (o.output !== undefined) out.push(...textsOf(o.output));
  if (Array.isArray(o.tool_calls)) {
    for (const c of o.tool_calls) out.push(String(c?.function?.name ?? ""), String(c?.function?.arguments ?? ""));
  }
  return out;
}

/** Split text into chunks of one token, merging tokens only where one alone is not valid UTF-8. */
function tokenChunks(text: string, maxTokens = Infinity): { chunks: string[]; tokens: number } {
  const ids = encode(text, { disallowedSpecial: new Set() }).slice(0, maxTokens);
  const chunks: string[] = [];
  let pending: number[] = [];
  let pos = 0;
  for (const id of ids) {
    pending.push(id);
    const piece = decode(pending);
    if (text.startsWith(piece, pos)) {
      chunks.push(piece);
      pos += piece.length;
      pending = [];
    }
  }
  if (pending.length) chunks.push(decode(pending));
  return { chunks, tokens: ids.length };
}

export interface PlannedToolCall {
  name: string;
  arguments: string;
  chunks: string[];
}

/** Everything a reply needs, worked out once so all APIs report the same numbers. */
export interface Plan {
  n: number; // per-server request number, for deterministic ids
  model: string;
  promptTokens: number;
  text: string[]; // one token per chunk
  toolCalls: PlannedToolCall[];
  reasoningTokens: number;
  /** Visible text tokens + tool-call tokens + reasoning tokens. */
  outputTokens: number;
  /** Generation was cut by the requested max tokens. */
  truncated: boolean;
  /** What the usage says: the true counts unless the behavior reports others. */
  reportedInput: unknown;
  reportedOutput: unknown;
}

export function makePlan(api: "chat" | "responses" | "messages", body: any, b: MockBehavior, n: number): Plan {
  const requestedMax = [body?.max_tokens, body?.max_completion_tokens, body?.max_output_tokens].find(
    (v): v is number => typeof v === "number",
  );
  const limit = requestedMax !== undefined && !b.ignoreMaxTokens ? requestedMax : Infinity;
  const toolCalls = (b.toolCalls ?? []).map((c) => ({ name: c.name, arguments: c.arguments, ...tokenChunks(c.arguments) }));
  const toolTokens = toolCalls.reduce((s, c) => s + countTokens(c.name) + c.tokens, 0);
  // Tool calls replace the text unless the behavior asks for text explicitly.
  const wantsText = toolCalls.length === 0 || b.text !== undefined || b.outputTokens !== undefined;
  let text: string[] = [];
  let textTokens = 0;
  let truncated = false;
  if (wantsText && b.text !== undefined) {
    const available = countTokens(b.text);
    const wanted = Math.min(b.outputTokens ?? available, available);
    truncated = wanted > limit;
    ({ chunks: text, tokens: textTokens } = tokenChunks(b.text, Math.min(wanted, limit)));
  } else if (wantsText) {
    const wanted = b.outputTokens ?? 20;
    truncated = wanted > limit;
    const count = Math.min(wanted, limit);
    for (let i = 0; i < count; i++) text.push(mockChunk(i));
    textTokens = count;
  }
  const reasoningTokens = b.reasoningTokens ?? 0;
  const promptTokens = countPromptTokens(api, body);
  const outputTokens = textTokens + toolTokens + reasoningTokens;
  return {
    n,
    model: b.answerModel ?? (typeof body?.model === "string" ? body.model : "mock-model"),
    promptTokens,
    text,
    toolCalls: toolCalls.map(({ name, arguments: args, chunks }) => ({ name, arguments: args, chunks })),
    reasoningTokens,
    outputTokens,
    truncated,
    reportedInput: b.reportUsage && "input" in b.reportUsage ? b.reportUsage.input : promptTokens,
    reportedOutput: b.reportUsage && "output" in b.reportUsage ? b.reportUsage.output : outputTokens,
  };
}

/** total_tokens as a provider would add it up; whatever the parts are when they are not numbers. */
export const reportedTotal = (p: Plan): unknown =>
  typeof p.reportedInput === "number" && typeof p.reportedOutput === "number" ? p.reportedInput + p.reportedOutput : p.reportedOutput;

/** Fixed so replies are byte-for-byte reproducible. */
export const CREATED = 1_700_000_000;

/** Chat and Responses tool calls share their ids, as OpenAI's do. */
export const callId = (p: Plan, i: number) => `call_mock_${p.n}_${i}`;
/** Whether a reply carries a text message (always, unless it is tool calls only). */
export const hasMessageItem = (p: Plan) => p.text.length > 0 || p.toolCalls.length === 0;
