import { decodeCursor, encodeCursor, FAILED_KEEP_MS, type OutboxCount, type OutboxItem, type OutboxMessage, type OutboxPage, type OutboxStore } from "../core/outbox.js";

interface Held extends OutboxItem {
  /** Delivered: forgotten after this. Failed: after FAILED_KEEP_MS. */
  dropAt: number;
  keepMs: number;
}

/** The memory store's outbox: one process, gone on exit, like everything in memory:. */
export class MemoryOutbox implements OutboxStore {
  private readonly items = new Map<string, Held>();

  constructor(private readonly now: () => number = Date.now) {}

  async add(messages: OutboxMessage[], keepMs: number): Promise<number> {
    const now = this.sweep();
    let added = 0;
    for (const m of messages) {
      const k = key(m.sink, m.id);
      if (this.items.has(k)) continue;
      this.items.set(k, { ...m, state: "pending", createdAt: now, agedFrom: now, attempts: 0, nextAt: now, lastError: null, dropAt: Infinity, keepMs });
      added++;
    }
    return added;
  }

  async claim(sink: string, limit: number, leaseMs: number): Promise<OutboxItem[]> {
    const now = this.sweep();
    const due = [...this.items.values()].filter((i) => i.sink === sink && i.state === "pending" && i.nextAt <= now).sort((a, b) => a.nextAt - b.nextAt);
    return due.slice(0, limit).map((i) => {
      i.attempts++;
      i.nextAt = now + leaseMs;
      return view(i);
    });
  }

  async delivered(sink: string, ids: string[]): Promise<void> {
    const now = this.now();
    for (const id of ids) {
      const i = this.items.get(key(sink, id));
      if (!i || i.state === "delivered") continue;
      i.state = "delivered";
      i.dropAt = Math.max(now, i.createdAt + i.keepMs);
    }
  }

  async retryLater(sink: string, id: string, delayMs: number, error: string): Promise<void> {
    const i = this.items.get(key(sink, id));
    if (!i || i.state !== "pending") return;
    i.nextAt = this.now() + delayMs;
    i.lastError = error;
  }

  async fail(sink: string, id: string, error: string): Promise<void> {
    const i = this.items.get(key(sink, id));
    if (!i || i.state !== "pending") return;
    i.state = "failed";
    i.lastError = error;
    i.dropAt = this.now() + FAILED_KEEP_MS;
  }

  async retry(sink: string, id: string): Promise<OutboxItem | undefined> {
    const now = this.sweep();
    const i = this.items.get(key(sink, id));
    if (!i) return undefined;
    if (i.state === "failed") Object.assign(i, { state: "pending", attempts: 0, agedFrom: now, dropAt: Infinity });
    if (i.state === "pending") i.nextAt = now;
    return view(i);
  }

  async list(q: { state: "pending" | "failed"; limit: number; cursor?: string }): Promise<OutboxPage> {
    this.sweep();
    const offset = decodeCursor(q.cursor);
    const all = [...this.items.values()].filter((i) => i.state === q.state).sort((a, b) => a.createdAt - b.createdAt || a.sink.localeCompare(b.sink) || a.id.localeCompare(b.id));
    const items = all.slice(offset, offset + q.limit).map(view);
    return { items, total: all.length, cursor: offset + q.limit < all.length ? encodeCursor(offset + q.limit) : undefined };
  }

  async counts(): Promise<OutboxCount[]> {
    this.sweep();
    const out = new Map<string, OutboxCount>();
    for (const i of this.items.values()) {
      if (i.state === "delivered") continue;
      const k = `${i.state}|${i.sink}|${i.kind}`;
      const c = out.get(k) ?? { sink: i.sink, kind: i.kind, state: i.state, count: 0 };
      c.count++;
      out.set(k, c);
    }
    return [...out.values()];
  }

  private sweep(): number {
    const now = this.now();
    for (const [k, i] of this.items) if (i.dropAt <= now) this.items.delete(k);
    return now;
  }
}

const key = (sink: string, id: string) => `${sink}|${id}`;

function view({ dropAt: _d, keepMs: _k, ...item }: Held): OutboxItem {
  return { ...item };
}
