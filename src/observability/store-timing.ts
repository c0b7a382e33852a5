import type { UsageRecord } from "../core/usage-record.js";
import type { Checkpoint, Counter, CounterDetail, ReserveResult, Store, StoreHealth, StoredKey, StoreObserver, StoreOp, UsageQuery } from "../core/store.js";

/**
 * Reservations taken through a TimedStore and not yet settled or released, by id, with the instant
 * their lease ends (the store stops counting them then anyway).
 */
export type HeldReservations = Map<string, number>;

/**
 * A store whose operations are each timed and their failures counted (StoreObserver), with its
 * reservations followed from reserve to settle/release. For stores whose operations end later
 * than the call (SQLite's and Redis's batches): one promise reaction per call. A memory store
 * times its own operations instead (MemoryStore.observe), at no promise cost.
 *
 * Plain methods rather than a Proxy: a trap, a `Reflect.get` and a lookup of the wrapper on every
 * property read were most of what timing cost per call.
 */
export class TimedStore implements Store {
  readonly kind: Store["kind"];
  declare readonly peekDetail?: Store["peekDetail"];
  declare readonly health?: Store["health"];
  declare readonly clock?: Store["clock"];
  declare readonly settleWithRecord?: Store["settleWithRecord"];
  /** Never set: a wrapped store's operations end after the call. */
  declare readonly reserveNow?: Store["reserveNow"];

  constructor(
    private readonly inner: Store,
    private readonly observer: StoreObserver,
    private readonly held: HeldReservations,
  ) {
    this.kind = inner.kind;
    // Only what the store has: callers take an absent peekDetail, health or clock to mean something.
    const self = this as { -readonly [K in "peekDetail" | "health" | "clock"]?: Store[K] };
    if (inner.peekDetail) self.peekDetail = inner.peekDetail.bind(inner);
    if (inner.health) self.health = inner.health.bind(inner);
    if (inner.clock) self.clock = inner.clock.bind(inner);
    const settleWithRecord = inner.settleWithRecord?.bind(inner);
    if (settleWithRecord) {
      (this as { settleWithRecord?: Store["settleWithRecord"] }).settleWithRecord = (id, actual, record) => {
        const started = performance.now();
        return this.call("settleWithRecord", started, () => settleWithRecord(id, actual, record), id);
      };
    }
  }

  get outbox(): Store["outbox"] {
    return this.inner.outbox;
  }

  reserve(id: string, counters: readonly Counter[], leaseMs: number, ownerSettles?: boolean): Promise<ReserveResult> {
    const started = performance.now();
    let result: Promise<ReserveResult>;
    try {
      result = this.inner.reserve(id, counters, leaseMs, ownerSettles);
    } catch (err) {
      return this.threw("reserve", started, err);
    }
    // Registered first, so the reservation is counted (or no longer) before the caller resumes.
    result.then(
      (r) => {
        this.observer.ended("reserve", started, false);
        // Operator policies are reservations too (held for days); they are not requests in flight.
        if (r.ok && !id.startsWith("pol:")) this.held.set(id, Date.now() + leaseMs);
      },
      () => this.observer.ended("reserve", started, true),
    );
    return result;
  }

  settle(id: string, actual: number[]): Promise<void> {
    const started = performance.now();
    let result: Promise<void>;
    try {
      result = this.inner.settle(id, actual);
    } catch (err) {
      return this.threw("settle", started, err);
    }
    return this.ends("settle", started, result, id);
  }

  release(id: string): Promise<void> {
    const started = performance.now();
    let result: Promise<void>;
    try {
      result = this.inner.release(id);
    } catch (err) {
      return this.threw("release", started, err);
    }
    return this.ends("release", started, result, id);
  }

  checkpoint(checkpoint: Checkpoint): Promise<void> {
    return this.inner.checkpoint(checkpoint);
  }
  recover(): Promise<UsageRecord[]> {
    return this.inner.recover();
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  peek(counters: readonly Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    const started = performance.now();
    return this.call("peek", started, () => this.inner.peek(counters));
  }
  score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    const started = performance.now();
    return this.call("score", started, () => this.inner.score(key, delta, halfLifeMs));
  }
  distinct(key: string, member: string, ttlMs: number): Promise<number> {
    const started = performance.now();
    return this.call("distinct", started, () => this.inner.distinct(key, member, ttlMs));
  }
  putKey(key: StoredKey): Promise<void> {
    const started = performance.now();
    return this.call("putKey", started, () => this.inner.putKey(key));
  }
  findKey(hash: string): Promise<StoredKey | undefined> {
    const started = performance.now();
    return this.call("findKey", started, () => this.inner.findKey(hash));
  }
  listKeys(): Promise<StoredKey[]> {
    const started = performance.now();
    return this.call("listKeys", started, () => this.inner.listKeys());
  }
  revokeKey(id: string): Promise<boolean> {
    const started = performance.now();
    return this.call("revokeKey", started, () => this.inner.revokeKey(id));
  }
  appendUsage(record: UsageRecord): Promise<void> {
    const started = performance.now();
    return this.call("appendUsage", started, () => this.inner.appendUsage(record));
  }
  queryUsage(query: UsageQuery): Promise<UsageRecord[]> {
    const started = performance.now();
    return this.call("queryUsage", started, () => this.inner.queryUsage(query));
  }

  /** The operation, timed; one that throws instead of rejecting still gives its caller a rejection. */
  private call<T>(op: StoreOp, started: number, run: () => Promise<T>, ending?: string): Promise<T> {
    let result: Promise<T>;
    try {
      result = run();
    } catch (err) {
      return this.threw(op, started, err);
    }
    return this.ends(op, started, result, ending);
  }

  /** The caller awaits the store's own promise; the timing rides beside it (no extra promise or hop). */
  private ends<T>(op: StoreOp, started: number, result: Promise<T>, ending?: string): Promise<T> {
    result.then(
      () => {
        this.observer.ended(op, started, false);
        if (ending !== undefined) this.held.delete(ending);
      },
      () => this.observer.ended(op, started, true),
    );
    return result;
  }

  private threw(op: StoreOp, started: number, err: unknown): Promise<never> {
    this.observer.ended(op, started, true);
    return Promise.reject(err);
  }
}

// Every member of Store, optional ones included: one this wrapper lacked would be hidden from the engine.
const everyMember: [Exclude<keyof Store, keyof TimedStore>] extends [never] ? true : false = true;
void everyMember;
