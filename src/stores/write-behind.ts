import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

export interface WriteBehindOptions<T> {
  /** Sends one batch; the batch id is the same on every retry of the same batch, so the receiver can apply it once. */
  send: (items: T[], batchId: string) => Promise<void>;
  /** True when the failure is the store being away, worth retrying; anything else drops the batch. */
  retryable: (err: unknown) => boolean;
  /** A batch that failed for good (not retryable), with how many items it held. */
  onDiscard: (err: unknown, count: number) => void;
  batchSize: number;
  /** Most items held at once; past it `push` refuses. */
  max: number;
  minDelayMs?: number;
  maxDelayMs?: number;
}

interface Held<T> {
  item: T;
  done: () => void;
}

/**
 * Writes that must reach a remote store eventually, in order: sent in batches, a batch that fails
 * because the store is away is retried with backoff until it lands. Memory is bounded: past `max`
 * held items, `push` refuses the new item (and counts it) instead of growing without end.
 */
export class WriteBehind<T> {
  private readonly queue: Held<T>[] = [];
  private head?: { id: string; size: number };
  private flushing?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private delayMs = 0;
  /** Items refused because the queue was full, since the last time someone read and reset it. */
  refused = 0;

  constructor(private readonly opts: WriteBehindOptions<T>) {}

  get size(): number {
    return this.queue.length;
  }

  /** Queues an item; the promise resolves once it has been sent. Undefined when the queue is full. */
  push(item: T): Promise<void> | undefined {
    if (this.queue.length >= this.opts.max) {
      this.refused++;
      return undefined;
    }
    const sent = new Promise<void>((done) => this.queue.push({ item, done }));
    this.kick();
    return sent;
  }

  /** Retries now instead of waiting out the backoff: the store just came back. */
  retryNow(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.delayMs = 0;
    this.kick();
  }

  /** Sends what is held, giving up after `ms`; resolves with how many items are still unsent. */
  async drain(ms: number): Promise<number> {
    const deadline = Date.now() + ms;
    while (this.queue.length && Date.now() < deadline) {
      this.retryNow();
      const left = deadline - Date.now();
      await Promise.race([this.flushing, sleep(left, undefined, { ref: false })]);
      if (this.queue.length) await sleep(Math.min(100, Math.max(0, deadline - Date.now())), undefined, { ref: false });
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    return this.queue.length;
  }

  private kick(): void {
    if (this.flushing || this.timer || !this.queue.length) return;
    this.flushing = this.flush().finally(() => {
      this.flushing = undefined;
    });
  }

  private async flush(): Promise<void> {
    while (this.queue.length) {
      // The head batch keeps its id and its size until it lands, so a retry is the same batch.
      this.head ??= { id: randomUUID(), size: Math.min(this.opts.batchSize, this.queue.length) };
      const batch = this.queue.slice(0, this.head.size);
      try {
        await this.opts.send(
          batch.map((h) => h.item),
          this.head.id,
        );
      } catch (err) {
        if (this.opts.retryable(err)) {
          this.delayMs = Math.min(Math.max(this.delayMs * 2, this.opts.minDelayMs ?? 100), this.opts.maxDelayMs ?? 2_000);
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.kick();
          }, this.delayMs);
          this.timer.unref();
          return;
        }
        this.opts.onDiscard(err, batch.length);
      }
      this.queue.splice(0, batch.length);
      this.head = undefined;
      this.delayMs = 0;
      for (const h of batch) h.done();
    }
  }
}
