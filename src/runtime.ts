import type { ResolvedConfig } from "./config/resolve.js";
import { CHECKPOINT_MS } from "./core/checkpoint.js";
import { Engine } from "./core/engine.js";
import type { UsageRecord } from "./core/usage-record.js";
import type { Provider } from "./core/provider.js";
import { startDelivery, type OutboxObserver } from "./outbox/delivery.js";
import { createProviders } from "./providers/registry.js";
import { openStore } from "./stores/open.js";
import type { Store } from "./core/store.js";

/** An engine with its store and providers opened from a resolved config; close() releases them. */
export interface Runtime {
  engine: Engine;
  store: Store;
  providers: Record<string, Provider>;
  close(): Promise<void>;
}

/** How often lapsed checkpoints are looked for; as often as they are taken. */
const RECOVER_EVERY_MS = CHECKPOINT_MS;

export interface RuntimeOptions {
  onRecord?: (r: UsageRecord) => void;
  /** Operational warnings from settlement (implausible usage, a store that refused a charge). */
  warn?: (fields: Record<string, unknown>, message: string) => void;
  store?: Store;
  /** Wraps the opened store (metrics time every operation and count its failures). */
  instrumentStore?: (store: Store) => Store;
  /** Metrics of the alerts and export outbox. */
  outboxObserver?: OutboxObserver;
}

export async function startRuntime(config: ResolvedConfig, opts: RuntimeOptions = {}): Promise<Runtime> {
  const opened = opts.store ?? (await openStore(config.store, { onStoreError: config.onStoreError }));
  const store = opts.instrumentStore ? opts.instrumentStore(opened) : opened;
  const providers = createProviders(config);
  const warn = opts.warn ?? ((fields: Record<string, unknown>, message: string) => process.stderr.write(`tollgate: ${message} ${JSON.stringify(fields)}\n`));
  const delivery = startDelivery(config, store, { warn, observer: opts.outboxObserver });
  const engine = new Engine({ config, store, providers, onRecord: opts.onRecord, warn: opts.warn, events: delivery?.events });
  // Streams a dead process left open are settled at their checkpoints once their leases end:
  // now, for those that ended while nothing ran, and every second after (SPEC §7.4).
  let recovering: Promise<unknown> | undefined;
  const recover = () => {
    // One pass at a time; the store reports its own outages, and the next tick tries again.
    recovering ??= engine
      .recover()
      .catch(() => {})
      .finally(() => (recovering = undefined));
  };
  recover();
  const recoverTimer = setInterval(recover, RECOVER_EVERY_MS).unref();
  return {
    engine,
    store,
    providers,
    async close() {
      clearInterval(recoverTimer);
      await recovering;
      await engine.flushRefusals();
      await delivery?.close();
      await Promise.allSettled(Object.values(providers).map((p) => p.close()));
      await store.close();
    },
  };
}
