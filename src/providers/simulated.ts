import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { EndpointName, ProviderConfig } from "../config/resolve.js";
import { countTextTokens, tokenizerFor } from "../core/metering/tokens.js";
import type { Inspection, SseEvent } from "../formats/format.js";
import type { Provider, UpstreamCall, UpstreamResult } from "./provider.js";

/** Words that are one o200k token each with their leading space, so usage is exact. */
const WORDS = [" the", " gate", " model", " token", " budget", " request", " stream", " cost", " user", " route", " limit", " cheap", " safe", " answer", " data", " time"];

/**
 * The built-in provider for the demo and for trying tollgate with no account and no network:
 * deterministic text (a function of the prompt), realistic usage, and streaming at a set token rate.
 */
export class SimulatedProvider implements Provider {
  readonly name: string;
  private readonly intervalMs: number;

  constructor(cfg: ProviderConfig) {
    this.name = cfg.name;
    this.intervalMs = 1000 / cfg.tokensPerSecond;
  }

  supports(endpoint: EndpointName): boolean {
    return endpoint === "chat_completions";
  }

  async call(c: UpstreamCall): Promise<UpstreamResult> {
    c.signal.throwIfAborted();
    const inspection = c.format.inspect(c.body);
    const tokenizer = tokenizerFor(c.plan.model);
    const inputTokens = 3 + inspection.prompt.messages.reduce((n, m) => n + 3 + countTextTokens(m.text, tokenizer), 0);
    const seed = hash(inspection.prompt.messages.map((m) => m.text).join("\n"));
    const outputTokens = Math.min(c.plan.maxOutputTokens, 16 + (seed % 48));
    const words = Array.from({ length: outputTokens }, (_, i) => WORDS[(seed + i * 7) % WORDS.length]!);
    words[0] = words[0]!.trimStart();
    const sim: Simulation = { id: `chatcmpl-sim-${randomUUID()}`, model: c.plan.model, created: Math.floor(Date.now() / 1000), words, inputTokens, inspection };
    if (!c.stream) return { kind: "json", body: chatCompletion(sim) };
    return { kind: "stream", events: this.streamChat(sim, c.signal) };
  }

  private async *streamChat(sim: Simulation, signal: AbortSignal): AsyncGenerator<SseEvent> {
    const chunk = (delta: object, finish: string | null, usage?: object) => ({
      data: JSON.stringify({ id: sim.id, object: "chat.completion.chunk", created: sim.created, model: sim.model, choices: usage ? [] : [{ index: 0, delta, finish_reason: finish }], ...(usage ? { usage } : {}) }),
    });
    yield chunk({ role: "assistant", content: "" }, null);
    for (const word of sim.words) {
      await sleep(this.intervalMs, undefined, { signal });
      yield chunk({ content: word }, null);
    }
    yield chunk({}, "stop");
    yield chunk({}, null, usageOf(sim));
    yield { data: "[DONE]" };
  }

  async close(): Promise<void> {}
}

interface Simulation {
  id: string;
  model: string;
  created: number;
  words: string[];
  inputTokens: number;
  inspection: Inspection;
}

function usageOf(sim: Simulation) {
  return { prompt_tokens: sim.inputTokens, completion_tokens: sim.words.length, total_tokens: sim.inputTokens + sim.words.length };
}

function chatCompletion(sim: Simulation) {
  return {
    id: sim.id,
    object: "chat.completion",
    created: sim.created,
    model: sim.model,
    choices: [{ index: 0, message: { role: "assistant", content: sim.words.join("") }, finish_reason: "stop" }],
    usage: usageOf(sim),
  };
}

/** FNV-1a: a stable seed from the prompt, so the same prompt gets the same answer. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
