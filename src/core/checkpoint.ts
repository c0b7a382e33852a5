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
function budgetActual(c: HeldCounter, cost: Micros, tokens: number): number {
  return c.unit === "usd" ? cost : c.unit === "tokens" ? tokens : c.amount;
}

/**
 * What a served request's budget reservation settles at: gate 3's windows first when one
 * reservation holds both (joint), then the budgets. Filled in one array, as the store takes it:
 * every served request with limits builds it, and three arrays and a spread cost more.
 */
export function reservationActuals(ex: Exchange, toolCalls: number, cost: Micros, tokens: number): number[] {
  const budget = ex.budget!.counters;
  const windows = joint(ex) ? ex.quota!.counters : undefined;
  const at = windows ? windows.length : 0;
  const out = new Array<number>(at + budget.length);
  for (let i = 0; i < at; i++) out[i] = admissionActual(windows![i]!, toolCalls);
  for (let i = 0; i < budget.length; i++) out[at + i] = budgetActual(budget[i]!, cost, tokens);
  return out;
}

/** Gates 3 and 6 hold one reservation (gates/joint-reservation.ts): gate 3's windows, then the budgets. */
export function joint(ex: Exchange): boolean {
  return ex.budget !== undefined && ex.budget.id === ex.quota?.id;
}

/**
 * What the admission reservations settle at: the request happened; tool calls are the ones the
 * model made; a concurrency slot is given back.
 */
export function admissionActuals(counters: readonly HeldCounter[], toolCalls: number): number[] {
  return counters.map((c) => admissionActual(c, toolCalls));
}

function admissionActual(c: HeldCounter, toolCalls: number): number {
  return c.unit === "tool_calls" ? toolCalls : c.unit === "concurrent" ? 0 : c.amount;
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
  if (ex.budget) {
    // One reservation holding gate 3's windows and then the budgets settles both in one.
    settles.push({ id: ex.budget.id, actual: reservationActuals(ex, meter.toolCalls, charge.cost, tokens) });
  }
  if (ex.quota && !joint(ex)) settles.push({ id: ex.quota.id, actual: admissionActuals(ex.quota.counters, meter.toolCalls) });
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
 * One timer for many open things, each due once per period: a timer made and cleared per stream
 * cost more than a short stream's own events. It ticks TICKS times per period and looks at a
 * thing every TICKS ticks from the tick before it opened, so a thing is due a period apart, the
 * first time when it is between 9/10 of a period and a whole one old: nothing waits longer than a
 * period, and a thing closed before 9/10 of one never comes up. The timer stops a tick after the
 * last thing closed (not at once: no timer churn at low load), and does not keep the process alive.
 */
export class SharedTicker<T> {
  private readonly open = new Map<T, number>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private ticks = 0;

  constructor(
    private readonly periodMs: number,
    private readonly due: (thing: T) => void,
  ) {}

  /** Starts looking at `thing`; returns the stop. */
  add(thing: T): () => void {
    this.open.set(thing, this.ticks);
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.periodMs / TICKS);
      this.timer.unref();
    }
    return () => this.open.delete(thing);
  }

  private tick(): void {
    this.ticks++;
    if (this.open.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    for (const [thing, seen] of this.open) {
      if (this.ticks - seen < TICKS) continue;
      this.open.set(thing, this.ticks);
      this.due(thing);
    }
  }
}

const TICKS = 10;

/** An open stream and what its checkpoints need. */
interface OpenStream {
  ex: Exchange;
  meter: Meter;
  store: Store;
  config: ResolvedConfig;
  /** Output and tool calls at the last checkpoint (-1 after a failed write: the next one retries). */
  last: number;
}

const streams = new SharedTicker<OpenStream>(CHECKPOINT_MS, (s) => {
  const delivered = s.meter.counted + s.meter.toolCalls;
  if (delivered === s.last) return;
  s.last = delivered;
  const cp = checkpointOf(s.ex, s.meter, s.config);
  // The store reports its own outages; a missed checkpoint is retried a second later.
  if (cp) s.store.checkpoint(cp).catch(() => (s.last = -1));
});

/**
 * Checkpoints an open stream into its lease once a second while it delivers; returns the stop.
 * A second with nothing new costs nothing, and a failed write only makes the next one count. A
 * request that holds nothing has nothing to checkpoint and is not looked at.
 */
export function startCheckpoints(ex: Exchange, meter: Meter, store: Store, config: ResolvedConfig): () => void {
  if (!ex.budget && !ex.quota && !ex.runStart) return noop;
  return streams.add({ ex, meter, store, config, last: 0 });
}

function noop(): void {}
