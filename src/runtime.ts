import type { ResolvedConfig } from "./config/resolve.js";
import { Engine } from "./core/engine.js";
import type { UsageRecord } from "./core/usage-record.js";
import type { Provider } from "./providers/provider.js";
import { createProviders } from "./providers/registry.js";
import { openStore } from "./stores/open.js";
import type { Store } from "./stores/store.js";

/** An engine with its store and providers opened from a resolved config; close() releases them. */
export interface Runtime {
  engine: Engine;
  store: Store;
  providers: Record<string, Provider>;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  onRecord?: (r: UsageRecord) => void;
  /** Operational warnings from settlement (implausible usage, a store that refused a charge). */
  warn?: (fields: Record<string, unknown>, message: string) => void;
  store?: Store;
  /** Wraps the opened store (metrics time every operation and count its failures). */
  instrumentStore?: (store: Store) => Store;
}

export async function startRuntime(config: ResolvedConfig, opts: RuntimeOptions = {}): Promise<Runtime> {
  const opened = opts.store ?? (await openStore(config.store, { onStoreError: config.onStoreError }));
  const store = opts.instrumentStore ? opts.instrumentStore(opened) : opened;
  const providers = createProviders(config);
  const engine = new Engine({ config, store, providers, onRecord: opts.onRecord, warn: opts.warn });
  return {
    engine,
    store,
    providers,
    async close() {
      await Promise.allSettled(Object.values(providers).map((p) => p.close()));
      await store.close();
    },
  };
}
