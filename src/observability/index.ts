import type { Writable } from "node:stream";
import type { ResolvedConfig } from "../config/resolve.js";
import type { UsageRecord } from "../core/usage-record.js";
import type { Store } from "../core/store.js";
import { createLogs, type Logs } from "./logger.js";
import { Metrics } from "./metrics.js";
import { Tail } from "./tail.js";
import { Tracing } from "./tracing.js";

/**
 * Where a usage record goes once the engine has stored it: the stdout log line, Prometheus, the
 * request's span and the live tail. One object, built once per process, so the gateway and the
 * admin API read the same metrics and tail the engine feeds.
 */
export class Observability {
  readonly logs: Logs;
  readonly metrics: Metrics;
  readonly tracing: Tracing;
  readonly tail = new Tail();

  constructor(config: ResolvedConfig, streams: { stdout?: Writable; stderr?: Writable } = {}) {
    this.logs = createLogs(config, streams);
    this.metrics = new Metrics(config);
    this.tracing = new Tracing(config);
  }

  private readonly sinks: ((record: UsageRecord) => void)[] = [
    (r) => this.logs.usage(r),
    (r) => this.metrics.record(r),
    (r) => this.tracing.record(r),
    (r) => this.tail.push(r),
  ];

  /** EngineOptions.onRecord. Never throws: a broken sink must not fail the request it describes. */
  readonly onRecord = (record: UsageRecord): void => {
    for (const sink of this.sinks) {
      try {
        sink(record);
      } catch (err) {
        this.logs.ops.error({ err }, "a usage record sink failed");
      }
    }
  };

  /** Wraps one gateway request: its span, and the in-flight gauge. */
  request<T>(requestId: string, route: string, fn: () => Promise<T>): Promise<T> {
    return this.metrics.track(() => this.tracing.around(requestId, route, fn));
  }

  instrumentStore(store: Store): Store {
    return this.metrics.instrumentStore(store);
  }

  close(): void {
    this.tail.close();
  }
}
