import type { EndpointName } from "./config-types.js";
import type { TollgateError } from "./errors.js";
import type { Attachment, PromptShape } from "./metering/tokens.js";

/**
 * What the engine learns from a request body, in no provider's wire format. Each API format
 * (OpenAI Chat Completions, Responses, Anthropic Messages, Embeddings) reads its own body into this,
 * so the gates count, cap and price every API the same way.
 */
export interface Inspection {
  model?: string;
  stream: boolean;
  prompt: PromptShape;
  /** Unicode code points over every text the model reads. */
  promptChars: number;
  messages: number;
  tools: number;
  attachments: Attachment[];
  /** Every output-budget field the client sent, e.g. { max_tokens: 100000 }; null when sent as null. */
  outputTokens: Record<string, number>;
  /** Cost multiplier asked for (`n`); 1 when absent. */
  choices: number;
  /** Parameters present that routes may forbid: logprobs, top_logprobs, logit_bias, service_tier... */
  sensitiveParams: string[];
  /**
   * Fields whose cost the gateway cannot see or estimate: provider-side state (previous_response_id,
   * background, files by id), provider-hosted tools (web search, MCP) and audio output.
   */
  storedState: string[];
  /**
   * Text the client predicts the reply to be (Chat `prediction`): what the model does not use is
   * billed as output, so it is reserved at the output rate on top of the clamped output.
   */
  predictedOutput?: string;
  /** Inputs of an embeddings call. */
  embeddingInputs?: number;
  /** The client asked for usage in the stream itself. */
  clientWantsStreamUsage: boolean;
  /** false for endpoints that generate nothing (embeddings): no output is clamped or reserved. */
  producesOutput?: false;
  /**
   * The provider generates tokens the stream never shows (Anthropic's summarised thinking): a stream
   * cut short is charged its reserved output, as for a reasoning model.
   */
  hiddenOutput?: boolean;
  /**
   * The provider keeps generating after the connection closes (Responses `background: true`):
   * when its usage is not seen, the reservation is charged.
   */
  detached?: boolean;
}

export interface UpstreamPlan {
  /** Upstream model id. */
  model: string;
  /** Output tokens the provider may generate (per choice). */
  maxOutputTokens: number;
  /** Whether this model is an OpenAI reasoning model (decides max_tokens vs max_completion_tokens). */
  reasoning: boolean;
}

/** Token usage as a provider reported it; undefined fields are unknown, never zero. */
export interface ReportedUsage {
  inputTokens?: number;
  outputTokens?: number;
  cachedInputTokens?: number;
  cacheWriteTokens?: number;
  reasoningTokens?: number;
}

/** What one response body or stream event tells the meter. */
export interface Reading {
  /** Output text (and tool-call argument text) this event adds. */
  text?: string;
  /** New tool calls this event starts. */
  toolCalls?: number;
  usage?: ReportedUsage;
  /** Usage-only event the client did not ask for: do not forward. */
  drop?: boolean;
  /** The provider reported an error inside the stream. */
  error?: string;
  /** A response id or model the terminal events should repeat. */
  id?: string;
  model?: string;
}

/**
 * What a stream has shown so far, kept by the meter for the events that end a stream tollgate cuts.
 * `state` belongs to the format (open content blocks, output items) and is only read by it.
 */
export interface StreamTail {
  id?: string;
  model?: string;
  /** Output tokens counted so far. */
  outputTokens?: number;
  state?: unknown;
}

export interface SseEvent {
  event?: string;
  data: string;
  /**
   * The event's bytes as the provider sent them, when the transport kept them: a relay that passes
   * the event on unchanged writes these instead of formatting it again.
   */
  raw?: Uint8Array;
}

/** Why tollgate ended a stream itself. */
export type StreamStop = "output_cap" | "timeout" | "upstream_error";

export interface RequestFormat {
  readonly endpoint: EndpointName;
  /** Which API's error shape and SDK this endpoint speaks. */
  readonly api: "openai" | "anthropic";
  /** Upstream path appended to the provider's base URL. */
  readonly upstreamPath: string;
  /** Validates the body; throws TollgateError(invalid_request) naming the field. */
  inspect(body: unknown): Inspection;
  /** The body tollgate sends upstream: a new object from the validated one, with tollgate's model and caps. */
  rewrite(body: Record<string, unknown>, plan: UpstreamPlan, inspection: Inspection): Record<string, unknown>;
  /**
   * The top-level fields `rewrite` sets (model, the output cap, …), for a format whose upstream
   * body is the client's with only those set: the provider can then send the client's bytes with
   * these patched in (core/json-source.ts) instead of serialising the object again.
   */
  upstreamFields?(body: Record<string, unknown>, plan: UpstreamPlan, inspection: Inspection): Record<string, unknown>;
  readResponse(body: unknown): Reading;
  /** Reads one stream event; a format that needs to remember the stream keeps it in `tail.state`. */
  readEvent(event: SseEvent, inspection: Inspection, tail?: StreamTail): Reading;
  /** Events that end a stream tollgate cut short, so the client's SDK sees a well-formed end. */
  endStream(stop: StreamStop, last: StreamTail, message: string): SseEvent[];
  errorBody(err: TollgateError): unknown;
}
