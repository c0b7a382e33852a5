import type { OutboxStore } from "./outbox.js";
import type { UsageRecord } from "./usage-record.js";

/**
 * What the engine needs from a store, and nothing more. Every quota, budget and run counter is
 * the same primitive: a counter over a window that admits a reservation only if the whole amount
 * fits, taken atomically across several counters at once, and later settled to the actual amount.
 *
 * A counter is a sliding window over `(now - windowMs, now]`, held in two parts so that checking it
 * costs the same however much traffic it saw:
 * - unsettled reservations, one entry each (time, amount, lease end): the requests in flight. One
 *   counts while it is inside the window and its lease runs;
 * - settled amounts, summed into time buckets aligned to the epoch. Settle puts the actual amount
 *   into the bucket of the reservation's time (not the settle's), so a late settle, even after the
 *   lease ran out, still counts, and leaves the window when the reservation would have.
 *
 * Bucket width (see stores/buckets.ts): 1 ms when the reserving counter's `max` is at most 64,
 * which is exact, and still only about `max` buckets, since a window holds at most that many
 * admitted reservations; otherwise ceil(windowMs / 64), so at most 65 buckets overlap a window.
 * A bucket counts in full while any millisecond of it is inside the window: a settled amount
 * reserved at t counts at least until t + windowMs and at most until t + windowMs + width - 1.
 * That errs one way only: a limit may refuse up to one bucket (1/64 of its window) early, and
 * never admits more than `max` in any window of `windowMs` — fixed windows, by
 * contrast, admit 2N across a boundary. A counter's representation is chosen by the `max` it is
 * reserved with; a key reserved with several maxes keeps each amount in the bucket its own
 * reservation chose.
 *
 * Calendar budgets use a key that names the period (e.g. the UTC day) with a window that covers
 * it, so they reset when the key changes.
 */
export interface Counter {
  key: string;
  /** Largest total the window may hold. */
  max: number;
  /** What this request reserves: 1 request, estimated tokens, estimated micro-dollars. */
  amount: number;
  windowMs: number;
}

/** A counter's total, and how much of it unsettled reservations hold (0 <= reserved <= total). */
export interface CounterDetail {
  total: number;
  reserved: number;
}

export type ReserveResult =
  | {
      ok: true;
      /** Each counter's total after this reservation (for remaining-quota headers). */
      totals: number[];
    }
  | {
      ok: false;
      /** Index of the first counter that would overflow. */
      index: number;
      /** That counter's current total. */
      used: number;
      /** When enough of its window expires for this amount to fit; undefined when it never will. */
      retryAfterMs?: number;
    };

/** What a key grants its caller, whether it is written in the config or stored by `tollgate keys`. */
export interface KeyAccess {
  id: string;
  user?: string;
  plan: string;
  service: boolean;
  grants: string[];
  routes?: string[];
  verified: boolean;
  expiresAt?: number;
  /** The org whose budget this key's calls also count against. */
  org?: string;
  /** The key's own spend caps in micro-dollars; `total` never resets (trial keys). */
  budget?: { daily?: number; monthly?: number; total?: number };
}

export interface StoredKey extends KeyAccess {
  /** sha256 of the secret, hex. The secret itself is never stored. */
  hash: string;
  /** First characters of the secret, to recognise it in listings. */
  prefix: string;
  createdAt: number;
  revokedAt?: number;
}

/**
 * What an open stream had delivered by its last checkpoint (SPEC §7.4): what each reservation the
 * request holds is settled at, and the usage record written, if its process dies before it
 * settles. The first reservation names the checkpoint: settling or releasing it drops it.
 */
export interface Checkpoint {
  settles: { id: string; actual: number[] }[];
  record: UsageRecord;
}

/** Whether the store can serve now; `detail` names the failing part (never a secret). */
export interface StoreHealth {
  ok: boolean;
  detail: string;
}

/**
 * The store failed (down, locked, disk full), not the request: the engine refuses with 503
 * `store_unavailable`. Every store throws this, and only this, for such failures, so nothing
 * upstream of it has to guess.
 */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
}

/** The Store operations metrics time (`tollgate_store_operation_seconds{op}`) and count failures of. */
export type StoreOp = "reserve" | "settle" | "settleWithRecord" | "release" | "peek" | "score" | "distinct" | "putKey" | "findKey" | "listKeys" | "revokeKey" | "appendUsage" | "queryUsage";

/** Told of each store operation when it ends (observability/metrics.ts). */
export interface StoreObserver {
  /** `started` is `performance.now()` at the call; `failed`: it threw or rejected. */
  ended(op: StoreOp, started: number, failed: boolean): void;
}

export interface UsageQuery {
  since: number;
  until?: number;
}

export interface Store {
  readonly kind: "memory" | "sqlite" | "redis";
  /**
   * Adds `amount` to every counter, or to none: refused when any counter would exceed `max`.
   * The entries are held under `id` until settled; an unsettled entry stops counting once
   * `leaseMs` has passed, so a crashed process's reservations come back. Work is O(buckets +
   * unsettled reservations) per counter, independent of how many were settled in the window.
   * `retryAfterMs` on a refusal is when enough buckets (and in-flight entries, taken as if
   * settled) leave the window: it may be up to one bucket late, never early.
   * `ownerSettles`: only this store object settles, releases or checkpoints the reservation (a
   * request's own); a shared store may then keep less for it, and a settle or release of the id
   * from another process changes nothing (the hold ends with its lease).
   */
  reserve(id: string, counters: readonly Counter[], leaseMs: number, ownerSettles?: boolean): Promise<ReserveResult>;
  /**
   * reserve() answered within the call, by a store whose operations end there (memory): the
   * gateway's joint reservation then takes it without a promise, an async frame or a turn of the
   * microtask queue. Throws what reserve would reject with. Absent: use reserve.
   */
  reserveNow?(id: string, counters: readonly Counter[], leaseMs: number): ReserveResult;
  /**
   * Replaces the reserved amounts with the actual ones (same order as reserve) and ends the lease:
   * each actual amount goes into the bucket of the reservation's time. Idempotent. Still counts
   * after the lease ran out (nothing is free); adds nothing once the reservation left its window.
   */
  settle(id: string, actual: number[]): Promise<void>;
  /**
   * settle(id, actual) and appendUsage(record) in one durable write: both are taken, or neither
   * is (the caller then settles and appends on its own). A served request's answer then waits for
   * one commit instead of two in turn. Absent: the engine settles, then appends. Rejects only when
   * neither was taken: a store that cannot tell (a reply lost after the write ran) sees both
   * through itself, since the caller appending the record again would count it twice.
   */
  settleWithRecord?(id: string, actual: number[], record: UsageRecord): Promise<void>;
  /**
   * Replaces the checkpoint of the reservation `checkpoint.settles[0].id` (a no-op once that is
   * settled or released). One write: taken about once a second per open stream.
   */
  checkpoint(checkpoint: Checkpoint): Promise<void>;
  /**
   * Settles every checkpointed reservation whose lease ran out at its checkpoint and writes its
   * usage record, exactly once across every process sharing the store; returns those records.
   * A checkpoint whose reservation was settled or released is dropped without a record.
   */
  recover(): Promise<UsageRecord[]>;
  /** Drops a reservation entirely (the request was refused or never ran). */
  release(id: string): Promise<void>;
  /** Current totals of counters, without reserving. */
  peek(counters: readonly Pick<Counter, "key" | "windowMs">[]): Promise<number[]>;
  /**
   * Like peek, with each total's share still held by unsettled reservations (requests in flight)
   * apart from the settled rest, so a caller can be told what is spent and what is only reserved.
   * For reports (/v1/me, `tollgate budgets`), never the request path. Absent: nothing is known
   * about reservations; callers take the whole total as settled.
   */
  peekDetail?(counters: Pick<Counter, "key" | "windowMs">[]): Promise<CounterDetail[]>;

  /** Adds `delta` to a score that halves every `halfLifeMs`; returns the decayed total. delta 0 reads it. */
  score(key: string, delta: number, halfLifeMs: number): Promise<number>;
  /** Adds `member` to a set that forgets members after `ttlMs`; returns how many it holds. */
  distinct(key: string, member: string, ttlMs: number): Promise<number>;

  putKey(key: StoredKey): Promise<void>;
  findKey(hash: string): Promise<StoredKey | undefined>;
  listKeys(): Promise<StoredKey[]>;
  /** Returns false when no such key. */
  revokeKey(id: string): Promise<boolean>;

  /** Persists one usage record; resolves once it is durable for this store. */
  appendUsage(record: UsageRecord): Promise<void>;
  queryUsage(query: UsageQuery): Promise<UsageRecord[]>;

  close(): Promise<void>;

  /** Alerts and usage export waiting to be sent (core/outbox.ts); absent: the store cannot hold them. */
  readonly outbox?: OutboxStore;

  /** Whether the store can serve now (GET /healthz); absent: always. */
  health?(): Promise<StoreHealth>;

  /**
   * The store's own clock (epoch ms), for stores shared by several hosts: the engine takes calendar
   * periods ("which UTC day is it") from it, so replicas with skewed clocks charge the same day's
   * budget. Absent: the local clock.
   */
  clock?(): number;
}
