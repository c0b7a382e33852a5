import type { Writable } from "node:stream";
import type { ResolvedConfig } from "../config/resolve.js";
import type { UsageRecord } from "../core/usage-record.js";
import type { Store } from "../core/store.js";
import { TurnBatch } from "./line-batch.js";
import { createLogs, type Logs } from "./logger.js";
import { Metrics } from "./metrics.js";
import { Tail } from "./tail.js";
import { Tracing } from "./tracing.js";

/**
 * Where a usage record goes once the engine has stored it: the stdout log line, Prometheus, the
 * request's span and the live tail. One object, built once per process, so the gateway and the
 * admin API read the same metrics and tail the engine feeds.
 *
 * The engine hands a record over before the request's answer is written (the store already has
 * it: that is what makes it durable). The sinks run at the end of that turn of the event loop, for
 * all the records of the turn together, so no answer waits for them. A crash loses what it lost
 * before (the usage lines were already written once per turn; metrics, spans and the tail live in
 * this process); a reader of a sink (/metrics, the tail, Tollgate.metrics) flushes first, and so
 * do shutdown and process exit, so no record is missed nor seen late.
 */
export class Observability {
  readonly logs: Logs;
  readonly metrics: Metrics;
  readonly tracing: Tracing;
  readonly tail = new Tail();
  private readonly records: RecordSinks;

  constructor(config: ResolvedConfig, streams: { stdout?: Writable; stderr?: Writable } = {}) {
    this.logs = createLogs(config, streams);
    this.metrics = new Metrics(config);
    this.tracing = new Tracing(config);
    this.records = new RecordSinks(this);
  }

  /** EngineOptions.onRecord: the record reaches the sinks at the end of this turn. */
  readonly onRecord = (record: UsageRecord): void => this.records.push(record);

  /** Runs the sinks for the records handed over so far, now. */
  readonly flush = (): void => this.records.flush();

  /** Wraps one gateway request: its span, and the in-flight gauge. */
  request<T>(requestId: string, route: string, fn: () => Promise<T>): Promise<T> {
    // The span takes its attributes from the record: its sinks run before the span is given up on.
    return this.metrics.track(() => this.tracing.around(requestId, route, fn, this.flush));
  }

  instrumentStore(store: Store): Store {
    return this.metrics.instrumentStore(store);
  }

  close(): void {
    this.flush();
    this.tail.close();
  }
}

/** The records of one turn and the sinks they go to. */
class RecordSinks extends TurnBatch {
  private pending: UsageRecord[] = [];
  private readonly sinks: ((record: UsageRecord) => void)[];

  constructor(private readonly obs: Observability) {
    super();
    this.sinks = [(r) => obs.logs.usage(r), (r) => obs.metrics.record(r), (r) => obs.tracing.record(r), (r) => obs.tail.push(r)];
  }

  push(record: UsageRecord): void {
    this.pending.push(record);
    this.schedule();
  }

  protected drain(): void {
    if (!this.pending.length) return;
    const records = this.pending;
    this.pending = [];
    for (const record of records) {
      for (const sink of this.sinks) {
        try {
          sink(record);
        } catch (err) {
          // A broken sink must not keep the record from the others.
          this.obs.logs.ops.error({ err }, "a usage record sink failed");
        }
      }
    }
    // The lines of this turn leave now, not a turn later.
    this.obs.logs.flushUsage();
  }
}
