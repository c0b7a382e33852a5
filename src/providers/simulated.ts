import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { EndpointName, ProviderConfig } from "../config/resolve.js";
import { abortSignalOf } from "../core/cancel.js";
import { boundingTokenizer, countTextTokens, tokenizerFor, type TokenizerName } from "../core/metering/tokens.js";
import type { Inspection, SseEvent } from "../core/format.js";
import type { Provider, UpstreamCall, UpstreamResult } from "../core/provider.js";

/** Words that are one o200k token each with their leading space, so usage is exact. */
const WORDS = [" the", " gate", " model", " token", " budget", " request", " stream", " cost", " user", " route", " limit", " cheap", " safe", " answer", " data", " time"];
const EMBEDDING_DIMENSIONS = 8;

/** One event of a simulated stream; `token` events are paced at the provider's token rate. */
interface SimEvent {
  event?: string;
  data: unknown;
  token?: boolean;
}

/** How one API's replies look: the whole reply, and the same reply as stream events. */
interface Dialect {
  reply(sim: Simulation): unknown;
  events(sim: Simulation): Iterable<SimEvent>;
}

/**
 * The built-in provider for the demo and for trying tollgate with no account and no network:
 * deterministic text (a function of the prompt), realistic usage, and streaming at a set token
 * rate, in each API's own wire format, so every official SDK works against it.
 */
export class SimulatedProvider implements Provider {
  readonly name: string;
  private readonly intervalMs: number;

  constructor(cfg: ProviderConfig) {
    this.name = cfg.name;
    this.intervalMs = 1000 / cfg.tokensPerSecond;
  }

  supports(endpoint: EndpointName): boolean {
    return endpoint !== "models";
  }

  async call(c: UpstreamCall): Promise<UpstreamResult> {
    c.signal.throwIfAborted();
    const inspection = c.format.inspect(c.body);
    // Usage no larger than the gateway's reservation can hold: bytes for a model without an
    // OpenAI tokenizer, which is what a provider of unknown vocabulary may bill.
    const tokenizer = boundingTokenizer(tokenizerFor(c.plan.model));
    if (c.format.endpoint === "embeddings") return { kind: "json", body: embeddings(c, inspection, tokenizer) };
    const seed = hash(inspection.prompt.messages.map((m) => m.text).join("\n"));
    const natural = 16 + (seed % 48);
    const outputTokens = Math.min(c.plan.maxOutputTokens, natural);
    const words = Array.from({ length: outputTokens }, (_, i) => WORDS[(seed + i * 7) % WORDS.length]!);
    words[0] = words[0]!.trimStart();
    const sim: Simulation = {
      id: randomUUID().replaceAll("-", ""),
      model: c.plan.model,
      created: Math.floor(Date.now() / 1000),
      words,
      inputTokens: 3 + inspection.prompt.messages.reduce((n, m) => n + 3 + countTextTokens(m.text, tokenizer), 0),
      truncated: natural > outputTokens,
    };
    const dialect = c.format.endpoint === "messages" ? messages : c.format.endpoint === "responses" ? responses : chat;
    if (!c.stream) return { kind: "json", body: dialect.reply(sim) };
    return { kind: "stream", events: this.pace(dialect.events(sim), abortSignalOf(c.signal)) };
  }

  private async *pace(events: Iterable<SimEvent>, signal: AbortSignal): AsyncGenerator<SseEvent> {
    for (const e of events) {
      if (e.token) await sleep(this.intervalMs, undefined, { signal });
      else signal.throwIfAborted();
      yield e.event ? { event: e.event, data: JSON.stringify(e.data) } : { data: typeof e.data === "string" ? e.data : JSON.stringify(e.data) };
    }
  }

  async close(): Promise<void> {}
}

interface Simulation {
  id: string;
  model: string;
  created: number;
  words: string[];
  inputTokens: number;
  /** The reply stopped at its output cap. */
  truncated: boolean;
}

const text = (sim: Simulation) => sim.words.join("");

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions

const chat: Dialect = {
  reply(sim) {
    return {
      id: `chatcmpl-sim-${sim.id}`,
      object: "chat.completion",
      created: sim.created,
      model: sim.model,
      choices: [{ index: 0, message: { role: "assistant", content: text(sim) }, finish_reason: sim.truncated ? "length" : "stop" }],
      usage: chatUsage(sim),
    };
  },
  *events(sim) {
    const chunk = (choices: unknown[], usage?: object) => ({
      data: { id: `chatcmpl-sim-${sim.id}`, object: "chat.completion.chunk", created: sim.created, model: sim.model, choices, ...(usage ? { usage } : {}) },
    });
    const delta = (d: object, finish: string | null = null) => chunk([{ index: 0, delta: d, finish_reason: finish }]);
    yield delta({ role: "assistant", content: "" });
    for (const word of sim.words) yield { ...delta({ content: word }), token: true };
    yield delta({}, sim.truncated ? "length" : "stop");
    yield chunk([], chatUsage(sim));
    yield { data: "[DONE]" };
  },
};

function chatUsage(sim: Simulation) {
  return { prompt_tokens: sim.inputTokens, completion_tokens: sim.words.length, total_tokens: sim.inputTokens + sim.words.length };
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

const responses: Dialect = {
  reply(sim) {
    return responseObject(sim, "final");
  },
  *events(sim) {
    let seq = 0;
    const ev = (type: string, fields: object, token = false): SimEvent => ({ event: type, data: { type, sequence_number: seq++, ...fields }, token });
    const at = { item_id: `msg_sim_${sim.id}`, output_index: 0, content_index: 0 };
    yield ev("response.created", { response: responseObject(sim, "in_progress") });
    yield ev("response.in_progress", { response: responseObject(sim, "in_progress") });
    yield ev("response.output_item.added", { output_index: 0, item: messageItem(sim, "in_progress", []) });
    yield ev("response.content_part.added", { ...at, part: outputText("") });
    for (const word of sim.words) yield ev("response.output_text.delta", { ...at, delta: word, logprobs: [] }, true);
    yield ev("response.output_text.done", { ...at, text: text(sim), logprobs: [] });
    yield ev("response.content_part.done", { ...at, part: outputText(text(sim)) });
    yield ev("response.output_item.done", { output_index: 0, item: messageItem(sim, sim.truncated ? "incomplete" : "completed", [outputText(text(sim))]) });
    yield ev(sim.truncated ? "response.incomplete" : "response.completed", { response: responseObject(sim, "final") });
  },
};

function outputText(t: string) {
  return { type: "output_text", text: t, annotations: [], logprobs: [] };
}

function messageItem(sim: Simulation, status: string, content: unknown[]) {
  return { id: `msg_sim_${sim.id}`, type: "message", status, role: "assistant", content };
}

function responseObject(sim: Simulation, stage: "in_progress" | "final") {
  const final = stage === "final";
  return {
    id: `resp_sim_${sim.id}`,
    object: "response",
    created_at: sim.created,
    status: !final ? "in_progress" : sim.truncated ? "incomplete" : "completed",
    error: null,
    incomplete_details: final && sim.truncated ? { reason: "max_output_tokens" } : null,
    model: sim.model,
    output: final ? [messageItem(sim, sim.truncated ? "incomplete" : "completed", [outputText(text(sim))])] : [],
    parallel_tool_calls: true,
    tool_choice: "auto",
    tools: [],
    usage: final
      ? {
          input_tokens: sim.inputTokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: sim.words.length,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: sim.inputTokens + sim.words.length,
        }
      : null,
  };
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

const messages: Dialect = {
  reply(sim) {
    return { ...messageStart(sim), content: [{ type: "text", text: text(sim) }], stop_reason: stopReason(sim), usage: anthropicUsage(sim, sim.words.length) };
  },
  *events(sim) {
    const ev = (type: string, fields: object = {}, token = false): SimEvent => ({ event: type, data: { type, ...fields }, token });
    yield ev("message_start", { message: { ...messageStart(sim), usage: anthropicUsage(sim, 1) } });
    yield ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
    yield ev("ping");
    for (const word of sim.words) yield ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: word } }, true);
    yield ev("content_block_stop", { index: 0 });
    yield ev("message_delta", { delta: { stop_reason: stopReason(sim), stop_sequence: null }, usage: { output_tokens: sim.words.length } });
    yield ev("message_stop");
  },
};

function messageStart(sim: Simulation) {
  return { id: `msg_sim_${sim.id}`, type: "message", role: "assistant", model: sim.model, content: [], stop_reason: null, stop_sequence: null };
}

const stopReason = (sim: Simulation) => (sim.truncated ? "max_tokens" : "end_turn");

function anthropicUsage(sim: Simulation, outputTokens: number) {
  return { input_tokens: sim.inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: outputTokens };
}

// ---------------------------------------------------------------------------------------------
// OpenAI Embeddings

function embeddings(c: UpstreamCall, inspection: Inspection, tokenizer: TokenizerName) {
  const raw = c.body.input;
  const inputs: unknown[] = typeof raw === "string" || (Array.isArray(raw) && raw.every((v) => typeof v === "number")) ? [raw] : (raw as unknown[]);
  const base64 = c.body.encoding_format === "base64";
  const data = inputs.map((input, index) => {
    const vector = embed(typeof input === "string" ? input : JSON.stringify(input));
    return { object: "embedding", index, embedding: base64 ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector };
  });
  const tokens = (inspection.prompt.tokenIds ?? 0) + inspection.prompt.messages.reduce((n, m) => n + countTextTokens(m.text, tokenizer), 0);
  return { object: "list", data, model: c.plan.model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
}

/** A unit-length vector that is a function of the text; values are float32-exact so base64 and float agree. */
function embed(input: string): number[] {
  let h = hash(input);
  const out: number[] = [];
  for (let i = 0; i < EMBEDDING_DIMENSIONS; i++) {
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
    out.push(h / 2 ** 31 - 1);
  }
  const norm = Math.hypot(...out) || 1;
  return out.map((v) => Math.fround(v / norm));
}

/** FNV-1a: a stable seed from the prompt, so the same prompt gets the same answer. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
