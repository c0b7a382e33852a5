import { TollgateError } from "../core/errors.js";
import type { Attachment, PromptShape } from "../core/metering/tokens.js";
import { openaiErrorBody } from "./errors.js";
import { addDefinition, answerIsError, asObject, base64Bytes, codePoints, invalid, optArray, optBool, optCount, optString, UPSTREAM_ERROR, usageCount } from "./fields.js";
import { COUNT, decodeString, PLAIN_STRING_BODY, STRING_BODY } from "./json-scan.js";
import type { Reading, RequestFormat, ReportedUsage, SseEvent, StreamTail } from "../core/format.js";

const ROLES = new Set(["user", "assistant", "system", "developer"]);
/**
 * Tools the client runs itself. Every other tool type (web_search, file_search, code_interpreter,
 * mcp, image_generation, ...) runs at OpenAI and adds content tollgate never sees to the bill, so
 * it is listed as stored state.
 */
const CLIENT_TOOL = /^(function|custom|computer_use_preview|computer|local_shell|shell|apply_patch)$/;
/** Calls and results of built-in tools from earlier turns: re-read by the model, counted as their JSON. */
const TOOL_ITEM = /^([a-z_]+_call|[a-z_]+_call_output|mcp_[a-z_]+|compaction)$/;

/**
 * OpenAI Responses: POST /v1/responses.
 *
 * State the gateway cannot see — `previous_response_id`, `conversation`, a stored `prompt`,
 * `item_reference` inputs, files by id or URL, hosted tools, `background: true` — is listed in
 * `storedState`. The normalise gate refuses it unless the route sets `input.stored_state: allow`;
 * then the budget gate reserves the model's whole context window as input, the one bound such a
 * prompt cannot exceed. A background response keeps generating after the connection closes, so
 * when its usage is never seen the reservation is charged (`detached`).
 */
export const openaiResponses: RequestFormat = {
  endpoint: "responses",
  api: "openai",
  upstreamPath: "/responses",

  inspect(raw) {
    const body = asObject(raw, "body");
    const c = new Collector();
    const instructions = optString(body, "instructions");
    if (instructions !== undefined) c.message("developer", [instructions]);
    let items = 0;
    if (typeof body.input === "string") {
      c.message("user", [body.input]);
      items = 1;
    } else if (Array.isArray(body.input)) {
      body.input.forEach((it, i) => c.item(asObject(it, `input[${i}]`), `input[${i}]`));
      items = body.input.length;
    } else if (body.input !== undefined && body.input !== null) {
      throw invalid("input", "expected a string or an array of input items");
    }

    const tools = optArray(body, "tools") ?? [];
    tools.forEach((t, i) => {
      const tool = asObject(t, `tools[${i}]`);
      const type = optString(tool, "type", `tools[${i}].type`);
      if (!type || !CLIENT_TOOL.test(type)) c.storedState.push(`tools[${i}]`);
      c.chars += addDefinition(c.prompt, tool);
    });
    // A structured-output schema is prompt text too.
    const text = body.text === undefined || body.text === null ? undefined : asObject(body.text, "text");
    if (text?.format !== undefined && text.format !== null) c.chars += addDefinition(c.prompt, asObject(text.format, "text.format"));

    for (const key of ["previous_response_id", "conversation", "prompt"]) {
      if (body[key] !== undefined && body[key] !== null) c.storedState.push(key);
    }
    const background = optBool(body, "background") === true;
    if (background) c.storedState.push("background");
    if (items === 0 && instructions === undefined && c.storedState.length === 0) {
      throw invalid("input", "expected a string or a non-empty array of input items");
    }

    const outputTokens: Record<string, number> = {};
    const max = optCount(body, "max_output_tokens", 1);
    if (max !== undefined) outputTokens.max_output_tokens = max;
    const sensitiveParams: string[] = [];
    if (optCount(body, "top_logprobs") !== undefined) sensitiveParams.push("top_logprobs");
    const include = optArray(body, "include") ?? [];
    if (include.some((v) => typeof v === "string" && v.includes("logprobs"))) sensitiveParams.push("logprobs");
    const tier = optString(body, "service_tier");
    if (tier && tier !== "auto" && tier !== "default") sensitiveParams.push("service_tier");

    return {
      model: optString(body, "model"),
      stream: optBool(body, "stream") ?? false,
      prompt: c.prompt,
      promptChars: c.chars,
      messages: items + (instructions !== undefined ? 1 : 0),
      tools: tools.length,
      attachments: c.prompt.attachments,
      outputTokens,
      choices: 1,
      sensitiveParams,
      storedState: c.storedState,
      // Usage always arrives inside response.completed; there is nothing to drop.
      clientWantsStreamUsage: true,
      hiddenOutput: body.reasoning !== undefined && body.reasoning !== null,
      detached: background,
    };
  },

  rewrite(body, plan, inspection) {
    return { ...body, ...this.upstreamFields!(body, plan, inspection) };
  },

  upstreamFields(_body, plan) {
    return { model: plan.model, max_output_tokens: plan.maxOutputTokens };
  },

  readResponse(raw) {
    // A failed response carries its usage beside the error: what was generated is still billed.
    if (answerIsError(raw)) return { error: UPSTREAM_ERROR, usage: fromResponsesUsage((raw as { usage?: ResponsesUsage } | null)?.usage) };
    const body = raw as { id?: string; model?: string; usage?: ResponsesUsage; output?: unknown[] };
    let text = "";
    let toolCalls = 0;
    for (const item of body.output ?? []) {
      const r = readOutputItem(item, true);
      text += r.text;
      toolCalls += r.toolCalls;
    }
    return { text, toolCalls, usage: fromResponsesUsage(body.usage), id: body.id, model: body.model };
  },

  readEvent(event, _inspection, tail = {}) {
    const data = textDelta(event.data) ?? parseEvent(event.data);
    if (data === undefined) return { error: "malformed event from upstream" };
    // An OpenAI-style `{"error": …}` from a compatible proxy is as much an error as the API's own event.
    if (answerIsError(data)) return { error: UPSTREAM_ERROR };
    const s = streamState(tail);
    // The latest event's effect on the output is applied once the next one is read: when the meter
    // withholds an event at the output cap, the closing response must not contain it.
    s.pending?.();
    s.pending = undefined;
    if (typeof data.sequence_number === "number") s.seq = data.sequence_number;
    const at = (f: (item: OutputItem) => void) => {
      const item = typeof data.output_index === "number" ? s.items[data.output_index] : undefined;
      if (item) s.pending = () => f(item);
    };
    const delta = typeof data.delta === "string" ? data.delta : "";
    const type = data.type ?? event.event;
    switch (type) {
      case "response.created":
      case "response.queued":
      case "response.in_progress":
        if (data.response) s.response = { ...data.response, output: [] };
        return { id: data.response?.id, model: data.response?.model };
      case "response.output_item.added":
      case "response.output_item.done": {
        const { item, output_index: index } = data;
        if (item && typeof index === "number") s.pending = () => (s.items[index] = structuredClone(item));
        return type === "response.output_item.added" ? readOutputItem(item, false) : {};
      }
      case "response.content_part.added":
        at((item) => ((item.content ??= [])[data.content_index ?? 0] = structuredClone(data.part ?? {})));
        return {};
      case "response.output_text.delta":
        at((item) => appendPart(item, data.content_index, "text", delta));
        return { text: delta };
      case "response.refusal.delta":
        at((item) => appendPart(item, data.content_index, "refusal", delta));
        return { text: delta };
      case "response.function_call_arguments.delta":
        at((item) => (item.arguments = `${item.arguments ?? ""}${delta}`));
        return { text: delta };
      case "response.custom_tool_call_input.delta":
      case "response.reasoning_text.delta":
      case "response.reasoning_summary_text.delta":
        return { text: delta };
      case "response.completed":
      case "response.incomplete":
        return { usage: fromResponsesUsage(data.response?.usage) };
      case "response.failed":
        return { usage: fromResponsesUsage(data.response?.usage), error: UPSTREAM_ERROR };
      case "error":
        return { error: UPSTREAM_ERROR };
      default:
        return {};
    }
  },

  endStream(stop, last, message): SseEvent[] {
    const s = streamState(last);
    const seq = s.seq + 1;
    if (stop === "upstream_error" || stop === "timeout") {
      const err = new TollgateError(stop === "timeout" ? "upstream_timeout" : "upstream_error", message);
      const { error } = openaiErrorBody(err);
      // Responses' own error event, plus `error`: the openai SDK raises an APIError for an event carrying it.
      return [named("error", { type: "error", sequence_number: seq, code: error.code, message: error.message, param: null, error })];
    }
    const output = s.items.filter(Boolean).map((item) => (item.status === "in_progress" ? { ...item, status: "incomplete" } : item));
    const response = {
      object: "response",
      created_at: Math.floor(Date.now() / 1000),
      ...s.response,
      id: s.response?.id ?? last.id ?? "resp_tollgate",
      model: s.response?.model ?? last.model ?? "",
      status: "incomplete",
      incomplete_details: { reason: "max_output_tokens" },
      output,
      usage: null,
    };
    return [named("response.incomplete", { type: "response.incomplete", sequence_number: seq, response })];
  },

  errorBody: openaiErrorBody,
};

/**
 * An output text delta in the form the API sends (its fields in their order, no spacing;
 * `logprobs` empty, `obfuscation` and the sequence number at the end allowed, as some compatible
 * servers place it). Anything else is read with JSON.parse.
 */
const TEXT_DELTA = new RegExp(
  String.raw`^\{"type":"response\.output_text\.delta"(?:,"sequence_number":(${COUNT}))?(?:,"item_id":"${PLAIN_STRING_BODY}")?(?:,"output_index":(${COUNT}))?(?:,"content_index":(${COUNT}))?,"delta":"(${STRING_BODY})"(?:,"logprobs":\[\])?(?:,"obfuscation":"${PLAIN_STRING_BODY}")?(?:,"sequence_number":(${COUNT}))?\}$`,
);

/**
 * The fields readEvent uses of an output text delta, as JSON.parse gives them, or undefined for
 * any other event. Nearly every event of a stream is one, and matching it costs a fraction of
 * JSON.parse and the objects it builds.
 */
export function textDelta(data: string): ResponsesEvent | undefined {
  const m = TEXT_DELTA.exec(data);
  if (m === null) return undefined;
  const delta = decodeString(m[4]!);
  if (delta === undefined) return undefined;
  // A repeated key is JSON.parse's last value.
  const seq = m[5] ?? m[1];
  return {
    type: "response.output_text.delta",
    sequence_number: seq === undefined ? undefined : Number(seq),
    output_index: m[2] === undefined ? undefined : Number(m[2]),
    content_index: m[3] === undefined ? undefined : Number(m[3]),
    delta,
  };
}

function parseEvent(data: string): ResponsesEvent | undefined {
  try {
    return JSON.parse(data) as ResponsesEvent;
  } catch {
    return undefined;
  }
}

function named(event: string, data: unknown): SseEvent {
  return { event, data: JSON.stringify(data) };
}

/** Gathers what the model reads from instructions and input items. */
class Collector {
  readonly prompt: PromptShape = { messages: [], toolDefinitions: [], attachments: [] };
  readonly storedState: string[] = [];
  chars = 0;

  message(role: string, texts: string[]): void {
    const text = texts.join("\n");
    this.chars += codePoints(text);
    this.prompt.messages.push({ role, text });
  }

  item(item: Record<string, unknown>, param: string): void {
    const type = optString(item, "type", `${param}.type`) ?? "message";
    const str = (key: string) => optString(item, key, `${param}.${key}`) ?? "";
    switch (type) {
      case "message": {
        const role = optString(item, "role", `${param}.role`);
        if (!role || !ROLES.has(role)) throw invalid(`${param}.role`, `expected one of ${[...ROLES].join(", ")}`);
        this.message(role, this.content(item.content, `${param}.content`));
        return;
      }
      case "function_call":
        this.message("assistant", [str("name"), str("arguments")]);
        return;
      case "custom_tool_call":
        this.message("assistant", [str("name"), str("input")]);
        return;
      case "function_call_output":
      case "custom_tool_call_output":
        this.message("tool", typeof item.output === "string" ? [item.output] : this.content(item.output, `${param}.output`));
        return;
      case "reasoning":
        this.message("assistant", [JSON.stringify(item.summary ?? []), JSON.stringify(item.content ?? []), str("encrypted_content")]);
        return;
      case "item_reference":
        this.storedState.push(param);
        return;
      default:
        if (!TOOL_ITEM.test(type)) throw invalid(`${param}.type`, `unsupported input item type ${JSON.stringify(type)}`);
        this.message("tool", [JSON.stringify(item)]);
    }
  }

  private content(content: unknown, param: string): string[] {
    if (typeof content === "string") return [content];
    if (!Array.isArray(content)) throw invalid(param, "expected a string or an array of content parts");
    const texts: string[] = [];
    content.forEach((p, i) => {
      const part = asObject(p, `${param}[${i}]`);
      const at = `${param}[${i}]`;
      const str = (key: string) => optString(part, key, `${at}.${key}`);
      const type = str("type");
      switch (type) {
        case "input_text":
        case "output_text":
        case "text": {
          const text = str("text");
          if (text === undefined) throw invalid(`${at}.text`, "expected a string");
          texts.push(text);
          break;
        }
        case "refusal":
          texts.push(str("refusal") ?? "");
          break;
        case "input_image": {
          // By URL or file id an image is still bounded by the model's image rule.
          const url = str("image_url") ?? "";
          const detail = str("detail") as Attachment["detail"];
          this.prompt.attachments.push({ kind: "image", bytes: url.startsWith("data:") ? base64Bytes(url) : 0, detail });
          break;
        }
        case "input_file": {
          const data = str("file_data");
          texts.push(str("filename") ?? "");
          if (data === undefined) this.storedState.push(at);
          this.prompt.attachments.push({ kind: "file", bytes: data === undefined ? 0 : base64Bytes(data) });
          break;
        }
        case "input_audio": {
          const audio = asObject(part.input_audio, `${at}.input_audio`);
          this.prompt.attachments.push({ kind: "audio", bytes: base64Bytes(optString(audio, "data", `${at}.input_audio.data`) ?? "") });
          break;
        }
        default:
          throw invalid(`${at}.type`, `unsupported content part type ${JSON.stringify(type)}`);
      }
    });
    return texts;
  }
}

interface OutputItem {
  type?: string;
  status?: string;
  name?: string;
  arguments?: string;
  input?: string;
  content?: { type?: string; text?: string; refusal?: string }[];
  summary?: { text?: string }[];
}

/** Output text and tool calls of an item: the whole item in a reply, or what an added item starts with. */
function readOutputItem(raw: unknown, whole: boolean): Reading & { text: string; toolCalls: number } {
  const item = (raw ?? {}) as OutputItem;
  const s = (v: unknown) => (typeof v === "string" ? v : "");
  switch (item.type) {
    case "message":
      return { text: whole ? (item.content ?? []).map((p) => s(p.text) + s(p.refusal)).join("") : "", toolCalls: 0 };
    case "function_call":
      return { text: s(item.name) + (whole ? s(item.arguments) : ""), toolCalls: 1 };
    case "custom_tool_call":
      return { text: s(item.name) + (whole ? s(item.input) : ""), toolCalls: 1 };
    case "reasoning":
      return { text: whole ? (item.summary ?? []).map((p) => s(p.text)).join("") : "", toolCalls: 0 };
    default:
      return { text: "", toolCalls: 0 };
  }
}

function appendPart(item: OutputItem, index: number | undefined, key: "text" | "refusal", delta: string): void {
  const part = item.content?.[index ?? 0];
  if (part) part[key] = `${part[key] ?? ""}${delta}`;
}

interface ResponsesEvent {
  type?: string;
  sequence_number?: number;
  output_index?: number;
  content_index?: number;
  delta?: unknown;
  item?: OutputItem;
  part?: { type?: string; text?: string; refusal?: string };
  message?: string;
  response?: { id?: string; model?: string; usage?: ResponsesUsage; error?: { message?: string } | null; [key: string]: unknown };
}

interface StreamState {
  /** The response object as the stream began it, repeated (with its output so far) when tollgate ends it. */
  response?: Record<string, unknown> & { id?: string; model?: string };
  items: OutputItem[];
  seq: number;
  /** The latest event's effect on `items`, applied when the next event is read. */
  pending?: () => void;
}

function streamState(tail: StreamTail): StreamState {
  tail.state ??= { items: [], seq: -1 } satisfies StreamState;
  return tail.state as StreamState;
}

interface ResponsesUsage {
  input_tokens?: number;
  output_tokens?: number;
  input_tokens_details?: { cached_tokens?: number };
  output_tokens_details?: { reasoning_tokens?: number };
}

/** Responses' input_tokens already include the cached ones, as Chat Completions' prompt_tokens do. */
export function fromResponsesUsage(u: ResponsesUsage | null | undefined): ReportedUsage | undefined {
  if (!u || typeof u !== "object") return undefined;
  return {
    inputTokens: usageCount(u.input_tokens),
    outputTokens: usageCount(u.output_tokens),
    cachedInputTokens: usageCount(u.input_tokens_details?.cached_tokens),
    reasoningTokens: usageCount(u.output_tokens_details?.reasoning_tokens),
  };
}

