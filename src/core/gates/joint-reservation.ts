import type { Exchange, HeldCounter } from "../exchange.js";
import { leaseMs, type Gate, type GateEnv } from "../gate.js";
import type { ReserveResult } from "../store.js";
import type { UsageRecord } from "../usage-record.js";
import { learnSettled } from "../known-refusals.js";
import { budgetHeld, budgetReservation, overdrawn } from "./budget.js";
import { modelPolicy } from "./model-policy.js";
import { normalise } from "./normalise.js";
import { windowRefusal, windowsTaken } from "./quota.js";
import { requestWindows, type CallerWindows } from "./request-windows.js";

/**
 * Gates 3 to 6 in the gateway once the body is in, with one store reservation for gates 3 and 6:
 * a request that passes holds one record in the store, settled in one op, instead of two.
 *
 * Gates 4 and 5 touch no counter, so they run first; then gate 6's estimate, and one reservation
 * of gate 3's request windows followed by gate 6's counters. The store names the first counter
 * that does not fit, so a full window still refuses before a budget does, and a refused
 * reservation holds nothing (a refused request consumes no quota). Whatever refuses, the request
 * ends as the gates in SPEC order would have ended it:
 * - a window is full: gate 3's 429, and the record as gate 3 left it (gates 4-6 had not run);
 * - gate 4 or 5 refuses, or a budget does: gate 3's verdict first (one peek at the windows), then
 *   that refusal, with the RateLimit headers and signals gate 3 would have given it.
 * One difference remains: when gate 3 refuses after gates 4 and 5 ran (a request that lost the
 * race for a window's last slot), the points of a signal they fired stay in the caller's score;
 * the record does not list the signal.
 */
export const jointReservation: Gate = function jointReservation(ex, env) {
  const joint = new Joint(ex, env);
  let pending: Promise<void> | void;
  try {
    pending = normalise(ex, env);
    pending = pending ? pending.then(() => modelPolicy(ex, env)) : modelPolicy(ex, env);
  } catch (refusal) {
    return joint.refusedBefore(refusal);
  }
  // Synchronous gates 4 and 5 and a store that answers within the call (memory): no promise, no
  // async frame kept across awaits, no turn of the microtask queue.
  if (!pending) return joint.reserve();
  return pending.then(
    () => joint.reserve(),
    (refusal: unknown) => joint.refusedBefore(refusal),
  );
};

/** One request's joint reservation: what its steps share, in one object rather than an async frame. */
class Joint {
  readonly windows: CallerWindows;
  readonly before: BeforeGate4;
  /** Gate 6's counters (after budgetReservation). */
  private counters: HeldCounter[] = NO_COUNTERS;
  private all: readonly HeldCounter[] = NO_COUNTERS;
  private id = "";
  /** The refusal came from this process's memory of full counters, not from the store. */
  private known = false;

  constructor(
    private readonly ex: Exchange,
    private readonly env: GateEnv,
  ) {
    this.windows = requestWindows(ex);
    this.before = new BeforeGate4(ex);
  }

  /** Gate 4 or 5 refused: gate 3's verdict first, then that refusal. */
  async refusedBefore(refusal: unknown): Promise<never> {
    await windowsSeen(this.ex, this.env, this.windows, this.before);
    throw refusal;
  }

  /** Gate 6's estimate, then one reservation of gate 3's windows followed by gate 6's counters. */
  reserve(): Promise<void> | undefined {
    const { ex, env } = this;
    const limits = this.windows.counters;
    const counters = (this.counters = budgetReservation(ex, env));
    const all = (this.all = counters.length ? limits.concat(counters) : limits);
    // The suffix says what the reservation holds (the metrics gauge counts by it).
    const id = (this.id = counters.length ? `${ex.id}:qb` : `${ex.id}:q`);
    // What this process just saw refused refuses again without the store (RecentTotals.noteFull).
    const known = env.recent.refusal(all);
    this.known = known !== undefined;
    const store = env.store;
    let result: ReserveResult | Promise<ReserveResult>;
    try {
      result = known ?? (store.reserveNow ? store.reserveNow(id, all, leaseMs(ex)) : store.reserve(id, all, leaseMs(ex), true));
    } catch (err) {
      // Gate 3's reservation would have met the failing store first.
      this.before.restore(ex);
      throw err;
    }
    // A store of the library's user may answer with any thenable, not only a native Promise.
    if (typeof (result as Partial<PromiseLike<ReserveResult>>).then !== "function") return this.taken(result as ReserveResult);
    return Promise.resolve(result).then(
      (r) => this.taken(r),
      (err: unknown) => {
        this.before.restore(ex);
        throw err;
      },
    );
  }

  /** The store's answer: held, or the refusal gates 3 and 6 in SPEC order would give. */
  private taken(result: ReserveResult): Promise<void> | undefined {
    const { ex, env, windows, before, counters, all, id } = this;
    const limits = windows.counters;
    if (!result.ok) {
      if (result.index < limits.length) {
        before.restore(ex);
        throw windowRefusal(ex, limits, result, this.known ? undefined : env);
      }
      const refusal = overdrawn(ex, env, counters, result.index - limits.length, result);
      if (!this.known) learnSettled(env, counters[result.index - limits.length]!);
      return windowsSeen(ex, env, windows, before).then(() => {
        throw refusal;
      });
    }
    env.recent.note(all, result.totals);
    ex.quota = { id, counters: limits };
    if (counters.length) budgetHeld(ex, id, counters, result.totals, limits.length);
    return windowsTaken(ex, env, windows, result.totals, before.signals);
  }
}

const NO_COUNTERS: HeldCounter[] = [];

/**
 * What gates 4-6 write on an exchange's record and headers, as it was before gate 4: read on every
 * admitted request, put back only when gate 3 refuses after they ran. Seven fields and three
 * headers cost less to read than the record (~30 fields), its clamps and the headers cost to copy.
 * A gate 4-6 that writes another record field or header must add it here (joint-reservation.test.ts
 * compares the whole record and headers after a lost race).
 */
class BeforeGate4 {
  readonly signals: number;
  private readonly stream: boolean;
  private readonly modelRequested: string | null;
  private readonly attachments: number;
  private readonly decision: UsageRecord["decision"];
  private readonly model: string | null;
  private readonly estimatedCostUsd: number;
  /** Gate 4 adds clamps to the record's object: a copy only when it held some already. */
  private readonly clamped: UsageRecord["clamped"] | undefined;
  private readonly clampedHeader: string | undefined;
  private readonly downgradedHeader: string | undefined;
  private readonly modelHeader: string | undefined;

  constructor(ex: Exchange) {
    const rec = ex.record;
    this.signals = ex.signals.length;
    this.stream = rec.stream;
    this.modelRequested = rec.model_requested;
    this.attachments = rec.attachments;
    this.decision = rec.decision;
    this.model = rec.model;
    this.estimatedCostUsd = rec.estimated_cost_usd;
    this.clamped = isEmpty(rec.clamped) ? undefined : { ...rec.clamped };
    const h = ex.headers;
    this.clampedHeader = h["x-tollgate-clamped"];
    this.downgradedHeader = h["x-tollgate-downgraded"];
    this.modelHeader = h["x-tollgate-model"];
  }

  /** Gate 3 refuses after gates 4-6 ran: the exchange goes back to what gate 3 saw. */
  restore(ex: Exchange): void {
    const rec = ex.record;
    rec.stream = this.stream;
    rec.model_requested = this.modelRequested;
    rec.attachments = this.attachments;
    rec.decision = this.decision;
    rec.model = this.model;
    rec.estimated_cost_usd = this.estimatedCostUsd;
    rec.clamped = this.clamped ? { ...this.clamped } : {};
    ex.signals.length = this.signals;
    putBack(ex.headers, "x-tollgate-clamped", this.clampedHeader);
    putBack(ex.headers, "x-tollgate-downgraded", this.downgradedHeader);
    putBack(ex.headers, "x-tollgate-model", this.modelHeader);
  }
}

function isEmpty(o: object): boolean {
  for (const _ in o) return false;
  return true;
}

function putBack(headers: Record<string, string>, name: string, value: string | undefined): void {
  if (value === undefined) delete headers[name];
  else headers[name] = value;
}

/**
 * Gate 3's verdict for a request a later gate refuses: its windows' totals with this request in
 * them (a peek, plus its own share), or the 429 when one is full — confirmed by a reservation, as
 * only the store can say when it has room again. Passing, the request gets the RateLimit headers
 * and signal gate 3 gives, and the later refusal stands.
 */
async function windowsSeen(ex: Exchange, env: GateEnv, windows: CallerWindows, before: BeforeGate4): Promise<void> {
  const limits = windows.counters;
  // Room by this process's recent totals (an upper bound within it, see RecentTotals) is gate 3's
  // verdict without a store trip: a flood of 403s and 402s costs the store nothing. Not noted: the
  // request took nothing, and its own share must not pile up in the totals.
  const recent = env.recent.totals(limits);
  if (recent && limits.every((c, i) => recent[i]! + c.amount <= c.max)) {
    for (let i = 0; i < limits.length; i++) recent[i]! += limits[i]!.amount;
    const burst = windowsTaken(ex, env, windows, recent, before.signals);
    if (burst) await burst;
    return;
  }
  let totals: number[];
  let full: Extract<ReserveResult, { ok: false }> | undefined;
  try {
    const seen = await env.store.peek(limits);
    totals = limits.map((c, i) => seen[i]! + c.amount);
    if (totals.some((t, i) => t > limits[i]!.max)) {
      const id = `${ex.id}:q`;
      const result = await env.store.reserve(id, limits, leaseMs(ex), true);
      if (result.ok) {
        // A slot freed meanwhile: held as gate 3 would hold it, and given back with the refusal.
        ex.quota = { id, counters: limits };
        totals = result.totals;
      } else {
        full = result;
      }
    }
  } catch (err) {
    before.restore(ex);
    throw err;
  }
  if (full) {
    before.restore(ex);
    throw windowRefusal(ex, limits, full, env);
  }
  env.recent.note(limits, totals);
  const burst = windowsTaken(ex, env, windows, totals, before.signals);
  if (burst) await burst;
}
