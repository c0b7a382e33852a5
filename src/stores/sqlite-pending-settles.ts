import type Database from "better-sqlite3";
import type { CounterTotals } from "./sqlite-totals.js";

/** A held row as LiveSums remembers it: what a settle needs to put its amount into its bucket. */
export interface SettledRow {
  key: string;
  pos: number;
  /** What was reserved: the amount settled when `actual` has none for this position. */
  amount: number;
  /** The bucket the reservation's time falls in, and the first instant it no longer counts. */
  start: number;
  goneAt: number;
}

interface Bucket {
  start: number;
  goneAt: number;
  amount: number;
}

interface KeyPending {
  /** The key's amounts waiting here, all in buckets that still count at the turn's `now`. */
  total: number;
  buckets: Bucket[];
}

/**
 * The settled amounts of one write transaction, summed per bucket in JS and written once per
 * bucket before it commits, instead of one bucket upsert per settle (and, through the
 * counter_totals triggers, one running-total write per settled counter). At the gateway's ~10
 * requests a turn on the bench's four keys that is 4 upserts a turn instead of ~10 statements
 * writing 40 buckets; the triggers stay (an older tollgate on the file relies on them) and fire
 * once per bucket written.
 *
 * Exact as long as the amounts are whole numbers (every counter sums them, and integers below
 * 2^53 add up the same in any order), so only such settles come here; a settle of another
 * shape, or of rows this connection does not know, moves its rows inside SQLite as before. Until
 * it is written, a reserve adds `pending(key)` to the key's settled total: what the buckets
 * would hold had each settle been written on its own.
 */
export class PendingSettles {
  private readonly keys = new Map<string, KeyPending>();
  private readonly upsert;
  private readonly regrow;

  constructor(db: Database.Database, private readonly totals: CounterTotals) {
    this.upsert = db.prepare<[string, number, number, number]>(
      `INSERT INTO counter_buckets (key, bucket_start, amount, gone_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (key, bucket_start) DO UPDATE SET amount = amount + excluded.amount WHERE excluded.gone_at <= gone_at`,
    );
    // CounterRows.settle's second statement for one bucket: its gone_at moves later (the window
    // grew), and a bucket that had left but was not swept yet starts over with this amount.
    this.regrow = db.prepare<[number, number, number, number, string, number, number]>(
      `UPDATE counter_buckets SET amount = CASE WHEN gone_at <= ? THEN ? ELSE amount + ? END, gone_at = ?
       WHERE key = ? AND bucket_start = ? AND gone_at < ?`,
    );
  }

  /** Whether a settle of these rows with `actual` sums exactly here: whole amounts only. */
  static fits(rows: readonly SettledRow[], actual: number[]): boolean {
    for (const row of rows) {
      if (!Number.isSafeInteger(settledAmount(row, actual))) return false;
    }
    return true;
  }

  /** The settle of these rows at `now` (their held rows already deleted), as CounterRows.settle would write it. */
  add(rows: readonly SettledRow[], actual: number[], now: number): void {
    for (const row of rows) {
      const amount = settledAmount(row, actual);
      if (amount === 0 || row.goneAt <= now) continue;
      let k = this.keys.get(row.key);
      if (k === undefined) this.keys.set(row.key, (k = { total: 0, buckets: [] }));
      k.total += amount;
      const b = k.buckets.find((b) => b.start === row.start && b.goneAt === row.goneAt);
      if (b === undefined) k.buckets.push({ start: row.start, goneAt: row.goneAt, amount });
      else b.amount += amount;
    }
  }

  /** What this transaction settled into the key's buckets and has not written yet. */
  pending(key: string): number {
    return this.keys.get(key)?.total ?? 0;
  }

  /** Writes every pending bucket (before the transaction commits, or before buckets are read). */
  flush(now: number): void {
    if (this.keys.size === 0) return;
    for (const [key, k] of this.keys) {
      for (const b of k.buckets) {
        if (this.upsert.run(key, b.start, b.amount, b.goneAt).changes > 0) {
          this.totals.added(key, b.amount, b.goneAt);
        } else {
          this.regrow.run(now, b.amount, b.amount, b.goneAt, key, b.start, b.goneAt);
          this.totals.forget(key);
        }
      }
    }
    this.keys.clear();
  }

  /** The transaction failed: nothing pending was written, and nothing of it stands. */
  clear(): void {
    this.keys.clear();
  }
}

/** As CounterRows' SQL: the actual amount at the row's position, else what was reserved. */
function settledAmount(row: SettledRow, actual: number[]): number {
  const a = row.pos < actual.length ? actual[row.pos] : undefined;
  return a === undefined || a === null || Number.isNaN(a) ? row.amount : a;
}
