import type Database from "better-sqlite3";

/**
 * The request path's counter statements, shaped by what better-sqlite3 charges for: every value
 * it hands back to JS is set into a fresh array through V8's generic property path (~1.2k
 * instructions a value, ~8k for a six-column row), parameters bound from an array cost about as
 * much again as the same ones passed as arguments, and a statement run costs its binding and a
 * result object. SQLite's own work on a few small rows is the smaller part. So a reserve reads
 * one value per counter, a settle moves its rows into their buckets inside SQLite (no row comes
 * out), and parameters go as arguments. (Multi-row VALUES and DELETE ... RETURNING were measured
 * too: both cost more than the statements they replaced.)
 */

type Param = string | number | null;

export class CounterRows {
  private readonly sumStatements = new Map<number, Database.Statement<Param[], (number | null)[]>>();
  private readonly settles = new Map<number, Database.Statement<Param[]>>();
  private readonly regrows = new Map<number, Database.Statement<Param[]>>();
  private readonly heldStatements = new Map<number, Database.Statement<Param[], string>>();

  constructor(private readonly db: Database.Database) {}

  /**
   * For each key, its running total of settled amounts, or NULL when it is missing or stale (see
   * CounterTotals: the caller sums it again); then 1 if `id` still holds rows (a reused id, which
   * the reserve must detach first), else NULL. The check rides along, so the common reserve runs
   * no detaching update (an update of the partial index it searches, which SQLite runs in two
   * passes through a temporary table: ~18k instructions). With `live`, each key's amounts in
   * flight are summed into its total in the same statement (NULL still when the running total
   * is): for a reserve that cannot take them from LiveSums, one statement rather than one per key.
   */
  sums(id: string, keys: string[], now: number, live: boolean): (number | null)[] {
    const shape = keys.length * 2 + (live ? 1 : 0);
    let stmt = this.sumStatements.get(shape);
    if (stmt === undefined) {
      stmt = this.db.prepare<Param[], (number | null)[]>(sumSql(keys.length, live)).raw();
      this.sumStatements.set(shape, stmt);
    }
    const params: Param[] = [];
    for (const key of keys) live ? params.push(key, now, now, key, now, now) : params.push(key, now, now);
    params.push(id);
    return stmt.get(...params)!;
  }

  /**
   * Which of these ids hold rows now: one statement for a turn's reserves, so that a reserve of
   * a steady process (LiveSums.steady) needs no read of its own to know whether its id is reused.
   */
  heldAmong(ids: string[]): Set<string> {
    const held = new Set<string>();
    for (let from = 0; from < ids.length; from += HELD_CHUNK) {
      const chunk = ids.slice(from, from + HELD_CHUNK);
      // Statements for 1, 2, 4, ... ids, the rest of the list NULL (which no id equals).
      let size = 1;
      while (size < chunk.length) size *= 2;
      let stmt = this.heldStatements.get(size);
      if (stmt === undefined) {
        stmt = this.db
          .prepare<Param[], string>(`SELECT id FROM counter_live WHERE held = 1 AND id IN (${Array.from({ length: size }, () => "?").join(",")})`)
          .pluck();
        this.heldStatements.set(size, stmt);
      }
      const params: Param[] = chunk;
      while (params.length < size) params.push(null);
      for (const id of stmt.all(...params)) held.add(id);
    }
    return held;
  }

  /**
   * Adds a settled reservation's amounts (its held rows, `actual[pos]` or else what was reserved)
   * into the buckets of its reservation time, skipping amounts of 0 and buckets already gone.
   * The upsert leaves a bucket's gone_at alone, so the gone_at index is not rewritten for every
   * settled counter (SQLite deletes and reinserts an index entry whose column is SET, even to
   * the same value). A bucket whose gone_at must move later (the counter's window grew) is
   * skipped by it and shows as a missing change; then `regrow` writes those, also starting over
   * a bucket that had left but was not swept yet (see SWEEP_EVERY_MS) instead of adding to what
   * no longer counts. `actual` has one amount per counter (Store.settle), so a settle that
   * changed fewer rows than that may have skipped one. The caller deletes the held rows after.
   */
  settle(id: string, actual: number[], now: number): void {
    const n = actual.length;
    let stmt = this.settles.get(n);
    if (stmt === undefined) {
      stmt = this.db.prepare<Param[]>(
        `INSERT INTO counter_buckets (key, bucket_start, amount, gone_at) ${settledRows(n)}
         ON CONFLICT (key, bucket_start) DO UPDATE SET amount = amount + excluded.amount WHERE excluded.gone_at <= gone_at`,
      );
      this.settles.set(n, stmt);
    }
    if (stmt.run(...actual, id, now).changes >= n) return;
    let regrow = this.regrows.get(n);
    if (regrow === undefined) {
      // Only a bucket the upsert skipped matches (gone_at < the new one): rows it inserted or
      // added to already have a gone_at at least as late.
      regrow = this.db.prepare<Param[]>(
        `UPDATE counter_buckets SET amount = CASE WHEN counter_buckets.gone_at <= ? THEN s.amount ELSE counter_buckets.amount + s.amount END,
           gone_at = s.gone_at
         FROM (${settledRows(n)}) AS s
         WHERE counter_buckets.key = s.key AND counter_buckets.bucket_start = s.bucket_start AND counter_buckets.gone_at < s.gone_at`,
      );
      this.regrows.set(n, regrow);
    }
    regrow.run(now, ...actual, id, now);
  }
}

/** Most ids in one heldAmong statement. */
const HELD_CHUNK = 256;

/** CounterRows.sums's statement for `n` keys: parameters are key, now, now (and with `live` key, now, now again) per key, then the id. */
function sumSql(n: number, live: boolean): string {
  const settled = "(SELECT settled FROM counter_totals WHERE key = ? AND since <= ? AND prune_at > ?)";
  const one = live
    ? `${settled} + (SELECT COALESCE(SUM(amount), 0) FROM counter_live
       WHERE key = ? AND ts > ? - window_ms AND (lease_until IS NULL OR lease_until > ?))`
    : settled;
  const held = "(SELECT 1 FROM counter_live WHERE id = ? AND held = 1 LIMIT 1)";
  return `SELECT ${Array.from({ length: n }, () => one).join(",")}, ${held}`;
}

/** The bucket rows a settle of `n` amounts writes: parameters are the amounts, then id and now. */
function settledRows(n: number): string {
  const amount = n === 0 ? "amount" : `COALESCE(CASE pos ${Array.from({ length: n }, (_, i) => `WHEN ${i} THEN ?`).join(" ")} END, amount)`;
  // CAST: a ts that is not a whole number (a test clock) still starts its bucket where bucketStart() does.
  const start = "CAST(ts / width AS INTEGER) * width";
  return `SELECT key, bucket_start, amount, gone_at FROM (
      SELECT key, ${start} AS bucket_start, ${amount} AS amount, ${start} + width - 1 + window_ms AS gone_at
      FROM counter_live WHERE id = ? AND held = 1)
    WHERE gone_at > ? AND amount != 0`;
}
