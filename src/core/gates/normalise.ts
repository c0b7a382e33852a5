import { TollgateError } from "../errors.js";
import type { Exchange } from "../exchange.js";
import type { Gate } from "../gate.js";
import { fireSignal } from "./abuse.js";

/** A prompt this close to the cap, again and again, is someone filling every request to the brim. */
const NEAR_CAP = 0.9;
const LOGPROB_PARAMS = new Set(["logprobs", "top_logprobs", "logit_bias"]);

/**
 * Gate 4: client-supplied sizes are never trusted. The body was read under the byte cap and parsed
 * by the transport; here the format reads it into an Inspection and every cap of the route applies.
 * Output-token requests are clamped (or refused) so the reservation at gate 6 is a real bound.
 */
export const normalise: Gate = function normalise(ex, env) {
  const inspection = ex.inspection!;
  const caps = ex.route.input;
  const rec = ex.record;
  rec.stream = inspection.stream;
  rec.model_requested = inspection.model ?? null;
  rec.attachments = inspection.attachments.length;

  if (caps.maxPromptChars !== undefined && inspection.promptChars > caps.maxPromptChars) {
    throw tooLarge("the prompt's length in characters", inspection.promptChars, caps.maxPromptChars, "max_prompt_chars");
  }
  // Only a prompt near its cap waits (for the signal's score); otherwise no promise is made.
  if (caps.maxPromptChars !== undefined && inspection.promptChars >= NEAR_CAP * caps.maxPromptChars) {
    return fireSignal(ex, env, "near_cap_prompt").then(() => capsAndClamps(ex));
  }
  capsAndClamps(ex);
};

function tooLarge(what: string, value: number, cap: number, field: string): TollgateError {
  return new TollgateError("input_too_large", `${what} is ${value}; this route allows ${cap} (${field})`, { limit: field });
}

/** The rest of gate 4: the other caps, refused parameters and the output-token clamp. */
function capsAndClamps(ex: Exchange): void {
  const inspection = ex.inspection!;
  const caps = ex.route.input;
  const rec = ex.record;
  if (caps.maxMessages !== undefined && inspection.messages > caps.maxMessages) throw tooLarge("the number of messages", inspection.messages, caps.maxMessages, "max_messages");
  if (caps.maxTools !== undefined && inspection.tools > caps.maxTools) throw tooLarge("the number of tools", inspection.tools, caps.maxTools, "max_tools");
  if (caps.maxAttachments !== undefined && inspection.attachments.length > caps.maxAttachments) {
    throw tooLarge("the number of attachments", inspection.attachments.length, caps.maxAttachments, "max_attachments");
  }
  if (caps.maxAttachmentBytes !== undefined) {
    const big = inspection.attachments.find((a) => a.bytes > caps.maxAttachmentBytes!);
    if (big) throw tooLarge(`an attachment's size in bytes`, big.bytes, caps.maxAttachmentBytes, "max_attachment_bytes");
  }
  if (caps.maxEmbeddingInputs !== undefined && (inspection.embeddingInputs ?? 0) > caps.maxEmbeddingInputs) {
    throw tooLarge("the number of embedding inputs", inspection.embeddingInputs!, caps.maxEmbeddingInputs, "max_embedding_inputs");
  }
  if (inspection.choices > caps.maxN) {
    throw new TollgateError("param_not_allowed", `n=${inspection.choices} multiplies the cost; this route allows at most ${caps.maxN}`, { param: "n" });
  }
  for (const p of inspection.sensitiveParams) {
    if (LOGPROB_PARAMS.has(p) && caps.allowLogprobs) continue;
    throw new TollgateError("param_not_allowed", `${p} is not allowed on this route`, { param: p });
  }
  if (inspection.storedState.length && caps.storedState === "reject") {
    const p = inspection.storedState[0]!;
    throw new TollgateError("param_not_allowed", `${p} adds cost tollgate cannot see or estimate; this route does not allow it (input.stored_state)`, { param: p });
  }

  const cap = caps.maxOutputTokens;
  const fields = Object.entries(inspection.outputTokens);
  const asked = fields.reduce((m, [, v]) => Math.max(m, v), 0);
  if (asked > cap && caps.onExcessOutputTokens === "reject") {
    const [field] = fields.find(([, v]) => v === asked)!;
    throw new TollgateError("output_tokens_exceeded", `${field}=${asked} is over this route's cap of ${cap} output tokens`, { param: field });
  }
  // Every output field goes upstream with one value, so no provider can pick a larger one.
  const allowed = allowedOutputTokens(inspection.outputTokens, cap);
  for (const [field, v] of fields) if (v !== allowed) rec.clamped[field] = { from: v, to: allowed };
  if (!fields.length && inspection.producesOutput !== false) rec.clamped["max_output_tokens"] = { from: null, to: cap };
  const clamped = Object.entries(rec.clamped).filter(([, c]) => c.from !== null);
  if (clamped.length) ex.headers["x-tollgate-clamped"] = clamped.map(([f, c]) => `${f}=${c.from}->${c.to}`).join(", ");
}

/**
 * The output tokens the request may generate per choice: the route cap, or less when the client
 * asked for less. When two fields disagree the smaller wins — never more than any field asked for.
 */
export function allowedOutputTokens(outputTokens: Record<string, number>, cap: number): number {
  const values = Object.values(outputTokens);
  return values.length ? Math.min(cap, ...values) : cap;
}
