import { CloudEvent } from "cloudevents";
import type { ResolvedConfig } from "../config/resolve.js";
import type { Alert, EngineEvents } from "../core/alerts.js";
import type { OutboxMessage, OutboxStore } from "../core/outbox.js";
import type { UsageRecord } from "../core/usage-record.js";
import { StoreUnavailableError } from "../core/store.js";
import { CommitBatch } from "../stores/commit-batch.js";
import { WriteBehind } from "../stores/write-behind.js";

/** An alert id is remembered this long once delivered: longer than the longest period (a month) it is named for. */
const ALERT_KEEP_MS = 35 * 86_400_000;
/** A usage event's id is a request id, never reused: remembered only to absorb a retried add. */
const USAGE_KEEP_MS = 86_400_000;
/** Alert ids this process already queued: the same crossing seen by every later request costs no store write. */
const RECENT_ALERTS = 10_000;
/** Messages held in memory while the store is away (Redis down, on_store_error: open); past it, new ones are dropped and logged. */
const MAX_HELD = 100_000;

/**
 * EngineEvents onto the store's outbox: an alert becomes one message per webhook that subscribed
 * to its type, a served request's usage record one CloudEvent. Adds of one event-loop turn go to
 * the store together; `kick` tells the deliverer there is something to send.
 */
export class OutboxEvents implements EngineEvents {
  private readonly recent = new Set<string>();
  private readonly alerts: CommitBatch<OutboxMessage>;
  private readonly usages: CommitBatch<OutboxMessage>;
  /** Adds the store refused because it was away, retried until it takes them (adds are idempotent). */
  private readonly held: WriteBehind<{ message: OutboxMessage; keepMs: number }>;

  constructor(
    outbox: OutboxStore,
    private readonly config: ResolvedConfig,
    private readonly opts: { kick: (sinks: string[]) => void; warn: (fields: Record<string, unknown>, message: string) => void },
  ) {
    this.held = new WriteBehind({
      send: async (items) => {
        for (const keepMs of new Set(items.map((i) => i.keepMs))) await outbox.add(items.filter((i) => i.keepMs === keepMs).map((i) => i.message), keepMs);
        opts.kick([...new Set(items.map((i) => i.message.sink))]);
      },
      retryable: (err) => err instanceof StoreUnavailableError,
      onDiscard: (err, n) => opts.warn({ messages: n, reason: (err as Error).message }, "the outbox refused alerts or usage events; they are lost"),
      batchSize: 500,
      max: MAX_HELD,
      minDelayMs: 500,
      maxDelayMs: 5_000,
    });
    // An alert goes at once; usage waits for the poll unless a whole batch is ready, so a busy
    // gateway does not claim from the store on every turn of its event loop.
    this.alerts = new CommitBatch(async (messages) => {
      await outbox.add(messages, ALERT_KEEP_MS);
      opts.kick([...new Set(messages.map((m) => m.sink))]);
    });
    this.usages = new CommitBatch(async (messages) => {
      await outbox.add(messages, USAGE_KEEP_MS);
      const ce = config.export.cloudevents!;
      this.unsent += messages.length;
      if (this.unsent < ce.batchSize) return;
      this.unsent = 0;
      opts.kick([ce.name]);
    });
  }

  /** Usage events added since the export was last kicked. */
  private unsent = 0;

  get exporting(): boolean {
    return this.config.export.cloudevents !== undefined;
  }

  alert(alert: Alert): void {
    if (this.recent.has(alert.id)) return;
    const hooks = this.config.alerts.webhooks.filter((w) => w.events.has(alert.type));
    if (!hooks.length) return;
    this.remember(alert.id);
    const payload = JSON.stringify({ type: alert.type, timestamp: new Date(alert.at).toISOString(), data: { id: alert.id, ...alert.data } });
    for (const hook of hooks) {
      const message = { id: alert.id, sink: hook.name, kind: alert.type, payload };
      this.alerts.add(message).catch((err: unknown) => {
        if (this.hold(err, message, ALERT_KEEP_MS)) return;
        // Not in the store: forget that it was, so the next request that sees the same state tries again.
        this.recent.delete(alert.id);
        this.opts.warn({ alert: alert.id, sink: hook.name, reason: (err as Error).message }, "an alert could not be written to the outbox");
      });
    }
  }

  async usage(record: UsageRecord): Promise<void> {
    const ce = this.config.export.cloudevents;
    if (!ce) return;
    const message = { id: record.request_id, sink: ce.name, kind: "usage", payload: JSON.stringify(usageEvent(record, ce.source, ce.type)) };
    await this.usages.add(message).catch((err: unknown) => {
      if (!this.hold(err, message, USAGE_KEEP_MS)) throw err;
    });
  }

  /** Keeps a message the store could not take because it was away, to add it once it is back. */
  private hold(err: unknown, message: OutboxMessage, keepMs: number): boolean {
    if (!(err instanceof StoreUnavailableError)) return false;
    const queued = this.held.push({ message, keepMs });
    if (!queued) this.opts.warn({ id: message.id, sink: message.sink }, `${MAX_HELD} outbox messages already wait for the store; one more was dropped`);
    return queued;
  }

  /** Messages waiting in memory for the store. */
  get waiting(): number {
    return this.held.size;
  }

  /** Waits for the adds already made (before the store closes). */
  async flush(): Promise<void> {
    await Promise.allSettled([this.alerts.drain(), this.usages.drain()]);
    const left = await this.held.drain(5_000);
    if (left) this.opts.warn({ messages: left }, "closing with outbox messages the store never took; they are lost");
  }

  private remember(id: string): void {
    this.recent.add(id);
    // A Set iterates in insertion order: the first is the oldest.
    if (this.recent.size > RECENT_ALERTS) this.recent.delete(this.recent.values().next().value!);
  }
}

/**
 * One served request as a CloudEvent, as OpenMeter meters read it: `subject` the user, `id` the
 * request id (OpenMeter deduplicates on id and source), `data` what it used and cost.
 */
export function usageEvent(r: UsageRecord, source: string, type: string): Record<string, unknown> {
  const event = new CloudEvent({
    id: r.request_id,
    source,
    type,
    subject: r.user ?? r.ip ?? "anonymous",
    time: r.ts,
    datacontenttype: "application/json",
    data: {
      tokens: r.input_tokens + r.output_tokens,
      input_tokens: r.input_tokens,
      output_tokens: r.output_tokens,
      cost_usd: r.cost_usd,
      model: r.model,
      model_requested: r.model_requested,
      route: r.route,
      endpoint: r.endpoint,
      plan: r.plan,
      key_id: r.key_id,
      decision: r.decision,
      ended: r.ended,
      parent_id: r.parent_id,
    },
  });
  return event.toJSON() as Record<string, unknown>;
}
