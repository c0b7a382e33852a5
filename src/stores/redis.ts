import { createHash, randomUUID } from "node:crypto";
import { Command, Redis, type RedisOptions } from "ioredis";
import { storedJson, type UsageRecord } from "../core/usage-record.js";
import { bucketWidth } from "./buckets.js";
import * as lua from "./redis-scripts.js";
import type { LuaScript } from "./redis-scripts.js";
import { StoreUnavailableError, type Checkpoint, type Counter, type CounterDetail, type ReserveResult, type Store, type StoreHealth, type StoredKey, type UsageQuery } from "../core/store.js";
import { WriteBehind } from "./write-behind.js";
import { RedisOutbox } from "./outbox-redis.js";
import { CommitBatch } from "./commit-batch.js";
import { encodeScriptCall } from "./resp.js";

export interface RedisStoreOptions {
  /**
   * The hash tag every key carries (`tg:{namespace}:…`). Gateways that share one Redis but must not
   * share limits use different namespaces.
   */
  namespace?: string;
  /** Tests only: a fixed clock handed to the scripts instead of Redis's TIME. */
  clock?: () => number;
  /** How long usage records stay in the stream. Default 35 days: a full calendar month for `tollgate usage`. */
  usageRetentionMs?: number;
  /** Most usage records held in memory while Redis is away. Default 100 000. */
  maxBufferedRecords?: number;
  /** How long open() waits for the first connection. Default 5 s. */
  connectTimeoutMs?: number;
  /** Where the store says that records were lost or are waiting. Default stderr. */
  log?: (line: string) => void;
}

export { StoreUnavailableError };

/** Every command's cap: a Redis that stops answering costs a request at most this, never a hang. */
const COMMAND_TIMEOUT_MS = 650;
/** How often the clock offset to Redis is measured again. */
const CLOCK_SYNC_MS = 30_000;
/** After a command went unanswered, how long the next ones fail at once (unless Redis answers). */
const SILENT_BACKOFF_MS = 1_000;
/** How long appendUsage waits for Redis before leaving the record to the write-behind buffer. */
const USAGE_ACK_WAIT_MS = 200;
/** Keys outlive their last entry's window by this much, so a slow settle never finds them gone. */
const TTL_MARGIN_MS = 60_000;
/** A score idle for 64 half-lives is below 2^-64 of itself; past a year it is forgotten whatever the half-life. */
const SCORE_MAX_TTL_MS = 366 * 86_400_000;
/** A record's ts comes from its replica's clock, its stream id from Redis: queries look this far back for skew. */
const CLOCK_SLACK_MS = 5 * 60_000;
const CLOSE_DRAIN_MS = 5_000;
const USAGE_BATCH = 200;
/** Usage stream entries read per XRANGE (each holds up to 200 records). */
const USAGE_PAGE = 100;
const MAX_PENDING_WRITES = 100_000;
/** Reservations of this process remembered for their settle; past this, the oldest are read back from Redis instead. */
const MAX_HELD = 50_000;

/** A key the BATCH script cannot put into its JSON record as it is (see 'K' there). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/;

/** Replies that mean "Redis is there but cannot serve right now", not "the script is wrong". */
const TRANSIENT_REPLY = /^(LOADING|READONLY|MASTERDOWN|BUSY|OOM|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|MISCONF)\b/;

/**
 * The shared store for many gateway processes (SPEC §7.1, §7.3): every operation is one Lua script
 * (redis-scripts.ts), so a reservation across user, route and gateway counters is atomic, and
 * every window is measured by Redis's clock. The counter operations of one event-loop turn share
 * one script call (BATCH): one round trip for every request of the turn.
 *
 * Every key carries one hash tag, `{namespace}`. A multi-counter reservation spans the user's,
 * the route's and the gateway's counters; they must share a cluster slot, and only a tag common to
 * all of them does that. On Redis Cluster that puts one namespace on one shard — a shard serves far
 * more script calls per second than LLM traffic produces — and separate namespaces spread.
 *
 * Settlements and usage records are written behind: when Redis is away they wait in memory, in
 * order, and are retried until Redis takes them (settle and the usage batches are idempotent, so a
 * retry after a lost reply never counts twice). Commands fail fast instead of queueing, so a dead
 * Redis is a prompt error for the engine to turn into 503 `store_unavailable`.
 */
export class RedisStore implements Store {
  readonly kind = "redis" as const;
  private readonly prefix: string;
  private readonly shas = new Map<LuaScript, string>();
  private readonly usage: WriteBehind<UsageRecord>;
  private readonly writes: WriteBehind<() => Promise<unknown>>;
  /**
   * Reserves, settles, releases and peeks of one event-loop turn, sent as one BATCH script call:
   * one round trip and one script run for every request of the turn, each op still atomic and
   * answered on its own. One batch is in flight at a time; the next turn's ops wait for it, so
   * under load the batches grow instead of the calls.
   */
  private readonly ops = new CommitBatch<CounterOp, unknown>((ops) => {
    this.turnRecords = undefined;
    return this.runBatch(ops);
  });
  /** This turn's usage op for settleWithRecord's records, until the turn's BATCH call takes it. */
  private turnRecords?: { op: UsageOp; sent: Promise<void> };
  /**
   * What this process reserved and has not settled yet, by id: its settle sends these instead of
   * having the script read the reservation's record back (a GET and a JSON decode per settle).
   * A reservation not found here (reserved elsewhere, or its reply lost) is settled from the record.
   * Evicted oldest first past MAX_HELD: each has a record to settle from.
   */
  private readonly held = new Map<string, Held>();
  /**
   * This process's reservations made with a marker and no record (reserve's ownerSettles): what is
   * here is all there is to settle them from, so nothing is evicted; at most MAX_HELD / 2, past
   * which reservations get records again.
   */
  private readonly owned = new Map<string, Held>();
  private readonly log: (line: string) => void;
  private readonly retentionMs: number;
  private closed = false;
  /** performance.now() until which commands fail at once: Redis left a command unanswered. */
  private silentUntil = 0;
  private lastReplyAt = 0;
  readonly outbox: RedisOutbox;

  /** Connects and waits for Redis to be ready; with `waitForReady: false` it returns at once and keeps trying. */
  static async open(url: string, opts: RedisStoreOptions & { waitForReady?: boolean } = {}): Promise<RedisStore> {
    const redis = new Redis(url, redisOptions(opts.connectTimeoutMs));
    const store = new RedisStore(redis, opts);
    if (opts.waitForReady === false) return store;
    try {
      await store.ready(opts.connectTimeoutMs ?? 5_000);
    } catch (err) {
      redis.disconnect();
      throw err;
    }
    return store;
  }

  constructor(
    readonly redis: Redis,
    private readonly opts: RedisStoreOptions = {},
  ) {
    this.prefix = `tg:{${opts.namespace ?? "tollgate"}}:`;
    this.log = opts.log ?? ((line) => process.stderr.write(line + "\n"));
    this.retentionMs = opts.usageRetentionMs ?? 35 * 86_400_000;
    this.outbox = new RedisOutbox((script, keys, args) => this.run(script, keys, args), this.prefix, () => this.now());
    // Without a listener ioredis prints every reconnect failure; availability is reported by its owner.
    redis.on("error", () => {});
    redis.on("ready", () => {
      void this.syncClock();
      this.silentUntil = 0;
      this.usage.retryNow();
      this.writes.retryNow();
    });
    const retryable = (err: unknown) => err instanceof StoreUnavailableError;
    this.usage = new WriteBehind({
      send: (records, batchId) => this.shipUsage(records, batchId),
      retryable,
      onDiscard: (err, n) => this.log(`tollgate: redis refused ${n} usage records (${errorText(err)}); they are only in the stdout log`),
      batchSize: USAGE_BATCH,
      max: opts.maxBufferedRecords ?? 100_000,
      waitMs: USAGE_ACK_WAIT_MS,
    });
    this.writes = new WriteBehind({
      send: ([write]) => write!().then(() => {}),
      retryable,
      onDiscard: (err) => this.log(`tollgate: redis refused a settlement (${errorText(err)})`),
      batchSize: 1,
      max: MAX_PENDING_WRITES,
    });
  }

  /** Redis TIME minus the local clock, measured at the midpoint of a TIME round trip. */
  private clockOffsetMs = 0;
  private readonly clockTimer = setInterval(() => void this.syncClock(), CLOCK_SYNC_MS).unref();

  /** The Redis server's clock, as near as one round trip can tell (see Store.clock). */
  clock(): number {
    return this.opts.clock?.() ?? Date.now() + this.clockOffsetMs;
  }

  private async syncClock(): Promise<void> {
    try {
      const before = Date.now();
      const [sec, usec] = await this.redis.time();
      const after = Date.now();
      this.clockOffsetMs = Math.round(Number(sec) * 1000 + Number(usec) / 1000 - (before + after) / 2);
    } catch {
      // Keep the last offset; the scripts keep using TIME themselves.
    }
  }

  /** `host:port/db`, never the password: safe for logs. */
  get address(): string {
    const o = this.redis.options;
    return `${o.host}:${o.port}/${o.db ?? 0}`;
  }

  /** True once close() has begun: a dropped connection after that is the store shutting down, not an outage. */
  get isClosed(): boolean {
    return this.closed;
  }

  get isReady(): boolean {
    return this.redis.status === "ready";
  }

  /** Usage records and settlements waiting for Redis. */
  get pending(): { usage: number; writes: number } {
    return { usage: this.usage.size, writes: this.writes.size };
  }

  /** Resolves when connected; rejects after `ms`. */
  async ready(ms: number): Promise<void> {
    if (this.isReady) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.redis.off("ready", onReady);
        reject(new StoreUnavailableError(`cannot reach redis at ${this.address} within ${ms} ms`));
      }, ms);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      this.redis.once("ready", onReady);
    });
  }

  /** A write that proves Redis takes writes again (PING would pass on a read-only replica). */
  async probe(): Promise<void> {
    await this.run(lua.DISTINCT, [`${this.prefix}probe`], [this.now(), "probe", "1000"]);
  }

  /**
   * ownerSettles: no record is written, only a marker (BATCH's 'R'), while this process holds few
   * enough reservations that none it must settle is ever forgotten (MAX_HELD); it settles and
   * releases the reservation from what it remembers, and a checkpoint turns the marker into a record.
   */
  async reserve(id: string, counters: Counter[], leaseMs: number, ownerSettles = false): Promise<ReserveResult> {
    if (!counters.length) return { ok: true, totals: [] };
    for (const c of counters) assertAmounts(c.key, [c.amount, c.windowMs], c.max);
    const own = ownerSettles && this.owned.size < MAX_HELD / 2;
    const reply = (await this.ops.add({ op: "r", now: this.now(), id, counters, leaseMs, own })) as (string | number | null)[];
    if (reply[0] === 1) {
      this.hold(id, { ts: String(reply[counters.length + 1]), lease: leaseArg(leaseMs), counters, own, promoted: false });
      return { ok: true, totals: reply.slice(1, counters.length + 1).map(Number) };
    }
    const [, index, used, retry] = reply;
    return { ok: false, index: Number(index), used: Number(used), retryAfterMs: retry == null ? undefined : Number(retry) };
  }

  async settle(id: string, actual: number[]): Promise<void> {
    assertAmounts(id, actual);
    const held = this.take(id);
    let op: CounterOp;
    if (held && held.counters.length === actual.length) op = { op: "S", now: this.now(), id, held, actual };
    // Without a record, what is held is all there is: a missing amount settles at what was reserved, as from a record.
    else if (held?.own) op = { op: "S", now: this.now(), id, held, actual: held.counters.map((c, i) => (i < actual.length ? actual[i]! : c.amount)) };
    else op = { op: "s", now: this.now(), id, actual };
    await this.writeBehind(() => this.ops.add(op)).catch((err: unknown) => this.keepFor(id, held, err));
  }

  /**
   * The settle and the record in the same BATCH call: one script run takes both, and the answer
   * waits for one round trip instead of a settle's and then a record's. A turn's records share
   * one usage op (one batch id, as the write-behind queue's batches). While Redis is away both
   * wait in the settlements' queue, as settle() and appendUsage() do alone, and are resent as
   * they were: the settle ends its reservation once, and the usage op's batch id is written once.
   *
   * Once the record is queued this never rejects: Redis keeps what a script wrote before a later
   * op of the same call failed, so a failed call may have appended the record already, and the
   * engine appending it again would count it twice. A failed settle is retried alone, and a
   * failed usage op resent alone under its own batch id (a no-op if it had run).
   */
  async settleWithRecord(id: string, actual: number[], record: UsageRecord): Promise<void> {
    // Refused before anything is queued: neither, so the caller's own settle and append run alone.
    assertAmounts(id, actual);
    const settled = this.settle(id, actual).catch((err: unknown) => this.settleAlone(id, actual, err));
    let turn = this.turnRecords;
    // A turn's records in usage ops of at most USAGE_BATCH: one op's arguments stay a small part of the call.
    if (!turn || turn.op.records.length >= USAGE_BATCH) {
      const op: UsageOp = { op: "u", now: this.now(), batchId: randomUUID(), records: [] };
      const sent = this.writeBehind(() => this.ops.add(op), op).catch((err: unknown) => this.resendUsage(op, err));
      turn = this.turnRecords = { op, sent };
    }
    turn.op.records.push(storedJson(record));
    await Promise.all([settled, turn.sent]);
  }

  /** A settle whose BATCH call failed for another op's sake, tried once more in a call of its own. */
  private async settleAlone(id: string, actual: number[], first: unknown): Promise<void> {
    try {
      await this.settle(id, actual);
    } catch (err) {
      // Its record is written: the lease runs out and keeps the reservation charged (nothing is free).
      this.log(`tollgate: redis refused a served request's settlement twice (${errorText(first)}; ${errorText(err)}); its reservation stays charged until its lease runs out`);
    }
  }

  /** A turn's usage op whose BATCH call failed: sent once more, alone; its batch id makes it land once. */
  private async resendUsage(op: UsageOp, first: unknown): Promise<void> {
    try {
      await this.writeBehind(() => this.ops.add(op), op);
    } catch (err) {
      this.log(`tollgate: redis refused ${op.records.length} usage records twice (${errorText(first)}; ${errorText(err)}); they are only in the stdout log`);
    }
  }

  async release(id: string): Promise<void> {
    const held = this.take(id);
    // A reservation without a record is released as settled at nothing: its amounts leave, none is added.
    const op: CounterOp = held?.own ? { op: "S", now: this.now(), id, held, actual: held.counters.map(() => 0) } : { op: "x", now: this.now(), id };
    await this.writeBehind(() => this.ops.add(op)).catch((err: unknown) => this.keepFor(id, held, err));
  }

  /**
   * Adds spend that already happened elsewhere (a process's local store while Redis was away), at
   * the times it happened, once per id; queued like a settlement when Redis is away.
   */
  async charge(id: string, entries: { key: string; windowMs: number; amount: number; at: number }[]): Promise<void> {
    if (!entries.length) return;
    for (const e of entries) assertAmounts(e.key, [e.amount, e.windowMs, e.at]);
    const keys = [`${this.prefix}ch:${id}`, ...entries.map((e) => this.counterKey(e.key))];
    const args = [num(TTL_MARGIN_MS)];
    // No max is known here: the amounts go into the coarse buckets, which count them longer, never shorter.
    for (const e of entries) args.push(num(e.amount), num(e.windowMs), num(e.at), num(bucketWidth(e.windowMs, Infinity)));
    await this.writeBehind(() => this.run(lua.CHARGE, keys, [this.now(), ...args]));
  }

  async checkpoint(cp: Checkpoint): Promise<void> {
    const first = cp.settles[0];
    if (!first) return;
    for (const s of cp.settles) assertAmounts(s.id, s.actual);
    const settles = JSON.stringify(cp.settles.map((s) => [this.recordKey(s.id), s.actual]));
    const args = [settles, JSON.stringify(cp.record)];
    // Reservations held with a marker get the record the first time a checkpoint names them.
    const promote: Held[] = [];
    const records: [string, string, string, string[][]][] = [];
    for (const s of cp.settles) {
      const h = this.owned.get(s.id) ?? this.held.get(s.id);
      if (!h?.own || h.promoted) continue;
      promote.push(h);
      records.push([this.recordKey(s.id), h.ts, h.lease, h.counters.map((c) => [this.counterKey(c.key), num(c.max), num(c.windowMs), num(c.amount)])]);
    }
    if (records.length) args.push(JSON.stringify(records), this.markerPrefix, num(TTL_MARGIN_MS), this.now());
    await this.run(lua.CHECKPOINT, [this.recordKey(first.id), `${this.prefix}cps`], args);
    for (const h of promote) h.promoted = true;
  }

  async recover(): Promise<UsageRecord[]> {
    const keys = [`${this.prefix}cps`, `${this.prefix}usage`];
    const reply = (await this.run(lua.RECOVER, keys, [this.now(), num(TTL_MARGIN_MS), num(this.retentionMs)])) as string[];
    return reply.map((json) => JSON.parse(json) as UsageRecord);
  }

  async health(): Promise<StoreHealth> {
    if (!this.isReady) return { ok: false, detail: `redis at ${this.address} is not connected (${this.redis.status})` };
    if (this.silent) return { ok: false, detail: `redis at ${this.address} stopped answering` };
    return { ok: true, detail: `redis at ${this.address}` };
  }

  async peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    if (!counters.length) return [];
    const reply = (await this.ops.add({ op: "p", now: this.now(), counters })) as string[];
    return reply.map(Number);
  }

  async peekDetail(counters: Pick<Counter, "key" | "windowMs">[]): Promise<CounterDetail[]> {
    if (!counters.length) return [];
    const reply = (await this.ops.add({ op: "d", now: this.now(), counters })) as string[];
    return counters.map((_, i) => ({ total: Number(reply[2 * i]), reserved: Number(reply[2 * i + 1]) }));
  }

  async score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    const args = [this.now(), num(delta), num(halfLifeMs), num(SCORE_MAX_TTL_MS)];
    return Number(await this.run(lua.SCORE, [`${this.prefix}s:${key}`], args));
  }

  async distinct(key: string, member: string, ttlMs: number): Promise<number> {
    return Number(await this.run(lua.DISTINCT, [`${this.prefix}d:${key}`], [this.now(), member, num(ttlMs)]));
  }

  // API keys are the one thing without a TTL: an operator created them, and they are gone only
  // when an operator deletes them. Their number grows with operator actions, not with traffic.

  async putKey(key: StoredKey): Promise<void> {
    const { revokedAt, ...rest } = key;
    const keys = [this.keyKey(key.hash), `${this.prefix}k:list`, `${this.prefix}k:id:${key.id}`, `${this.prefix}k:seq`];
    await this.run(lua.PUT_KEY, keys, [JSON.stringify(rest), key.hash, key.id, revokedAt === undefined ? "" : num(revokedAt), `${this.prefix}k:id:`]);
  }

  async findKey(hash: string): Promise<StoredKey | undefined> {
    const [json, revokedAt] = await this.call(() => this.redis.hmget(this.keyKey(hash), "json", "revokedAt"));
    return json ? storedKey(json, revokedAt ?? null) : undefined;
  }

  async listKeys(): Promise<StoredKey[]> {
    const reply = (await this.run(lua.LIST_KEYS, [`${this.prefix}k:list`], [`${this.prefix}k:h:`])) as (string | null)[];
    const out: StoredKey[] = [];
    for (let i = 0; i < reply.length; i += 2) out.push(storedKey(reply[i]!, reply[i + 1] ?? null));
    return out;
  }

  async revokeKey(id: string): Promise<boolean> {
    return (await this.run(lua.REVOKE_KEY, [`${this.prefix}k:id:${id}`], [this.now(), `${this.prefix}k:h:`])) === 1;
  }

  /**
   * Resolves once Redis has the record — or, when Redis is away or slow, once it is in the
   * write-behind buffer: a request never waits on a dead Redis for its record. Records buffered
   * then reach Redis when it returns, in order, unless this process dies first (they are also on
   * stdout). A full buffer refuses the record, and says so on stderr.
   */
  appendUsage(record: UsageRecord): Promise<void> {
    // Waits for Redis only while it is there: one promise, settled by the write-behind queue
    // (when the record is sent, or after USAGE_ACK_WAIT_MS on one timer shared by every waiting record).
    const wait = this.isReady && !this.silent;
    let done: (() => void) | undefined;
    const shipped = wait ? new Promise<void>((resolve) => (done = resolve)) : undefined;
    if (!this.usage.push(record, done)) {
      if (this.usage.refused === 1) {
        this.log(`tollgate: usage buffer full (${this.usage.size} records waiting for redis at ${this.address}); new records are on stdout only until it drains`);
      }
      return Promise.resolve();
    }
    if (this.usage.refused > 0) {
      this.log(`tollgate: usage buffer has room again; ${this.usage.refused} records were not kept for redis`);
      this.usage.refused = 0;
    }
    return shipped ?? Promise.resolve();
  }

  /** Reads the stream from a little before `since` (clock skew) and filters on each record's own ts. */
  async queryUsage(q: UsageQuery): Promise<UsageRecord[]> {
    const out: UsageRecord[] = [];
    let from = String(Math.max(0, q.since - CLOCK_SLACK_MS));
    for (;;) {
      // An entry holds a batch's records, up to 200, each under 'r' (one, in entries from before
      // phase 10d and from RECOVER): a page of 100 entries is at most 20,000 records.
      const page = await this.call(() => this.redis.xrange(`${this.prefix}usage`, from, "+", "COUNT", USAGE_PAGE));
      for (const [, fields] of page) {
        for (let i = 1; i < fields.length; i += 2) {
          const record = JSON.parse(fields[i]!) as UsageRecord;
          const t = Date.parse(record.ts);
          if (t >= q.since && (q.until === undefined || t < q.until)) out.push(record);
        }
      }
      if (page.length < USAGE_PAGE) return out;
      from = `(${page[page.length - 1]![0]}`;
    }
  }

  /**
   * Tests only: what Redis holds for one counter key as of the last operation on it: its settled
   * buckets plus its in-flight fields (the fields of C but its five meta fields), i.e. what a prune reads.
   */
  async debugSize(key: string): Promise<number> {
    const fields = await this.redis.hkeys(`${this.counterKey(key)}:c`);
    return fields.filter((f) => f.startsWith("g") || f.startsWith("l")).length;
  }

  /** Ships what is buffered (waiting up to 5 s for Redis), then disconnects. */
  async close(): Promise<void> {
    clearInterval(this.clockTimer);
    if (this.closed) return;
    this.closed = true;
    await this.ops.drain().catch(() => {});
    const [records, writes] = await Promise.all([this.usage.drain(CLOSE_DRAIN_MS), this.writes.drain(CLOSE_DRAIN_MS)]);
    if (records || writes) {
      this.log(`tollgate: closing with ${records} usage records and ${writes} settlements that redis at ${this.address} never took`);
    }
    if (this.isReady) await this.redis.quit().catch(() => this.redis.disconnect());
    else this.redis.disconnect();
  }

  private hold(id: string, held: Held): void {
    this.take(id);
    if (held.own) {
      this.owned.set(id, held);
      return;
    }
    this.held.set(id, held);
    // Reservations that are never settled here (a policy hold, a request whose settle failed) must not pile up.
    if (this.held.size > MAX_HELD) this.held.delete(this.held.keys().next().value!);
  }

  /** What this process holds of reservation `id`, no longer held: its settle or release is under way. */
  private take(id: string): Held | undefined {
    const held = this.owned.get(id) ?? this.held.get(id);
    if (held) (held.own ? this.owned : this.held).delete(id);
    return held;
  }

  /**
   * A settle or release whose call Redis refused (not one queued while it is away): held again, so
   * the caller's retry settles from it. A marker-only reservation has nothing else to settle from;
   * had the call run, its marker or record is gone and the retry counts nothing twice.
   */
  private keepFor(id: string, held: Held | undefined, err: unknown): never {
    if (held && !this.owned.has(id) && !this.held.has(id)) this.hold(id, held);
    throw err;
  }

  /** `usage`: the write is a turn's usage op, so a full queue drops its records, said as such. */
  private async writeBehind(write: () => Promise<unknown>, usage?: UsageOp): Promise<void> {
    try {
      await write();
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      // Settling is idempotent and a late settle still counts, so trying again later is always
      // right; giving up would let the lease return spend that really happened.
      if (this.writes.push(write)) return;
      const what = usage ? `a batch of ${usage.records.length} usage records (they are only in the stdout log)` : "one more settlement";
      this.log(`tollgate: ${MAX_PENDING_WRITES} writes already wait for redis; ${what} was dropped`);
    }
  }

  /**
   * One BATCH call for a turn's counter ops (see `ops`): keys are numbered as they first appear,
   * each counter is defined once ('k') and each list of counters once ('g') however many ops name
   * them, and a test clock is sent only when it moved ('t').
   */
  private async runBatch(ops: CounterOp[]): Promise<unknown[]> {
    const keys: string[] = [];
    const index = new Map<string, string>();
    const ref = (key: string) => {
      let i = index.get(key);
      if (i === undefined) index.set(key, (i = String(keys.push(key))));
      return i;
    };
    const args = [num(TTL_MARGIN_MS)];
    // By the counter's own key: its Redis key is made once per call, when it is defined, not per op.
    const specs = new Map<string, { max: number; windowMs: number; n: string }[]>();
    let defined = 0;
    const define = (c: Counter): string => {
      let list = specs.get(c.key);
      if (!list) specs.set(c.key, (list = []));
      for (const d of list) if (d.max === c.max && d.windowMs === c.windowMs) return d.n;
      const n = String(++defined);
      const key = this.counterKey(c.key);
      args.push(NEEDS_ESCAPE.test(key) ? "K" : "k", ref(key), num(c.max), num(c.windowMs));
      list.push({ max: c.max, windowMs: c.windowMs, n });
      return n;
    };
    const groups = new Map<string, string>();
    const group = (counters: Counter[]): string => {
      const n = counters.map(define);
      const name = n.join(" ");
      let g = groups.get(name);
      if (g === undefined) {
        groups.set(name, (g = String(groups.size + 1)));
        args.push("g", num(n.length), ...n);
      }
      return g;
    };
    let now = "";
    let lease = "-1";
    let marked = false;
    const leased = (l: string) => {
      if (l !== lease) args.push("l", (lease = l));
    };
    for (const o of ops) {
      if (o.now !== now) args.push("t", (now = o.now));
      switch (o.op) {
        case "r": {
          const g = group(o.counters);
          leased(leaseArg(o.leaseMs));
          if (o.own && !marked) marked = args.push("P", this.markerPrefix) > 0;
          args.push(o.own ? "R" : "r", this.recordKey(o.id), g);
          for (const c of o.counters) args.push(num(c.amount));
          break;
        }
        case "s":
          args.push("s", this.recordKey(o.id), num(o.actual.length), ...o.actual.map(num));
          break;
        case "S": {
          const { held, actual } = o;
          const { ts, counters } = held;
          const g = group(counters);
          leased(held.lease);
          if (held.own && !marked) marked = args.push("P", this.markerPrefix) > 0;
          // The mask says which counters settle at what they reserved (a request counter's 1,
          // nearly always): their actual amounts are not sent.
          let mask = "";
          for (let i = 0; i < counters.length; i++) mask += actual[i] === counters[i]!.amount ? "1" : "0";
          args.push(held.own ? "T" : "S", this.recordKey(o.id), ts, g, mask);
          for (const c of counters) args.push(num(c.amount));
          for (let i = 0; i < counters.length; i++) if (mask[i] === "0") args.push(num(actual[i]!));
          break;
        }
        case "x":
          args.push("x", this.recordKey(o.id));
          break;
        case "u":
          args.push("u", ref(`${this.prefix}usage`), ref(`${this.prefix}ub:${o.batchId}`), num(this.retentionMs), num(o.records.length), ...o.records);
          break;
        case "p":
        case "d":
          args.push(o.op, num(o.counters.length));
          for (const c of o.counters) args.push(ref(this.counterKey(c.key)), num(c.windowMs));
          break;
      }
    }
    const replies = splitReply(ops, (await this.run(lua.BATCH, keys, args)) as unknown[]);
    // An op that failed alone is its own error reply (ops.add rejects it), the others' stand.
    for (let i = 0; i < replies.length; i++) {
      const r = replies[i];
      if (r instanceof Error && TRANSIENT_REPLY.test(r.message)) replies[i] = new StoreUnavailableError(`redis at ${this.address}: ${errorText(r)}`, { cause: r });
    }
    return replies;
  }

  /** Usage batches ride in the turn's BATCH call with the counter ops: one script call fewer per turn. */
  private async shipUsage(records: UsageRecord[], batchId: string): Promise<void> {
    await this.ops.add({ op: "u", now: this.now(), batchId, records: records.map(storedJson) });
  }

  /** EVALSHA, and EVAL once when Redis does not know the script (first use, or after a restart). */
  private async run(script: LuaScript, keys: string[], args: string[]): Promise<unknown> {
    let sha = this.shas.get(script);
    if (!sha) this.shas.set(script, (sha = createHash("sha1").update(script.lua).digest("hex")));
    return this.call(async () => {
      try {
        return await this.send("evalsha", sha, keys, args);
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
        return await this.send("eval", script.lua, keys, args);
      }
    });
  }

  /**
   * One script call written straight to the connection, already encoded (resp.ts). ioredis's own
   * evalsha() goes through auto-pipelining, which builds a Pipeline per tick for what is here
   * already one command per turn (the BATCH); commands still never wait for each other's replies.
   */
  private send(name: "evalsha" | "eval", script: string, keys: string[], args: string[]): Promise<unknown> {
    return this.redis.sendCommand(new EncodedCommand(name, encodeScriptCall(name, script, keys, args))) as Promise<unknown>;
  }

  /**
   * Runs a command, turning "Redis is away" into StoreUnavailableError and letting real errors
   * through. When a command goes unanswered and Redis has answered nothing else meanwhile, the
   * next commands fail at once for a second (or until any reply comes): a Redis that hangs costs a
   * request one wait, not one per command, so a refusal still comes within a second. A Redis that
   * is merely slow keeps answering something, and is never cut off this way.
   */
  private async call<T>(command: () => Promise<T>): Promise<T> {
    if (!this.isReady) throw new StoreUnavailableError(`redis at ${this.address} is not connected (${this.redis.status})`);
    if (this.silent) throw new StoreUnavailableError(`redis at ${this.address} stopped answering`);
    const work = command();
    // Any reply, even one too late for its caller, shows that Redis is answering.
    const answered = () => {
      this.lastReplyAt = performance.now();
      this.silentUntil = 0;
    };
    work.then(answered, (err: unknown) => {
      if (err instanceof Error && err.name === "ReplyError") answered();
    });
    try {
      return await withDeadline(work, COMMAND_TIMEOUT_MS);
    } catch (err) {
      if (err instanceof DeadlineError && performance.now() - this.lastReplyAt >= COMMAND_TIMEOUT_MS) {
        this.silentUntil = performance.now() + SILENT_BACKOFF_MS;
      }
      if (err instanceof Error && err.name === "ReplyError" && !TRANSIENT_REPLY.test(err.message)) throw err;
      throw new StoreUnavailableError(`redis at ${this.address}: ${errorText(err)}`, { cause: err });
    }
  }

  private get silent(): boolean {
    return performance.now() < this.silentUntil;
  }

  private now(): string {
    return this.opts.clock ? num(this.opts.clock()) : "";
  }

  private counterKey(key: string): string {
    return `${this.prefix}c:${key}`;
  }

  private recordKey(id: string): string {
    return `${this.prefix}r:${id}`;
  }

  /** Markers of reservations without a record (BATCH's 'R'): `r2:<ts>:<ttl>` HASHes, field = the record key. */
  private get markerPrefix(): string {
    return `${this.prefix}r2:`;
  }

  private keyKey(hash: string): string {
    return `${this.prefix}k:h:${hash}`;
  }
}

/**
 * A reservation as its reserve sent it, with the script time it was made at (the reply's text) and
 * its lease as sent: from these the script works out the fields the reserve wrote (RedisStore.held).
 */
interface Held {
  ts: string;
  lease: string;
  counters: Counter[];
  /** Reserved with a marker, no record: only this process can settle or release it (RedisStore.reserve). */
  own: boolean;
  /** A checkpoint turned its marker into a record. */
  promoted: boolean;
}

/** Usage records appended by a BATCH call, once per batch id. */
type UsageOp = { op: "u"; now: string; batchId: string; records: string[] };

/** A counter operation waiting for this turn's BATCH call (RedisStore.ops). */
type CounterOp =
  | { op: "r"; now: string; id: string; counters: Counter[]; leaseMs: number; own: boolean }
  | { op: "s"; now: string; id: string; actual: number[] }
  | { op: "S"; now: string; id: string; held: Held; actual: number[] }
  | { op: "x"; now: string; id: string }
  | UsageOp
  | { op: "p" | "d"; now: string; counters: Pick<Counter, "key" | "windowMs">[] };

/**
 * Each op's answer out of a BATCH's flat reply (see BATCH): a reserve's n + 2 entries, or 4 when
 * refused (first entry 0); a peek's one per counter (two with detail); one for the others, and
 * for an op that failed (its error).
 */
function splitReply(ops: CounterOp[], flat: unknown[]): unknown[] {
  const out: unknown[] = [];
  let i = 0;
  for (const o of ops) {
    const first = flat[i];
    const n = first instanceof Error ? 0 : o.op === "r" ? (first === 1 ? o.counters.length + 2 : 4) : o.op === "p" ? o.counters.length : o.op === "d" ? 2 * o.counters.length : 0;
    if (n) out.push(flat.slice(i, (i += n)));
    else out.push(flat[i++]);
  }
  return out;
}

/**
 * Fail fast, never queue: a command on a disconnected client is refused at once (no offline
 * queue), and one in flight when the connection drops is failed rather than resent (a resent
 * reserve could run after its request gave up). A command that gets no answer is failed by
 * withDeadline. Reconnects keep trying every second at most.
 */
function redisOptions(connectTimeoutMs = 5_000): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: Math.min(connectTimeoutMs, 2_000),
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    // Calls made in the same tick (the two suspicion scores, say) share one round trip.
    enableAutoPipelining: true,
  };
}

/**
 * A command whose bytes are ready: ioredis queues it for its reply and writes `bytes` as they are
 * (its own Command would flatten and stringify the arguments again).
 */
class EncodedCommand extends Command {
  constructor(
    name: string,
    private readonly bytes: Buffer,
  ) {
    super(name, [], { replyEncoding: "utf8" });
  }

  override toWritable(): Buffer {
    return this.bytes;
  }
}

class DeadlineError extends Error {
  override readonly name = "DeadlineError";
}

/**
 * Fails `work` after `ms`, but only once the event loop has read its sockets: when the process
 * itself was busy (or descheduled) past the deadline, a reply that already arrived wins, so load
 * on the gateway does not masquerade as a dead Redis. (ioredis's commandTimeout fires from the
 * timers phase, before pending replies are read.)
 */
function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => setImmediate(() => reject(new DeadlineError(`no answer within ${ms} ms`))), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/**
 * Lua reads "nan" as a number, and a NaN total compares false with every max: one bad amount
 * would switch a shared limit off for every process until the key expires. Refuse it here.
 */
function assertAmounts(what: string, finite: number[], max = 0): void {
  if (finite.every(Number.isFinite) && !Number.isNaN(max)) return;
  throw new RangeError(`redis store: counter ${what} got a non-finite amount, window or max`);
}

function storedKey(json: string, revokedAt: string | null): StoredKey {
  const key = JSON.parse(json) as StoredKey;
  if (revokedAt !== null) key.revokedAt = Number(revokedAt);
  return key;
}

/** A lease as the scripts take it: -1 for none. */
function leaseArg(ms: number): string {
  return Number.isFinite(ms) ? num(ms) : "-1";
}

/** A number as script ARGV text; JavaScript's shortest round-trip form, which Lua's tonumber reads back exactly. */
function num(n: number): string {
  return String(n);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
