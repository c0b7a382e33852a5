import type { UsageRecord } from "../core/usage-record.js";
import type { Counter, ReserveResult, Store, StoredKey, UsageQuery } from "./store.js";

interface Entry {
  id: string;
  ts: number;
  amount: number;
  /** Infinity once settled. */
  leaseUntil: number;
  /** Pruned from its counter when the lease ran out; a late settle puts it back. */
  dropped?: boolean;
}

interface Log {
  windowMs: number;
  entries: Entry[];
}

/**
 * The in-process store: exact and fast, but it cannot share limits across processes, and it forgets
 * everything on exit. JavaScript runs each method's check-and-add without yielding, which is what
 * makes a reservation atomic here.
 */
export class MemoryStore implements Store {
  readonly kind = "memory" as const;
  private readonly logs = new Map<string, Log>();
  private readonly reservations = new Map<string, { logs: Log[]; entries: Entry[] }>();
  private readonly scores = new Map<string, { value: number; ts: number }>();
  private readonly sets = new Map<string, Map<string, number>>();
  private readonly keys = new Map<string, StoredKey>();
  private readonly usage: UsageRecord[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  async reserve(id: string, counters: Counter[], leaseMs: number): Promise<ReserveResult> {
    const now = this.now();
    const logs = counters.map((c) => this.log(c.key, c.windowMs));
    const totals: number[] = [];
    for (let i = 0; i < counters.length; i++) {
      const c = counters[i]!;
      const log = logs[i]!;
      const used = total(log, now);
      totals.push(used + c.amount);
      if (used + c.amount > c.max) return { ok: false, index: i, used, retryAfterMs: retryAfter(log, used + c.amount - c.max, c.amount <= c.max, now) };
    }
    const entries = counters.map((c, i) => {
      const entry: Entry = { id, ts: now, amount: c.amount, leaseUntil: now + leaseMs };
      logs[i]!.entries.push(entry);
      return entry;
    });
    this.reservations.set(id, { logs, entries });
    return { ok: true, totals };
  }

  async settle(id: string, actual: number[]): Promise<void> {
    const r = this.reservations.get(id);
    if (!r) return;
    this.reservations.delete(id);
    r.entries.forEach((entry, i) => {
      entry.amount = actual[i] ?? entry.amount;
      entry.leaseUntil = Infinity;
      if (entry.dropped) {
        entry.dropped = false;
        r.logs[i]!.entries.push(entry);
      }
    });
  }

  async release(id: string): Promise<void> {
    const r = this.reservations.get(id);
    if (!r) return;
    this.reservations.delete(id);
    r.entries.forEach((entry, i) => {
      const list = r.logs[i]!.entries;
      const at = list.indexOf(entry);
      if (at >= 0) list.splice(at, 1);
    });
  }

  async peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    const now = this.now();
    return counters.map((c) => total(this.log(c.key, c.windowMs), now));
  }

  async score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    const now = this.now();
    const s = this.scores.get(key);
    const value = (s ? s.value * Math.pow(0.5, (now - s.ts) / halfLifeMs) : 0) + delta;
    if (delta !== 0 || s) this.scores.set(key, { value, ts: now });
    return value;
  }

  async distinct(key: string, member: string, ttlMs: number): Promise<number> {
    const now = this.now();
    let set = this.sets.get(key);
    if (!set) this.sets.set(key, (set = new Map()));
    set.set(member, now + ttlMs);
    for (const [m, expiry] of set) if (expiry <= now) set.delete(m);
    return set.size;
  }

  async putKey(key: StoredKey): Promise<void> {
    this.keys.set(key.hash, { ...key });
  }
  async findKey(hash: string): Promise<StoredKey | undefined> {
    const k = this.keys.get(hash);
    return k && { ...k };
  }
  async listKeys(): Promise<StoredKey[]> {
    return [...this.keys.values()].map((k) => ({ ...k }));
  }
  async revokeKey(id: string): Promise<boolean> {
    for (const k of this.keys.values()) {
      if (k.id === id) {
        k.revokedAt ??= this.now();
        return true;
      }
    }
    return false;
  }

  async appendUsage(record: UsageRecord): Promise<void> {
    this.usage.push(record);
  }
  async queryUsage(q: UsageQuery): Promise<UsageRecord[]> {
    return this.usage.filter((r) => {
      const t = Date.parse(r.ts);
      return t >= q.since && (q.until === undefined || t < q.until);
    });
  }

  async close(): Promise<void> {}

  private log(key: string, windowMs: number): Log {
    let log = this.logs.get(key);
    if (!log) this.logs.set(key, (log = { windowMs, entries: [] }));
    return log;
  }
}

/** Sum of the live entries; prunes the ones that left the window or whose lease ran out. */
function total(log: Log, now: number): number {
  const start = now - log.windowMs;
  let sum = 0;
  let write = 0;
  const list = log.entries;
  for (let read = 0; read < list.length; read++) {
    const e = list[read]!;
    if (e.ts <= start) continue;
    if (e.leaseUntil <= now) {
      e.dropped = true;
      continue;
    }
    sum += e.amount;
    list[write++] = e;
  }
  list.length = write;
  return sum;
}

/** How long until entries worth `excess` leave the window (entries are in time order). */
function retryAfter(log: Log, excess: number, fits: boolean, now: number): number | undefined {
  if (!fits) return undefined;
  let freed = 0;
  for (const e of log.entries) {
    freed += e.amount;
    if (freed >= excess) return Math.max(0, e.ts + log.windowMs - now);
  }
  return undefined;
}
