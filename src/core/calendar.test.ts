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

  const H = 3_600_000;
  /** The day containing `at` in `zone`: its key, and how long it lasts. */
  const day = (zone: string, at: string) => {
    const p = period("day", Date.parse(at), zone);
    const start = period("day", p.resetsAt - 1, zone).key === p.key ? startOf(zone, p) : NaN;
    return { key: p.key, resetsAt: new Date(p.resetsAt).toISOString(), hours: (p.resetsAt - start) / H };
  };
  /** Where the period began: the previous period's reset, found from the instant before it. */
  const startOf = (zone: string, p: { key: string; resetsAt: number }) => {
    let t = p.resetsAt - 22 * H;
    while (period("day", t, zone).key === p.key) t -= H;
    return period("day", t, zone).resetsAt;
  };

  it("a spring-forward day has 23 hours and a fall-back day 25, in New York and Berlin", () => {
    expect(day("America/New_York", "2026-03-08T12:00:00Z")).toEqual({ key: "2026-03-08", resetsAt: "2026-03-09T04:00:00.000Z", hours: 23 });
    expect(day("America/New_York", "2026-11-01T12:00:00Z")).toEqual({ key: "2026-11-01", resetsAt: "2026-11-02T05:00:00.000Z", hours: 25 });
    expect(day("America/New_York", "2026-06-15T12:00:00Z")).toEqual({ key: "2026-06-15", resetsAt: "2026-06-16T04:00:00.000Z", hours: 24 });
    expect(day("Europe/Berlin", "2026-03-29T12:00:00Z")).toEqual({ key: "2026-03-29", resetsAt: "2026-03-29T22:00:00.000Z", hours: 23 });
    expect(day("Europe/Berlin", "2026-10-25T12:00:00Z")).toEqual({ key: "2026-10-25", resetsAt: "2026-10-25T23:00:00.000Z", hours: 25 });
  });

  it("begins a day whose midnight a DST change skips at the change (America/Santiago, 2026-09-06 starts at 01:00)", () => {
    // Clocks went from 23:59:59 on the 5th (UTC-4) to 01:00 on the 6th (UTC-3) at 04:00Z.
    const fifth = period("day", Date.parse("2026-09-05T12:00:00Z"), "America/Santiago");
    expect(fifth).toEqual({ key: "2026-09-05", resetsAt: Date.parse("2026-09-06T04:00:00Z") });
    expect(period("day", fifth.resetsAt - 1, "America/Santiago").key).toBe("2026-09-05");
    expect(period("day", fifth.resetsAt, "America/Santiago").key).toBe("2026-09-06");
    expect(day("America/Santiago", "2026-09-06T12:00:00Z").hours).toBe(23);
  });

  it("rolls months over at the zone's midnight, DST months and leap Februaries included", () => {
    // 23:30 on 31 January in Berlin is still January; the month ends at 23:00Z.
    expect(period("month", Date.parse("2026-01-31T22:30:00Z"), "Europe/Berlin")).toEqual({ key: "2026-01", resetsAt: Date.parse("2026-01-31T23:00:00Z") });
    expect(period("month", Date.parse("2026-01-31T23:00:00Z"), "Europe/Berlin").key).toBe("2026-02");
    // 20:00 on 31 March in New York is 00:00 on 1 April in UTC: still March there.
    const march = period("month", Date.parse("2026-04-01T00:00:00Z"), "America/New_York");
    expect(march).toEqual({ key: "2026-03", resetsAt: Date.parse("2026-04-01T04:00:00Z") });
    expect(period("month", Date.parse("2028-02-28T12:00:00Z"), "Asia/Tokyo").resetsAt).toBe(Date.parse("2028-02-29T15:00:00Z"));
    expect(period("month", Date.parse("2026-12-31T16:00:00Z"), "Asia/Tokyo")).toEqual({ key: "2027-01", resetsAt: Date.parse("2027-01-31T15:00:00Z") });
  });

  it("chains every day of two years without gap or overlap, in zones with odd offsets and DST rules", () => {
    for (const zone of ["UTC", "America/New_York", "Europe/Berlin", "America/Santiago", "America/Havana", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"]) {
      let t = Date.parse("2026-01-01T12:00:00Z");
      const lengths = new Set<number>();
      for (let i = 0; i < 730; i++) {
        const p = period("day", t, zone);
        const next = period("day", p.resetsAt, zone);
        expect(period("day", p.resetsAt - 1, zone).key, `${zone} ${p.key}`).toBe(p.key);
        expect(next.key > p.key, `${zone} ${p.key} -> ${next.key}`).toBe(true);
        lengths.add((next.resetsAt - p.resetsAt) / H);
        t = p.resetsAt;
      }
      for (const hours of lengths) expect(hours, zone).toBeGreaterThanOrEqual(23);
      for (const hours of lengths) expect(hours, zone).toBeLessThanOrEqual(25);
    }
  });
});

