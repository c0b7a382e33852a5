import { bucketGoneAt } from "./buckets.js";

/**
 * The memory store's counters (see Counter in core/store.ts): settled amounts in buckets, the
 * reservations in flight, and running sums of both.
 */

/** When a reservation was taken and until when its lease runs: one object for all its counters. */
export interface Taken {
  readonly ts: number;
  readonly leaseUntil: number;
}

/**
 * One counter's share of a reservation that is not settled yet. Small numbers only (times are its
 * reservation's): a field holding a time is a boxed double, allocated with every entry.
 */
export interface Live {
  /** Its counter, so settling needs no lookup; one the sweep dropped meanwhile is `gone` (its key finds the new one). */
  state: CounterState;
  amount: number;
  windowMs: number;
  width: number;
  taken: Taken;
}

export interface Bucket {
  amount: number;
  goneAt: number;
}

/**
 * A counter: settled amounts by bucket start, plus the reservations that still count unsettled,
 * with the running sum of each part. Until `pruneAt` nothing in it stops counting, so a total is
 * two additions instead of a walk over ~65 buckets on every reserve, peek and sweep step.
 */
export interface CounterState {
  /** Its key in the store's map. */
  key: string;
  buckets: Map<number, Bucket>;
  live: Live[];
  /** Sum of the buckets' amounts. */
  settled: number;
  /** Sum of the live entries' amounts. */
  held: number;
  /** No bucket leaves and no live entry stops counting before this instant (a lower bound). */
  pruneAt: number;
  /** Dropped by the sweep (nothing counted in it): an entry that still names it settles into a fresh one. */
  gone: boolean;
}

/**
 * Forgets buckets that left their window and reservations that no longer count (lapsed or too
 * old), and recomputes the sums; a no-op until something can have stopped counting.
 */
export function prune(state: CounterState, now: number): void {
  if (now < state.pruneAt) return;
  let next = Infinity;
  let settled = 0;
  for (const [start, b] of state.buckets) {
    if (b.goneAt <= now) state.buckets.delete(start);
    else {
      settled += b.amount;
      if (b.goneAt < next) next = b.goneAt;
    }
  }
  let held = 0;
  let write = 0;
  const list = state.live;
  for (let read = 0; read < list.length; read++) {
    const e = list[read]!;
    const stops = Math.min(e.taken.leaseUntil, e.taken.ts + e.windowMs);
    if (stops > now) {
      list[write++] = e;
      held += e.amount;
      if (stops < next) next = stops;
    }
  }
  list.length = write;
  state.settled = settled;
  state.held = held;
  state.pruneAt = next;
}

/** The counter's total: O(1) while nothing left it, O(buckets + unsettled reservations) when something did. */
export function total(state: CounterState, now: number): number {
  prune(state, now);
  return state.settled + state.held;
}

/**
 * What counts now and when it stops counting. An unsettled amount is taken to leave when it would
 * if it were settled (in a bucket of `width`), which is never earlier than the truth.
 */
export function leaving(state: CounterState, width: number): { goneAt: number; amount: number }[] {
  const out = [...state.buckets.values()].map((b) => ({ goneAt: b.goneAt, amount: b.amount }));
  for (const e of state.live) out.push({ goneAt: bucketGoneAt(e.taken.ts, Math.max(width, e.width), e.windowMs), amount: e.amount });
  return out;
}

export function list(state: CounterState, e: Live): void {
  state.live.push(e);
  state.held += e.amount;
  const stops = Math.min(e.taken.leaseUntil, e.taken.ts + e.windowMs);
  if (stops < state.pruneAt) state.pruneAt = stops;
}

/** Takes an entry out of its counter's in-flight list, if a prune has not already (order does not matter). */
export function unlist(state: CounterState, e: Live): void {
  const live = state.live;
  const at = live.indexOf(e);
  if (at < 0) return;
  const last = live.pop()!;
  if (at < live.length) live[at] = last;
  state.held -= e.amount;
}
