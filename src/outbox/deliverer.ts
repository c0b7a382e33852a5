import type { ResolvedOutboxPolicy } from "../core/config-types.js";
import type { OutboxItem, OutboxStore } from "../core/outbox.js";

/** A destination: a webhook (one message per send) or the CloudEvents export (batches). */
export interface Sink {
  /** The name messages are filed under (OutboxMessage.sink). */
  readonly name: string;
  /** Messages per send. */
  readonly batch: number;
  /** Sends in flight at once. */
  readonly parallel: number;
  /** Resolves once the receiver took every message; rejects with a message fit for the admin API (no secret, no URL). */
  send(items: OutboxItem[], signal: AbortSignal): Promise<void>;
}

/** The delivery policy (config `outbox:`). */
export type DeliveryPolicy = ResolvedOutboxPolicy;

/** Covers the store round trips around a send, so a live claimant's lease never runs out under it. */
export const LEASE_MARGIN_MS = 5_000;

/**
 * The delay before retry number `attempt` (1 after the first failure): exponential, capped, with
 * "equal jitter" — half the delay fixed, half random — so processes that failed together do not
 * retry in step, and no retry comes sooner than half its nominal delay.
 */
export function backoffMs(attempt: number, policy: Pick<DeliveryPolicy, "retryMinMs" | "retryMaxMs">, random: () => number = Math.random): number {
  const nominal = Math.min(policy.retryMaxMs, policy.retryMinMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(nominal / 2 + random() * (nominal / 2));
}

export interface DelivererOptions {
  now?: () => number;
  random?: () => number;
  onDelivered?: (sink: string, kind: string, n: number) => void;
  onFailed?: (sink: string, kind: string, n: number) => void;
  /** Operational warnings; never given a secret. */
  warn?: (fields: Record<string, unknown>, message: string) => void;
}

/**
 * Drains the outbox: claims due messages of each sink with a lease, sends them, and marks each
 * delivered, due again after a backoff, or failed past max_attempts / max_age. Several processes
 * may run one over the same store: the claims keep them from sending a message at the same time,
 * and a process that dies leaves its claims to run out, after which another sends them again
 * under the same ids. Nothing here knows HTTP; the sinks do.
 */
export class Deliverer {
  private timer?: NodeJS.Timeout;
  /** Each sink drains on its own: a slow receiver does not hold up another. */
  private readonly running = new Map<string, Promise<void>>();
  /** Kicks that came during a sink's pass: what they were for may have been added after it looked. */
  private readonly again = new Set<string>();
  private stopping = false;
  private readonly abort = new AbortController();
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(
    private readonly outbox: OutboxStore,
    private readonly sinks: readonly Sink[],
    private readonly policy: DeliveryPolicy,
    private readonly opts: DelivererOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  start(): void {
    if (this.timer || this.stopping) return;
    this.timer = setInterval(() => this.kick(), this.policy.pollMs).unref();
    this.kick();
  }

  /** Looks for due messages of these sinks (default: all) now, after a pass already running. */
  kick(names?: readonly string[]): void {
    if (this.stopping) return;
    for (const sink of this.sinks) {
      if (names && !names.includes(sink.name)) continue;
      if (this.running.has(sink.name)) {
        this.again.add(sink.name);
        continue;
      }
      const pass = this.drain(sink)
        .catch((err: unknown) => this.opts.warn?.({ sink: sink.name, reason: (err as Error).message }, "the outbox could not be read; delivery resumes when the store answers"))
        .finally(() => {
          this.running.delete(sink.name);
          if (this.again.delete(sink.name)) this.kick([sink.name]);
        });
      this.running.set(sink.name, pass);
    }
  }

  /** One pass: every sink drains what is due, a claim at a time, until nothing due is left. */
  async tick(): Promise<void> {
    await Promise.all(this.sinks.map((sink) => this.drain(sink)));
  }

  /** Stops claiming, and waits (up to `graceMs`) for the sends in flight to end. */
  async stop(graceMs = 5_000): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    if (!this.running.size) return;
    const timer = setTimeout(() => this.abort.abort(), graceMs);
    await Promise.all(this.running.values());
    clearTimeout(timer);
  }

  private async drain(sink: Sink): Promise<void> {
    const limit = sink.batch * sink.parallel;
    while (!this.stopping) {
      const items = await this.outbox.claim(sink.name, limit, this.policy.timeoutMs + LEASE_MARGIN_MS);
      if (!items.length) return;
      const batches: OutboxItem[][] = [];
      for (let i = 0; i < items.length; i += sink.batch) batches.push(items.slice(i, i + sink.batch));
      await Promise.all(batches.map((b) => this.deliver(sink, b)));
      if (items.length < limit) return;
    }
  }

  private async deliver(sink: Sink, items: OutboxItem[]): Promise<void> {
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.policy.timeoutMs)]);
    let error: string | undefined;
    try {
      await sink.send(items, signal);
    } catch (err) {
      error = (err as Error)?.message || "send failed";
    }
    if (error === undefined) {
      await this.outbox.delivered(sink.name, items.map((i) => i.id));
      for (const [kind, n] of countByKind(items)) this.opts.onDelivered?.(sink.name, kind, n);
      return;
    }
    const now = this.now();
    const failed: OutboxItem[] = [];
    await Promise.all(
      items.map((i) => {
        const old = now - i.agedFrom >= this.policy.maxAgeMs;
        if (i.attempts < this.policy.maxAttempts && !old) return this.outbox.retryLater(sink.name, i.id, backoffMs(i.attempts, this.policy, this.random), error);
        failed.push(i);
        const why = old ? `gave up after ${i.attempts} attempts over ${Math.round((now - i.agedFrom) / 1000)}s (max_age)` : `gave up after ${i.attempts} attempts (max_attempts)`;
        return this.outbox.fail(sink.name, i.id, `${why}; last: ${error}`);
      }),
    );
    for (const [kind, n] of countByKind(failed)) this.opts.onFailed?.(sink.name, kind, n);
    if (failed.length) this.opts.warn?.({ sink: sink.name, failed: failed.length, reason: error }, "outbox messages were given up on; retry them with POST /admin/outbox/{id}/retry");
  }
}

function countByKind(items: OutboxItem[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const i of items) out.set(i.kind, (out.get(i.kind) ?? 0) + 1);
  return out;
}
