import { afterEach, beforeEach, describe, expect, it, type TestContext } from "vitest";
import { emptyUsageRecord, type UsageRecord } from "../core/usage-record.js";
import type { Counter, ReserveResult, Store, StoredKey } from "../core/store.js";

export interface OpenedStore {
  store: Store;
  /** Moves the store's clock forward; absent when the store runs on real time. */
  advance?: (ms: number) => void;
  cleanup?: () => Promise<void>;
  /**
   * Tests only: what the store holds for one counter key (buckets plus unsettled reservations,
   * after pruning), i.e. what a reserve on it reads.
   */
  size?: (key: string) => Promise<number> | number;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** Long enough that no test here sees a lease run out unless it moves the clock on purpose. */
const LONG_LEASE = HOUR;
/** So long that real time passing during a test changes a score by less than toBeCloseTo sees. */
const NO_DECAY = 1e15;
/** A window of 64 s has 1 s buckets (ceil(64 s / 64)) once max is above EXACT_MAX (64). */
const W64 = 64_000;
const DAY_FOR_SMALL = 86_400_000;
const BUCKET = 1_000;
const BIG = 1e12;

function counter(key: string, max: number, amount: number, windowMs = MINUTE): Counter {
  return { key, max, amount, windowMs };
}

function refused(r: ReserveResult): Extract<ReserveResult, { ok: false }> {
  if (r.ok) throw new Error("expected the reservation to be refused");
  return r;
}

/**
 * The behaviour every Store must share, written against the MemoryStore as the reference. A store
 * whose clock cannot be moved still runs everything that does not need time travel.
 */
export function describeStoreContract(name: string, open: () => Promise<OpenedStore>): void {
  describe(`${name} store contract`, () => {
    let opened: OpenedStore;
    let store: Store;
    let seq = 0;
    // Ids unique across the whole run, so a store shared between tests never sees a reused id.
    const rid = (label = "r") => `${label}-${process.pid}-${++seq}`;

    beforeEach(async () => {
      opened = await open();
      store = opened.store;
    });

    afterEach(async () => {
      await store.close();
      await opened.cleanup?.();
    });

    function clock(ctx: TestContext): (ms: number) => void {
      const advance = opened.advance;
      if (!advance) ctx.skip("store has no injectable clock");
      return advance;
    }

    async function fill(key: string, amount: number, max = 10, windowMs = MINUTE): Promise<string> {
      const id = rid("fill");
      expect(await store.reserve(id, [counter(key, max, amount, windowMs)], LONG_LEASE)).toMatchObject({ ok: true });
      await store.settle(id, [amount]);
      return id;
    }

    describe("reserve", () => {
      it("admits what fits and counts it", async () => {
        expect(await store.reserve(rid(), [counter("k", 10, 4)], LONG_LEASE)).toEqual({ ok: true, totals: [4] });
        expect(await store.reserve(rid(), [counter("k", 10, 6)], LONG_LEASE)).toEqual({ ok: true, totals: [10] });
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([10]);
      });

      it("refuses the amount that would go over max, at exactly max + 1", async () => {
        await fill("k", 9);
        const r = refused(await store.reserve(rid(), [counter("k", 10, 2)], LONG_LEASE));
        expect(r.index).toBe(0);
        expect(r.used).toBe(9);
        expect(await store.reserve(rid(), [counter("k", 10, 1)], LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("is all-or-nothing across several counters", async () => {
        await fill("b", 8);
        const counters = [counter("a", 10, 3), counter("b", 10, 3), counter("c", 10, 1)];
        const r = refused(await store.reserve(rid(), counters, LONG_LEASE));
        expect(r.index).toBe(1);
        expect(r.used).toBe(8);
        // Neither the counter before the failing one nor the one after it kept anything.
        expect(await store.peek(counters)).toEqual([0, 8, 0]);

        const fits = [counter("a", 10, 3), counter("b", 10, 2), counter("c", 10, 1)];
        expect(await store.reserve(rid(), fits, LONG_LEASE)).toEqual({ ok: true, totals: [3, 10, 1] });
        expect(await store.peek(fits)).toEqual([3, 10, 1]);
      });

      it("reports the first counter that overflows", async () => {
        await fill("a", 10);
        await fill("b", 10);
        const r = refused(await store.reserve(rid(), [counter("a", 10, 1), counter("b", 10, 1)], LONG_LEASE));
        expect(r.index).toBe(0);
        expect(r.used).toBe(10);
      });

      it("has no retryAfterMs when the amount can never fit", async () => {
        const empty = refused(await store.reserve(rid(), [counter("k", 10, 11)], LONG_LEASE));
        expect(empty).toMatchObject({ ok: false, index: 0, used: 0 });
        expect(empty.retryAfterMs).toBeUndefined();

        await fill("k", 5);
        const r = refused(await store.reserve(rid(), [counter("k", 10, 11)], LONG_LEASE));
        expect(r.used).toBe(5);
        expect(r.retryAfterMs).toBeUndefined();
      });

      it("gives a retryAfterMs within the window when waiting will help", async () => {
        await fill("k", 10, 10, MINUTE);
        const r = refused(await store.reserve(rid(), [counter("k", 10, 1, MINUTE)], LONG_LEASE));
        expect(r.retryAfterMs).toBeGreaterThan(0);
        expect(r.retryAfterMs).toBeLessThanOrEqual(MINUTE);
      });

      it("retryAfterMs is the time until enough of the window has expired", async (ctx) => {
        const advance = clock(ctx);
        await fill("k", 3); // t = 0
        advance(10_000);
        await fill("k", 4); // t = 10 s
        advance(10_000);
        await fill("k", 3); // t = 20 s, full

        // 2 more needs the first 3 gone: they leave at 60 s.
        expect(refused(await store.reserve(rid(), [counter("k", 10, 2)], LONG_LEASE)).retryAfterMs).toBe(40_000);
        // 5 more needs the first two entries (3 + 4) gone: the second leaves at 70 s.
        expect(refused(await store.reserve(rid(), [counter("k", 10, 5)], LONG_LEASE)).retryAfterMs).toBe(50_000);

        advance(39_999);
        expect(refused(await store.reserve(rid(), [counter("k", 10, 2)], LONG_LEASE)).retryAfterMs).toBe(1);
        advance(1);
        expect(await store.reserve(rid(), [counter("k", 10, 2)], LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("a sliding window of N admits at most N in any window", async (ctx) => {
        const advance = clock(ctx);
        const windowMs = 1_000;
        const admitted: number[] = [];
        for (let t = 0; t < 3_000; t += 50) {
          const id = rid();
          const r = await store.reserve(id, [counter("w", 3, 1, windowMs)], LONG_LEASE);
          if (r.ok) {
            admitted.push(t);
            await store.settle(id, [1]);
          }
          advance(50);
        }
        for (const t of admitted) {
          expect(admitted.filter((u) => u > t - windowMs && u <= t).length).toBeLessThanOrEqual(3);
        }
        // Entries leave exactly windowMs after they were taken, not a tick earlier or later.
        expect(admitted).toEqual([0, 50, 100, 1_000, 1_050, 1_100, 2_000, 2_050, 2_100]);
      });

      it("an entry leaves the window exactly windowMs after it was taken", async (ctx) => {
        const advance = clock(ctx);
        await fill("k", 10, 10, 1_000);
        advance(999);
        expect(await store.peek([{ key: "k", windowMs: 1_000 }])).toEqual([10]);
        expect(refused(await store.reserve(rid(), [counter("k", 10, 1, 1_000)], LONG_LEASE)).retryAfterMs).toBe(1);
        advance(1);
        expect(await store.peek([{ key: "k", windowMs: 1_000 }])).toEqual([0]);
        expect(await store.reserve(rid(), [counter("k", 10, 10, 1_000)], LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("keeps keys apart", async () => {
        await fill("one", 10);
        expect(await store.reserve(rid(), [counter("two", 10, 10)], LONG_LEASE)).toMatchObject({ ok: true });
        expect(await store.peek([{ key: "one", windowMs: MINUTE }, { key: "two", windowMs: MINUTE }])).toEqual([10, 10]);
      });
    });

    describe("buckets (max above 64: settled amounts summed per 1/64 of the window)", () => {
      it("a settled amount counts at least windowMs and at most windowMs + one bucket width after it was reserved", async (ctx) => {
        const advance = clock(ctx);
        // The test clocks start on a whole second, so offsets are positions inside a 1 s bucket.
        for (const offset of [0, 1, 500, 999]) {
          const key = `edge-${offset}`;
          advance(offset);
          await fill(key, 7, BIG, W64);
          advance(W64 - 1);
          expect(await store.peek([{ key, windowMs: W64 }])).toEqual([7]);
          advance(BUCKET);
          expect(await store.peek([{ key, windowMs: W64 }])).toEqual([0]);
          advance(BUCKET - offset + 1); // back on a whole second for the next offset
        }
      });

      it("admits at most max in any window, whatever the amounts and the times", async (ctx) => {
        const advance = clock(ctx);
        const max = 1_000;
        const admitted: { t: number; amount: number }[] = [];
        let t = 0;
        for (let i = 0; i < 600; i++) {
          const id = rid();
          const amount = 20 + ((i * 37) % 90);
          const r = await store.reserve(id, [counter("bw", max, amount, W64)], LONG_LEASE);
          if (r.ok) {
            // Some settle lower, some exactly: a settle above the reservation may go past max, by design.
            const actual = i % 3 === 0 ? amount - 10 : amount;
            await store.settle(id, [actual]);
            admitted.push({ t, amount: actual });
          }
          const step = 137 + ((i * 53) % 700);
          advance(step);
          t += step;
        }
        expect(admitted.length).toBeGreaterThan(50);
        for (const a of admitted) {
          const inWindow = admitted.filter((u) => u.t > a.t - W64 && u.t <= a.t).reduce((x, u) => x + u.amount, 0);
          expect(inWindow).toBeLessThanOrEqual(max);
        }
      });

      it("retryAfterMs is never earlier than the store admits, and not later than one bucket after", async (ctx) => {
        const advance = clock(ctx);
        advance(250);
        await fill("ra", 600, BIG, W64);
        advance(10_000);
        await fill("ra", 400, BIG, W64);
        const counter1000 = counter("ra", 1_000, 100, W64);
        const r = refused(await store.reserve(rid(), [counter1000], LONG_LEASE));
        // The first 600 left exactly at 250 + W64 would be in 53 750 ms; buckets may add up to 1 s.
        expect(r.retryAfterMs).toBeGreaterThanOrEqual(W64 - 10_000);
        expect(r.retryAfterMs).toBeLessThanOrEqual(W64 - 10_000 + BUCKET);
        advance(r.retryAfterMs! - 1);
        expect(await store.reserve(rid(), [counter1000], LONG_LEASE)).toMatchObject({ ok: false });
        advance(1);
        expect(await store.reserve(rid(), [counter1000], LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("a late settle goes into the bucket of its reservation time", async (ctx) => {
        const advance = clock(ctx);
        const late = rid("late");
        await store.reserve(late, [counter("lb", BIG, 500, W64)], 1_000);
        advance(30_000);
        expect(await store.peek([{ key: "lb", windowMs: W64 }])).toEqual([0]);
        await store.settle(late, [300]);
        expect(await store.peek([{ key: "lb", windowMs: W64 }])).toEqual([300]);
        advance(W64 - 30_000 + BUCKET - 1);
        expect(await store.peek([{ key: "lb", windowMs: W64 }])).toEqual([0]);
      });

      it("a settle after the reservation left its window adds nothing", async (ctx) => {
        const advance = clock(ctx);
        const late = rid("late");
        await store.reserve(late, [counter("gone", BIG, 500, W64)], 1_000);
        advance(W64 + BUCKET);
        await store.settle(late, [300]);
        expect(await store.peek([{ key: "gone", windowMs: W64 }])).toEqual([0]);
      });

      it("holds a bounded number of rows however many reservations were settled: 20,000 in one day", async (ctx) => {
        const advance = clock(ctx);
        const size = opened.size;
        if (!size) return ctx.skip("store has no size inspector");
        const DAY = 86_400_000;
        const c = counter("route:usd", BIG, 100, DAY);
        for (let i = 0; i < 20_000; i++) {
          const id = rid("bulk");
          expect(await store.reserve(id, [c], LONG_LEASE)).toMatchObject({ ok: true });
          await store.settle(id, [90]);
          advance(DAY / 20_000 - 1); // spread over the whole window: every bucket gets some
        }
        expect(await store.peek([c])).toEqual([20_000 * 90]);
        // 64 buckets of 1/64 day, plus the one the window's far edge cuts.
        expect(await size("route:usd")).toBeLessThanOrEqual(65);
        // In-flight reservations are kept apart until they settle: they add one row each.
        const held = [rid(), rid(), rid()];
        for (const id of held) await store.reserve(id, [c], LONG_LEASE);
        expect(await size("route:usd")).toBeLessThanOrEqual(68);
        for (const id of held) await store.release(id);
        expect(await size("route:usd")).toBeLessThanOrEqual(65);
      }, 60_000);

      it("a counter with max up to 64 stays exact: 1 ms buckets", async (ctx) => {
        const advance = clock(ctx);
        await fill("small", 1, 64, DAY_FOR_SMALL);
        advance(DAY_FOR_SMALL - 1);
        expect(await store.peek([{ key: "small", windowMs: DAY_FOR_SMALL }])).toEqual([1]);
        advance(1);
        expect(await store.peek([{ key: "small", windowMs: DAY_FOR_SMALL }])).toEqual([0]);
      });
    });

    describe("settle and release", () => {
      it("settle replaces a reserved amount with a lower actual one", async () => {
        const id = rid();
        await store.reserve(id, [counter("k", 10, 8)], LONG_LEASE);
        await store.settle(id, [2]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([2]);
        expect(await store.reserve(rid(), [counter("k", 10, 8)], LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("settle replaces a reserved amount with a higher actual one, even past max", async () => {
        const id = rid();
        await store.reserve(id, [counter("k", 10, 1)], LONG_LEASE);
        await store.settle(id, [12]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([12]);
        const r = refused(await store.reserve(rid(), [counter("k", 10, 1)], LONG_LEASE));
        expect(r.used).toBe(12);
      });

      it("settle applies each actual to its own counter, in reserve order", async () => {
        const id = rid();
        const counters = [counter("requests", 100, 1), counter("tokens", 10_000, 500), counter("micro-usd", 1e9, 2_000)];
        await store.reserve(id, counters, LONG_LEASE);
        await store.settle(id, [1, 731, 1_462]);
        expect(await store.peek(counters)).toEqual([1, 731, 1_462]);
      });

      it("settle is idempotent: a second settle neither adds nor changes anything", async () => {
        const id = rid();
        await store.reserve(id, [counter("k", 100, 10)], LONG_LEASE);
        await store.settle(id, [4]);
        await store.settle(id, [4]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([4]);
        await store.settle(id, [9]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([4]);
      });

      it("settle of an unknown id is a no-op", async () => {
        await fill("k", 3);
        await expect(store.settle("never-reserved", [5])).resolves.toBeUndefined();
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([3]);
      });

      it("release gives back every counter's amount", async () => {
        await fill("a", 2);
        const id = rid();
        const counters = [counter("a", 10, 8), counter("b", 5, 5)];
        expect(await store.reserve(id, counters, LONG_LEASE)).toMatchObject({ ok: true });
        await store.release(id);
        expect(await store.peek(counters)).toEqual([2, 0]);
        expect(await store.reserve(rid(), counters, LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("release of an unknown id is a no-op", async () => {
        await fill("k", 3);
        await expect(store.release("never-reserved")).resolves.toBeUndefined();
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([3]);
      });

      it("release after settle does not take back what was used", async () => {
        const id = rid();
        await store.reserve(id, [counter("k", 10, 5)], LONG_LEASE);
        await store.settle(id, [5]);
        await store.release(id);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([5]);
      });

      it("settle after release does not bring the amount back", async () => {
        const id = rid();
        await store.reserve(id, [counter("k", 10, 5)], LONG_LEASE);
        await store.release(id);
        await store.settle(id, [5]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
      });
    });

    describe("leases", () => {
      it("an unsettled reservation stops counting once leaseMs has passed", async (ctx) => {
        const advance = clock(ctx);
        expect(await store.reserve(rid(), [counter("k", 5, 5)], 1_000)).toMatchObject({ ok: true });
        advance(999);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([5]);
        expect(refused(await store.reserve(rid(), [counter("k", 5, 1)], 1_000)).used).toBe(5);
        advance(1);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
        expect(await store.reserve(rid(), [counter("k", 5, 5)], 1_000)).toMatchObject({ ok: true });
      });

      it("a settled reservation outlives its lease and counts for the whole window", async (ctx) => {
        const advance = clock(ctx);
        const id = rid();
        await store.reserve(id, [counter("k", 10, 5)], 1_000);
        await store.settle(id, [5]);
        advance(30_000);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([5]);
        advance(30_000);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
      });

      it("a settle that arrives after the lease ran out still counts the actual amount", async (ctx) => {
        const advance = clock(ctx);
        const late = rid("late");
        await store.reserve(late, [counter("k", 5, 5), counter("g", 100, 5)], 1_000);
        advance(2_000);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
        // Someone else takes the space the expired lease gave back...
        expect(await store.reserve(rid(), [counter("k", 5, 5)], LONG_LEASE)).toMatchObject({ ok: true });
        // ...and the slow request's real usage is still charged: nothing is free.
        await store.settle(late, [4, 4]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }, { key: "g", windowMs: MINUTE }])).toEqual([9, 4]);
      });

      it("a late settle still leaves the window on time", async (ctx) => {
        const advance = clock(ctx);
        const late = rid("late");
        await store.reserve(late, [counter("k", 10, 5)], 1_000);
        advance(2_000);
        await store.settle(late, [3]);
        advance(MINUTE - 2_001);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([3]);
        advance(1);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
      });

      // The proof-of-work gate's replay guard (core/gates/challenge.ts) is this: a solution is used once.
      it("a max-1 counter whose lease is its window is a set-once: of 50 concurrent takers exactly one wins", async () => {
        const results = await Promise.all(Array.from({ length: 50 }, () => store.reserve(rid(), [counter("once", 1, 1, 5 * MINUTE)], 5 * MINUTE)));
        expect(results.filter((r) => r.ok).length).toBe(1);
      });

      it("a set-once holds until its window ends, then the key is free again", async (ctx) => {
        const advance = clock(ctx);
        expect(await store.reserve(rid(), [counter("once", 1, 1, 5 * MINUTE)], 5 * MINUTE)).toMatchObject({ ok: true });
        advance(5 * MINUTE - 1);
        expect(refused(await store.reserve(rid(), [counter("once", 1, 1, 5 * MINUTE)], 5 * MINUTE)).used).toBe(1);
        advance(1);
        expect(await store.reserve(rid(), [counter("once", 1, 1, 5 * MINUTE)], 5 * MINUTE)).toMatchObject({ ok: true });
      });

      it("release after the lease ran out is a no-op", async (ctx) => {
        const advance = clock(ctx);
        const id = rid();
        await store.reserve(id, [counter("k", 5, 5)], 1_000);
        advance(1_000);
        await store.release(id);
        await store.settle(id, [5]);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([0]);
      });
    });

    describe("concurrency", () => {
      it("200 concurrent reservations of 1 against max 20 admit exactly 20", async () => {
        const results = await Promise.all(
          Array.from({ length: 200 }, () => store.reserve(rid(), [counter("hot", 20, 1)], LONG_LEASE)),
        );
        expect(results.filter((r) => r.ok).length).toBe(20);
        // Each admitted reservation saw its own total: 1, 2, ... 20, none twice.
        const totals = results.flatMap((r) => (r.ok ? r.totals : [])).sort((a, b) => a - b);
        expect(totals).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
        for (const r of results) {
          if (!r.ok) expect(r).toMatchObject({ index: 0, used: 20 });
        }
        expect(await store.peek([{ key: "hot", windowMs: MINUTE }])).toEqual([20]);
      });

      it("concurrent reservations of varied sizes never admit more than max", async () => {
        const max = 100;
        const amounts = Array.from({ length: 200 }, (_, i) => ((i * 7) % 13) + 1);
        const results = await Promise.all(
          amounts.map((amount) => store.reserve(rid(), [counter("mixed", max, amount)], LONG_LEASE)),
        );
        const admitted = amounts.filter((_, i) => results[i]!.ok).reduce((a, b) => a + b, 0);
        expect(admitted).toBeLessThanOrEqual(max);
        expect(await store.peek([{ key: "mixed", windowMs: MINUTE }])).toEqual([admitted]);
        // Nothing was released, so the total only grew: every refusal must still be justified at the end.
        amounts.forEach((amount, i) => {
          if (!results[i]!.ok) expect(admitted + amount).toBeGreaterThan(max);
        });
      });

      it("concurrent multi-counter reservations respect every counter", async () => {
        const ids = Array.from({ length: 120 }, () => rid());
        const results = await Promise.all(
          ids.map((id, i) =>
            store.reserve(id, [counter(`user-${i % 4}`, 12, 1), counter("global", 30, 1 + (i % 2))], LONG_LEASE),
          ),
        );
        const perUser = [0, 0, 0, 0];
        let global = 0;
        results.forEach((r, i) => {
          if (!r.ok) return;
          perUser[i % 4]! += 1;
          global += 1 + (i % 2);
        });
        expect(global).toBeLessThanOrEqual(30);
        for (const n of perUser) expect(n).toBeLessThanOrEqual(12);
        const peeked = await store.peek([0, 1, 2, 3].map((u) => ({ key: `user-${u}`, windowMs: MINUTE })).concat({ key: "global", windowMs: MINUTE }));
        expect(peeked).toEqual([...perUser, global]);
      });

      it("concurrent releases and reserves keep the total exact", async () => {
        const held = await Promise.all(
          Array.from({ length: 10 }, async () => {
            const id = rid();
            expect(await store.reserve(id, [counter("churn", 10, 1)], LONG_LEASE)).toMatchObject({ ok: true });
            return id;
          }),
        );
        const results = await Promise.all([
          ...held.map((id) => store.release(id).then(() => ({ ok: true, totals: [] }) as ReserveResult)),
          ...Array.from({ length: 30 }, () => store.reserve(rid(), [counter("churn", 10, 1)], LONG_LEASE)),
        ]);
        const newlyAdmitted = results.slice(held.length).filter((r) => r.ok).length;
        expect(newlyAdmitted).toBeLessThanOrEqual(10);
        expect(await store.peek([{ key: "churn", windowMs: MINUTE }])).toEqual([newlyAdmitted]);
      });
    });

    describe("peek", () => {
      it("returns totals without reserving anything", async () => {
        await fill("a", 4);
        const counters = [
          { key: "a", windowMs: MINUTE },
          { key: "unknown", windowMs: MINUTE },
        ];
        expect(await store.peek(counters)).toEqual([4, 0]);
        expect(await store.peek(counters)).toEqual([4, 0]);
        expect(await store.reserve(rid(), [counter("a", 10, 6), counter("unknown", 1, 1)], LONG_LEASE)).toMatchObject({ ok: true });
      });

      it("counts unsettled reservations too", async () => {
        await store.reserve(rid(), [counter("k", 10, 7)], LONG_LEASE);
        expect(await store.peek([{ key: "k", windowMs: MINUTE }])).toEqual([7]);
      });

      it("returns an empty list for no counters", async () => {
        expect(await store.peek([])).toEqual([]);
      });
    });

    describe("peekDetail", () => {
      const k = { key: "k", windowMs: MINUTE };

      it("tells what requests in flight hold apart from what is settled", async () => {
        const detail = (cs: { key: string; windowMs: number }[]) => store.peekDetail!(cs);
        const settled = rid();
        await store.reserve(settled, [counter("k", 100, 10)], LONG_LEASE);
        await store.settle(settled, [3]);
        const open = rid();
        await store.reserve(open, [counter("k", 100, 7)], LONG_LEASE);
        expect(await detail([k, { key: "unknown", windowMs: MINUTE }])).toEqual([{ total: 10, reserved: 7 }, { total: 0, reserved: 0 }]);
        // The same total peek gives: only the split is new.
        expect(await store.peek([k])).toEqual([10]);
        await store.settle(open, [5]);
        expect(await detail([k])).toEqual([{ total: 8, reserved: 0 }]);
        expect(await detail([])).toEqual([]);
      });

      it("a released reservation and one whose lease ran out hold nothing", async (ctx) => {
        const advance = clock(ctx);
        const released = rid();
        await store.reserve(released, [counter("k", 100, 4)], LONG_LEASE);
        await store.reserve(rid(), [counter("k", 100, 6)], 1_000);
        expect(await store.peekDetail!([k])).toEqual([{ total: 10, reserved: 10 }]);
        await store.release(released);
        expect(await store.peekDetail!([k])).toEqual([{ total: 6, reserved: 6 }]);
        advance(1_000);
        expect(await store.peekDetail!([k])).toEqual([{ total: 0, reserved: 0 }]);
      });
    });

    describe("score", () => {
      it("adds deltas and returns the total", async () => {
        expect(await store.score("s", 5, NO_DECAY)).toBeCloseTo(5);
        expect(await store.score("s", 3, NO_DECAY)).toBeCloseTo(8);
        expect(await store.score("other", 1, NO_DECAY)).toBeCloseTo(1);
      });

      it("delta 0 reads without changing it; an unknown score is 0", async () => {
        expect(await store.score("missing", 0, NO_DECAY)).toBe(0);
        await store.score("s", 6, NO_DECAY);
        expect(await store.score("s", 0, NO_DECAY)).toBeCloseTo(6);
        expect(await store.score("s", 0, NO_DECAY)).toBeCloseTo(6);
      });

      it("halves every halfLifeMs", async (ctx) => {
        const advance = clock(ctx);
        await store.score("s", 8, 1_000);
        advance(1_000);
        expect(await store.score("s", 0, 1_000)).toBeCloseTo(4, 9);
        advance(1_000);
        expect(await store.score("s", 0, 1_000)).toBeCloseTo(2, 9);
        advance(500);
        expect(await store.score("s", 0, 1_000)).toBeCloseTo(Math.SQRT2, 9);
        expect(await store.score("s", 1, 1_000)).toBeCloseTo(Math.SQRT2 + 1, 9);
      });

      it("a long-idle score decays to nothing", async (ctx) => {
        const advance = clock(ctx);
        await store.score("s", 1_000, 1_000);
        advance(200_000);
        expect(await store.score("s", 0, 1_000)).toBeCloseTo(0, 9);
        expect(await store.score("s", 2, 1_000)).toBeCloseTo(2, 9);
      });
    });

    describe("distinct", () => {
      it("counts distinct members per key", async () => {
        expect(await store.distinct("d", "a", HOUR)).toBe(1);
        expect(await store.distinct("d", "b", HOUR)).toBe(2);
        expect(await store.distinct("d", "a", HOUR)).toBe(2);
        expect(await store.distinct("other", "a", HOUR)).toBe(1);
      });

      it("forgets a member ttlMs after it was last seen", async (ctx) => {
        const advance = clock(ctx);
        expect(await store.distinct("d", "a", 1_000)).toBe(1);
        advance(500);
        expect(await store.distinct("d", "b", 1_000)).toBe(2);
        advance(499);
        expect(await store.distinct("d", "c", 1_000)).toBe(3);
        advance(1); // a is now exactly ttl old
        expect(await store.distinct("d", "c", 1_000)).toBe(2);
        // Seeing b again restarts its ttl.
        expect(await store.distinct("d", "b", 1_000)).toBe(2);
        advance(999);
        expect(await store.distinct("d", "e", 1_000)).toBe(3);
        advance(1);
        expect(await store.distinct("d", "e", 1_000)).toBe(1);
      });
    });

    describe("keys", () => {
      const base: StoredKey = {
        id: "key_1",
        hash: "a".repeat(64),
        prefix: "tg_live_ab",
        user: "alice",
        plan: "pro",
        service: false,
        grants: ["chat", "embeddings"],
        routes: ["/v1/chat/completions"],
        verified: true,
        createdAt: 1_735_689_600_000,
        expiresAt: 1_767_225_600_000,
      };

      it("putKey then findKey by hash round-trips every field", async () => {
        await store.putKey(base);
        expect(await store.findKey(base.hash)).toEqual(base);
        expect(await store.findKey("f".repeat(64))).toBeUndefined();
      });

      it("round-trips a key with only the required fields", async () => {
        const minimal: StoredKey = { id: "svc", hash: "b".repeat(64), prefix: "tg_svc", plan: "free", service: true, grants: [], verified: false, createdAt: 1 };
        await store.putKey(minimal);
        const found = await store.findKey(minimal.hash);
        expect(found).toEqual(minimal);
        expect(found?.user).toBeUndefined();
        expect(found?.revokedAt).toBeUndefined();
      });

      it("putKey with the same hash replaces the key", async () => {
        await store.putKey(base);
        await store.putKey({ ...base, plan: "enterprise", grants: ["chat"] });
        expect(await store.findKey(base.hash)).toMatchObject({ plan: "enterprise", grants: ["chat"] });
        expect(await store.listKeys()).toHaveLength(1);
      });

      it("hands out copies: changing a returned key does not change the stored one", async () => {
        const mine = { ...base, grants: [...base.grants], routes: [...base.routes!] };
        await store.putKey(mine);
        mine.grants.push("pushed-after-put");
        mine.routes.push("/pushed-after-put");
        mine.plan = "changed-after-put";
        const found = (await store.findKey(base.hash))!;
        found.plan = "hacked";
        found.revokedAt = 1;
        found.grants.push("added");
        found.routes!.push("/added");
        (await store.listKeys())[0]!.grants.push("listed");
        expect(await store.findKey(base.hash)).toEqual(base);
      });

      it("listKeys returns every key", async () => {
        const second = { ...base, id: "key_2", hash: "c".repeat(64), user: "bob" };
        await store.putKey(base);
        await store.putKey(second);
        const listed = await store.listKeys();
        expect(listed).toHaveLength(2);
        expect(listed).toEqual(expect.arrayContaining([base, second]));
      });

      it("revokeKey sets revokedAt and returns true; false for an unknown id", async () => {
        await store.putKey(base);
        const before = Date.now();
        expect(await store.revokeKey(base.id)).toBe(true);
        const revoked = await store.findKey(base.hash);
        expect(revoked).toMatchObject({ ...base, revokedAt: expect.any(Number) });
        if (!opened.advance) {
          expect(revoked!.revokedAt).toBeGreaterThanOrEqual(before);
          expect(revoked!.revokedAt).toBeLessThanOrEqual(Date.now());
        }
        expect((await store.listKeys())[0]!.revokedAt).toBe(revoked!.revokedAt);
        expect(await store.revokeKey("no-such-key")).toBe(false);
      });

      it("revokedAt is the store's current time, and revoking again keeps the first one", async (ctx) => {
        const advance = clock(ctx);
        await store.putKey(base);
        advance(5_000);
        await store.revokeKey(base.id);
        const first = (await store.findKey(base.hash))!.revokedAt!;
        advance(5_000);
        expect(await store.revokeKey(base.id)).toBe(true);
        expect((await store.findKey(base.hash))!.revokedAt).toBe(first);
      });
    });

    describe("checkpoints (SPEC §7.4: a crash forgets at most the last second)", () => {
      const LEASE = 10_000;
      const crashed = (id: string, extra: Partial<UsageRecord> = {}): UsageRecord => ({
        ...emptyUsageRecord(id, new Date()),
        output_tokens: 30,
        cost_usd: 0.000007,
        usage_source: "counted",
        ended: "client_disconnect",
        signals: [],
        clamped: { max_tokens: { from: null, to: 100 } },
        ...extra,
      });
      const recordsOf = async (id: string) => (await store.queryUsage({ since: 0 })).filter((r) => r.request_id === id);
      const total = async (key: string) => (await store.peek([{ key, windowMs: HOUR }]))[0];

      it("an expired lease settles at its checkpoint, and its record is written once", async (ctx) => {
        const advance = clock(ctx);
        const id = rid("cp");
        const rec = crashed(id);
        expect(await store.reserve(`${id}:b`, [counter("bud", 1_000, 500, HOUR), counter("tok", 1_000, 400, HOUR)], LEASE)).toMatchObject({ ok: true });
        await store.checkpoint({ settles: [{ id: `${id}:b`, actual: [3, 40] }], record: crashed(id, { output_tokens: 10 }) });
        await store.checkpoint({ settles: [{ id: `${id}:b`, actual: [7, 60] }], record: rec });
        // While the lease runs the process may still be alive: nothing is settled yet.
        expect(await store.recover()).toEqual([]);
        expect(await total("bud")).toBe(500);
        advance(LEASE);
        expect(await store.recover()).toEqual([rec]);
        expect(await total("bud")).toBe(7);
        expect(await total("tok")).toBe(60);
        expect(await store.recover()).toEqual([]);
        expect(await recordsOf(id)).toEqual([rec]);
      });

      it("settles every reservation the checkpoint names", async (ctx) => {
        const advance = clock(ctx);
        const id = rid("cp");
        await store.reserve(`${id}:q`, [counter("req", 10, 1, HOUR)], LEASE);
        await store.reserve(`${id}:b`, [counter("bud", 1_000, 500, HOUR)], LEASE);
        await store.checkpoint({ settles: [{ id: `${id}:b`, actual: [9] }, { id: `${id}:q`, actual: [1] }], record: crashed(id) });
        advance(LEASE + 1);
        expect(await store.recover()).toHaveLength(1);
        expect(await total("bud")).toBe(9);
        expect(await total("req")).toBe(1);
      });

      it("a reservation settled or released normally drops its checkpoint: no second charge, no record", async (ctx) => {
        const advance = clock(ctx);
        const settled = rid("cp");
        const released = rid("cp");
        await store.reserve(settled, [counter("bud", 1_000, 500, HOUR)], LEASE);
        await store.reserve(released, [counter("bud", 1_000, 100, HOUR)], LEASE);
        await store.checkpoint({ settles: [{ id: settled, actual: [7] }], record: crashed(settled) });
        await store.checkpoint({ settles: [{ id: released, actual: [5] }], record: crashed(released) });
        await store.settle(settled, [11]);
        await store.release(released);
        await store.checkpoint({ settles: [{ id: settled, actual: [13] }], record: crashed(settled) });
        advance(LEASE + 1);
        expect(await store.recover()).toEqual([]);
        expect(await total("bud")).toBe(11);
        expect(await recordsOf(settled)).toEqual([]);
      });

      it("concurrent recoveries settle and record each checkpoint once", async (ctx) => {
        const advance = clock(ctx);
        const ids = [rid("cp"), rid("cp"), rid("cp")];
        for (const id of ids) {
          await store.reserve(id, [counter("bud", 1_000, 100, HOUR)], LEASE);
          await store.checkpoint({ settles: [{ id, actual: [5] }], record: crashed(id) });
        }
        advance(LEASE);
        const passes = await Promise.all([store.recover(), store.recover(), store.recover()]);
        expect(passes.flat().map((r) => r.request_id).sort()).toEqual([...ids].sort());
        expect(await total("bud")).toBe(15);
      });
    });

    describe("usage", () => {
      const T0 = Date.UTC(2025, 0, 1);
      const record = (request_id: string, t: number, extra: Partial<UsageRecord> = {}): UsageRecord => ({
        ts: new Date(t).toISOString(),
        request_id,
        user: "alice",
        key_id: "key_1",
        org: null,
        ip: "203.0.113.7",
        route: "/v1/chat/completions",
        plan: "pro",
        endpoint: "chat",
        model_requested: "gpt-4o",
        model: "gpt-4o-mini",
        decision: "downgrade",
        code: null,
        input_tokens: 1_234,
        output_tokens: 567,
        tool_calls: 2,
        run_id: "run_9",
        run_step: 3,
        docs_retrieved: 4,
        attachments: 1,
        estimated_cost_usd: 0.001234,
        cost_usd: 0.000987,
        usage_source: "provider",
        duration_ms: 812,
        ttft_ms: 143,
        stream: true,
        ended: "complete",
        signals: ["burst", "new_ip"],
        clamped: { max_tokens: { from: 4_096, to: 1_024 }, temperature: { from: null, to: 1 } },
        parent_id: null,
        ...extra,
      });

      it("records round-trip with every field intact", async () => {
        const full = record("req_full", T0);
        const refusedRecord = record("req_refused", T0 + 1, {
          user: null,
          key_id: null,
          ip: null,
          model: null,
          decision: "deny",
          code: "budget_exceeded",
          usage_source: null,
          ttft_ms: null,
          run_id: null,
          run_step: null,
          stream: false,
          ended: null,
          signals: [],
          clamped: {},
        });
        await store.appendUsage(full);
        await store.appendUsage(refusedRecord);
        expect(await store.queryUsage({ since: T0 })).toEqual([full, refusedRecord]);
      });

      it("queries by [since, until) on ts", async () => {
        await store.appendUsage(record("a", T0));
        await store.appendUsage(record("b", T0 + 1_000));
        await store.appendUsage(record("c", T0 + 2_000));
        const ids = async (since: number, until?: number) =>
          (await store.queryUsage(until === undefined ? { since } : { since, until })).map((r) => r.request_id);

        expect(await ids(T0)).toEqual(["a", "b", "c"]);
        expect(await ids(T0 + 1_000)).toEqual(["b", "c"]);
        expect(await ids(T0 + 1, T0 + 2_000)).toEqual(["b"]);
        expect(await ids(T0, T0 + 1_000)).toEqual(["a"]);
        expect(await ids(T0 + 1_000, T0 + 1_001)).toEqual(["b"]);
        expect(await ids(T0 + 3_000)).toEqual([]);
        expect(await ids(T0 - 10_000, T0)).toEqual([]);
      });

      it("compares instants, not strings, when ts carries an offset", async () => {
        // 02:00+02:00 is midnight UTC: inside [T0, T0 + 1 ms) although it sorts after it as text.
        const shifted = record("offset", T0, { ts: "2025-01-01T02:00:00.000+02:00" });
        await store.appendUsage(shifted);
        expect(await store.queryUsage({ since: T0, until: T0 + 1 })).toEqual([shifted]);
      });
    });
  });
}
