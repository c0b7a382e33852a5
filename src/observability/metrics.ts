import { collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";
import { SeriesCounter, SeriesHistogram, type CounterSeries, type HistogramSeries } from "./series.js";
import type { ResolvedConfig } from "../config/resolve.js";
import { ERROR_CODES } from "../core/errors.js";
import { requestsIn } from "../core/usage-report.js";
import type { UsageRecord } from "../core/usage-record.js";
import type { Store, StoreObserver } from "../core/store.js";
import { MemoryStore } from "../stores/memory.js";
import { TimedStore, type HeldReservations } from "./store-timing.js";
import type { OutboxStore } from "../core/outbox.js";
import type { OutboxObserver } from "../outbox/delivery.js";

/**
 * Prometheus metrics on a registry of tollgate's own (never prom-client's global one, which a host
 * app may use for itself). Nearly everything is fed from the usage records, so the metrics and the
 * records can never disagree; the store wrapper and the in-flight gauge are the only hooks.
 *
 * Label values come only from bounded sets — the config's routes, models and plans, the error
 * catalogue, the `ended` reasons, the signal names — and never from what a caller sends: no user
 * ids, IPs, keys or requested model names, which would let any client grow the series without end.
 */
export class Metrics {
  readonly registry = new Registry();
  // What every record feeds: series resolved once per label tuple and then only added to.
  private readonly requests: SeriesCounter;
  private readonly spend: SeriesCounter;
  private readonly tokens: SeriesCounter;
  private readonly duration: SeriesHistogram;
  private readonly upstream: SeriesHistogram;
  private readonly ttft: SeriesHistogram;
  private readonly requestSeries = new Map<string, CounterSeries>();
  private readonly durationSeries = new Map<string, HistogramSeries>();
  /** By route, model and plan: spend and tokens. */
  private readonly charged = new Map<string, { spend?: CounterSeries; input?: CounterSeries; output?: CounterSeries }>();
  /** By route and model: upstream duration and time to first token. */
  private readonly latencies = new Map<string, { upstream?: HistogramSeries; ttft?: HistogramSeries }>();
  private readonly cancellations: Counter<"route" | "ended">;
  private readonly signals: Counter<"signal">;
  private readonly storeErrors: Counter<"op">;
  private readonly storeLatency: SeriesHistogram;
  private readonly opLatency = new Map<string, HistogramSeries>();
  /** Held reservations by id (its suffix names the kind) taken through a TimedStore: when the store stops counting them anyway (lease end). */
  private readonly held: HeldReservations = new Map();
  /** Memory stores that time their own operations and count their own held reservations. */
  private readonly selfCounting: MemoryStore[] = [];
  private readonly routes: Set<string>;
  private active = 0;
  private readonly outboxDelivered: Counter<"sink" | "kind">;
  private readonly outboxFailed: Counter<"sink" | "kind">;
  private outbox?: OutboxStore;

  constructor(private readonly config: ResolvedConfig) {
    this.routes = new Set(config.routes.map((r) => r.name));
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new SeriesCounter("tollgate_requests_total", "AI requests by route, endpoint, decision and refusal code.", this.registry);
    this.spend = new SeriesCounter("tollgate_spend_usd_total", "Settled spend in US dollars.", this.registry);
    this.tokens = new SeriesCounter("tollgate_tokens_total", "Tokens charged, by direction (input, output).", this.registry);
    this.duration = new SeriesHistogram("tollgate_request_duration_seconds", "Time from arrival to the usage record, refused requests included.", [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], this.registry);
    this.upstream = new SeriesHistogram(
      "tollgate_upstream_duration_seconds",
      "Duration of requests that reached the provider, to the end of the response or stream.",
      [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      this.registry,
    );
    this.ttft = new SeriesHistogram("tollgate_time_to_first_token_seconds", "Time from arrival to the first output token.", [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], this.registry);
    this.cancellations = new Counter({ name: "tollgate_cancellations_total", help: "Provider calls that did not complete, by how they ended.", labelNames: ["route", "ended"], registers });
    this.signals = new Counter({ name: "tollgate_abuse_signals_total", help: "Abuse signals and blocks that fired.", labelNames: ["signal"], registers });
    this.storeErrors = new Counter({ name: "tollgate_store_errors_total", help: "Store operations that failed.", labelNames: ["op"], registers });
    this.storeLatency = new SeriesHistogram("tollgate_store_operation_seconds", "Store operation latency.", [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], this.registry);
    const metrics = this;
    // Read at scrape time: a plain integer per request instead of a labelled gauge update each way.
    new Gauge({
      name: "tollgate_requests_in_flight",
      help: "Requests being handled by the gateway.",
      registers,
      collect() {
        this.set(metrics.active);
      },
    });
    // Sinks are the config's webhook names and "cloudevents"; kinds the alert types and "usage": bounded.
    this.outboxDelivered = new Counter({ name: "tollgate_outbox_delivered_total", help: "Alerts and export messages delivered by this process.", labelNames: ["sink", "kind"], registers });
    this.outboxFailed = new Counter({ name: "tollgate_outbox_failed_total", help: "Alerts and export messages this process gave up on (max_attempts or max_age); retry them with the admin API.", labelNames: ["sink", "kind"], registers });
    new Gauge({
      name: "tollgate_outbox_pending",
      help: "Alerts and export messages waiting in the store's outbox (all processes).",
      labelNames: ["sink", "kind"],
      registers,
      async collect() {
        if (!metrics.outbox) return;
        this.reset();
        const counts = await metrics.outbox.counts().catch(() => undefined);
        for (const c of counts ?? []) if (c.state === "pending") this.set({ sink: c.sink, kind: c.kind }, c.count);
      },
    });
    const { held, selfCounting } = this;
    new Gauge({
      name: "tollgate_reservations_in_flight",
      help: "Quota and budget reservations taken and not yet settled or released (this process).",
      labelNames: ["kind"],
      registers,
      collect() {
        const now = Date.now();
        const counts: Record<string, number> = { budget: 0, quota: 0, other: 0 };
        for (const [id, until] of held) {
          if (until <= now) held.delete(id);
          else countReservation(counts, id);
        }
        for (const store of selfCounting) for (const id of store.heldReservations()) if (!id.startsWith("pol:")) countReservation(counts, id);
        for (const [kind, n] of Object.entries(counts)) this.set({ kind }, n);
      },
    });
  }

  /** The outbox's delivery counts and pending gauge (startDelivery calls these). */
  readonly outboxObserver: OutboxObserver = {
    delivered: (sink, kind, n) => this.outboxDelivered.inc({ sink, kind }, n),
    failed: (sink, kind, n) => this.outboxFailed.inc({ sink, kind }, n),
    watch: (outbox) => void (this.outbox = outbox),
  };

  record(r: UsageRecord): void {
    const route = this.route(r.route);
    const model = this.model(r.model);
    const plan = this.plan(r.plan);
    const code = r.code && r.code in ERROR_CODES ? r.code : "";
    // A refusal summary stands for `count` refusals: the counters stay exact under a flood.
    // A library model call (parent_id) is part of its app request, which has its own record: it
    // adds spend, tokens and upstream latency, not another request or request duration.
    const n = requestsIn(r);
    if (n > 0) {
      const endpoint = r.endpoint ?? "";
      const requestKey = `${route}\0${endpoint}\0${r.decision}\0${code}`;
      let requests = this.requestSeries.get(requestKey);
      if (!requests) this.requestSeries.set(requestKey, (requests = this.requests.series({ route, endpoint, decision: r.decision, code })));
      requests.value += n;
    }
    if (r.cost_usd > 0 || r.input_tokens > 0 || r.output_tokens > 0) {
      const key = `${route}\0${model}\0${plan}`;
      let c = this.charged.get(key);
      if (!c) this.charged.set(key, (c = {}));
      if (r.cost_usd > 0) (c.spend ??= this.spend.series({ route, model, plan })).value += r.cost_usd;
      if (r.input_tokens > 0) (c.input ??= this.tokens.series({ route, model, plan, direction: "input" })).value += r.input_tokens;
      if (r.output_tokens > 0) (c.output ??= this.tokens.series({ route, model, plan, direction: "output" })).value += r.output_tokens;
    }
    if (n > 0) {
      const durationKey = `${route}\0${r.decision}`;
      let duration = this.durationSeries.get(durationKey);
      if (!duration) this.durationSeries.set(durationKey, (duration = this.duration.series({ route, decision: r.decision })));
      // A summary stands for `count` refusals, each one observation at its duration_ms (0: answered in the turn they came).
      this.duration.observe(duration, r.duration_ms / 1000, n);
    }
    if (r.ended !== null || r.ttft_ms !== null) {
      const key = `${route}\0${model}`;
      let t = this.latencies.get(key);
      if (!t) this.latencies.set(key, (t = {}));
      if (r.ended !== null) {
        this.upstream.observe((t.upstream ??= this.upstream.series({ route, model })), r.duration_ms / 1000);
        if (r.ended !== "complete") this.cancellations.inc({ route, ended: r.ended });
      }
      if (r.ttft_ms !== null) this.ttft.observe((t.ttft ??= this.ttft.series({ route, model })), r.ttft_ms / 1000);
    }
    for (const s of r.signals) this.signals.inc({ signal: signalLabel(s) }, n);
  }

  /**
   * Counts the gateway's in-flight requests around `fn`. The caller awaits fn's own promise: the
   * count rides beside it (registered first, so it is down before the caller resumes) rather than
   * an async frame, a promise and a hop per request.
   */
  track<T>(fn: () => Promise<T>): Promise<T> {
    this.active++;
    let result: Promise<T>;
    try {
      result = fn();
    } catch (err) {
      this.active--;
      return Promise.reject(err);
    }
    result.then(this.left, this.left);
    return result;
  }
  private readonly left = (): void => void this.active--;

  /**
   * The store, with every operation of the Store interface timed and its failures counted, and
   * reservations followed from reserve to settle/release. A memory store does this itself (its
   * operations end within the call); any other store is wrapped.
   */
  instrumentStore(store: Store): Store {
    if (store instanceof MemoryStore && store.observe(this.storeObserver)) {
      this.selfCounting.push(store);
      return store;
    }
    return new TimedStore(store, this.storeObserver, this.held);
  }

  private readonly storeObserver: StoreObserver = {
    ended: (op, started, failed) => {
      let series = this.opLatency.get(op);
      if (!series) this.opLatency.set(op, (series = this.storeLatency.series({ op })));
      if (failed) this.storeErrors.inc({ op });
      this.storeLatency.observe(series, (performance.now() - started) / 1000);
    },
  };

  private route(name: string | null): string {
    return name !== null && this.routes.has(name) ? name : "";
  }
  private model(name: string | null): string {
    return name !== null && name in this.config.models ? name : "";
  }
  private plan(name: string | null): string {
    if (name === null) return "";
    return name in this.config.plans ? name : "other";
  }
}

/**
 * Counts a request's reservation by what it holds, from the suffix of its id: `<request>:b`,
 * `<request>:q`, and the gateway's one reservation of both (`<request>:qb`) in each.
 */
function countReservation(counts: Record<string, number>, id: string): void {
  const suffix = id.slice(id.lastIndexOf(":") + 1);
  if (suffix === "b" || suffix === "qb") counts.budget!++;
  if (suffix === "q" || suffix === "qb") counts.quota!++;
  if (suffix !== "b" && suffix !== "q" && suffix !== "qb") counts.other!++;
}

const KNOWN_SIGNALS = new Set([
  "blocklist",
  "ip_many_users",
  "near_cap_prompt",
  "burst_under_limit",
  "new_identity_expensive_model",
  "key_many_networks",
  "run_churn",
  "new_identity_velocity",
  "anon_pool_pressure",
  "admin_block:user",
  "admin_block:ip",
]);

/** "score:123(network)" -> "score_network": the number would make every value a new series. */
export function signalLabel(signal: string): string {
  const score = /^score:\d+\((\w+)\)$/.exec(signal);
  if (score) return `score_${score[1]}`;
  return KNOWN_SIGNALS.has(signal) ? signal : "other";
}
