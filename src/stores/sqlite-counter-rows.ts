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

  constructor(private readonly db: Database.Database) {
    // The held rows come back from the delete that removes them: one statement, not a read and a delete.
    this.takeHeld = db
      .prepare<[string], HeldRow>("DELETE FROM counter_live WHERE id = ? AND held = 1 RETURNING key, pos, ts, amount, window_ms, width")
      .raw();
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
    this.write(this.inserts, rows, (n) =>
      `INSERT INTO counter_live (key, id, pos, ts, amount, lease_until, window_ms, width, gone_at) VALUES ${rowsOf(n, 9)}`,
    );
  }

  /** Deletes the rows a settle or release addresses, and returns them. */
  takeHeldRows(id: string): HeldRow[] {
    return this.takeHeld.all(id);
  }

  /**
   * Adds settled amounts to their buckets. A row already gone (not swept yet, see SWEEP_EVERY_MS)
   * starts over instead of adding to what no longer counts: possible only when the counter's
   * window changed.
   */
  addToBuckets(rows: BucketAdd[], now: number): void {
    this.write(this.adds, rows, (n) =>
      `INSERT INTO counter_buckets (key, bucket_start, amount, gone_at) VALUES ${rowsOf(n, 4)}
       ON CONFLICT (key, bucket_start) DO UPDATE SET
         amount = CASE WHEN gone_at <= ? THEN excluded.amount ELSE amount + excluded.amount END,
         gone_at = MAX(gone_at, excluded.gone_at)`,
      now,
    );
  }

  private write(cache: Map<number, Database.Statement<[Params]>>, rows: Params[], sql: (n: number) => string, ...tail: Params): void {
    for (let from = 0; from < rows.length; from += MAX_ROWS) {
      const n = Math.min(MAX_ROWS, rows.length - from);
      let stmt = cache.get(n);
      if (stmt === undefined) cache.set(n, (stmt = this.db.prepare<[Params]>(sql(n))));
      const params: Params = [];
      for (let i = from; i < from + n; i++) params.push(...rows[i]!);
      params.push(...tail);
      stmt.run(params);
    }
  }
}

function rowsOf(n: number, width: number): string {
  const row = `(${Array.from({ length: width }, () => "?").join(", ")})`;
  return Array.from({ length: n }, () => row).join(", ");
}
