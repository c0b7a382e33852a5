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
  /**
   * How long a pusher waits at most: past this, its `done` is called although the item is still
   * held (it is sent later all the same). One timer serves every waiting item, not one per item.
   */
  waitMs?: number;
}

interface Held<T> {
  item: T;
  /** Called once, when the item is sent or its wait is over; undefined after. */
  done?: () => void;
  /** performance.now() at which `done` is called even if the item is not sent yet. */
  until: number;
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
  /** Items before this index have had their wait ended (waitMs); the queue is in push order, so their untils come first. */
  private waitFrom = 0;
  private waitTimer?: NodeJS.Timeout;
  /** Items refused because the queue was full, since the last time someone read and reset it. */
  refused = 0;

  constructor(private readonly opts: WriteBehindOptions<T>) {}

  get size(): number {
    return this.queue.length;
  }

  /**
   * Queues an item; `done` is called once it has been sent (or after waitMs, when set). False when
   * the queue is full: the item is not kept and `done` is never called.
   */
  push(item: T, done?: () => void): boolean {
    if (this.queue.length >= this.opts.max) {
      this.refused++;
      return false;
    }
    const waitMs = this.opts.waitMs;
    if (done && waitMs !== undefined) {
      this.queue.push({ item, done, until: performance.now() + waitMs });
      this.waitTimer ??= setTimeout(() => this.endWaits(), waitMs).unref();
    } else {
      // Without a wait every item is past its until at once: endWaits never holds it up.
      this.queue.push({ item, done, until: 0 });
    }
    this.kick();
    return true;
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

  /** Calls `done` for the items whose wait is over, and sets the timer for the next one's. */
  private endWaits(): void {
    this.waitTimer = undefined;
    const now = performance.now();
    let i = this.waitFrom;
    for (; i < this.queue.length; i++) {
      const h = this.queue[i]!;
      if (h.until > now) {
        this.waitTimer = setTimeout(() => this.endWaits(), h.until - now).unref();
        break;
      }
      const done = h.done;
      h.done = undefined;
      done?.();
    }
    this.waitFrom = i;
  }

  private kick(): void {
    if (this.flushing || this.timer || !this.queue.length) return;
    this.flushing = this.flush().finally(() => {
      this.flushing = undefined;
      // An item pushed after flush() saw the queue empty, but before this ran, is sent now.
      this.kick();
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
      this.waitFrom = Math.max(0, this.waitFrom - batch.length);
      this.head = undefined;
      this.delayMs = 0;
      for (const h of batch) {
        const done = h.done;
        h.done = undefined;
        done?.();
      }
    }
  }
}
