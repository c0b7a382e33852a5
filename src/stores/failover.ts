import type { UsageRecord } from "../core/usage-record.js";
import { MemoryStore } from "./memory.js";
import type { RedisStore } from "./redis.js";
import { StoreUnavailableError, type Checkpoint, type Counter, type CounterDetail, type ReserveResult, type Store, type StoreHealth, type StoredKey, type UsageQuery } from "../core/store.js";

/** While Redis is away, how often to check whether it takes writes again. */
const PROBE_MS = 500;
/** Totals remembered per counter key, and keys remembered per hash, to seed the local store with. */
const MAX_REMEMBERED = 50_000;

interface LocalReservation {
  counters: Counter[];
  at: number;
  /** After this, a settle no longer reaches Redis (the local store still counts it). */
  forgetAt: number;
}

/**
 * `on_store_error: open` (SPEC §7.6): Redis while it answers, this process's own MemoryStore
 * while it does not. The local store enforces every limit and budget, so an outage never admits
 * unlimited spend — but each process enforces them alone, so N processes may admit up to N times a
 * limit until Redis returns. It starts from the totals this process last saw in Redis, so a caller
 * who had spent a budget has not got it back.
 *
 * When Redis returns, the spend settled locally is charged to Redis at the times it happened
 * (idempotently), and settlements of reservations that Redis holds are delivered by the Redis
 * store's write-behind queue. One line on stderr when it switches, one when it switches back.
 */
export class FailoverStore implements Store {
  readonly kind = "redis" as const;
  private readonly local: MemoryStore;
  private readonly held = new Map<string, LocalReservation>();
  private readonly known = new Map<string, { total: number; windowMs: number; at: number }>();
  private readonly keyCache = new Map<string, StoredKey>();
  private down = false;
  private probing?: NodeJS.Timeout;

  constructor(
    private readonly primary: RedisStore,
    private readonly log: (line: string) => void = (line) => process.stderr.write(line + "\n"),
    private readonly now: () => number = Date.now,
  ) {
    this.local = new MemoryStore(now);
    if (!primary.isReady) void this.failOver(new StoreUnavailableError(`redis at ${primary.address} is not reachable`));
  }

  /** Redis's clock while it was last reachable; the local one is what is left without it. */
  clock(): number {
    return this.primary.clock();
  }

  /** Alerts and export wait in Redis only: while it is away they are retried by whoever queued them. */
  get outbox() {
    return this.primary.outbox;
  }

  /** True while limits are local. */
  get degraded(): boolean {
    return this.down;
  }

  async reserve(id: string, counters: Counter[], leaseMs: number, ownerSettles?: boolean): Promise<ReserveResult> {
    if (!this.down) {
      try {
        const result = await this.primary.reserve(id, counters, leaseMs, ownerSettles);
        this.remember(counters, result);
        return result;
      } catch (err) {
        await this.failOver(err);
      }
    }
    const result = await this.local.reserve(id, counters, leaseMs);
    if (result.ok) {
      const at = this.now();
      this.sweepHeld(at);
      this.held.set(id, { counters, at, forgetAt: at + Math.max(leaseMs, 60_000) });
    }
    return result;
  }

  async settle(id: string, actual: number[]): Promise<void> {
    const mine = this.held.get(id);
    if (!mine) return this.primary.settle(id, actual);
    this.held.delete(id);
    await this.local.settle(id, actual);
    const entries = mine.counters.map((c, i) => ({ key: c.key, windowMs: c.windowMs, amount: actual[i] ?? c.amount, at: mine.at }));
    await this.primary.charge(`local:${id}`, entries);
  }

  /** Redis's reservations settle with their record in one call there; a local one settles here and its record joins Redis's queue. */
  async settleWithRecord(id: string, actual: number[], record: UsageRecord): Promise<void> {
    if (!this.held.has(id)) return this.primary.settleWithRecord(id, actual, record);
    await this.settle(id, actual);
    await this.appendUsage(record);
  }

  async release(id: string): Promise<void> {
    if (this.held.delete(id)) return this.local.release(id);
    return this.primary.release(id);
  }

  async checkpoint(cp: Checkpoint): Promise<void> {
    if (this.held.has(cp.settles[0]?.id ?? "")) return this.local.checkpoint(cp);
    await this.primary.checkpoint(cp);
  }

  /** Checkpoints of dead processes are in Redis; this process's own local ones cannot outlive it. */
  async recover(): Promise<UsageRecord[]> {
    return this.down ? [] : this.primary.recover();
  }

  /** Open mode serves through an outage, on local limits: healthy, and says so. */
  async health(): Promise<StoreHealth> {
    const redis = await this.primary.health();
    return redis.ok ? redis : { ok: true, detail: `${redis.detail}; limits are local to this process until it returns` };
  }

  async peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    return this.either(
      () => this.primary.peek(counters),
      () => this.local.peek(counters),
    );
  }

  async peekDetail(counters: Pick<Counter, "key" | "windowMs">[]): Promise<CounterDetail[]> {
    return this.either(
      () => this.primary.peekDetail(counters),
      () => this.local.peekDetail(counters),
    );
  }

  async score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    return this.either(
      () => this.primary.score(key, delta, halfLifeMs),
      () => this.local.score(key, delta, halfLifeMs),
    );
  }

  async distinct(key: string, member: string, ttlMs: number): Promise<number> {
    return this.either(
      () => this.primary.distinct(key, member, ttlMs),
      () => this.local.distinct(key, member, ttlMs),
    );
  }

  /** Keys seen while Redis answered keep working through an outage; unknown ones wait for Redis. */
  async findKey(hash: string): Promise<StoredKey | undefined> {
    const cached = () => {
      const k = this.keyCache.get(hash);
      return k && { ...k };
    };
    return this.either(async () => {
      const key = await this.primary.findKey(hash);
      this.keyCache.delete(hash);
      if (key) {
        if (this.keyCache.size >= MAX_REMEMBERED) this.keyCache.delete(this.keyCache.keys().next().value!);
        this.keyCache.set(hash, { ...key });
      }
      return key;
    }, async () => cached());
  }

  // Managing keys and reading usage are admin work: they need the real store, never a local copy.

  async putKey(key: StoredKey): Promise<void> {
    await this.primary.putKey(key);
    this.keyCache.delete(key.hash);
  }

  async listKeys(): Promise<StoredKey[]> {
    return this.primary.listKeys();
  }

  async revokeKey(id: string): Promise<boolean> {
    const found = await this.primary.revokeKey(id);
    for (const [hash, k] of this.keyCache) if (k.id === id) this.keyCache.delete(hash);
    return found;
  }

  async appendUsage(record: UsageRecord): Promise<void> {
    await this.primary.appendUsage(record);
  }

  async queryUsage(query: UsageQuery): Promise<UsageRecord[]> {
    return this.primary.queryUsage(query);
  }

  async close(): Promise<void> {
    clearInterval(this.probing);
    this.probing = undefined;
    await this.primary.close();
  }

  private async either<T>(remote: () => Promise<T>, local: () => Promise<T>): Promise<T> {
    if (!this.down) {
      try {
        return await remote();
      } catch (err) {
        await this.failOver(err);
      }
    }
    return local();
  }

  /** Rethrows anything but Redis being away; otherwise switches to local limits (once). */
  private async failOver(err: unknown): Promise<void> {
    if (!(err instanceof StoreUnavailableError)) throw err;
    if (this.down) return;
    this.down = true;
    this.log(`tollgate: store unavailable (${err.message}); on_store_error is open: this process enforces every limit on its own until redis returns`);
    await this.seedLocal();
    this.probing = setInterval(() => void this.probe(), PROBE_MS);
    this.probing.unref();
  }

  private async probe(): Promise<void> {
    if (!this.down || !this.primary.isReady) return;
    try {
      await this.primary.probe();
    } catch {
      return;
    }
    if (!this.down) return;
    this.down = false;
    clearInterval(this.probing);
    this.probing = undefined;
    this.log(`tollgate: store redis at ${this.primary.address} is back; limits are shared again`);
  }

  /** The local store starts from what Redis last said was used, so an outage hands nothing back. */
  private async seedLocal(): Promise<void> {
    const now = this.now();
    let n = 0;
    for (const [key, k] of this.known) {
      if (k.at + k.windowMs <= now) continue;
      const [local] = await this.local.peek([{ key, windowMs: k.windowMs }]);
      const missing = k.total - local!;
      if (missing <= 0) continue;
      const id = `seed:${now}:${n++}`;
      await this.local.reserve(id, [{ key, max: Infinity, amount: missing, windowMs: k.windowMs }], Infinity);
      await this.local.settle(id, [missing]);
    }
  }

  private remember(counters: Counter[], result: ReserveResult): void {
    const at = this.now();
    const note = (c: Counter, total: number) => {
      this.known.delete(c.key);
      if (this.known.size >= MAX_REMEMBERED) this.known.delete(this.known.keys().next().value!);
      this.known.set(c.key, { total, windowMs: c.windowMs, at });
    };
    if (result.ok) counters.forEach((c, i) => note(c, result.totals[i]!));
    else note(counters[result.index]!, result.used);
  }

  private sweepHeld(now: number): void {
    for (const [id, r] of this.held) {
      if (r.forgetAt > now) break;
      this.held.delete(id);
    }
  }
}
