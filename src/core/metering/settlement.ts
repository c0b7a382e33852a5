import type { ResolvedConfig } from "../config-types.js";
import type { ReportedUsage } from "../format.js";
import type { Exchange } from "../exchange.js";
import type { Micros } from "../money.js";
import type { Ended, UsageSource } from "../usage-record.js";
import type { Meter } from "./meter.js";
import { catalogPrice, costOf, type ModelPrice } from "./prices.js";
import { boundingTokenizer, estimateInputTokens } from "./tokens.js";

/** What one provider call is charged, and anything about it an operator should hear of. */
export interface Charge {
  inputTokens: number;
  outputTokens: number;
  source: UsageSource;
  /** Something was generated (or the prompt was read): a call that failed before that is free. */
  generated: boolean;
  cost: Micros;
  /** Operational warnings (no values a provider chose verbatim, so nothing it echoed can leak). */
  warnings: { message: string; fields: Record<string, unknown> }[];
}

/**
 * Works out what a finished call costs (SPEC §6, §7.8). It never throws: provider usage that is
 * not plausible (not a non-negative safe integer, or more output than the clamp let the provider
 * write) and any arithmetic it cannot do are charged as the reservation and reported in
 * `warnings`; an answer from a dearer model than the one asked for is charged at the dearer price, up to
 * the reservation.
 */
export function chargeFor(ex: Exchange, ended: Ended, meter: Meter, config: ResolvedConfig): Charge {
  const warnings: Charge["warnings"] = [];
  const doubt = implausible(meter.usage, reservedOutput(ex), ex.estimatedInputTokens);
  if (doubt.length) {
    warnings.push({ message: "implausible usage from the provider; charged the reservation", fields: { fields: doubt } });
    return { ...reservation(ex, meter), warnings };
  }
  try {
    const charge = counted(ex, ended, meter);
    charge.warnings = warnings;
    if (!charge.generated) return charge;
    const usage = { inputTokens: charge.inputTokens, outputTokens: charge.outputTokens, cachedInputTokens: meter.usage?.cachedInputTokens, cacheWriteTokens: meter.usage?.cacheWriteTokens };
    charge.cost = costOf(ex.model!.price, usage);
    const answered = answeredPrice(ex, meter, config);
    if (answered) {
      const dearer = costOf(answered.price, usage);
      if (dearer > charge.cost) {
        // The reservation is every budget's bound (no overspend, SPEC §7.1): the dearer price is
        // charged up to it, and what lies beyond is the provider's doing, logged for the operator.
        const charged = Math.max(charge.cost, Math.min(dearer, ex.estimate));
        warnings.push({
          message: `the provider answered with model ${answered.model} instead of ${ex.model!.upstream}; charged its higher price${charged < dearer ? " up to the reservation" : ""}`,
          fields: { asked: ex.model!.upstream, answered: answered.model, asked_cost_micros: charge.cost, answered_cost_micros: dearer, charged_micros: charged },
        });
        charge.cost = charged;
      }
    }
    return charge;
  } catch (err) {
    warnings.push({ message: "the cost of a served request could not be worked out; charged the reservation", fields: { reason: (err as Error).message } });
    return { ...reservation(ex, meter), warnings };
  }
}

/** The reservation as a charge: the bound gate 6 proved and took. */
export function reservation(ex: Exchange, meter: Meter): Charge {
  return {
    inputTokens: ex.estimatedInputTokens,
    outputTokens: Math.max(safeCount(meter.counted), reservedOutput(ex)),
    source: "reserved",
    generated: true,
    cost: ex.estimate,
    warnings: [],
  };
}

function reservedOutput(ex: Exchange): number {
  return ex.inspection!.producesOutput === false ? 0 : ex.upstream!.maxOutputTokens * ex.inspection!.choices;
}

const safeCount = (n: number) => (Number.isSafeInteger(n) && n >= 0 ? n : 0);

/**
 * How far the provider's input count may exceed gate 6's estimate before it cannot be true: the
 * estimate counts (or bounds by bytes) what was sent, and per-message framing adds a little. A
 * count far beyond it (a billion tokens for a short prompt) would charge past the reservation.
 */
const INPUT_SLACK_FACTOR = 4;
const INPUT_SLACK_TOKENS = 10_000;

/** The usage fields that cannot be true, by name (their values are the provider's, not logged). */
function implausible(u: ReportedUsage | undefined, maxOutput: number, estimatedInput: number): string[] {
  if (!u) return [];
  const bad: string[] = [];
  for (const k in u) {
    const v = u[k as keyof ReportedUsage];
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0)) bad.push(k);
  }
  if (u.outputTokens !== undefined && Number.isSafeInteger(u.outputTokens) && u.outputTokens > maxOutput) bad.push(`outputTokens over the clamp of ${maxOutput}`);
  const maxInput = estimatedInput * INPUT_SLACK_FACTOR + INPUT_SLACK_TOKENS;
  if (u.inputTokens !== undefined && Number.isSafeInteger(u.inputTokens) && u.inputTokens > maxInput) bad.push(`inputTokens over ${maxInput}, far beyond what was sent`);
  return bad;
}

/** Tokens from the provider's usage when it came, else counted from what passed, else reserved. */
function counted(ex: Exchange, ended: Ended, meter: Meter): Charge {
  const model = ex.model!;
  const reported = meter.usage;
  const inputTokens = reported?.inputTokens ?? countedInputTokens(ex);
  let outputTokens: number;
  let source: UsageSource;
  if (reported?.outputTokens !== undefined) {
    outputTokens = reported.outputTokens;
    source = "provider";
  } else if (
    (meter.started && (model.reasoning || ex.inspection!.hiddenOutput) && ended !== "complete" && ended !== "upstream_error") ||
    (meter.started && ex.inspection!.detached) ||
    (meter.sent && !meter.started && (ended === "client_disconnect" || ended === "timeout"))
  ) {
    // What was generated cannot be known: a reasoning model's hidden tokens never appear in the
    // stream, a detached (background) generation goes on after we stop watching, and a call we
    // abandoned before the provider answered may have run to its cap.
    // The reservation is the bound we can prove, so that is what is charged.
    outputTokens = Math.max(meter.counted, ex.upstream!.maxOutputTokens * ex.inspection!.choices);
    source = "reserved";
  } else {
    outputTokens = meter.counted;
    source = "counted";
  }
  // The provider bills the prompt once it has started on it, even if the client leaves before
  // the first token; a call that failed before any token is not charged, even when the provider
  // had already said how long the prompt was (Anthropic's message_start, then an error).
  const generated = outputTokens > 0 || (ended !== "upstream_error" && (reported?.inputTokens !== undefined || meter.started));
  return { inputTokens: generated ? inputTokens : 0, outputTokens, source, generated, cost: 0, warnings: [] };
}

/**
 * The price of the model the provider says it answered with, when that is another model with a
 * known price (a configured model with that upstream id, else the bundled catalog). A dated
 * snapshot of the asked model prices the same, so it changes nothing.
 */
function answeredPrice(ex: Exchange, meter: Meter, config: ResolvedConfig): { model: string; price: ModelPrice } | undefined {
  const answered = meter.last.model;
  const asked = ex.model!;
  if (typeof answered !== "string" || !answered || answered === asked.upstream || undated(answered) === undated(asked.upstream)) return undefined;
  const configured = Object.values(config.models).find((m) => m.upstream === answered && m.provider === asked.provider)
    ?? Object.values(config.models).find((m) => m.upstream === answered);
  const price = configured?.price ?? catalogPrice(answered, asked.providerType);
  return price ? { model: answered, price } : undefined;
}

/** A model id without its snapshot date: -YYYY-MM-DD (OpenAI), -YYYYMMDD (Anthropic), @YYYYMMDD (Vertex). */
const undated = (id: string) => id.replace(/(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8})$/, "");

/**
 * Input tokens to charge when the provider's usage never came. The reservation's count is a bound
 * (bytes, for a model without an OpenAI tokenizer), which SPEC §7.8 forbids charging: this is the
 * model's calibrated estimate, never above that bound. Counted only when needed, after the call.
 */
function countedInputTokens(ex: Exchange): number {
  const model = ex.model!;
  const bound = ex.estimatedInputTokens;
  if (boundingTokenizer(model.tokenizer) !== "bytes" || ex.inspection!.storedState.length) return bound;
  return Math.min(bound, estimateInputTokens(ex.inspection!.prompt, model.tokenizer, model.upstream));
}
