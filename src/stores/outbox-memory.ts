import { decodeCursor, encodeCursor, FAILED_KEEP_MS, type OutboxCount, type OutboxItem, type OutboxMessage, type OutboxPage, type OutboxStore } from "../core/outbox.js";

interface Held extends OutboxItem {
  keepMs: number;
}

/**
 * The memory store's outbox: one process, gone on exit, like everything in memory:. Pending and
 * failed messages are indexed by state, so a claim reads only its sink's pending ones however
 * many delivered ids are remembered; those are forgotten from the front of a queue in the order
 * they were delivered (or failed), a few per operation.
 */
export class MemoryOutbox implements OutboxStore {
  private readonly items = new Map<string, Held>();
  private readonly pending = new Map<string, Set<string>>();
  private readonly failed = new Set<string>();
  /**
   * Delivered and failed messages to forget, with when: one queue per keep (failed messages keep
   * FAILED_KEEP_MS), so within a queue the times rise and the sweep stops at the first not due.
   */
  private readonly forgetting = new Map<number, Map<string, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  async add(messages: OutboxMessage[], keepMs: number): Promise<number> {
    const now = this.sweep();
    let added = 0;
    for (const m of messages) {
      const k = key(m.sink, m.id);
      if (this.items.has(k)) continue;
      this.items.set(k, { ...m, state: "pending", createdAt: now, agedFrom: now, attempts: 0, nextAt: now, lastError: null, keepMs });
      this.queue(m.sink).add(k);
      added++;
    }
    return added;
  }

  async claim(sink: string, limit: number, leaseMs: number): Promise<OutboxItem[]> {
    const now = this.sweep();
    const due = [...this.queue(sink)].map((k) => this.items.get(k)!).filter((i) => i.nextAt <= now);
    return due
      .sort((a, b) => a.nextAt - b.nextAt)
      .slice(0, limit)
      .map((i) => {
        i.attempts++;
        i.nextAt = now + leaseMs;
        return view(i);
      });
  }

  async delivered(sink: string, ids: string[]): Promise<void> {
    const now = this.now();
    for (const id of ids) {
      const k = key(sink, id);
      const i = this.items.get(k);
      if (!i || i.state === "delivered") continue;
      this.leave(k, i);
      i.state = "delivered";
      this.forget(k, i.keepMs, Math.max(now, i.createdAt + i.keepMs));
    }
  }

  async retryLater(sink: string, id: string, delayMs: number, error: string): Promise<void> {
    const i = this.items.get(key(sink, id));
    if (!i || i.state !== "pending") return;
    i.nextAt = this.now() + delayMs;
    i.lastError = error;
  }

  async fail(sink: string, id: string, error: string): Promise<void> {
    const k = key(sink, id);
    const i = this.items.get(k);
    if (!i || i.state !== "pending") return;
    this.leave(k, i);
    Object.assign(i, { state: "failed", lastError: error });
    this.failed.add(k);
    this.forget(k, FAILED_KEEP_MS, this.now() + FAILED_KEEP_MS);
  }

  async retry(sink: string, id: string): Promise<OutboxItem | undefined> {
    const now = this.sweep();
    const k = key(sink, id);
    const i = this.items.get(k);
    if (!i) return undefined;
    if (i.state === "failed") {
      this.failed.delete(k);
      this.forgetting.get(FAILED_KEEP_MS)?.delete(k);
      Object.assign(i, { state: "pending", attempts: 0, agedFrom: now });
      this.queue(sink).add(k);
    }
    if (i.state === "pending") i.nextAt = now;
    return view(i);
  }

  async list(q: { state: "pending" | "failed"; limit: number; cursor?: string }): Promise<OutboxPage> {
    this.sweep();
    const offset = decodeCursor(q.cursor);
    const keys = q.state === "failed" ? [...this.failed] : [...this.pending.values()].flatMap((s) => [...s]);
    const all = keys.map((k) => this.items.get(k)!).sort((a, b) => a.createdAt - b.createdAt || a.sink.localeCompare(b.sink) || a.id.localeCompare(b.id));
    return { items: all.slice(offset, offset + q.limit).map(view), total: all.length, cursor: offset + q.limit < all.length ? encodeCursor(offset + q.limit) : undefined };
  }

  async counts(): Promise<OutboxCount[]> {
    this.sweep();
    const out = new Map<string, OutboxCount>();
    const keys = [...[...this.pending.values()].flatMap((s) => [...s]), ...this.failed];
    for (const k of keys) {
      const i = this.items.get(k)!;
      const state = i.state as "pending" | "failed";
      const c = out.get(`${state}|${i.sink}|${i.kind}`) ?? { sink: i.sink, kind: i.kind, state, count: 0 };
      c.count++;
      out.set(`${state}|${i.sink}|${i.kind}`, c);
    }
    return [...out.values()];
  }

  /** Tests only: messages held in any state, delivered ids still remembered included. */
  debugSize(): number {
    return this.items.size;
  }

  private queue(sink: string): Set<string> {
    let q = this.pending.get(sink);
    if (!q) this.pending.set(sink, (q = new Set()));
    return q;
  }

  private leave(k: string, i: Held): void {
    if (i.state === "pending") this.pending.get(i.sink)?.delete(k);
    else if (i.state === "failed") this.failed.delete(k);
  }

  private forget(k: string, keepMs: number, at: number): void {
    for (const q of this.forgetting.values()) q.delete(k);
    let q = this.forgetting.get(keepMs);
    if (!q) this.forgetting.set(keepMs, (q = new Map()));
    q.set(k, at);
  }

  /** Forgets what is due from the front of each queue; one not yet due stops that queue's walk. */
  private sweep(): number {
    const now = this.now();
    for (const q of this.forgetting.values()) {
      for (const [k, at] of q) {
        if (at > now) break;
        q.delete(k);
        const i = this.items.get(k);
        if (i && i.state !== "pending") {
          this.failed.delete(k);
          this.items.delete(k);
        }
      }
    }
    return now;
  }
}

const key = (sink: string, id: string) => `${sink}|${id}`;

function view({ keepMs: _k, ...item }: Held): OutboxItem {
  return { ...item };
}
