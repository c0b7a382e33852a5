/** How long a counter's total seen by this process answers an admission check without the store. */
export const RECENT_TOTAL_MS = 1_000;
/** Counters remembered at most: a flood of distinct callers cannot grow memory. */
const MAX_REMEMBERED = 10_000;

/**
 * The totals this process last saw for its counters (from its own reservations and peeks), so the
 * gateway's "already full?" check before the body is read can skip the store when there is
 * plenty of room. That check holds nothing and refuses only what is full anyway; the reservation
 * after it is the atomic one. A total seen here includes every reservation this process held at
 * the time, and time and settles only lower it, so within one process it is an upper bound: room
 * here is room in the store. Other processes sharing the store can fill a counter meanwhile; for
 * at most RECENT_TOTAL_MS that costs their caller a body read before the reservation refuses.
 */
export class RecentTotals {
  private readonly seen = new Map<string, { total: number; at: number }>();

  constructor(private readonly clock: () => number = () => performance.now()) {}

  /** Notes totals read or reserved just now, in the order of `keys`. */
  note(keys: readonly { key: string }[], totals: readonly number[]): void {
    const at = this.clock();
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!.key;
      const total = totals[i];
      if (total === undefined) continue;
      // Updated in place: a counter noted on every request keeps its entry (and its place in the
      // eviction order, first noted first dropped) instead of a delete and an insert each time.
      const known = this.seen.get(key);
      if (known) {
        known.total = total;
        known.at = at;
        continue;
      }
      if (this.seen.size >= MAX_REMEMBERED) this.seen.delete(this.seen.keys().next().value!);
      this.seen.set(key, { total, at });
    }
  }

  /** Forgets a counter: it was found full, so the next check asks the store. */
  forget(key: string): void {
    this.seen.delete(key);
  }

  /** The recent total of every counter, or undefined when any is unknown or too old to trust. */
  totals(keys: readonly { key: string }[]): number[] | undefined {
    const now = this.clock();
    const out: number[] = [];
    for (const { key } of keys) {
      const s = this.seen.get(key);
      if (!s || now - s.at > RECENT_TOTAL_MS) return undefined;
      out.push(s.total);
    }
    return out;
  }
}
