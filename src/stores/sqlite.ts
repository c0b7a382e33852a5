import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import { storedJson, type UsageRecord } from "../core/usage-record.js";
import { bucketGoneAt, bucketStart, bucketWidth, retryAfter } from "./buckets.js";
import { setTimeout as sleep } from "node:timers/promises";
import { CommitBatch } from "./commit-batch.js";
import { OUTBOX_SCHEMA, SqliteOutbox } from "./outbox-sqlite.js";
import { CounterRows } from "./sqlite-counter-rows.js";
import { LiveSums } from "./sqlite-live-sums.js";
import { PendingSettles } from "./sqlite-pending-settles.js";
import { CounterTotals, TOTALS_SCHEMA } from "./sqlite-totals.js";
import { SAFETY_FACTOR, WalCheckpointer, type CheckpointStats } from "./sqlite-checkpointer.js";
import { StoreUnavailableError, type Checkpoint, type Counter, type CounterDetail, type ReserveResult, type Store, type StoreHealth, type StoredKey, type UsageQuery } from "../core/store.js";

/** 2: counters became buckets + live reservations (counter_entries, the sliding log, is dropped). */
const SCHEMA_VERSION = 2;

/**
 * A score this many half-lives old is worth less than 2^-64 of what it was: deleting it changes a
 * read by less than rounding does, and without it every IP or user ever scored keeps a row forever.
 */
const SCORE_FORGET_HALF_LIVES = 64;

/**
 * Rows past their gone_at are deleted by a reserve at most this often. Every read filters on
 * gone_at itself, so the sweep only keeps the tables small; running it on each reserve cost two
 * deletes per request for nothing.
 */
const SWEEP_EVERY_MS = 1_000;

const SCHEMA = `
  -- Settled amounts, summed per time bucket (see Counter in store.ts): at most ~65 rows per key
  -- in its window, however much traffic it saw. gone_at = the bucket's last ms + window_ms, the
  -- first instant it no longer counts, so one indexed delete prunes every key, including keys
  -- that are never used again (yesterday's budget).
  CREATE TABLE IF NOT EXISTS counter_buckets (
    key TEXT NOT NULL,
    bucket_start INTEGER NOT NULL,
    amount REAL NOT NULL,
    gone_at INTEGER NOT NULL,
    PRIMARY KEY (key, bucket_start)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS counter_buckets_gone_at ON counter_buckets (gone_at);

  -- Reservations not settled yet, one row per counter: the in-flight requests. held = 1 while
  -- settle/release can still find the row (a reused id detaches the older rows). A row whose
  -- lease ran out stops counting but stays until gone_at, so a late settle still counts.
  -- lease_until is NULL for no lease. width is the bucket width the settle will use.
  CREATE TABLE IF NOT EXISTS counter_live (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    id TEXT NOT NULL,
    pos INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    amount REAL NOT NULL,
    lease_until INTEGER,
    window_ms INTEGER NOT NULL,
    width INTEGER NOT NULL,
    gone_at INTEGER NOT NULL,
    held INTEGER NOT NULL DEFAULT 1
  );
  -- Covering for the sum of a key's in-flight rows (LiveSums, sumCounter), window_ms included:
  -- without it each of those rows (as many as the key's requests in flight) cost a second
  -- b-tree search, into the table. Replaces counter_live_key, which lacked window_ms; an older
  -- tollgate opening the file recreates that one, harmlessly (both stay exact).
  CREATE INDEX IF NOT EXISTS counter_live_sum ON counter_live (key, ts, lease_until, amount, window_ms);
  DROP INDEX IF EXISTS counter_live_key;
  -- No index on gone_at: the table holds only reservations not settled yet, so the sweep
  -- (SWEEP_EVERY_MS) scans it, and every reserve and settle writes one b-tree fewer.
  DROP INDEX IF EXISTS counter_live_gone_at;
  CREATE INDEX IF NOT EXISTS counter_live_held ON counter_live (id, pos) WHERE held = 1;

  CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL,
    ts INTEGER NOT NULL,
    forget_at REAL NOT NULL
  );
  CREATE INDEX IF NOT EXISTS scores_forget_at ON scores (forget_at);

  CREATE TABLE IF NOT EXISTS distinct_members (
    key TEXT NOT NULL,
    member TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, member)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS distinct_members_expires_at ON distinct_members (expires_at);

  CREATE TABLE IF NOT EXISTS api_keys (
    hash TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    json TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS api_keys_id ON api_keys (id);

  -- ts is NULL when the record's ts does not parse, so no range query returns it (as in memory).
  CREATE TABLE IF NOT EXISTS usage_records (
    seq INTEGER PRIMARY KEY,
    ts INTEGER,
    record TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS usage_records_ts ON usage_records (ts);

  -- What an open stream had delivered (Store.checkpoint), by the reservation it settles first.
  -- due: that reservation's lease end as of the checkpoint; recover() looks at nothing earlier.
  CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY,
    due INTEGER NOT NULL,
    json TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS checkpoints_due ON checkpoints (due);
`;

export interface SqliteStoreOptions {
  /** Clock in epoch milliseconds; tests inject one to move time. */
  now?: () => number;
  /** Where the store says it became unavailable and came back. Default stderr. */
  log?: (line: string) => void;
  /**
   * WAL checkpoints in a worker thread (sqlite-checkpointer.ts), off the event loop: default on
   * for a file. Off, SQLite checkpoints inside a commit every WAL_AUTOCHECKPOINT pages.
   */
  checkpointer?: boolean;
  /** WAL pages past which the checkpointer makes the WAL start over (the WAL file stays about this size). */
  walRestartPages?: number;
}

/** SQLite's default: the store's own checkpoint, when no worker does them. */
const WAL_AUTOCHECKPOINT = 1_000;
/** 16 MiB of WAL at 4 KiB pages: a restart (one fsync the store's commits may wait for) every ~2,000 requests of the bench. */
const WAL_RESTART_PAGES = 4_000;

/**
 * The driver is synchronous: SQLite's own busy wait would block the event loop, and did for
 * seconds while another process held the write lock. So it does not wait at all (busy_timeout 0):
 * a busy lock is retried after async backoffs, while the loop serves other requests. Other
 * processes committing meanwhile (PRAGMA data_version moves) is contention, and waiting goes on
 * up to BUSY_MAX_MS; a lock under which nothing commits for BUSY_STUCK_MS is a stuck writer, and
 * costs the request a quick 503 instead.
 */
const BUSY_BACKOFF_MS = [1, 2, 5, 10, 20, 40, 60, 80, 100];
const BUSY_STUCK_MS = 500;
const BUSY_MAX_MS = 3_000;
/** Once a lock was found stuck, later calls try once (no wait) until one succeeds or this passes: a request's several store calls cost one wait, not one each. */
const STUCK_FAST_FAIL_MS = 1_000;
/** While opening, the schema and WAL switch race other processes: they may wait longer. */
const OPEN_BUSY_TIMEOUT_MS = 5_000;

/**
 * SQLite result codes that mean the database cannot serve right now (locked, disk full, I/O or
 * permission trouble), as opposed to a bug in a statement.
 */
const UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|FULL|IOERR|READONLY|CANTOPEN|PROTOCOL|NOMEM|CORRUPT|NOTADB|PERM|AUTH)/;
const BUSY = /^SQLITE_(BUSY|LOCKED)/;

interface Leaving {
  goneAt: number;
  amount: number;
}

/** A write queued for this turn's transaction (SqliteStore.ops): a counter operation or a usage row. */
type CounterOp =
  | { op: "reserve"; id: string; counters: Counter[]; leaseMs: number }
  | { op: "settle"; id: string; actual: number[] }
  | { op: "release"; id: string }
  | { op: "checkpoint"; id: string; json: string }
  | { op: "appendUsage"; ts: number | null; json: string }
  | { op: "settleWithRecord"; id: string; actual: number[]; ts: number | null; json: string };

/**
 * The single-host shared store: every process that opens the same file shares the same limits,
 * and keys and usage survive restarts. Same semantics as MemoryStore.
 *
 * better-sqlite3 is synchronous, so each method does its work before returning its promise; the
 * event loop is blocked for the length of one small transaction, never while another process holds
 * the write lock (see BUSY_BACKOFF_MS). A database that cannot serve (locked
 * past the retries, disk full, I/O error) throws StoreUnavailableError and says so once on the log.
 */
export class SqliteStore implements Store {
  readonly kind = "sqlite" as const;

  static open(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
    if (path !== ":memory:" && path !== "" && !path.startsWith("file:")) {
      mkdirSync(dirname(resolve(path)), { recursive: true });
    }
    const db = new Database(path);
    try {
      // Set before anything else: opening a new file races other processes over the WAL switch
      // and the schema, and without a busy timeout the loser fails instead of waiting.
      db.pragma(`busy_timeout = ${OPEN_BUSY_TIMEOUT_MS}`);
      db.pragma("journal_mode = WAL");
      // Durability promise: an acknowledged write survives a crash of the process. In WAL mode
      // every commit is written to the -wal file before it returns, so once it is in the OS page
      // cache a killed process loses nothing; NORMAL only skips the fsync per commit, which
      // matters only when the OS itself crashes or power fails (then the last few commits may be
      // lost, never corrupted). FULL would fsync on every reserve and cap throughput at the
      // disk's flush rate, for a guarantee the store does not promise.
      db.pragma("synchronous = NORMAL");
      migrate(db);
      db.pragma("busy_timeout = 0");
      const log = opts.log ?? ((line: string) => process.stderr.write(line + "\n"));
      const store = new SqliteStore(db, opts.now ?? Date.now, path, log);
      const wal = db.pragma("journal_mode", { simple: true }) === "wal";
      if (wal && opts.checkpointer !== false) store.startCheckpointer(opts.walRestartPages ?? WAL_RESTART_PAGES);
      return store;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  private readonly sweepBuckets;
  private readonly sweepLive;
  private readonly sumCounter;
  private readonly totals: CounterTotals;
  private readonly sumLive;
  private readonly leavingBuckets;
  private readonly leavingLive;
  private readonly detachHeld;
  private readonly insertLive;
  private readonly releaseHeld;
  private readonly rows: CounterRows;
  private readonly live: LiveSums;
  private readonly pending: PendingSettles;
  private readonly countBuckets;
  private readonly countLive;
  private readonly getScore;
  private readonly putScore;
  private readonly sweepScores;
  private readonly putMember;
  private readonly sweepMembers;
  private readonly countMembers;
  private readonly upsertKey;
  private readonly keyByHash;
  private readonly allKeys;
  private readonly keysById;
  private readonly updateKey;
  private readonly insertUsage;
  private readonly usageSince;
  private readonly usageBetween;

  private readonly reserveRows;
  private readonly settleRows;
  private readonly peekTx;
  private readonly peekDetailTx;
  private readonly scoreTx;
  private readonly distinctTx;
  private readonly revokeTx;
  private readonly putCheckpointRow;
  private readonly recoverTx;
  private readonly releaseRows;
  private readonly deleteCheckpoint;
  private readonly anyDue;
  /**
   * Reserves, settles, releases, checkpoints and usage rows of one event-loop turn, run in call
   * order in one transaction: each reserve still answers yes or no on its own, atomically, and
   * sees everything called before it as if each had been committed alone; the turn pays one
   * commit (a request's usage row and the next request's settles no longer pay one each). Reads
   * (peek, recover, queryUsage) first wait for the writes called before them.
   */
  private readonly ops: CommitBatch<CounterOp, ReserveResult | undefined>;
  /**
   * Reservations this store wrote a checkpoint for: settle and release delete only those, instead
   * of a delete per settle. A checkpoint missed here (written by another handle) is harmless:
   * recover() drops a checkpoint whose reservation is settled, without a record.
   */
  private readonly checkpointed = new Set<string>();
  /**
   * Of this transaction's reserve ids, those that held rows when it began (a steady process's
   * reserve checks this and LiveSums instead of reading); an id leaves once detached, settled or
   * released.
   */
  private heldAtStart: Set<string> = NONE_HELD;
  /** Store-clock ms of the last sweep of expired counter rows (SWEEP_EVERY_MS). */
  private sweptAt = -Infinity;
  readonly outbox: SqliteOutbox;

  /** Runs the WAL's checkpoints in a worker thread, while it runs. */
  private checkpointer?: WalCheckpointer;

  /** performance.now() until which a busy lock fails at the first attempt (STUCK_FAST_FAIL_MS). */
  private stuckUntil = 0;
  /** What failed, while the store cannot serve: set by a failed call, cleared by a write that succeeds. */
  private failure?: string;

  private constructor(
    private readonly db: Database.Database,
    private readonly now: () => number,
    private readonly path: string,
    private readonly log: (line: string) => void,
  ) {
    this.outbox = new SqliteOutbox(db, now, (op, write, fn) => this.guard(op, write, fn));
    this.sweepBuckets = db.prepare<[number]>("DELETE FROM counter_buckets WHERE gone_at <= ?");
    this.sweepLive = db.prepare<[number]>("DELETE FROM counter_live WHERE gone_at <= ?");
    // The settled part is the key's running total (NULL when missing or stale: see CounterTotals),
    // the in-flight part a sum over its unsettled rows through an index. One statement for the
    // two: a counter costs one step through the driver, not two.
    this.sumCounter = db
      .prepare<[string, number, number, string, number, number], [settled: number | null, live: number]>(
        `SELECT (SELECT settled FROM counter_totals WHERE key = ? AND since <= ? AND prune_at > ?),
                (SELECT COALESCE(SUM(amount), 0) FROM counter_live
                 WHERE key = ? AND ts > ? - window_ms AND (lease_until IS NULL OR lease_until > ?))`,
      )
      .raw();
    this.totals = new CounterTotals(db);
    // The in-flight part of sumCounter alone: for reports (peekDetail), and for a reserve whose running total was stale.
    this.sumLive = db
      .prepare<[string, number, number], number>(
        `SELECT COALESCE(SUM(amount), 0) FROM counter_live
         WHERE key = ? AND ts > ? - window_ms AND (lease_until IS NULL OR lease_until > ?)`,
      )
      .pluck();
    this.leavingBuckets = db.prepare<[string, number], Leaving>(
      "SELECT gone_at AS goneAt, amount FROM counter_buckets WHERE key = ? AND gone_at > ?",
    );
    this.leavingLive = db.prepare<[string, number, number], { ts: number; amount: number; window_ms: number; width: number }>(
      `SELECT ts, amount, window_ms, width FROM counter_live
       WHERE key = ? AND ts > ? - window_ms AND (lease_until IS NULL OR lease_until > ?)`,
    );
    this.detachHeld = db.prepare<[string]>("UPDATE counter_live SET held = 0 WHERE id = ? AND held = 1");
    this.insertLive = db.prepare<[string, string, number, number, number, number | null, number, number, number]>(
      `INSERT INTO counter_live (key, id, pos, ts, amount, lease_until, window_ms, width, gone_at, held)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
    );
    this.releaseHeld = db.prepare<[string]>("DELETE FROM counter_live WHERE id = ? AND held = 1");
    this.rows = new CounterRows(db);
    this.live = new LiveSums(db);
    this.pending = new PendingSettles(db, this.totals);
    this.countBuckets = db.prepare<[string], number>("SELECT COUNT(*) FROM counter_buckets WHERE key = ?").pluck();
    this.countLive = db.prepare<[string], number>("SELECT COUNT(*) FROM counter_live WHERE key = ?").pluck();

    this.getScore = db.prepare<[string], { value: number; ts: number }>("SELECT value, ts FROM scores WHERE key = ?");
    this.putScore = db.prepare<[string, number, number, number]>(
      `INSERT INTO scores (key, value, ts, forget_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, ts = excluded.ts, forget_at = excluded.forget_at`,
    );
    this.sweepScores = db.prepare<[number]>("DELETE FROM scores WHERE forget_at <= ?");

    this.putMember = db.prepare<[string, string, number]>(
      `INSERT INTO distinct_members (key, member, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (key, member) DO UPDATE SET expires_at = excluded.expires_at`,
    );
    this.sweepMembers = db.prepare<[number]>("DELETE FROM distinct_members WHERE expires_at <= ?");
    this.countMembers = db.prepare<[string], number>("SELECT COUNT(*) FROM distinct_members WHERE key = ?").pluck();

    // ON CONFLICT keeps the rowid, so listKeys keeps first-insertion order like the memory store.
    this.upsertKey = db.prepare<[string, string, string]>(
      `INSERT INTO api_keys (hash, id, json) VALUES (?, ?, ?)
       ON CONFLICT (hash) DO UPDATE SET id = excluded.id, json = excluded.json`,
    );
    this.keyByHash = db.prepare<[string], string>("SELECT json FROM api_keys WHERE hash = ?").pluck();
    this.allKeys = db.prepare<[], string>("SELECT json FROM api_keys ORDER BY rowid").pluck();
    this.keysById = db.prepare<[string], { hash: string; json: string }>("SELECT hash, json FROM api_keys WHERE id = ?");
    this.updateKey = db.prepare<[string, string]>("UPDATE api_keys SET json = ? WHERE hash = ?");

    this.insertUsage = db.prepare<[number | null, string]>("INSERT INTO usage_records (ts, record) VALUES (?, ?)");
    this.usageSince = db
      .prepare<[number], string>("SELECT record FROM usage_records WHERE ts >= ? ORDER BY seq")
      .pluck();
    this.usageBetween = db
      .prepare<[number, number], string>("SELECT record FROM usage_records WHERE ts >= ? AND ts < ? ORDER BY seq")
      .pluck();

    this.reserveRows = (id: string, counters: Counter[], leaseMs: number, now: number): ReserveResult => {
      if (now - this.sweptAt >= SWEEP_EVERY_MS || now < this.sweptAt) {
        this.sweepBuckets.run(now);
        if (this.sweepLive.run(now).changes > 0) this.live.swept(now);
        this.sweptAt = now;
      }
      // A steady process (nothing else committed since its last transaction) knows what its keys
      // hold and whether the id holds rows (heldAtStart: read once for the turn's reserves); any
      // other reads everything from the file in one statement.
      const steady = this.live.steady;
      const sums = steady ? undefined : this.rows.sums(id, counters.map((c) => c.key), now, true);
      const totals: number[] = [];
      for (let i = 0; i < counters.length; i++) {
        const c = counters[i]!;
        // Settled amounts of this turn not written yet (PendingSettles) count as if they were.
        const used =
          (sums === undefined
            ? this.totals.settled(c.key, now) + (this.live.get(c.key, now) ?? this.live.load(c.key, now))
            : (sums[i] ?? this.totals.recompute(c.key, now, true) + this.sumLive.get(c.key, now, now)!)) + this.pending.pending(c.key);
        totals.push(used + c.amount);
        if (used + c.amount > c.max) {
          // leaving() reads the buckets themselves.
          this.pending.flush(now);
          const retry = c.amount <= c.max ? retryAfter(this.leaving(c.key, bucketWidth(c.windowMs, c.max), now), used + c.amount - c.max, now) : undefined;
          return { ok: false, index: i, used, retryAfterMs: retry };
        }
      }
      // A reused id takes over the name; the older rows keep counting until their lease ends,
      // as they would in memory, but settle/release now address only the new ones.
      if (sums === undefined ? this.live.held(id) !== undefined || this.heldAtStart.has(id) : sums[counters.length] !== null) {
        this.detachHeld.run(id);
        this.live.detached(id);
        this.heldAtStart.delete(id);
      }
      const leaseUntil = now + leaseMs;
      const lease = Number.isFinite(leaseUntil) ? leaseUntil : null;
      for (let i = 0; i < counters.length; i++) {
        const c = counters[i]!;
        const width = bucketWidth(c.windowMs, c.max);
        const start = bucketStart(now, width);
        const goneAt = start + width - 1 + c.windowMs;
        this.insertLive.run(c.key, id, i, now, c.amount, lease, c.windowMs, width, goneAt);
        this.live.inserted(id, c.key, i, c.amount, now, lease, c.windowMs, start, goneAt);
      }
      return { ok: true, totals };
    };

    this.deleteCheckpoint = db.prepare<[string]>("DELETE FROM checkpoints WHERE id = ?");
    // The amount goes into the bucket of its reservation time, even when the lease ran out; the
    // rows move into their buckets inside SQLite (CounterRows.settle), then go.
    // A reservation this connection made (in this data_version) settles from what LiveSums kept
    // of its rows: their amounts join the turn's PendingSettles, written once per bucket at commit.
    this.settleRows = (id: string, actual: number[], now: number): void => {
      this.dropCheckpoint(id);
      this.heldAtStart.delete(id);
      const rows = this.live.held(id);
      if (rows !== undefined && PendingSettles.fits(rows, actual)) {
        const deleted = this.releaseHeld.run(id).changes;
        // Cannot happen while LiveSums sees every write to the file; if it did, nothing of the turn may stand.
        if (deleted !== rows.length) throw new Error(`settle ${id}: deleted ${deleted} held rows, expected ${rows.length}`);
        this.pending.add(rows, actual, now);
        this.live.deleted(id, deleted, now);
        return;
      }
      this.rows.settle(id, actual, now);
      this.totals.clear();
      this.live.deleted(id, this.releaseHeld.run(id).changes, now);
    };

    // One read transaction so the totals come from the same snapshot.
    this.peekTx = db.transaction((counters: Pick<Counter, "key" | "windowMs">[], now: number) => counters.map((c) => this.total(c.key, now)));
    this.peekDetailTx = db.transaction((counters: Pick<Counter, "key" | "windowMs">[], now: number) =>
      counters.map((c): CounterDetail => ({ total: this.total(c.key, now), reserved: this.sumLive.get(c.key, now, now)! })),
    );

    this.scoreTx = db.transaction((key: string, delta: number, halfLifeMs: number, now: number) => {
      this.sweepScores.run(now);
      const s = this.getScore.get(key);
      const value = (s ? s.value * Math.pow(0.5, (now - s.ts) / halfLifeMs) : 0) + delta;
      if (delta !== 0 || s) this.putScore.run(key, value, now, now + SCORE_FORGET_HALF_LIVES * halfLifeMs);
      return value;
    });

    this.distinctTx = db.transaction((key: string, member: string, ttlMs: number, now: number) => {
      this.putMember.run(key, member, now + ttlMs);
      this.sweepMembers.run(now);
      return this.countMembers.get(key)!;
    });

    this.releaseRows = (id: string, now: number): void => {
      this.dropCheckpoint(id);
      this.heldAtStart.delete(id);
      this.live.deleted(id, this.releaseHeld.run(id).changes, now);
    };

    // due is the reservation's lease end; a reservation already settled (or without a lease,
    // which never lapses) gets no checkpoint.
    const leaseOf = db.prepare<[string], { n: number; until: number | null }>(
      "SELECT COUNT(*) AS n, MAX(lease_until) AS until FROM counter_live WHERE id = ? AND held = 1",
    );
    const putCheckpoint = db.prepare<[string, number, string]>("INSERT OR REPLACE INTO checkpoints (id, due, json) VALUES (?, ?, ?)");
    this.putCheckpointRow = (id: string, json: string): void => {
      const lease = leaseOf.get(id)!;
      if (lease.n > 0 && lease.until !== null) {
        putCheckpoint.run(id, lease.until, json);
        this.checkpointed.add(id);
      }
    };
    this.anyDue = db.prepare<[number], number>("SELECT 1 FROM checkpoints WHERE due <= ? LIMIT 1").pluck();
    const dueCheckpoints = db.prepare<[number], { id: string; json: string }>("SELECT id, json FROM checkpoints WHERE due <= ? ORDER BY due LIMIT 100");
    const postpone = db.prepare<[number, string]>("UPDATE checkpoints SET due = ? WHERE id = ?");
    // One transaction: whichever process runs it first settles and writes the record, exactly once.
    this.recoverTx = db.transaction((now: number) => {
      this.begin();
      const out: UsageRecord[] = [];
      for (const row of dueCheckpoints.all(now)) {
        const lease = leaseOf.get(row.id)!;
        if (lease.n > 0 && (lease.until === null || lease.until > now)) {
          postpone.run(lease.until ?? Number.MAX_SAFE_INTEGER, row.id);
          continue;
        }
        this.deleteCheckpoint.run(row.id);
        this.checkpointed.delete(row.id);
        if (lease.n === 0) continue;
        const cp = JSON.parse(row.json) as Checkpoint;
        for (const settle of cp.settles) this.settleRows(settle.id, settle.actual, now);
        this.insertUsage.run(usageTs(cp.record), JSON.stringify(cp.record));
        out.push(cp.record);
      }
      this.pending.flush(now);
      return out;
    });

    const opsTx = db.transaction((ops: CounterOp[], now: number) => {
      this.begin(ops);
      const results = ops.map((op) => {
        switch (op.op) {
          case "reserve":
            return this.reserveRows(op.id, op.counters, op.leaseMs, now);
          case "settle":
            return void this.settleRows(op.id, op.actual, now);
          case "release":
            return void this.releaseRows(op.id, now);
          case "checkpoint":
            return void this.putCheckpointRow(op.id, op.json);
          case "appendUsage":
            return void this.insertUsage.run(op.ts, op.json);
          case "settleWithRecord":
            this.settleRows(op.id, op.actual, now);
            return void this.insertUsage.run(op.ts, op.json);
        }
      });
      this.pending.flush(now);
      return results;
    });
    // SPEC 7.4: an acknowledged record or settle survives a crash, so a caller hears back only once
    // the batch holding it is committed; a batch that cannot be written fails every caller in it.
    const commitOps = (ops: CounterOp[]) => this.guard(ops.length === 1 ? ops[0]!.op : "counters", true, () => this.keepingSums(() => opsTx.immediate(ops, this.now())));
    // While the checkpointer restarts the WAL, the next batch waits (asynchronously) rather than
    // commit in between and leave the WAL to grow.
    this.ops = new CommitBatch((ops) => {
      const quiet = this.checkpointer?.quiet();
      return quiet ? quiet.then(() => commitOps(ops)) : commitOps(ops);
    });

    this.revokeTx = db.transaction((id: string, now: number) => {
      const rows = this.keysById.all(id);
      for (const row of rows) {
        const key = JSON.parse(row.json) as StoredKey;
        if (key.revokedAt !== undefined) continue;
        key.revokedAt = now;
        this.updateKey.run(JSON.stringify(key), row.hash);
      }
      return rows.length > 0;
    });
  }

  // Every transaction that writes after reading is IMMEDIATE: it takes the write lock before the
  // read, so another process cannot commit between our check and our write, and a busy lock is
  // waited for (busy_timeout) rather than failing with SQLITE_BUSY on the upgrade.

  /** Decided in this turn's transaction, in call order with the other counter operations. */
  reserve(id: string, counters: Counter[], leaseMs: number): Promise<ReserveResult> {
    return this.ops.add({ op: "reserve", id, counters, leaseMs }) as Promise<ReserveResult>;
  }

  /** Written with the rest of this turn's counter operations, in one transaction; resolves once it committed. */
  async settle(id: string, actual: number[]): Promise<void> {
    await this.ops.add({ op: "settle", id, actual });
  }

  /** One op of this turn's transaction: the settle and the record are committed together, or neither is. */
  async settleWithRecord(id: string, actual: number[], record: UsageRecord): Promise<void> {
    await this.ops.add({ op: "settleWithRecord", id, actual, ts: usageTs(record), json: storedJson(record) });
  }

  async release(id: string): Promise<void> {
    await this.ops.add({ op: "release", id });
  }

  async checkpoint(cp: Checkpoint): Promise<void> {
    const id = cp.settles[0]?.id;
    if (id === undefined) return;
    await this.ops.add({ op: "checkpoint", id, json: JSON.stringify(cp) });
  }

  /** Takes the write lock only when a checkpoint is due: most seconds, one indexed read. */
  async recover(): Promise<UsageRecord[]> {
    if (!this.ops.idle) await this.ops.drain();
    const now = this.now();
    if (!(await this.guard("recover", false, () => this.anyDue.get(now)))) return [];
    return this.guard("recover", true, () => this.keepingSums(() => this.recoverTx.immediate(now)));
  }

  async peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    if (!this.ops.idle) await this.ops.drain();
    return this.guard("peek", false, () => this.peekTx.deferred(counters, this.now()));
  }

  async peekDetail(counters: Pick<Counter, "key" | "windowMs">[]): Promise<CounterDetail[]> {
    if (!this.ops.idle) await this.ops.drain();
    return this.guard("peek", false, () => this.peekDetailTx.deferred(counters, this.now()));
  }

  async score(key: string, delta: number, halfLifeMs: number): Promise<number> {
    return this.guard("score", true, () => this.scoreTx.immediate(key, delta, halfLifeMs, this.now()));
  }

  async distinct(key: string, member: string, ttlMs: number): Promise<number> {
    return this.guard("distinct", true, () => this.distinctTx.immediate(key, member, ttlMs, this.now()));
  }

  async putKey(key: StoredKey): Promise<void> {
    await this.guard("putKey", true, () => this.upsertKey.run(key.hash, key.id, JSON.stringify(key)));
  }

  async findKey(hash: string): Promise<StoredKey | undefined> {
    const json = await this.guard("findKey", false, () => this.keyByHash.get(hash));
    return json === undefined ? undefined : (JSON.parse(json) as StoredKey);
  }

  async listKeys(): Promise<StoredKey[]> {
    return (await this.guard("listKeys", false, () => this.allKeys.all())).map((json) => JSON.parse(json) as StoredKey);
  }

  /** Revokes every key filed under `id`: ids are meant to be unique, and when they are not, revoking only one would leave a live secret behind. */
  async revokeKey(id: string): Promise<boolean> {
    return this.guard("revokeKey", true, () => this.revokeTx.immediate(id, this.now()));
  }

  /** Serialised now (the caller may reuse the object); written with the rest of this turn's rows. */
  async appendUsage(record: UsageRecord): Promise<void> {
    await this.ops.add({ op: "appendUsage", ts: usageTs(record), json: storedJson(record) });
  }

  async queryUsage(q: UsageQuery): Promise<UsageRecord[]> {
    // Read your own writes: rows appended before this call are in the answer, as in memory.
    if (!this.ops.idle) await this.ops.drain();
    const rows = await this.guard("queryUsage", false, () => (q.until === undefined ? this.usageSince.all(q.since) : this.usageBetween.all(q.since, q.until)));
    return rows.map((json) => JSON.parse(json) as UsageRecord);
  }

  async close(): Promise<void> {
    // Rows already accepted are written (or their callers told they were not) before the file closes.
    if (this.db.open) await this.ops.drain();
    const checkpointer = this.checkpointer;
    this.checkpointer = undefined;
    await checkpointer?.close();
    if (this.db.open) this.db.close();
  }

  /** Tests only: the checkpointer's counts, or undefined when none runs. */
  debugCheckpoints(): Promise<CheckpointStats> | undefined {
    return this.checkpointer?.stats();
  }

  private startCheckpointer(restartPages: number): void {
    try {
      this.checkpointer = this.newCheckpointer(restartPages);
    } catch (err) {
      // No worker threads here (a sandbox, a bundle without the driver's path): SQLite keeps
      // checkpointing in the commits, as it did before the worker; the store works the same.
      this.log(`tollgate: store sqlite:${this.path}: no WAL checkpointer thread (${(err as Error).message}); checkpoints run in the commits`);
      return;
    }
    // Only a bound now, for a worker that falls behind: it restarts the WAL long before this.
    this.db.pragma(`wal_autocheckpoint = ${SAFETY_FACTOR * restartPages}`);
  }

  private newCheckpointer(restartPages: number): WalCheckpointer {
    return new WalCheckpointer(this.path, {
      restartPages,
      onExit: (err) => {
        // Closed by close(), which took it away first; otherwise the worker stopped by itself.
        if (this.checkpointer === undefined || !this.db.open) return;
        this.checkpointer = undefined;
        // Without the worker, SQLite checkpoints in the commits again: the WAL stays bounded.
        this.db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT}`);
        if (err) this.log(`tollgate: store sqlite:${this.path}: the WAL checkpointer stopped (${err.message}); checkpoints run in the commits again`);
      },
    });
  }

  /** A real write: a stuck lock and a full disk both show. */
  async health(): Promise<StoreHealth> {
    try {
      await this.guard("health", true, () => this.distinctTx.immediate("tg:probe", "probe", 1_000, this.now()));
      return { ok: true, detail: `sqlite:${this.path}` };
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      return { ok: false, detail: this.failure ?? err.message };
    }
  }

  /**
   * Runs one store operation. A busy lock is retried after async backoffs (the loop is free
   * meanwhile); whatever still keeps the database from serving becomes StoreUnavailableError.
   * Any other error is a bug and passes through unchanged.
   */
  private async guard<T>(op: string, write: boolean, fn: () => T): Promise<T> {
    const start = performance.now();
    let progressAt = start;
    let version: unknown;
    for (let attempt = 0; ; attempt++) {
      try {
        const checkpointer = write ? this.checkpointer : undefined;
        const value = checkpointer ? checkpointer.writing(fn) : fn();
        if (write) {
          this.recovered();
          this.checkpointer?.committed();
        }
        return value;
      } catch (err) {
        const code = sqliteCode(err);
        if (code === undefined || !UNAVAILABLE.test(code)) throw err;
        if (BUSY.test(code)) {
          const now = performance.now();
          const seen = this.dataVersion();
          if (seen !== version) [version, progressAt] = [seen, now];
          if (now >= this.stuckUntil && now - progressAt < BUSY_STUCK_MS && now - start < BUSY_MAX_MS) {
            const backoff = BUSY_BACKOFF_MS[Math.min(attempt, BUSY_BACKOFF_MS.length - 1)]!;
            // Jitter: processes that collided once should not collide again in step.
            await sleep(backoff * (0.5 + Math.random()));
            continue;
          }
          if (now - progressAt >= BUSY_STUCK_MS) this.stuckUntil = now + STUCK_FAST_FAIL_MS;
        }
        throw new StoreUnavailableError(`${op}: ${this.failing(code, err)}`, { cause: err });
      }
    }
  }

  /** Changes whenever another connection commits: what tells contention from a stuck lock. */
  private dataVersion(): unknown {
    try {
      return this.db.pragma("data_version", { simple: true });
    } catch {
      return undefined;
    }
  }

  /** Notes what failed; the first failure after a healthy spell goes to the log. */
  private failing(code: string, err: unknown): string {
    const detail = `sqlite:${this.path} ${BUSY.test(code) ? "is locked by another connection" : "cannot write"} (${code}: ${(err as Error).message})`;
    if (this.failure === undefined) {
      this.log(`tollgate: store ${detail}; requests that need it are refused with 503 store_unavailable until it recovers`);
    }
    this.failure = detail;
    return detail;
  }

  private recovered(): void {
    this.stuckUntil = 0;
    if (this.failure === undefined) return;
    this.failure = undefined;
    this.log(`tollgate: store sqlite:${this.path} is back`);
  }

  /** At the start of every write transaction of counter operations. */
  private begin(ops?: CounterOp[]): void {
    this.live.begin();
    this.pending.clear();
    if (!this.live.steady) this.totals.clear();
    const reserving: string[] = [];
    if (this.live.steady && ops !== undefined) for (const op of ops) if (op.op === "reserve") reserving.push(op.id);
    this.heldAtStart = reserving.length > 0 ? this.rows.heldAmong(reserving) : NONE_HELD;
  }

  /** A write transaction that failed was rolled back; what LiveSums and PendingSettles took from it was not. */
  private keepingSums<T>(tx: () => T): T {
    try {
      return tx();
    } catch (err) {
      this.live.drop();
      this.pending.clear();
      this.totals.clear();
      throw err;
    }
  }

  private dropCheckpoint(id: string): void {
    if (this.checkpointed.delete(id)) this.deleteCheckpoint.run(id);
  }

  /** Tests only: rows a reserve reads for this counter (buckets plus unsettled reservations, pruned first). */
  debugSize(key: string): number {
    const now = this.now();
    this.sweepBuckets.run(now);
    this.sweepLive.run(now);
    return this.countBuckets.get(key)! + this.countLive.get(key)!;
  }

  /** Settled plus in-flight, for reads (a reserve reads through CounterRows.sums and LiveSums, and keeps what it recomputes). */
  private total(key: string, now: number): number {
    const [settled, live] = this.sumCounter.get(key, now, now, key, now, now)!;
    return (settled ?? this.totals.recompute(key, now, false)) + live;
  }

  /** What counts now and when it stops; an unsettled amount leaves when it would once settled. */
  private leaving(key: string, width: number, now: number): Leaving[] {
    const out = this.leavingBuckets.all(key, now);
    for (const r of this.leavingLive.all(key, now, now)) {
      out.push({ goneAt: bucketGoneAt(r.ts, Math.max(width, r.width), r.window_ms), amount: r.amount });
    }
    return out;
  }
}

const NONE_HELD: Set<string> = new Set();

function usageTs(record: UsageRecord): number | null {
  const ts = Date.parse(record.ts);
  return Number.isNaN(ts) ? null : ts;
}

function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof Database.SqliteError && typeof code === "string" ? code : undefined;
}

function migrate(db: Database.Database): void {
  db.transaction(() => {
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new Error(`store schema version ${version} is newer than this tollgate understands (${SCHEMA_VERSION})`);
    }
    // Version 1 kept a sliding log; nothing was deployed on it, so its rows are simply dropped.
    if (version < 2) db.exec("DROP TABLE IF EXISTS counter_entries");
    db.exec(SCHEMA + TOTALS_SCHEMA + OUTBOX_SCHEMA);
    if (version < SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}
