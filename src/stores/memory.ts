import type { UsageRecord } from "../core/usage-record.js";
import { bucketGoneAt, bucketStart, bucketWidth, retryAfter } from "./buckets.js";
import { leaving, list, prune, total, unlist, type CounterState, type Live, type Taken } from "./memory-counters.js";
import { MemoryOutbox } from "./outbox-memory.js";
import type { Checkpoint, Counter, CounterDetail, ReserveResult, Store, StoredKey, StoreObserver, StoreOp, UsageQuery } from "../core/store.js";

interface Score {
  key: string;
  value: number;
  ts: number;
  halfLifeMs: number;
}

/** distinct()'s members of one key, with when each stops counting. */
interface DistinctSet {
  key: string;
  members: Map<string, number>;
}

interface Reservation extends Taken {
  /** Its id (the sweep deletes by it). */
  key: string;
  entries: Live[];
  /** Until then it counts as held (metrics' reservations in flight), unless settled or released. */
  leaseUntil: number;
  /** After this nothing of it counts any more, settled or not: the record can go. */
  dropAt: number;
}

/** How many entries the sweep looks at per operation. */
const SWEEP_STEP = 4;
/** Usage records a memory store answers queries from (about 0.5 KB each): the latest ones. */
export const MAX_USAGE_RECORDS = 100_000;
/** A score this many half-lives old is worth less than 2^-64 of what it was (as in SQLite). */
const SCORE_FORGET_HALF_LIVES = 64;

/** A value the sweep walks: it names its own key, so the walk reads values and looks nothing up. */
interface Keyed {
  readonly key: string;
}

/**
 * Walks the store's maps one after another, SWEEP_STEP entries per call in all, deleting the dead
 * ones, and starts over after the last: keys that are never touched again (yesterday's budget, an
 * IP seen once) go within a number of operations bounded by the entries the store holds, at a
 * constant cost per operation. One walk for all maps instead of one per map: a request's two or
 * three operations step four entries each, not four per map (most of them empty).
 */
class Sweeper {
  private at = 0;
  // Over the values, not the entries: an entries iterator makes a [key, value] array per step.
  private cursor?: Iterator<Keyed>;
  /** Entries of the current map still to visit in this pass: inserts ahead of the cursor cannot hold it there. */
  private left = 0;
  constructor(
    private readonly maps: readonly Map<string, Keyed>[],
    /** Whether `value`, an entry of maps[at], is dead. */
    private readonly dead: (at: number, value: Keyed, now: number) => boolean,
  ) {}

  step(now: number): void {
    let budget = SWEEP_STEP;
    // Each map at most once per call, so a store with every map empty pays a few size checks.
    for (let visited = 0; visited < this.maps.length; visited++) {
      const map = this.maps[this.at]!;
      if (this.cursor === undefined && map.size > 0) {
        this.cursor = map.values();
        this.left = map.size;
      }
      while (this.cursor !== undefined && budget > 0) {
        const next = this.cursor.next();
        if (next.done || --this.left < 0) {
          this.cursor = undefined;
          break;
        }
        budget--;
        // Deleting the entry just visited is safe for a live Map iterator.
        if (this.dead(this.at, next.value, now)) map.delete(next.value.key);
      }
      if (budget === 0) return;
      this.at = this.at + 1 === this.maps.length ? 0 : this.at + 1;
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
  private readonly scores = new Map<string, Score>();
  private readonly sets = new Map<string, DistinctSet>();
  private readonly keys = new Map<string, StoredKey>();
  private readonly usage: UsageRecord[] = [];
  /** By the id of the reservation they belong to. */
  private readonly checkpoints = new Map<string, Checkpoint>();
  private readonly sweeper: Sweeper;
  private observer?: StoreObserver;
  readonly outbox: MemoryOutbox;

  constructor(private readonly now: () => number = Date.now) {
    // A subclass that overrides reserve, settle or appendUsage as a method (a test counting or
    // failing operations) sees every one: the shortcuts past them are off. An override assigned
    // to the instance after construction is not seen: set reserveNow/settleWithRecord undefined too.
    const proto = MemoryStore.prototype;
    if (this.reserve !== proto.reserve) this.reserveNow = undefined;
    if (this.settle !== proto.settle || this.appendUsage !== proto.appendUsage) this.settleWithRecord = undefined;
    this.outbox = new MemoryOutbox(now);
    this.sweeper = new Sweeper([this.counters, this.reservations, this.scores, this.sets], (at, value, now) => {
      switch (at) {
        case 0: {
          const c = value as CounterState;
          prune(c, now);
          return (c.gone = c.live.length === 0 && c.buckets.size === 0);
        }
        case 1:
          return (value as Reservation).dropAt <= now;
        case 2: {
          const sc = value as Score;
          return now - sc.ts >= SCORE_FORGET_HALF_LIVES * sc.halfLifeMs;
        }
        default: {
          const { members } = value as DistinctSet;
          forgetExpired(members, now);
          return members.size === 0;
        }
      }
    });
  }

  /**
   * Tells `observer` of every operation, timed from inside: each ends within the call, so two clock
   * reads time it where a wrapper needs a promise reaction per call (observability/metrics.ts).
   * One observer per store: false when another has it already.
   */
  observe(observer: StoreObserver): boolean {
    if (this.observer) return false;
    this.observer = observer;
    return true;
  }

  /** Ids of the reservations taken, neither settled nor released, whose lease still runs. */
  heldReservations(): string[] {
    const now = this.now();
    const ids: string[] = [];
    for (const [id, r] of this.reservations) if (r.leaseUntil > now) ids.push(id);
    return ids;
  }

  reserve(id: string, counters: readonly Counter[], leaseMs: number): Promise<ReserveResult> {
    return this.timed("reserve", this.take, id, counters, leaseMs);
  }
  /** The same reservation, answered within the call (Store.reserveNow); timed alike. */
  reserveNow?(id: string, counters: readonly Counter[], leaseMs: number): ReserveResult {
    return this.timedNow("reserve", this.take, id, counters, leaseMs);
  }
  settle(id: string, actual: number[]): Promise<void> {
    return this.timed("settle", this.settleNow, id, actual, undefined);
  }
  /**
   * settle and appendUsage in one call (Store.settleWithRecord): neither can stop halfway, and a
   * served request's finish waits for one settled promise instead of a settle's and a write's.
   */
  settleWithRecord?(id: string, actual: number[], record: UsageRecord): Promise<void> {
    return this.timed("settleWithRecord", this.settleAndKeep, id, actual, record);
  }
  release(id: string): Promise<void> {
    return this.timed("release", this.releaseNow, id, undefined, undefined);
  }
  peek(counters: readonly Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    return this.timed("peek", this.peekNow, counters, undefined, undefined);
  }
  score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    return this.timed("score", this.scoreNow, key, delta, halfLifeMs);
  }
  distinct(key: string, member: string, ttlMs: number): Promise<number> {
    return this.timed("distinct", this.distinctNow, key, member, ttlMs);
  }
  putKey(key: StoredKey): Promise<void> {
    return this.timed("putKey", this.putKeyNow, key, undefined, undefined);
  }
  findKey(hash: string): Promise<StoredKey | undefined> {
    return this.timed("findKey", this.findKeyNow, hash, undefined, undefined);
  }
  listKeys(): Promise<StoredKey[]> {
    return this.timed("listKeys", this.listKeysNow, undefined, undefined, undefined);
  }
  revokeKey(id: string): Promise<boolean> {
    return this.timed("revokeKey", this.revokeKeyNow, id, undefined, undefined);
  }
  appendUsage(record: UsageRecord): Promise<void> {
    return this.timed("appendUsage", this.keepUsage, record, undefined, undefined);
  }
  queryUsage(q: UsageQuery): Promise<UsageRecord[]> {
    return this.timed("queryUsage", this.queryUsageNow, q, undefined, undefined);
  }

  /**
   * One operation, and the observer told how long it took; fixed parameters spare a rest array per
   * call. Not an async function: the work is synchronous, and a settled promise costs less than an
   * async frame (callers see the same: a failure is a rejection, never a throw).
   */
  private timed<A, B, C, R>(op: StoreOp, run: (this: MemoryStore, a: A, b: B, c: C) => R, a: A, b: B, c: C): Promise<R> {
    try {
      return Promise.resolve(this.timedNow(op, run, a, b, c));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** One operation within the call, the observer told how long it took and whether it threw. */
  private timedNow<A, B, C, R>(op: StoreOp, run: (this: MemoryStore, a: A, b: B, c: C) => R, a: A, b: B, c: C): R {
    const observer = this.observer;
    const started = observer === undefined ? 0 : performance.now();
    try {
      const result = run.call(this, a, b, c);
      observer?.ended(op, started, false);
      return result;
    } catch (err) {
      observer?.ended(op, started, true);
      throw err;
    }
  }

  private take(id: string, counters: readonly Counter[], leaseMs: number): ReserveResult {
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
    const r: Reservation = { key: id, entries, ts: now, leaseUntil: now + leaseMs, dropAt: now };
    let dropAt = now;
    for (let i = 0; i < n; i++) {
      const c = counters[i]!;
      const entry: Live = { state: states[i]!, amount: c.amount, windowMs: c.windowMs, width: bucketWidth(c.windowMs, c.max), taken: r };
      list(states[i]!, entry);
      entries[i] = entry;
      dropAt = Math.max(dropAt, bucketGoneAt(now, entry.width, entry.windowMs));
    }
    states.length = 0;
    r.dropAt = dropAt;
    // A reused id takes over the name; the older entries keep counting until their lease ends.
    this.reservations.set(id, r);
    return { ok: true, totals };
  }

  /** Moves each amount into the bucket of its reservation time, even when the lease already ran out. */
  private settleNow(id: string, actual: number[]): void {
    const now = this.tick();
    const r = this.reservations.get(id);
    if (!r) return;
    this.reservations.delete(id);
    if (this.checkpoints.size > 0) this.checkpoints.delete(id);
    const entries = r.entries;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const state = e.state.gone ? this.counter(e.state.key) : e.state;
      unlist(state, e);
      // A bucket already gone but not pruned yet must not take this amount and count again.
      prune(state, now);
      const amount = actual[i] ?? e.amount;
      const goneAt = bucketGoneAt(r.ts, e.width, e.windowMs);
      if (goneAt <= now || amount === 0) continue;
      const start = bucketStart(r.ts, e.width);
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

  private settleAndKeep(id: string, actual: number[], record: UsageRecord): void {
    this.settleNow(id, actual);
    this.keepUsage(record);
  }

  private releaseNow(id: string): void {
    this.tick();
    const r = this.reservations.get(id);
    if (!r) return;
    this.reservations.delete(id);
    if (this.checkpoints.size > 0) this.checkpoints.delete(id);
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
      if (r && r.leaseUntil > now) continue;
      this.checkpoints.delete(id);
      if (!r) continue;
      for (const s of cp.settles) this.settleNow(s.id, s.actual);
      this.keepUsage(cp.record);
      out.push(cp.record);
    }
    return out;
  }

  private peekNow(counters: readonly Pick<Counter, "key" | "windowMs">[]): number[] {
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

  private scoreNow(key: string, delta: number, halfLifeMs: number): number {
    const now = this.tick();
    const s = this.scores.get(key);
    const value = (s ? s.value * Math.pow(0.5, (now - s.ts) / halfLifeMs) : 0) + delta;
    if (delta !== 0 || s) this.scores.set(key, { key, value, ts: now, halfLifeMs });
    return value;
  }

  private distinctNow(key: string, member: string, ttlMs: number): number {
    const now = this.tick();
    let entry = this.sets.get(key);
    if (!entry) this.sets.set(key, (entry = { key, members: new Map() }));
    const set = entry.members;
    set.set(member, now + ttlMs);
    forgetExpired(set, now);
    return set.size;
  }

  private putKeyNow(key: StoredKey): void {
    this.keys.set(key.hash, copyKey(key));
  }
  private findKeyNow(hash: string): StoredKey | undefined {
    const k = this.keys.get(hash);
    return k && copyKey(k);
  }
  private listKeysNow(): StoredKey[] {
    return [...this.keys.values()].map(copyKey);
  }
  private revokeKeyNow(id: string): boolean {
    for (const k of this.keys.values()) {
      if (k.id === id) {
        k.revokedAt ??= this.now();
        return true;
      }
    }
    return false;
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
  private queryUsageNow(q: UsageQuery): UsageRecord[] {
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
    this.sweeper.step(now);
    return now;
  }

  private counter(key: string): CounterState {
    let state = this.counters.get(key);
    if (!state) this.counters.set(key, (state = { key, buckets: new Map(), live: [], settled: 0, held: 0, pruneAt: Infinity, gone: false }));
    return state;
  }
}

/** reserve()'s counters, looked up before any is taken (one array for every call). */
const scratch: CounterState[] = [];

function forgetExpired(set: Map<string, number>, now: number): void {
  for (const [m, expiry] of set) if (expiry <= now) set.delete(m);
}

/** A copy that shares nothing with the caller: grants and routes are arrays. */
function copyKey(k: StoredKey): StoredKey {
  const copy = { ...k, grants: [...k.grants] };
  if (k.routes) copy.routes = [...k.routes];
  return copy;
}
