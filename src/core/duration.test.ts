import { describe, expect, it } from "vitest";
import { formatDuration, parseDuration } from "./duration.js";

describe("parseDuration", () => {
  it("reads every unit", () => {
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("1m")).toBe(60_000);
    expect(parseDuration("2h")).toBe(7_200_000);
    expect(parseDuration("1d")).toBe(86_400_000);
    expect(parseDuration("250ms")).toBe(250);
  });
  it("refuses what is not a duration", () => {
    for (const bad of ["1", "m", "1w", "-1m", "0s", "1.5h", "1 m x", ""]) expect(parseDuration(bad)).toBeUndefined();
  });
  it("formats back", () => {
    expect(formatDuration(86_400_000)).toBe("1d");
    expect(formatDuration(90_000)).toBe("90s");
  });
});
