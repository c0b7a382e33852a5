import type { UsageRecord } from "../core/usage-record.js";
import { bucketGoneAt, bucketStart, bucketWidth, retryAfter } from "./buckets.js";
import { MemoryOutbox } from "./outbox-memory.js";
import type { Checkpoint, Counter, CounterDetail, ReserveResult, Store, StoredKey, UsageQuery } from "../core/store.js";

/** One counter's share of a reservation that is not settled yet. */
interface Live {
  key: string;
  /** Its counter, so settling needs no lookup; one the sweep dropped meanwhile is `gone`. */
  state: CounterState;
  ts: number;
  amount: number;
  leaseUntil: number;
  windowMs: number;
  width: number;
}

interface Bucket {
  amount: number;
  goneAt: number;
}

/**
 * A counter: settled amounts by bucket start, plus the reservations that still count unsettled,
 * with the running sum of each part. Until `pruneAt` nothing in it stops counting, so a total is
 * two additions instead of a walk over ~65 buckets on every reserve, peek and sweep step.
 */
interface CounterState {
  buckets: Map<number, Bucket>;
  live: Live[];
  /** Sum of the buckets' amounts. */
  settled: number;
  /** Sum of the live entries' amounts. */
  held: number;
  /** No bucket leaves and no live entry stops counting before this instant (a lower bound). */
  pruneAt: number;
  /** Dropped by the sweep (nothing counted in it): an entry that still names it settles into a fresh one. */
  gone: boolean;
}

interface Reservation {
  entries: Live[];
  /** After this nothing of it counts any more, settled or not: the record can go. */
  dropAt: number;
}

/** How many entries of each map the sweep looks at per operation. */
const SWEEP_STEP = 4;
/** Usage records a memory store answers queries from (about 0.5 KB each): the latest ones. */
export const MAX_USAGE_RECORDS = 100_000;
/** A score this many half-lives old is worth less than 2^-64 of what it was (as in SQLite). */
const SCORE_FORGET_HALF_LIVES = 64;

/**
 * Walks a map a few entries per call, deleting the dead ones, and starts over at the end: keys that
 * are never touched again (yesterday's budget, an IP seen once) go within a bounded number of
 * operations, at a constant cost per operation.
 */
class Sweeper<K, V> {
  private cursor?: Iterator<[K, V]>;
  constructor(
    private readonly map: Map<K, V>,
    private readonly dead: (value: V, now: number) => boolean,
  ) {}

  step(now: number): void {
    if (this.map.size === 0) {
      this.cursor = undefined;
      return;
    }
    for (let i = 0; i < SWEEP_STEP; i++) {
      this.cursor ??= this.map.entries();
      const next = this.cursor.next();
      if (next.done) {
        this.cursor = undefined;
        return;
      }
      // Deleting the entry just visited is safe for a live Map iterator.
      if (this.dead(next.value[1], now)) this.map.delete(next.value[0]);
    }
  }
}

/**
 * The in-process store: fast, but it cannot share limits across processes, and it forgets
 * everything on exit. JavaScript runs each method's check-and-add without yielding, which is what
 * makes a reservation atomic here.
 */
export class MemoryStore implements Store {
  readonly kind = "memory" as const;
  private readonly counters = new Map<string, CounterState>();
  private readonly reservations = new Map<string, Reservation>();
  private readonly scores = new Map<string, { value: number; ts: number; halfLifeMs: number }>();
  private readonly sets = new Map<string, Map<string, number>>();
  private readonly keys = new Map<string, StoredKey>();
  private readonly usage: UsageRecord[] = [];
  /** By the id of the reservation they belong to. */
  private readonly checkpoints = new Map<string, Checkpoint>();
  private readonly sweepers: Sweeper<string, unknown>[];
  readonly outbox: MemoryOutbox;

  constructor(private readonly now: () => number = Date.now) {
    this.outbox = new MemoryOutbox(now);
    this.sweepers = [
      new Sweeper(this.counters, (c, now) => (prune(c, now), (c.gone = c.live.length === 0 && c.buckets.size === 0))),
      new Sweeper(this.reservations, (r, now) => r.dropAt <= now),
      new Sweeper(this.scores, (s, now) => now - s.ts >= SCORE_FORGET_HALF_LIVES * s.halfLifeMs),
      new Sweeper(this.sets, (set, now) => (forgetExpired(set, now), set.size === 0)),
    ] as Sweeper<string, unknown>[];
  }

  async reserve(id: string, counters: Counter[], leaseMs: number): Promise<ReserveResult> {
    const now = this.tick();
    const n = counters.length;
    // Reused: nothing below yields until the reservation is taken or refused.
    const states = scratch;
    const totals: number[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const c = counters[i]!;
      const state = (states[i] = this.counter(c.key));
      const used = total(state, now);
      totals[i] = used + c.amount;
      if (used + c.amount > c.max) {
        const fits = c.amount <= c.max;
        const retry = fits ? retryAfter(leaving(state, bucketWidth(c.windowMs, c.max)), used + c.amount - c.max, now) : undefined;
        states.length = 0;
        return { ok: false, index: i, used, retryAfterMs: retry };
      }
    }
    const entries: Live[] = new Array(n);
    const leaseUntil = now + leaseMs;
    let dropAt = now;
    for (let i = 0; i < n; i++) {
      const c = counters[i]!;
      const entry: Live = { key: c.key, state: states[i]!, ts: now, amount: c.amount, leaseUntil, windowMs: c.windowMs, width: bucketWidth(c.windowMs, c.max) };
      list(states[i]!, entry);
      entries[i] = entry;
      dropAt = Math.max(dropAt, bucketGoneAt(now, entry.width, entry.windowMs));
    }
    states.length = 0;
    // A reused id takes over the name; the older entries keep counting until their lease ends.
    this.reservations.set(id, { entries, dropAt });
    return { ok: true, totals };
  }

  /** Moves each amount into the bucket of its reservation time, even when the lease already ran out. */
  async settle(id: string, actual: number[]): Promise<void> {
    const now = this.tick();
    const r = this.reservations.get(id);
    if (!r) return;
    this.reservations.delete(id);
    this.checkpoints.delete(id);
    const entries = r.entries;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const state = e.state.gone ? this.counter(e.key) : e.state;
      unlist(state, e);
      // A bucket already gone but not pruned yet must not take this amount and count again.
      prune(state, now);
      const amount = actual[i] ?? e.amount;
      const goneAt = bucketGoneAt(e.ts, e.width, e.windowMs);
      if (goneAt <= now || amount === 0) continue;
      const start = bucketStart(e.ts, e.width);
      const bucket = state.buckets.get(start);
      if (bucket) {
        bucket.amount += amount;
        bucket.goneAt = Math.max(bucket.goneAt, goneAt);
      } else {
        state.buckets.set(start, { amount, goneAt });
        if (goneAt < state.pruneAt) state.pruneAt = goneAt;
      }
      state.settled += amount;
    }
  }

  async release(id: string): Promise<void> {
    this.tick();
    const r = this.reservations.get(id);
    if (!r) return;
    this.reservations.delete(id);
    this.checkpoints.delete(id);
    for (const e of r.entries) if (!e.state.gone) unlist(e.state, e);
  }

  async checkpoint(cp: Checkpoint): Promise<void> {
    const id = cp.settles[0]?.id;
    if (id !== undefined && this.reservations.has(id)) this.checkpoints.set(id, structuredClone(cp));
  }

  async recover(): Promise<UsageRecord[]> {
    const now = this.now();
    const out: UsageRecord[] = [];
    for (const [id, cp] of this.checkpoints) {
      const r = this.reservations.get(id);
      if (r && r.entries.some((e) => e.leaseUntil > now)) continue;
      this.checkpoints.delete(id);
      if (!r) continue;
      for (const s of cp.settles) await this.settle(s.id, s.actual);
      this.keepUsage(cp.record);
      out.push(cp.record);
    }
    return out;
  }

  async peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    const now = this.tick();
    return counters.map((c) => {
      const state = this.counters.get(c.key);
      return state ? total(state, now) : 0;
    });
  }

  async peekDetail(counters: Pick<Counter, "key" | "windowMs">[]): Promise<CounterDetail[]> {
    const now = this.tick();
    return counters.map((c) => {
      const state = this.counters.get(c.key);
      if (!state) return { total: 0, reserved: 0 };
      const sum = total(state, now);
      return { total: sum, reserved: state.held };
    });
  }

  async score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    const now = this.tick();
    const s = this.scores.get(key);
    const value = (s ? s.value * Math.pow(0.5, (now - s.ts) / halfLifeMs) : 0) + delta;
    if (delta !== 0 || s) this.scores.set(key, { value, ts: now, halfLifeMs });
    return value;
  }

  async distinct(key: string, member: string, ttlMs: number): Promise<number> {
    const now = this.tick();
    let set = this.sets.get(key);
    if (!set) this.sets.set(key, (set = new Map()));
    set.set(member, now + ttlMs);
    forgetExpired(set, now);
    return set.size;
  }

  async putKey(key: StoredKey): Promise<void> {
    this.keys.set(key.hash, copyKey(key));
  }
  async findKey(hash: string): Promise<StoredKey | undefined> {
    const k = this.keys.get(hash);
    return k && copyKey(k);
  }
  async listKeys(): Promise<StoredKey[]> {
    return [...this.keys.values()].map(copyKey);
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
    this.keepUsage(record);
  }

  /**
   * Keeps the latest MAX_USAGE_RECORDS for `tollgate usage` and the dashboard: a long-running
   * memory gateway must not grow its heap (and its GC work) with every request it serves. The
   * oldest tenth goes at once, so the array is not shifted on every record.
   */
  private keepUsage(record: UsageRecord): void {
    if (this.usage.length >= MAX_USAGE_RECORDS) this.usage.splice(0, Math.ceil(MAX_USAGE_RECORDS / 10));
    this.usage.push(record);
  }
  async queryUsage(q: UsageQuery): Promise<UsageRecord[]> {
    return this.usage.filter((r) => {
      const t = Date.parse(r.ts);
      return t >= q.since && (q.until === undefined || t < q.until);
    });
  }

  async close(): Promise<void> {}

  /**
   * Tests only: what the store holds, after pruning. With a key, that counter's buckets plus
   * unsettled reservations (the work a reserve does on it); without, how many counters,
   * reservations, scores and sets it remembers.
   */
  debugSize(key?: string): number {
    const now = this.now();
    if (key === undefined) return this.counters.size + this.reservations.size + this.scores.size + this.sets.size;
    const state = this.counters.get(key);
    if (!state) return 0;
    prune(state, now);
    return state.buckets.size + state.live.length;
  }

  /** The clock, and one step of the sweep: every operation pays a little towards forgetting. */
  private tick(): number {
    const now = this.now();
    for (const s of this.sweepers) s.step(now);
    return now;
  }

  private counter(key: string): CounterState {
    let state = this.counters.get(key);
    if (!state) this.counters.set(key, (state = { buckets: new Map(), live: [], settled: 0, held: 0, pruneAt: Infinity, gone: false }));
    return state;
  }
}

/** reserve()'s counters, looked up before any is taken (one array for every call). */
const scratch: CounterState[] = [];

/**
 * Forgets buckets that left their window and reservations that no longer count (lapsed or too
 * old), and recomputes the sums; a no-op until something can have stopped counting.
 */
function prune(state: CounterState, now: number): void {
  if (now < state.pruneAt) return;
  let next = Infinity;
  let settled = 0;
  for (const [start, b] of state.buckets) {
    if (b.goneAt <= now) state.buckets.delete(start);
    else {
      settled += b.amount;
      if (b.goneAt < next) next = b.goneAt;
    }
  }
  let held = 0;
  let write = 0;
  const list = state.live;
  for (let read = 0; read < list.length; read++) {
    const e = list[read]!;
    const stops = Math.min(e.leaseUntil, e.ts + e.windowMs);
    if (stops > now) {
      list[write++] = e;
      held += e.amount;
      if (stops < next) next = stops;
    }
  }
  list.length = write;
  state.settled = settled;
  state.held = held;
  state.pruneAt = next;
}

/** The counter's total: O(1) while nothing left it, O(buckets + unsettled reservations) when something did. */
function total(state: CounterState, now: number): number {
  prune(state, now);
  return state.settled + state.held;
}

/**
 * What counts now and when it stops counting. An unsettled amount is taken to leave when it would
 * if it were settled (in a bucket of `width`), which is never earlier than the truth.
 */
function leaving(state: CounterState, width: number): { goneAt: number; amount: number }[] {
  const out = [...state.buckets.values()].map((b) => ({ goneAt: b.goneAt, amount: b.amount }));
  for (const e of state.live) out.push({ goneAt: bucketGoneAt(e.ts, Math.max(width, e.width), e.windowMs), amount: e.amount });
  return out;
}

function list(state: CounterState, e: Live): void {
  state.live.push(e);
  state.held += e.amount;
  const stops = Math.min(e.leaseUntil, e.ts + e.windowMs);
  if (stops < state.pruneAt) state.pruneAt = stops;
}

/** Takes an entry out of its counter's in-flight list, if a prune has not already (order does not matter). */
function unlist(state: CounterState, e: Live): void {
  const live = state.live;
  const at = live.indexOf(e);
  if (at < 0) return;
  const last = live.pop()!;
  if (at < live.length) live[at] = last;
  state.held -= e.amount;
}

function forgetExpired(set: Map<string, number>, now: number): void {
  for (const [m, expiry] of set) if (expiry <= now) set.delete(m);
}

/** A copy that shares nothing with the caller: grants and routes are arrays. */
function copyKey(k: StoredKey): StoredKey {
  const copy = { ...k, grants: [...k.grants] };
  if (k.routes) copy.routes = [...k.routes];
  return copy;
}
