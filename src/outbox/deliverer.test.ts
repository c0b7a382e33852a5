import { describe, expect, it } from "vitest";
import type { OutboxItem } from "../core/outbox.js";
import { MemoryOutbox } from "../stores/outbox-memory.js";
import { fakeClock } from "../testing/test-engine.js";
import { backoffMs, Deliverer, LEASE_MARGIN_MS, type DeliveryPolicy, type Sink } from "./deliverer.js";

const policy: DeliveryPolicy = { retryMinMs: 1_000, retryMaxMs: 60_000, maxAttempts: 5, maxAgeMs: 3_600_000, timeoutMs: 10_000, pollMs: 1_000 };
const HOUR = 3_600_000;

/** A receiver the test switches on and off; it records every id it took, duplicates included. */
function receiver(name = "ops", batch = 1) {
  const got: string[] = [];
  let up = true;
  const sink: Sink & { got: string[]; set(up: boolean): void } = {
    name,
    batch,
    parallel: 2,
    got,
    set: (v) => void (up = v),
    async send(items: OutboxItem[]) {
      if (!up) throw new Error("HTTP 503");
      got.push(...items.map((i) => i.id));
    },
  };
  return sink;
}
const msg = (id: string, sink = "ops") => ({ id, sink, kind: "budget.soft", payload: "{}" });

describe("backoff", () => {
  it("doubles from retry_min up to retry_max, with half of each delay random", () => {
    const low = (a: number) => backoffMs(a, policy, () => 0);
    const high = (a: number) => backoffMs(a, policy, () => 1);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(high)).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
    expect([1, 2, 3, 7].map(low)).toEqual([500, 1_000, 2_000, 30_000]);
    const spread = new Set(Array.from({ length: 50 }, () => backoffMs(3, policy)));
    expect(spread.size).toBeGreaterThan(10);
    for (const d of spread) expect(d).toBeGreaterThanOrEqual(2_000), expect(d).toBeLessThanOrEqual(4_000);
  });
});

describe("deliverer (fake clock)", () => {
  it("retries a message with growing delays while the receiver is down, then delivers it once", async () => {
    const clock = fakeClock();
    const outbox = new MemoryOutbox(clock.now);
    const sink = receiver();
    const d = new Deliverer(outbox, [sink], policy, { now: clock.now, random: () => 1 });
    await outbox.add([msg("a")], HOUR);
    sink.set(false);
    await d.tick();
    // Not due before its backoff: 1 s, then 2 s, then 4 s.
    for (const wait of [1_000, 2_000, 4_000]) {
      clock.advance(wait - 1);
      await d.tick();
      expect((await outbox.list({ state: "pending", limit: 1 })).items[0]).toMatchObject({ attempts: [1_000, 2_000, 4_000].indexOf(wait) + 1, lastError: "HTTP 503" });
      clock.advance(1);
      await d.tick();
    }
    sink.set(true);
    clock.advance(8_000);
    await d.tick();
    await d.tick();
    expect(sink.got).toEqual(["a"]);
    expect((await outbox.list({ state: "pending", limit: 1 })).total).toBe(0);
  });

  it("marks a message failed after max_attempts, and after max_age", async () => {
    const clock = fakeClock();
    const outbox = new MemoryOutbox(clock.now);
    const sink = receiver();
    sink.set(false);
    const failed: string[] = [];
    const d = new Deliverer(outbox, [sink], { ...policy, maxAttempts: 3 }, { now: clock.now, onFailed: (s, kind, n) => failed.push(`${s}/${kind}/${n}`) });
    await outbox.add([msg("a")], HOUR);
    for (let i = 0; i < 3; i++) {
      await d.tick();
      clock.advance(60_000);
    }
    expect(await outbox.list({ state: "failed", limit: 5 })).toMatchObject({ total: 1, items: [{ id: "a", attempts: 3, lastError: "gave up after 3 attempts (max_attempts); last: HTTP 503" }] });
    expect(failed).toEqual(["ops/budget.soft/1"]);

    await outbox.add([msg("old")], HOUR);
    clock.advance(HOUR);
    await d.tick();
    expect((await outbox.list({ state: "failed", limit: 5 })).items.map((i) => i.id)).toEqual(["a", "old"]);
  });

  it("two deliverers on one outbox: a claim keeps the other away until its lease runs out, then the message goes again under its id", async () => {
    const clock = fakeClock();
    const outbox = new MemoryOutbox(clock.now);
    const first = receiver();
    const second = receiver();
    // The first process claims and then hangs mid-send (as if killed): its send never settles.
    let hang = true;
    const hanging: Sink = { ...first, send: (items) => (hang ? new Promise(() => {}) : first.send(items, new AbortController().signal)) };
    const a = new Deliverer(outbox, [hanging], policy, { now: clock.now });
    const b = new Deliverer(outbox, [second], policy, { now: clock.now });
    await outbox.add([msg("x"), msg("y")], HOUR);
    void a.tick();
    await new Promise((r) => setImmediate(r));
    await b.tick();
    expect(second.got).toEqual([]);
    clock.advance(policy.timeoutMs + LEASE_MARGIN_MS - 1);
    await b.tick();
    expect(second.got).toEqual([]);
    clock.advance(1);
    await b.tick();
    expect(second.got.sort()).toEqual(["x", "y"]);
    hang = false;
  });

  it("sends a batching sink's messages in batches of its size", async () => {
    const clock = fakeClock();
    const outbox = new MemoryOutbox(clock.now);
    const batches: string[][] = [];
    const sink: Sink = { name: "cloudevents", batch: 3, parallel: 1, send: async (items) => void batches.push(items.map((i) => i.id)) };
    const delivered: number[] = [];
    const d = new Deliverer(outbox, [sink], policy, { now: clock.now, onDelivered: (_s, _k, n) => delivered.push(n) });
    await outbox.add(Array.from({ length: 7 }, (_, i) => msg(`u${i}`, "cloudevents")), HOUR);
    await d.tick();
    expect(batches.map((b) => b.length)).toEqual([3, 3, 1]);
    expect(batches.flat().sort()).toEqual(["u0", "u1", "u2", "u3", "u4", "u5", "u6"]);
    expect(delivered).toEqual([3, 3, 1]);
  });
});
