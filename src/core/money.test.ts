import { describe, expect, it } from "vitest";
import { formatUsd, microsToUsdNumber, parseUsd, pricePerMillionToMicros, tokenCost } from "./money.js";

describe("parseUsd", () => {
  it("is exact where float math is not", () => {
    expect(1.005 * 1e6).toBe(1_004_999.9999999999); // why the string route: the float product is off
    expect(parseUsd(1.005)).toBe(1_005_000);
    expect(parseUsd(0.29)).toBe(290_000);
    expect(parseUsd(0.1)).toBe(100_000);
    expect(parseUsd(1.1)).toBe(1_100_000);
    expect(parseUsd(0.15)).toBe(150_000);
    expect(parseUsd(0.6)).toBe(600_000);
    expect(parseUsd(4.35)).toBe(4_350_000);
    expect(parseUsd(5)).toBe(5_000_000);
    expect(parseUsd(0)).toBe(0);
    expect(parseUsd(-0)).toBe(0);
  });

  it("reads strings as people write them", () => {
    expect(parseUsd("0.50")).toBe(500_000);
    expect(parseUsd(" 12 ")).toBe(12_000_000);
    expect(parseUsd(".5")).toBe(500_000);
    expect(parseUsd("5.")).toBe(5_000_000);
    expect(parseUsd("0.000001")).toBe(1);
    expect(parseUsd("000.000000")).toBe(0);
    expect(parseUsd("123456.654321")).toBe(123_456_654_321);
  });

  it("handles exponents, including the ones String(number) produces", () => {
    expect(String(1e-7)).toBe("1e-7");
    expect(parseUsd(1e-7)).toBe(1); // rounds up
    expect(parseUsd(2e-6)).toBe(2);
    expect(parseUsd(1.5e-6)).toBe(2);
    expect(parseUsd("1.5e3")).toBe(1_500_000_000);
    expect(parseUsd("25E-2")).toBe(250_000);
    expect(parseUsd("1e-400")).toBe(1);
    expect(parseUsd("0e400")).toBe(0);
    expect(parseUsd(1e9)).toBe(1e15);
  });

  it("rounds more than 6 decimals UP to the next micro, never down", () => {
    expect(parseUsd("0.0000001")).toBe(1);
    expect(parseUsd("0.0750001")).toBe(75_001);
    expect(parseUsd("1.0000000000")).toBe(1_000_000); // trailing zeros are not a fraction of a micro
    expect(parseUsd("0.1234569")).toBe(123_457);
    expect(parseUsd(0.12345601)).toBe(123_457);
  });

  it("rejects what is not a non-negative finite amount", () => {
    for (const bad of [-1, -0.000001, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expect(() => parseUsd(bad)).toThrow(RangeError);
    }
    for (const bad of ["", " ", ".", "-1", "-0.5", "abc", "1,5", "0x10", "1e", "$5", "NaN", "Infinity", "1.2.3", "+"]) {
      expect(() => parseUsd(bad), bad).toThrow(RangeError);
    }
  });

  it("refuses amounts beyond safe integers instead of losing precision", () => {
    expect(parseUsd("9007199254.740991")).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => parseUsd("9007199254.740992")).toThrow(RangeError);
    expect(() => parseUsd(1e21)).toThrow(RangeError);
    expect(() => parseUsd("1e999999999999")).toThrow(RangeError);
  });

  it("pricePerMillionToMicros is the same scale", () => {
    expect(pricePerMillionToMicros(0.075)).toBe(75_000);
    expect(pricePerMillionToMicros("3.75")).toBe(3_750_000);
  });
});

describe("formatUsd", () => {
  it("prints exact decimals with at least two places", () => {
    expect(formatUsd(5_000_000)).toBe("5.00");
    expect(formatUsd(12_300)).toBe("0.0123");
    expect(formatUsd(12_345)).toBe("0.012345");
    expect(formatUsd(0)).toBe("0.00");
    expect(formatUsd(1)).toBe("0.000001");
    expect(formatUsd(100_000)).toBe("0.10");
    expect(formatUsd(1_234_500_000)).toBe("1234.50");
    expect(formatUsd(-1_500_000)).toBe("-1.50");
    expect(formatUsd(Number.MAX_SAFE_INTEGER)).toBe("9007199254.740991");
  });

  it("round-trips with parseUsd", () => {
    for (const m of [0, 1, 9, 10, 99, 100_000, 123_456, 5_000_000, 987_654_321_012]) {
      expect(parseUsd(formatUsd(m))).toBe(m);
    }
  });

  it("rejects non-integers", () => {
    expect(() => formatUsd(0.5)).toThrow(RangeError);
    expect(() => formatUsd(Number.NaN)).toThrow(RangeError);
  });
});

describe("microsToUsdNumber", () => {
  it("converts for JSON output", () => {
    expect(microsToUsdNumber(1_500_000)).toBe(1.5);
    expect(microsToUsdNumber(1)).toBe(0.000001);
  });
});

describe("tokenCost", () => {
  it("is ceil(tokens * price / 1e6)", () => {
    expect(tokenCost(0, 150_000)).toBe(0);
    expect(tokenCost(1000, 0)).toBe(0);
    expect(tokenCost(1_000_000, 150_000)).toBe(150_000);
    expect(tokenCost(1000, 150_000)).toBe(150);
    expect(tokenCost(1, 150_000)).toBe(1); // 0.15 micros rounds up
    expect(tokenCost(7, 150_000)).toBe(2); // 1.05 -> 2
    expect(tokenCost(20, 50_000)).toBe(1); // exactly 1
    expect(tokenCost(21, 50_000)).toBe(2);
  });

  it("never returns 0 for nonzero tokens at a nonzero price", () => {
    for (let t = 1; t < 200; t += 7) for (const p of [1, 3, 75_000, 999_999]) expect(tokenCost(t, p)).toBeGreaterThan(0);
  });

  it("stays exact past 2^53 via BigInt", () => {
    // 2e9 tokens at $15,000 per 1M: the product 3e19 is far beyond 2^53.
    expect(tokenCost(2_000_000_000, 15_000_000_000)).toBe(30_000_000_000_000);
    expect(tokenCost(9_007_199_254_740_991, 1_000_000)).toBe(9_007_199_254_740_991);
    expect(tokenCost(9_007_199_254_740_991, 3)).toBe(27_021_597_765); // ceil(27021597764.222973)
    expect(() => tokenCost(9_007_199_254_740_991, 2_000_000)).toThrow(RangeError);
  });

  it("agrees with BigInt on random inputs near the fast-path boundary", () => {
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 2000; i++) {
      const tokens = rand(2 ** 30) * 8 + rand(8);
      const price = rand(2 ** 30) + 1;
      const expected = (BigInt(tokens) * BigInt(price) + 999_999n) / 1_000_000n;
      expect(tokenCost(tokens, price)).toBe(Number(expected));
    }
  });

  it("rejects fractional or negative inputs", () => {
    expect(() => tokenCost(1.5, 100)).toThrow(RangeError);
    expect(() => tokenCost(-1, 100)).toThrow(RangeError);
    expect(() => tokenCost(1, 0.5)).toThrow(RangeError);
    expect(() => tokenCost(1, -5)).toThrow(RangeError);
  });
});
