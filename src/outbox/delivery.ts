import type { ResolvedConfig } from "../config/resolve.js";
import type { OutboxStore } from "../core/outbox.js";
import type { Store } from "../core/store.js";
import { Deliverer, type Sink } from "./deliverer.js";
import { OutboxEvents } from "./events.js";
import { cloudEventsSink, webhookSink } from "./sinks.js";

/** What the metrics see of the outbox (observability/metrics.ts). */
export interface OutboxObserver {
  delivered(sink: string, kind: string, n: number): void;
  failed(sink: string, kind: string, n: number): void;
  /** The store's outbox, for the pending gauge read at scrape time. */
  watch(outbox: OutboxStore): void;
}

export interface Delivery {
  events: OutboxEvents;
  deliverer: Deliverer;
  /** Queues what was added, stops claiming and waits for the sends in flight. */
  close(): Promise<void>;
}

/** The sinks a config names: each webhook, and the CloudEvents export. */
export function configuredSinks(config: ResolvedConfig): Sink[] {
  const sinks = config.alerts.webhooks.map(webhookSink);
  if (config.export.cloudevents) sinks.push(cloudEventsSink(config.export.cloudevents));
  return sinks;
}

/**
 * Starts alerts and export when the config has webhooks or an export: the engine's events go into
 * the store's outbox, and this process's deliverer drains it alongside any other process sharing
 * the store. Undefined when there is nothing to deliver.
 */
export function startDelivery(config: ResolvedConfig, store: Store, opts: { warn: (fields: Record<string, unknown>, message: string) => void; observer?: OutboxObserver }): Delivery | undefined {
  const sinks = configuredSinks(config);
  if (!sinks.length) return undefined;
  const outbox = store.outbox;
  if (!outbox) throw new Error(`alerts and export need a store with an outbox (memory:, sqlite: or redis://); this ${store.kind} store has none`);
  const deliverer = new Deliverer(outbox, sinks, config.outbox, {
    now: store.clock ? () => store.clock!() : Date.now,
    warn: opts.warn,
    onDelivered: opts.observer?.delivered,
    onFailed: opts.observer?.failed,
  });
  const events = new OutboxEvents(outbox, config, { kick: (names) => deliverer.kick(names), warn: opts.warn });
  opts.observer?.watch(outbox);
  deliverer.start();
  return {
    events,
    deliverer,
    async close() {
      await events.flush();
      await deliverer.stop();
    },
  };
}
