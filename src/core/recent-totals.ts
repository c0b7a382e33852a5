/**
 * How long a counter's total seen by this process answers an admission check without the store;
 * also the longest a counter the store found full refuses from this process's memory.
 */
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
  /**
   * Request windows the store refused a reservation on (only those: gates/quota.ts windowRefusal
   * says why): their total then, until when that total refuses without the store, and when the
   * store said enough of the window leaves (undefined: it did not say).
   */
  private readonly full = new Map<string, { used: number; amount: number; until: number; resetAt: number | undefined }>();

  /**
   * Calendar and lifetime budgets' settled spend (their total less the holds in it), as the store
   * last reported it, and when. A counter's key names its period and nothing settled in it is ever
   * taken back, so the amount stays a lower bound of its total for the key's life, in any process;
   * holds are left out, as they settle lower (see gates/quota.ts windowRefusal).
   */
  private readonly settled = new Map<string, { amount: number; at: number }>();

  /**
   * `wall`: the clock the store's windows run on (the engine's `now`), which the known-full
   * counters' resets are measured against: a window the store has reset refuses nothing here.
   */
  constructor(
    private readonly clock: () => number = () => performance.now(),
    private readonly wall: () => number = Date.now,
  ) {}

  /** Notes totals read or reserved just now, in the order of `keys`. */
  note(keys: readonly { key: string }[], totals: readonly number[]): void {
    const at = this.clock();
    const full = this.full.size > 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!.key;
      const total = totals[i];
      if (total === undefined) continue;
      // The store's newer word on a counter: lower, the refusal it gave may not stand; not lower,
      // it still refuses what did not fit, at the newer total.
      if (full) {
        const f = this.full.get(key);
        if (f && total < f.used) this.full.delete(key);
        else if (f) f.used = total;
      }
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

  /**
   * The store refused a reservation on this counter at total `used`. For RECENT_TOTAL_MS at
   * most (and never past the window's reset), a request that would not fit at that total is
   * refused from here. Within one process that total can only fall through a settle or release,
   * which `freed` reports, or through time, which the reset bounds; another process's settles and
   * releases are seen within RECENT_TOTAL_MS, the staleness the admission check already accepts
   * the other way.
   */
  noteFull(key: string, used: number, retryAfterMs: number | undefined, amount: number): void {
    const now = this.wall();
    const until = now + (retryAfterMs === undefined ? RECENT_TOTAL_MS : Math.min(RECENT_TOTAL_MS, retryAfterMs));
    if (!this.full.has(key) && this.full.size >= MAX_REMEMBERED) this.full.delete(this.full.keys().next().value!);
    this.full.set(key, { used, amount, until, resetAt: retryAfterMs === undefined ? undefined : now + retryAfterMs });
    // The refusal's total is the store's word too, for the admission check's recent totals.
    this.note([{ key }], [used]);
  }

  /** This process settled or released reservations on these counters: what it knew full may have room. */
  freed(counters: readonly { key: string }[]): void {
    if (!this.full.size) return;
    for (const { key } of counters) this.full.delete(key);
  }

  /** A calendar or lifetime budget's settled spend, as the store reported it just now (see `settled`). */
  noteSettled(key: string, amount: number): void {
    const known = this.settled.get(key);
    if (known) {
      known.amount = Math.max(known.amount, amount);
      known.at = this.clock();
      return;
    }
    if (this.settled.size >= MAX_REMEMBERED) this.settled.delete(this.settled.keys().next().value!);
    this.settled.set(key, { amount, at: this.clock() });
  }

  /** The least a calendar or lifetime budget's total can be: its settled spend last reported, else 0. */
  settledAtLeast(key: string): number {
    return this.settled.get(key)?.amount ?? 0;
  }

  /** Whether the budget's settled spend was reported within RECENT_TOTAL_MS (asking again would tell little new). */
  settledFresh(key: string): boolean {
    const known = this.settled.get(key);
    return known !== undefined && this.clock() - known.at <= RECENT_TOTAL_MS;
  }

  /** Whether any counter is known full: the refusal paths look no further when none is. */
  get anyFull(): boolean {
    return this.full.size > 0;
  }

  /**
   * The store's answer, from memory, to a reservation of `counters` that would be refused: the
   * first counter known full for its amount, when every counter before it is known to have room
   * (so the store would name that one too). The store's wait (`retryAfterMs`) is for the amount it
   * was asked; a counter noted with one answers only that amount. Undefined: only the store can say.
   */
  refusal(counters: readonly { key: string; amount: number; max: number }[]): { ok: false; index: number; used: number; retryAfterMs?: number } | undefined {
    if (!this.full.size) return undefined;
    const now = this.wall();
    const at = this.clock();
    for (let i = 0; i < counters.length; i++) {
      const c = counters[i]!;
      let f = this.full.get(c.key);
      if (f && f.until <= now) {
        this.full.delete(c.key);
        f = undefined;
      }
      if (f) {
        if (f.used + c.amount <= c.max || (f.resetAt !== undefined && f.amount !== c.amount)) return undefined;
        return { ok: false, index: i, used: f.used, retryAfterMs: f.resetAt === undefined ? undefined : Math.max(0, f.resetAt - now) };
      }
      const s = this.seen.get(c.key);
      if (!s || at - s.at > RECENT_TOTAL_MS || s.total + c.amount > c.max) return undefined;
    }
    return undefined;
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
