import type Database from "better-sqlite3";

/**
 * A running total of each counter's settled buckets, so a reserve reads one row instead of summing
 * a 1-minute counter's ~65 bucket rows (as the memory store keeps its sums, phase 6c).
 *
 * A row is exact while since <= now < prune_at: it holds the sum of the key's buckets that had not
 * left at `since`, and prune_at is the earliest gone_at among them, so none of them can have left
 * before it. Once that instant passes (or the clock went back before `since`) the row is stale and
 * the next reserve sums the buckets again.
 *
 * Triggers keep the rows in step with counter_buckets inside whatever transaction writes a bucket,
 * so every process on the file, an older tollgate without this code included, keeps them exact
 * (a file written before them simply has no rows yet: the first reserve of each key sums it):
 * - a new bucket adds its amount and may bring prune_at forward;
 * - a bucket added to adds the difference; one that had left (not swept yet) and starts over adds
 *   its whole new amount: it had left before the row was summed (its gone_at < prune_at) or the
 *   row is stale anyway (prune_at only ever moves earlier, so a stale row stays stale);
 * - sweeping a left bucket deletes a row that is stale by then (prune_at <= that bucket's gone_at
 *   <= now), so keys that are never used again leave no row behind.
 */
export const TOTALS_SCHEMA = `
  CREATE TABLE IF NOT EXISTS counter_totals (
    key TEXT PRIMARY KEY,
    settled REAL NOT NULL,
    since INTEGER NOT NULL,
    prune_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TRIGGER IF NOT EXISTS counter_totals_insert AFTER INSERT ON counter_buckets BEGIN
    UPDATE counter_totals SET settled = settled + NEW.amount, prune_at = MIN(prune_at, NEW.gone_at)
    WHERE key = NEW.key;
  END;
  CREATE TRIGGER IF NOT EXISTS counter_totals_update AFTER UPDATE ON counter_buckets BEGIN
    UPDATE counter_totals
    SET settled = settled + NEW.amount - CASE WHEN OLD.gone_at < prune_at THEN 0 ELSE OLD.amount END,
        prune_at = MIN(prune_at, NEW.gone_at)
    WHERE key = NEW.key;
  END;
  CREATE TRIGGER IF NOT EXISTS counter_totals_delete AFTER DELETE ON counter_buckets BEGIN
    DELETE FROM counter_totals WHERE key = OLD.key AND prune_at <= OLD.gone_at;
  END;
`;

/** [settled, earliest gone_at, bucket count] of a key's buckets that still count. */
type Summed = [settled: number, pruneAt: number | null, n: number];

/** A key's settled sum as this process knows it: exact while since <= now < pruneAt (as a counter_totals row). */
interface Kept {
  settled: number;
  since: number;
  pruneAt: number;
}

/** Later than any clock: the prune_at of a key without buckets. */
const NEVER = 8.64e15;
/** Settled sums kept at most; past it they are read from the file again. */
const MAX_KEPT = 100_000;

export class CounterTotals {
  private readonly sum;
  private readonly put;
  private readonly row;
  /**
   * Settled sums kept in the process, trusted under the same rule as LiveSums (the caller clears
   * them whenever another connection committed, or a transaction failed): within one
   * data_version only this connection writes buckets, and each bucket it writes through
   * PendingSettles is applied here (`added`); any other write of buckets clears them. So a
   * reserve of a steady process reads no running total from the file. Only whole sums are kept:
   * integers add up the same in any order, as they do in the triggers.
   */
  private readonly kept = new Map<string, Kept>();

  constructor(db: Database.Database) {
    this.sum = db
      .prepare<[string, number], Summed>(
        "SELECT COALESCE(SUM(amount), 0), MIN(gone_at), COUNT(*) FROM counter_buckets WHERE key = ? AND gone_at > ?",
      )
      .raw();
    this.put = db.prepare<[string, number, number, number]>(
      `INSERT INTO counter_totals (key, settled, since, prune_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET settled = excluded.settled, since = excluded.since, prune_at = excluded.prune_at`,
    );
    this.row = db.prepare<[string], [settled: number, since: number, pruneAt: number]>("SELECT settled, since, prune_at FROM counter_totals WHERE key = ?").raw();
  }

  /**
   * The settled sum from the buckets, for a key whose total row was missing or stale. In a write
   * transaction (`keep`) the row is written, so the next reserves read it; a key with no bucket
   * gets none (its sum is an empty index range, and the row would never go).
   */
  recompute(key: string, now: number, keep: boolean): number {
    const [settled, pruneAt, n] = this.sum.get(key, now)!;
    if (keep && n > 0) this.put.run(key, settled, now, pruneAt!);
    if (keep) this.keep(key, settled, now, pruneAt ?? NEVER);
    return settled;
  }

  /** The key's settled sum in a write transaction of a steady process: kept, else its running total, else summed. */
  settled(key: string, now: number): number {
    const k = this.kept.get(key);
    if (k !== undefined && k.since <= now && now < k.pruneAt) return k.settled;
    const row = this.row.get(key);
    if (row === undefined || !(row[1] <= now && now < row[2])) return this.recompute(key, now, true);
    this.keep(key, row[0], row[1], row[2]);
    return row[0];
  }

  /** This connection wrote `amount` into a bucket of the key that counts until `goneAt` (> now). */
  added(key: string, amount: number, goneAt: number): void {
    const k = this.kept.get(key);
    if (k === undefined) return;
    k.settled += amount;
    k.pruneAt = Math.min(k.pruneAt, goneAt);
    if (!Number.isSafeInteger(k.settled)) this.kept.delete(key);
  }

  /** The key's buckets changed in a way not applied here. */
  forget(key: string): void {
    this.kept.delete(key);
  }

  /** Buckets changed that are not known here, or another connection may have written. */
  clear(): void {
    this.kept.clear();
  }

  private keep(key: string, settled: number, since: number, pruneAt: number): void {
    // Bounded: a lone process (no other commit ever clears them) would keep every key of every period.
    if (this.kept.size >= MAX_KEPT) this.kept.clear();
    if (Number.isSafeInteger(settled)) this.kept.set(key, { settled, since, pruneAt });
    else this.kept.delete(key);
  }
}
