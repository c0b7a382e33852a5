import { describe, expect, it } from "vitest";
import { WriteBehind } from "./write-behind.js";

function queue(send: (items: number[]) => Promise<void>, waitMs?: number) {
  const sent: number[] = [];
  const wb = new WriteBehind<number>({
    send: async (items) => {
      await send(items);
      sent.push(...items);
    },
    retryable: () => true,
    onDiscard: () => {},
    batchSize: 10,
    max: 100,
    waitMs,
  });
  return { wb, sent };
}

const pushed = (wb: WriteBehind<number>, item: number) => new Promise<void>((done) => expect(wb.push(item, done)).toBe(true));

describe("WriteBehind", () => {
  it("sends an item pushed as the last send winds down (the caller's next write, right after its ack)", async () => {
    const { wb, sent } = queue(async () => {});
    await pushed(wb, 1);
    const next = pushed(wb, 2);
    await Promise.race([next, new Promise((r) => setTimeout(r, 500))]);
    expect(sent).toEqual([1, 2]);
  });

  it("ends a pusher's wait after waitMs while the store hangs, and still sends the item once the store answers", async () => {
    let answer!: () => void;
    const { wb, sent } = queue((items) => (items[0] === 1 ? new Promise<void>((r) => (answer = r)) : Promise.resolve()), 50);
    const started = performance.now();
    const waits = [pushed(wb, 1), pushed(wb, 2), pushed(wb, 3)];
    await Promise.all(waits);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(45);
    expect(waited).toBeLessThan(1_000);
    expect(sent).toEqual([]);
    expect(wb.size).toBe(3);
    answer();
    await wb.drain(1_000);
    expect(sent).toEqual([1, 2, 3]);
  });

  it("refuses past max without ever calling that pusher back", () => {
    const wb = new WriteBehind<number>({ send: () => new Promise(() => {}), retryable: () => true, onDiscard: () => {}, batchSize: 1, max: 2 });
    let called = 0;
    expect(wb.push(1, () => called++)).toBe(true);
    expect(wb.push(2, () => called++)).toBe(true);
    expect(wb.push(3, () => called++)).toBe(false);
    expect(wb.refused).toBe(1);
    expect(called).toBe(0);
  });
});
