import { afterEach, beforeEach, describe, expect, it, type TestContext } from "vitest";
import type { OutboxMessage, OutboxStore } from "../core/outbox.js";

export interface OpenedOutbox {
  outbox: OutboxStore;
  /** A second handle on the same data, as another process sharing the store would have. */
  other?: () => Promise<OutboxStore>;
  /** Moves the store's clock; absent when it runs on real time. */
  advance?: (ms: number) => void;
  close: () => Promise<void>;
}

const HOUR = 3_600_000;
const msg = (id: string, sink = "ops", kind = "budget.soft"): OutboxMessage => ({ id, sink, kind, payload: JSON.stringify({ id }) });

/** The outbox behaviour every store shares (memory, SQLite, Redis). */
export function describeOutboxContract(name: string, open: () => Promise<OpenedOutbox>): void {
  describe(`${name} outbox contract`, () => {
    let opened: OpenedOutbox;
    let outbox: OutboxStore;
    beforeEach(async () => {
      opened = await open();
      outbox = opened.outbox;
    });
    afterEach(() => opened.close());

    function clock(ctx: TestContext): (ms: number) => void {
      if (!opened.advance) ctx.skip("store has no injectable clock");
      return opened.advance!;
    }

    it("adds a message once per sink and id: the same id again, pending or delivered, adds nothing", async () => {
      expect(await outbox.add([msg("a"), msg("b"), msg("a", "other")], HOUR)).toBe(3);
      expect(await outbox.add([msg("a"), msg("c")], HOUR)).toBe(1);
      const claimed = await outbox.claim("ops", 10, 60_000);
      expect(claimed.map((i) => i.id).sort()).toEqual(["a", "b", "c"]);
      await outbox.delivered("ops", ["a"]);
      expect(await outbox.add([msg("a")], HOUR)).toBe(0);
      expect(await outbox.counts()).toEqual(expect.arrayContaining([{ sink: "ops", kind: "budget.soft", state: "pending", count: 2 }, { sink: "other", kind: "budget.soft", state: "pending", count: 1 }]));
    });

    it("a claim hands a message to one claimant until its lease runs out, counting the attempt", async (ctx) => {
      const advance = clock(ctx);
      await outbox.add([msg("a"), msg("b")], HOUR);
      const first = await outbox.claim("ops", 1, 30_000);
      expect(first).toMatchObject([{ id: "a", sink: "ops", kind: "budget.soft", payload: '{"id":"a"}', state: "pending", attempts: 1, lastError: null }]);
      const second = await outbox.claim("ops", 10, 30_000);
      expect(second.map((i) => i.id)).toEqual(["b"]);
      expect(await outbox.claim("ops", 10, 30_000)).toEqual([]);
      // The claimant died: after its lease the message is claimable again, under the same id.
      advance(30_001);
      const again = await outbox.claim("ops", 10, 30_000);
      expect(again.map((i) => [i.id, i.attempts]).sort()).toEqual([["a", 2], ["b", 2]]);
    });

    it("only claims the sink asked for", async () => {
      await outbox.add([msg("a", "ops"), msg("u", "cloudevents", "usage")], HOUR);
      expect((await outbox.claim("cloudevents", 10, 30_000)).map((i) => i.id)).toEqual(["u"]);
      expect((await outbox.claim("ops", 10, 30_000)).map((i) => i.id)).toEqual(["a"]);
    });

    it("retryLater makes a message due again after the delay, keeping the error", async (ctx) => {
      const advance = clock(ctx);
      await outbox.add([msg("a")], HOUR);
      await outbox.claim("ops", 1, 30_000);
      await outbox.retryLater("ops", "a", 5_000, "HTTP 503");
      expect(await outbox.claim("ops", 1, 30_000)).toEqual([]);
      advance(5_000);
      expect(await outbox.claim("ops", 1, 30_000)).toMatchObject([{ id: "a", attempts: 2, lastError: "HTTP 503" }]);
    });

    it("fail moves a message to failed: listed, counted, never claimed; retry brings it back with fresh attempts", async () => {
      await outbox.add([msg("a"), msg("b")], HOUR);
      await outbox.claim("ops", 10, 30_000);
      await outbox.fail("ops", "a", "gave up after 3 attempts");
      expect(await outbox.claim("ops", 10, 0)).toEqual([]);
      const failed = await outbox.list({ state: "failed", limit: 10 });
      expect(failed).toMatchObject({ total: 1, items: [{ id: "a", state: "failed", attempts: 1, lastError: "gave up after 3 attempts" }] });
      expect(await outbox.counts()).toEqual(expect.arrayContaining([{ sink: "ops", kind: "budget.soft", state: "failed", count: 1 }]));
      const revived = await outbox.retry("ops", "a");
      expect(revived).toMatchObject({ id: "a", state: "pending", attempts: 0 });
      expect((await outbox.claim("ops", 10, 30_000)).map((i) => i.id)).toEqual(["a"]);
      expect((await outbox.list({ state: "failed", limit: 10 })).total).toBe(0);
      expect(await outbox.retry("ops", "nope")).toBeUndefined();
    });

    it("a delivered message is neither listed nor claimed, and a late delivery of a failed one counts", async () => {
      await outbox.add([msg("a"), msg("b")], HOUR);
      await outbox.claim("ops", 10, 30_000);
      await outbox.fail("ops", "b", "x");
      await outbox.delivered("ops", ["a", "b"]);
      expect((await outbox.list({ state: "pending", limit: 10 })).total).toBe(0);
      expect((await outbox.list({ state: "failed", limit: 10 })).total).toBe(0);
      expect(await outbox.counts()).toEqual([]);
      expect(await outbox.retry("ops", "a")).toMatchObject({ state: "delivered" });
    });

    it("a delivered id is forgotten after keepMs: then it may be added again", async (ctx) => {
      const advance = clock(ctx);
      await outbox.add([msg("a")], HOUR);
      await outbox.claim("ops", 1, 1_000);
      await outbox.delivered("ops", ["a"]);
      advance(HOUR - 1);
      expect(await outbox.add([msg("a")], HOUR)).toBe(0);
      advance(2);
      expect(await outbox.add([msg("a")], HOUR)).toBe(1);
    });

    it("pages through pending messages oldest first", async (ctx) => {
      const advance = opened.advance;
      for (let i = 0; i < 5; i++) {
        await outbox.add([msg(`m${i}`)], HOUR);
        if (advance) advance(1);
        else await new Promise((r) => setTimeout(r, 2));
      }
      void ctx;
      const one = await outbox.list({ state: "pending", limit: 2 });
      expect(one.items.map((i) => i.id)).toEqual(["m0", "m1"]);
      expect(one.total).toBe(5);
      const two = await outbox.list({ state: "pending", limit: 2, cursor: one.cursor });
      expect(two.items.map((i) => i.id)).toEqual(["m2", "m3"]);
      const three = await outbox.list({ state: "pending", limit: 2, cursor: two.cursor });
      expect(three.items.map((i) => i.id)).toEqual(["m4"]);
      expect(three.cursor).toBeUndefined();
    });

    it("two handles on one store: concurrent claims never hand out the same message twice", async (ctx) => {
      if (!opened.other) ctx.skip("store is not shared between processes");
      const other = await opened.other!();
      await outbox.add(Array.from({ length: 40 }, (_, i) => msg(`m${i}`)), HOUR);
      const claims = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? other : outbox).claim("ops", 7, 60_000)));
      const ids = claims.flat().map((i) => i.id);
      expect(ids).toHaveLength(40);
      expect(new Set(ids).size).toBe(40);
    });
  });
}
