import type Database from "better-sqlite3";
import { decodeCursor, encodeCursor, FAILED_KEEP_MS, type OutboxCount, type OutboxItem, type OutboxMessage, type OutboxPage, type OutboxStore } from "../core/outbox.js";

/**
 * The outbox table, created with the rest of the store's schema. One row per (sink, id); a
 * delivered row stays until drop_at so the id is remembered (adding it again does nothing), a
 * failed one for FAILED_KEEP_MS. Claiming moves next_at to the lease end, which is the lease.
 */
export const OUTBOX_SCHEMA = `
  CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    aged_from INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    last_error TEXT,
    keep_ms INTEGER NOT NULL,
    drop_at INTEGER,
    PRIMARY KEY (sink, id)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, next_at);
  CREATE INDEX IF NOT EXISTS outbox_listing ON outbox (state, created_at);
  CREATE INDEX IF NOT EXISTS outbox_drop ON outbox (drop_at) WHERE drop_at IS NOT NULL;
`;

interface Row {
  sink: string;
  id: string;
  kind: string;
  payload: string;
  state: OutboxItem["state"];
  created_at: number;
  aged_from: number;
  attempts: number;
  next_at: number;
  last_error: string | null;
}

/** Runs one operation under the store's busy-lock handling (SqliteStore.guard). */
export type Guard = <T>(op: string, write: boolean, fn: () => T) => Promise<T>;

/** The SQLite store's outbox: shared by every process that opens the file, kept across restarts. */
export class SqliteOutbox implements OutboxStore {
  private readonly insert;
  private readonly due;
  private readonly take;
  private readonly markDelivered;
  private readonly later;
  private readonly markFailed;
  private readonly one;
  private readonly revive;
  private readonly page;
  private readonly total;
  private readonly grouped;
  private readonly sweep;
  private readonly addTx;
  private readonly claimTx;
  private readonly deliveredTx;
  private readonly retryTx;

  constructor(
    db: Database.Database,
    private readonly now: () => number,
    private readonly guard: Guard,
  ) {
    this.insert = db.prepare<[string, string, string, string, number, number, number, number]>(
      `INSERT OR IGNORE INTO outbox (sink, id, kind, payload, state, created_at, aged_from, attempts, next_at, keep_ms)
       VALUES (?, ?, ?, ?, 'pending', ?, ?, 0, ?, ?)`,
    );
    this.due = db.prepare<[string, number, number], Row>("SELECT * FROM outbox WHERE sink = ? AND state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?");
    this.take = db.prepare<[number, string, string]>("UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE sink = ? AND id = ?");
    this.markDelivered = db.prepare<[number, string, string]>("UPDATE outbox SET state = 'delivered', drop_at = MAX(?, created_at + keep_ms) WHERE sink = ? AND id = ? AND state <> 'delivered'");
    this.later = db.prepare<[number, string, string, string]>("UPDATE outbox SET next_at = ?, last_error = ? WHERE sink = ? AND id = ? AND state = 'pending'");
    this.markFailed = db.prepare<[string, number, string, string]>("UPDATE outbox SET state = 'failed', last_error = ?, drop_at = ? WHERE sink = ? AND id = ? AND state = 'pending'");
    this.one = db.prepare<[string, string], Row>("SELECT * FROM outbox WHERE sink = ? AND id = ?");
    this.revive = db.prepare<[number, number, string, string]>(
      `UPDATE outbox SET attempts = CASE state WHEN 'failed' THEN 0 ELSE attempts END,
                         aged_from = CASE state WHEN 'failed' THEN ? ELSE aged_from END,
                         state = 'pending', drop_at = NULL, next_at = ?
       WHERE sink = ? AND id = ? AND state <> 'delivered'`,
    );
    this.page = db.prepare<[string, number, number], Row>("SELECT * FROM outbox WHERE state = ? ORDER BY created_at, sink, id LIMIT ? OFFSET ?");
    this.total = db.prepare<[string], number>("SELECT COUNT(*) FROM outbox WHERE state = ?").pluck();
    this.grouped = db.prepare<[], OutboxCount>("SELECT sink, kind, state, COUNT(*) AS count FROM outbox WHERE state IN ('pending', 'failed') GROUP BY sink, kind, state");
    this.sweep = db.prepare<[number]>("DELETE FROM outbox WHERE drop_at IS NOT NULL AND drop_at <= ?");

    this.addTx = db.transaction((messages: OutboxMessage[], keepMs: number, now: number) => {
      this.sweep.run(now);
      let added = 0;
      for (const m of messages) added += this.insert.run(m.sink, m.id, m.kind, m.payload, now, now, now, keepMs).changes;
      return added;
    });
    this.claimTx = db.transaction((sink: string, limit: number, leaseMs: number, now: number) => {
      const rows = this.due.all(sink, now, limit);
      for (const r of rows) this.take.run(now + leaseMs, sink, r.id);
      return rows.map((r) => item({ ...r, attempts: r.attempts + 1, next_at: now + leaseMs }));
    });
    this.deliveredTx = db.transaction((sink: string, ids: string[], now: number) => {
      for (const id of ids) this.markDelivered.run(now, sink, id);
    });
    this.retryTx = db.transaction((sink: string, id: string, now: number) => {
      this.revive.run(now, now, sink, id);
      const row = this.one.get(sink, id);
      return row && item(row);
    });
  }

  add(messages: OutboxMessage[], keepMs: number): Promise<number> {
    return this.guard("outboxAdd", true, () => this.addTx.immediate(messages, keepMs, this.now()));
  }

  claim(sink: string, limit: number, leaseMs: number): Promise<OutboxItem[]> {
    return this.guard("outboxClaim", true, () => this.claimTx.immediate(sink, limit, leaseMs, this.now()));
  }

  async delivered(sink: string, ids: string[]): Promise<void> {
    await this.guard("outboxDelivered", true, () => this.deliveredTx.immediate(sink, ids, this.now()));
  }

  async retryLater(sink: string, id: string, delayMs: number, error: string): Promise<void> {
    await this.guard("outboxRetryLater", true, () => this.later.run(this.now() + delayMs, error, sink, id));
  }

  async fail(sink: string, id: string, error: string): Promise<void> {
    await this.guard("outboxFail", true, () => this.markFailed.run(error, this.now() + FAILED_KEEP_MS, sink, id));
  }

  retry(sink: string, id: string): Promise<OutboxItem | undefined> {
    return this.guard("outboxRetry", true, () => this.retryTx.immediate(sink, id, this.now()));
  }

  list(q: { state: "pending" | "failed"; limit: number; cursor?: string }): Promise<OutboxPage> {
    const offset = decodeCursor(q.cursor);
    return this.guard("outboxList", false, () => {
      const total = this.total.get(q.state)!;
      const items = this.page.all(q.state, q.limit, offset).map(item);
      return { items, total, cursor: offset + q.limit < total ? encodeCursor(offset + q.limit) : undefined };
    });
  }

  counts(): Promise<OutboxCount[]> {
    return this.guard("outboxCounts", false, () => this.grouped.all());
  }
}

function item(r: Row): OutboxItem {
  return { id: r.id, sink: r.sink, kind: r.kind, payload: r.payload, state: r.state, createdAt: r.created_at, agedFrom: r.aged_from, attempts: r.attempts, nextAt: r.next_at, lastError: r.last_error };
}
