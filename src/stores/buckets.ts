/**
 * The time buckets every store keeps a counter's settled amounts in (see Counter in store.ts).
 * One rule, used by memory and SQLite here and mirrored in the Redis scripts.
 */

/** A counter whose max is at most this keeps 1 ms buckets: exact, and at most about max of them. */
export const EXACT_MAX = 64;

/** Buckets per window for every other counter: at most BUCKETS_PER_WINDOW + 1 overlap it. */
export const BUCKETS_PER_WINDOW = 64;

/** Bucket width in ms for a counter reserved with this window and max. */
export function bucketWidth(windowMs: number, max: number): number {
  if (max <= EXACT_MAX) return 1;
  return Math.max(1, Math.ceil(windowMs / BUCKETS_PER_WINDOW));
}

/** Start of the bucket holding `ts`; buckets are aligned to the epoch, so every process agrees. */
export function bucketStart(ts: number, width: number): number {
  return Math.floor(ts / width) * width;
}

/**
 * The first instant at which an amount reserved at `ts` no longer counts: its bucket's last
 * millisecond plus the window. With width 1 that is exactly ts + windowMs.
 */
export function bucketGoneAt(ts: number, width: number, windowMs: number): number {
  return bucketStart(ts, width) + width - 1 + windowMs;
}

/**
 * How long until amounts worth `excess` stop counting, given what counts now as (goneAt, amount)
 * pairs; undefined when they never free that much.
 */
export function retryAfter(leaving: { goneAt: number; amount: number }[], excess: number, now: number): number | undefined {
  leaving.sort((a, b) => a.goneAt - b.goneAt);
  let freed = 0;
  for (const l of leaving) {
    freed += l.amount;
    if (freed >= excess) return Math.max(0, l.goneAt - now);
  }
  return undefined;
}
