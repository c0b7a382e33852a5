import type { ResolvedConfig } from "./config-types.js";
import type { Checkpoint, Store } from "./store.js";
import type { Exchange, HeldCounter } from "./exchange.js";
import type { Meter } from "./metering/meter.js";
import { chargeFor } from "./metering/settlement.js";
import type { Micros } from "./money.js";

/** SPEC §7.4: an open stream's delivered tokens reach its lease at least this often while they flow. */
export const CHECKPOINT_MS = 1_000;

/** The signal on a record written for a request whose process died mid-stream. */
export const RECOVERED_SIGNAL = "recovered_after_crash";

/** What a budget reservation settles at: its usd counters take the cost, token counters the tokens. */
export function budgetActuals(counters: HeldCounter[], cost: Micros, tokens: number): number[] {
  return counters.map((c) => (c.unit === "usd" ? cost : c.unit === "tokens" ? tokens : c.amount));
}

/**
 * What the admission reservations settle at: the request happened; tool calls are the ones the
 * model made; a concurrency slot is given back.
 */
export function admissionActuals(counters: readonly HeldCounter[], toolCalls: number): number[] {
  return counters.map((c) => (c.unit === "tool_calls" ? toolCalls : c.unit === "concurrent" ? 0 : c.amount));
}

/**
 * What the request would settle at if its process died now: what the stream delivered so far,
 * charged as finish() charges a client that went away (the client's connection dies with the
 * process).
 */
export function checkpointOf(ex: Exchange, meter: Meter, config: ResolvedConfig): Checkpoint | undefined {
  const charge = chargeFor(ex, "client_disconnect", meter, config);
  const settles: Checkpoint["settles"] = [];
  const tokens = charge.inputTokens + charge.outputTokens;
  if (ex.budget) settles.push({ id: ex.budget.id, actual: budgetActuals(ex.budget.counters, charge.cost, tokens) });
  if (ex.quota) settles.push({ id: ex.quota.id, actual: admissionActuals(ex.quota.counters, meter.toolCalls) });
  if (ex.runStart) settles.push({ id: ex.runStart.id, actual: admissionActuals(ex.runStart.counters, 0) });
  if (!settles.length) return undefined;
  const record = {
    ...ex.record,
    input_tokens: charge.generated ? charge.inputTokens : 0,
    output_tokens: charge.outputTokens,
    tool_calls: meter.toolCalls,
    cost_usd: charge.cost / 1e6,
    usage_source: charge.generated ? charge.source : null,
    ended: "client_disconnect" as const,
    ttft_ms: meter.firstTokenAt !== undefined ? Math.round(meter.firstTokenAt - ex.startedAt) : null,
    duration_ms: Math.round(performance.now() - ex.startedAt),
    signals: [...ex.signals, RECOVERED_SIGNAL],
  };
  return { settles, record };
}

/**
 * Checkpoints an open stream into its lease once a second while it delivers; returns the stop.
 * A second with nothing new costs nothing, and a failed write only makes the next one count.
 */
export function startCheckpoints(ex: Exchange, meter: Meter, store: Store, config: ResolvedConfig): () => void {
  let last = 0;
  const timer = setInterval(() => {
    const delivered = meter.counted + meter.toolCalls;
    if (delivered === last) return;
    last = delivered;
    const cp = checkpointOf(ex, meter, config);
    // The store reports its own outages; a missed checkpoint is retried by the next tick.
    if (cp) store.checkpoint(cp).catch(() => (last = -1));
  }, CHECKPOINT_MS);
  timer.unref();
  return () => clearInterval(timer);
}
