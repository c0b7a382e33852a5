import type Database from "better-sqlite3";
import type { SettledRow } from "./sqlite-pending-settles.js";

/**
 * Each counter's sum of reservations in flight (its counter_live rows that still count), kept in
 * the process, so a reserve does not step through one index entry per request in flight of every
 * key it reserves (at 32 in flight, ~32 rows for each of the bench's four keys; at 128, ~128).
 *
 * Trusted only while no other connection has committed: PRAGMA data_version, read once in each
 * write transaction (where nothing else can commit until ours ends), moves when another one did,
 * and then everything kept here is dropped and summed again from the table as needed. Other
 * processes on the file, a second handle in this one and the checkpointer's WAL restarts (a no-op
 * write, once per cycle) all move it. Within one version only this connection writes, so its own
 * inserts and deletes are the only changes, and each is applied here in the same transaction:
 *
 * - a reserve adds each row's amount to its key's sum;
 * - a settle or release deletes an id's held rows: when this connection inserted them in this
 *   version (and the delete removed exactly those), their amounts leave the sums; any other delete
 *   that removed rows drops every sum (which keys it touched is not known here);
 * - a row stops counting on its own at min(lease end, ts + window): a key's sum is trusted only
 *   until the earliest such instant among the rows it holds (`until`), and not before the instant it
 *   was summed at (a clock that went back could make a stopped row count again);
 * - a transaction that fails drops everything (its writes were rolled back, the sums were not).
 *
 * Amounts that are not whole numbers are never kept: the table sums them in another order, and
 * the rounding could differ at the limit.
 */
export class LiveSums {
  private version: unknown;
  private readonly keys = new Map<string, KeySum>();
  /** Held rows this connection inserted in this version, by reservation id: what a settle deletes. */
  private readonly ids = new Map<string, HeldRow[]>();
  private readonly dataVersion;
  private readonly sumOf;

  constructor(db: Database.Database) {
    this.dataVersion = db.prepare<[], number>("PRAGMA data_version").pluck();
    this.sumOf = db.prepare<[string, number, number], [sum: number, until: number | null, fractions: number]>(LIVE_SUM_SQL).raw();
  }

  /**
   * False in a transaction that found another connection's commit since this one's last: where
   * processes share the file and commit all the time, summing each key again on its own costs a
   * statement per key, so a reserve then sums from the table in one statement, as without this.
   */
  steady = false;

  /** At the start of every write transaction that reserves, settles or releases. */
  begin(): void {
    const version = this.dataVersion.get();
    this.steady = version === this.version;
    // Bounded: a lone process (no other commit ever drops them) would keep every key of every period.
    if (!this.steady || this.ids.size > MAX_IDS || this.keys.size > MAX_IDS) {
      this.version = version;
      this.drop();
    }
  }

  /** The key's sum in flight now, if kept and still exact. */
  get(key: string, now: number): number | undefined {
    const k = this.keys.get(key);
    return k !== undefined && k.at <= now && now < k.until ? k.sum : undefined;
  }

  /** The key's sum in flight now, from the table; kept for the next reserves when it is exact to keep. */
  load(key: string, now: number): number {
    const [sum, until, fractions] = this.sumOf.get(key, now, now)!;
    if (fractions === 0) this.keys.set(key, { sum, at: now, until: until ?? NEVER });
    else this.keys.delete(key);
    return sum;
  }

  /**
   * A row this connection inserted (held), reserved at `now`: the counter's key, its position in
   * the reservation, its amount, and the bucket a settle puts it in (start, gone_at).
   */
  inserted(id: string, key: string, pos: number, amount: number, now: number, leaseUntil: number | null, windowMs: number, start: number, goneAt: number): void {
    const stops = Math.min(leaseUntil ?? NEVER, now + windowMs);
    const k = this.keys.get(key);
    if (k !== undefined) {
      if (!Number.isInteger(amount)) this.keys.delete(key);
      else if (now < stops) [k.sum, k.until] = [k.sum + amount, Math.min(k.until, stops)];
    }
    const row = { key, pos, amount, stops, start, goneAt };
    const rows = this.ids.get(id);
    if (rows === undefined) this.ids.set(id, [row]);
    else rows.push(row);
  }

  /**
   * The id's held rows, when this connection inserted them in this version: exactly the rows a
   * delete of the id's held rows removes now (nothing else wrote to the file since, and every
   * delete and detach of ours is applied here).
   */
  held(id: string): readonly SettledRow[] | undefined {
    return this.ids.get(id);
  }

  /** A sweep at `now` deleted the rows whose bucket had left: an id that held one no longer holds what is kept here. */
  swept(now: number): void {
    for (const [id, rows] of this.ids) {
      if (rows.some((row) => row.goneAt <= now)) this.ids.delete(id);
    }
  }

  /** The id's held rows were detached (held = 0): they still count, but no settle of the id deletes them. */
  detached(id: string): void {
    this.ids.delete(id);
  }

  /** A settle or release at `now` deleted `deleted` held rows of the id. */
  deleted(id: string, deleted: number, now: number): void {
    const rows = this.ids.get(id);
    this.ids.delete(id);
    if (deleted === 0) return;
    if (rows === undefined || rows.length !== deleted) return this.keys.clear();
    for (const row of rows) {
      // A row that stopped counting is in no sum trusted now: one that held it is past its
      // `until`, one summed since never held it.
      if (now >= row.stops) continue;
      const k = this.keys.get(row.key);
      if (k === undefined) continue;
      if (Number.isInteger(row.amount)) k.sum -= row.amount;
      else this.keys.delete(row.key);
    }
  }

  /** Everything kept is unknown again: a failed transaction, another connection's commit. */
  drop(): void {
    this.keys.clear();
    this.ids.clear();
  }
}

interface KeySum {
  sum: number;
  /** The store-clock instant it was summed at. */
  at: number;
  /** The earliest instant a row in it stops counting (its lease ends or it leaves its window). */
  until: number;
}

interface HeldRow extends SettledRow {
  /** When it stops counting by itself: min(lease end, ts + window). */
  stops: number;
}

/** Later than any clock: a row without a lease (or a sum without rows) never stops counting by itself. */
const NEVER = 8.64e15;

/**
 * A key's rows that count now: their sum, the earliest instant one of them stops counting, and
 * how many amounts are not whole numbers. Parameters: key, now, now. Covered by counter_live_sum.
 */
export const LIVE_SUM_SQL = `SELECT COALESCE(SUM(amount), 0), MIN(MIN(COALESCE(lease_until, ${NEVER}), ts + window_ms)),
    COALESCE(SUM(amount != CAST(amount AS INTEGER)), 0)
  FROM counter_live WHERE key = ? AND ts > ? - window_ms AND (lease_until IS NULL OR lease_until > ?)`;

/** Reservations never settled (a caller that lost them) are forgotten past this many. */
const MAX_IDS = 100_000;
