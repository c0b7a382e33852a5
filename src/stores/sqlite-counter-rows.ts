import type Database from "better-sqlite3";

/**
 * The request path's counter statements, one statement per call however many counters it
 * names: each better-sqlite3 run crosses into C++, binds its parameters and builds a result, and
 * that, not SQLite's own work, was most of what a reserve or a settle of a few small rows cost.
 * A statement is prepared once per row count (writes of more than MAX_ROWS go in several).
 */
const MAX_ROWS = 8;

/** A held counter_live row as an array (key, pos, ts, amount, window_ms, width): no object built per row. */
export type HeldRow = [key: string, pos: number, ts: number, amount: number, windowMs: number, width: number];

/** A row of counter_live as a reserve writes it, flattened into the statement's parameters. */
export type LiveRow = [key: string, id: string, pos: number, ts: number, amount: number, leaseUntil: number | null, windowMs: number, width: number, goneAt: number];

/** A settled amount for a bucket: key, bucket_start, amount, gone_at. */
export type BucketAdd = [key: string, bucketStart: number, amount: number, goneAt: number];

type Params = (string | number | null)[];

export class CounterRows {
  private readonly sums = new Map<number, Database.Statement<[Params], (number | null)[]>>();
  private readonly inserts = new Map<number, Database.Statement<[Params]>>();
  private readonly adds = new Map<number, Database.Statement<[Params]>>();
  private readonly takeHeld;
  private readonly regrow;

  constructor(private readonly db: Database.Database) {
    // The held rows come back from the delete that removes them: one statement, not a read and a delete.
    this.takeHeld = db
      .prepare<[string], HeldRow>("DELETE FROM counter_live WHERE id = ? AND held = 1 RETURNING key, pos, ts, amount, window_ms, width")
      .raw();
    // Only a bucket the fast upsert skipped matches (gone_at < the new one): rows it inserted or
    // added to already have a gone_at at least as late.
    this.regrow = db.prepare<[number, number, number, number, string, number, number]>(
      `UPDATE counter_buckets SET amount = CASE WHEN gone_at <= ? THEN ? ELSE amount + ? END, gone_at = ?
       WHERE key = ? AND bucket_start = ? AND gone_at < ?`,
    );
  }

  /**
   * For each key, [settled, live]: its running total (NULL when missing or stale: see
   * CounterTotals) and the sum of its unsettled rows; then 1 if `id` still holds rows (a reused
   * id, which the reserve must detach first), else NULL. One row of 2 × keys.length + 1 columns:
   * the check rides along, so the common reserve runs no detaching update (an update of the
   * partial index it searches, which SQLite runs in two passes through a temporary table).
   */
  sum(id: string, keys: string[], now: number): (number | null)[] {
    let stmt = this.sums.get(keys.length);
    if (stmt === undefined) {
      const one = `(SELECT settled FROM counter_totals WHERE key = ? AND since <= ? AND prune_at > ?),
        (SELECT COALESCE(SUM(amount), 0) FROM counter_live
         WHERE key = ? AND ts > ? - window_ms AND (lease_until IS NULL OR lease_until > ?))`;
      const held = "(SELECT 1 FROM counter_live WHERE id = ? AND held = 1 LIMIT 1)";
      stmt = this.db.prepare<[Params], (number | null)[]>(`SELECT ${keys.map(() => one).join(",")}, ${held}`).raw();
      this.sums.set(keys.length, stmt);
    }
    const params: Params = [];
    for (const key of keys) params.push(key, now, now, key, now, now);
    params.push(id);
    return stmt.get(params)!;
  }

  /** Writes a reservation's unsettled rows. */
  insertLive(rows: LiveRow[]): void {
    for (let from = 0; from < rows.length; from += MAX_ROWS) {
      this.write(this.inserts, rows, from, Math.min(rows.length, from + MAX_ROWS), (n) =>
        `INSERT INTO counter_live (key, id, pos, ts, amount, lease_until, window_ms, width, gone_at) VALUES ${rowsOf(n, 9)}`,
      );
    }
  }

  /** Deletes the rows a settle or release addresses, and returns them. */
  takeHeldRows(id: string): HeldRow[] {
    return this.takeHeld.all(id);
  }

  /**
   * Adds settled amounts to their buckets. The upsert leaves a bucket's gone_at alone, so the
   * gone_at index is not rewritten for every settled counter (SQLite deletes and reinserts an
   * index entry whose column is SET, even to the same value). A bucket whose gone_at must move
   * later (the counter's window grew) is skipped by it and shows as a missing change; those few
   * go through `regrow`, which also starts over a bucket that had left but was not swept yet
   * (see SWEEP_EVERY_MS) instead of adding to what no longer counts.
   */
  addToBuckets(rows: BucketAdd[], now: number): void {
    for (let from = 0; from < rows.length; from += MAX_ROWS) {
      const to = Math.min(rows.length, from + MAX_ROWS);
      const changed = this.write(this.adds, rows, from, to, (n) =>
        `INSERT INTO counter_buckets (key, bucket_start, amount, gone_at) VALUES ${rowsOf(n, 4)}
         ON CONFLICT (key, bucket_start) DO UPDATE SET amount = amount + excluded.amount WHERE excluded.gone_at <= gone_at`,
      );
      if (changed === to - from) continue;
      for (let i = from; i < to; i++) {
        const [key, start, amount, goneAt] = rows[i]!;
        this.regrow.run(now, amount, amount, goneAt, key, start, goneAt);
      }
    }
  }

  private write(cache: Map<number, Database.Statement<[Params]>>, rows: Params[], from: number, to: number, sql: (n: number) => string): number {
    const n = to - from;
    let stmt = cache.get(n);
    if (stmt === undefined) cache.set(n, (stmt = this.db.prepare<[Params]>(sql(n))));
    const params: Params = [];
    for (let i = from; i < to; i++) params.push(...rows[i]!);
    return stmt.run(params).changes;
  }
}

function rowsOf(n: number, width: number): string {
  const row = `(${Array.from({ length: width }, () => "?").join(", ")})`;
  return Array.from({ length: n }, () => row).join(", ");
}
