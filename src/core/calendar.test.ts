import { describe, expect, it } from "vitest";
import { period } from "./calendar.js";

describe("period", () => {
  it("resets UTC days at midnight UTC", () => {
    const now = Date.UTC(2026, 10, 28, 17, 30);
    expect(period("day", now, "UTC")).toEqual({ key: "2026-11-28", resetsAt: Date.UTC(2026, 10, 29) });
    expect(period("month", now, "UTC")).toEqual({ key: "2026-11", resetsAt: Date.UTC(2026, 11, 1) });
  });
  it("rolls the year over", () => {
    expect(period("month", Date.UTC(2026, 11, 31, 23), "UTC")).toEqual({ key: "2026-12", resetsAt: Date.UTC(2027, 0, 1) });
  });
  it("follows the configured time zone", () => {
    // 03:00 UTC on the 28th is still the 27th in New York (UTC-5 in November).
    const p = period("day", Date.UTC(2026, 10, 28, 3), "America/New_York");
    expect(p.key).toBe("2026-11-27");
    expect(p.resetsAt).toBe(Date.UTC(2026, 10, 28, 5));
  });

  it("reuses a period until it ends, and moves on exactly at the reset", () => {
    const day = period("day", Date.UTC(2026, 10, 28, 12), "UTC");
    expect(period("day", Date.UTC(2026, 10, 28, 23, 59, 59, 999), "UTC")).toEqual(day);
    expect(period("day", Date.UTC(2026, 10, 29), "UTC").key).toBe("2026-11-29");
    // Going back in time (a test clock) still gives the right period.
    expect(period("day", Date.UTC(2026, 10, 27, 5), "UTC").key).toBe("2026-11-27");
  });
});
