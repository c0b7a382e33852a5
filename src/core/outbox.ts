/**
 * The outbox: messages to the outside world (signed webhook alerts, CloudEvents usage export)
 * written to the store before anything is sent, so none is lost when a receiver is down or the
 * process restarts. A deliverer claims due messages with a lease (two processes sharing a store
 * never send the same message at the same time), sends them, and marks them delivered, or due
 * again after a backoff, or failed once it gave up. Delivery is at least once: a process that dies
 * mid-send leaves its claim to run out, and the message goes again under the same id.
 *
 * A message is identified by its sink and id together (one alert goes to every webhook that
 * subscribed to it, under the same id). Adding an id the outbox already holds — pending, failed,
 * or delivered less than `keepMs` ago — does nothing: several processes may notice the same
 * event, and it is sent once.
 */
export interface OutboxMessage {
  /** Idempotent id, sent to the receiver (webhook-id, CloudEvents id). */
  id: string;
  /** The configured destination's name (a webhook's name, "cloudevents"). */
  sink: string;
  /** What it says: an alert type (budget.soft, …) or "usage". */
  kind: string;
  /** The body as sent, JSON text; fixed when added, so every attempt sends the same bytes. */
  payload: string;
}

export type OutboxState = "pending" | "failed" | "delivered";

export interface OutboxItem extends OutboxMessage {
  state: OutboxState;
  /** Store clock, epoch ms. */
  createdAt: number;
  /** Where max_age counts from: creation, or the operator's last retry. */
  agedFrom: number;
  /** Sends started so far (a claim counts as one, also when its process died). */
  attempts: number;
  /** Pending: not claimable before this (backoff, or a running claim's lease end). */
  nextAt: number;
  lastError: string | null;
}

export interface OutboxCount {
  sink: string;
  kind: string;
  state: "pending" | "failed";
  count: number;
}

export interface OutboxPage {
  items: OutboxItem[];
  /** Total items in this state. */
  total: number;
  /** Pass back as `cursor` for the next page; absent on the last. */
  cursor?: string;
}

/** Failed messages are kept this long for the operator to see and retry, then forgotten. */
export const FAILED_KEEP_MS = 30 * 86_400_000;

/** What each store implements (memory, SQLite, Redis); one contract suite tests all three. */
export interface OutboxStore {
  /** Adds what is new (by sink and id); returns how many were. `keepMs`: how long a delivered id is remembered. */
  add(messages: OutboxMessage[], keepMs: number): Promise<number>;
  /**
   * Claims up to `limit` pending messages of `sink` that are due, oldest due first, for `leaseMs`:
   * each one's attempts go up by one and nobody else can claim it until the lease ends.
   */
  claim(sink: string, limit: number, leaseMs: number): Promise<OutboxItem[]>;
  /** Marks messages delivered (whatever their state: a late success still counts). */
  delivered(sink: string, ids: string[]): Promise<void>;
  /** A pending message's attempt failed: due again in `delayMs` (store clock), with the error kept. */
  retryLater(sink: string, id: string, delayMs: number, error: string): Promise<void>;
  /** A pending message is given up on: failed, kept for the operator (FAILED_KEEP_MS). */
  fail(sink: string, id: string, error: string): Promise<void>;
  /** A failed message is pending again with fresh attempts and age; a pending one is due now. Undefined: no such message. */
  retry(sink: string, id: string): Promise<OutboxItem | undefined>;
  /** A page of pending or failed messages, oldest first. */
  list(query: { state: "pending" | "failed"; limit: number; cursor?: string }): Promise<OutboxPage>;
  /** Pending and failed messages by sink and kind (the metrics gauge). */
  counts(): Promise<OutboxCount[]>;
}

/** Paging cursors are offsets; opaque to callers so a store may change how it pages. */
export function encodeCursor(offset: number): string {
  return Buffer.from(String(offset)).toString("base64url");
}

export function decodeCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  const text = /^[A-Za-z0-9_-]+$/.test(cursor) ? Buffer.from(cursor, "base64url").toString() : "";
  const n = /^\d{1,15}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n)) throw new RangeError("not a cursor this listing gave out");
  return n;
}
