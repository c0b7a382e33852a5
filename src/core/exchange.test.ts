import { describe, expect, it } from "vitest";
import { isoTimestamp } from "./exchange.js";

describe("isoTimestamp", () => {
  it("is exactly Date#toISOString, across millisecond, second and year boundaries and in any order", () => {
    const instants = [0, 1, 9, 10, 99, 100, 999, 1000, 1001, -1, -1500, Date.parse("2026-12-31T23:59:59.999Z"), Date.parse("2027-01-01T00:00:00.000Z"), Date.now()];
    for (let i = 0; i < 2000; i++) instants.push(Math.floor(Math.random() * 4e12));
    for (const ms of [...instants, ...instants.reverse()]) expect(isoTimestamp(ms)).toBe(new Date(ms).toISOString());
  });
});
