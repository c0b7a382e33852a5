import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { countTextTokens, createTokenCounter, tokenizerFor } from "./tokens.js";

/**
 * SPEC §7.8: tokens counted from a cut stream are the model's own tokenizer's count where one is
 * known, else a per-family calibration within 25% of the provider's count. The references and
 * where each comes from are in the fixture (test/fixtures/token-calibration.json, `sources`).
 */
interface Sample {
  id: string;
  kind: string;
  text: string;
  counts: Record<string, number>;
}
const fixture = JSON.parse(readFileSync(new URL("../../../test/fixtures/token-calibration.json", import.meta.url), "utf8")) as {
  sources: Record<string, string>;
  samples: Sample[];
};
const { samples } = fixture;

/** A model of each family, as a config names it, and the fixture references it must stay near. */
const FAMILIES = [
  { model: "claude-sonnet-4-5", refs: ["claude-3.5-to-4.6", "claude-opus-4.7"] },
  { model: "gemini-2.5-flash", refs: ["gemini"] },
  { model: "meta-llama/Llama-3.3-70B-Instruct", refs: ["llama"] },
];
const TOLERANCE = 0.25;

describe("token calibration against the fixture's reference counts", () => {
  it("has a source for every reference it holds", () => {
    for (const s of samples) for (const key of Object.keys(s.counts)) expect(fixture.sources[key], key).toBeTruthy();
    expect(new Set(samples.map((s) => s.kind))).toEqual(new Set(["english", "code", "json", "cjk", "emoji"]));
  });

  it("counts OpenAI models and gpt-oss exactly with their own encodings", () => {
    for (const s of samples) {
      expect(countTextTokens(s.text, tokenizerFor("gpt-4o")), s.id).toBe(s.counts.o200k_base);
      expect(countTextTokens(s.text, tokenizerFor("gpt-oss-120b")), s.id).toBe(s.counts.o200k_base);
      expect(countTextTokens(s.text, tokenizerFor("gpt-4-turbo")), s.id).toBe(s.counts.cl100k_base);
    }
  });

  for (const { model, refs } of FAMILIES) {
    it(`${tokenizerFor(model)}: every sample within ${TOLERANCE * 100}% of each reference (bytes are not)`, () => {
      const rows: string[] = [];
      const errors: number[] = [];
      let bytesWithin = 0;
      for (const s of samples) {
        const estimate = countTextTokens(s.text, tokenizerFor(model));
        for (const ref of refs) {
          const actual = s.counts[ref]!;
          const error = estimate / actual - 1;
          const bytesError = Buffer.byteLength(s.text) / actual - 1;
          if (Math.abs(bytesError) <= TOLERANCE) bytesWithin++;
          errors.push(error);
          rows.push(`  ${s.id.padEnd(16)} ${ref.padEnd(18)} ref ${String(actual).padStart(4)}  est ${String(estimate).padStart(4)}  ${pct(error).padStart(7)}   bytes ${pct(bytesError).padStart(7)}`);
          expect(Math.abs(error), `${s.id} vs ${ref}: estimate ${estimate}, reference ${actual}`).toBeLessThanOrEqual(TOLERANCE);
        }
      }
      const meanAbs = errors.reduce((a, e) => a + Math.abs(e), 0) / errors.length;
      const worst = errors.reduce((a, e) => (Math.abs(e) > Math.abs(a) ? e : a), 0);
      console.log(`calibration ${tokenizerFor(model)} (${model}): mean |error| ${pct(meanAbs)}, worst ${pct(worst)}\n${rows.join("\n")}`);
      // The old count: UTF-8 bytes, several times the provider's on nearly every sample.
      expect(bytesWithin).toBeLessThanOrEqual(1);
    });
  }

  it("a streamed text counts as the whole text does, whatever its deltas", () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (const { model } of FAMILIES) {
      const tokenizer = tokenizerFor(model);
      for (const s of samples) {
        const text = s.text.repeat(4);
        const counter = createTokenCounter(tokenizer);
        for (let i = 0; i < text.length; ) {
          const n = 1 + Math.floor(random() * 12);
          counter.add(text.slice(i, i + n));
          i += n;
          if (random() < 0.3) void counter.total;
        }
        const whole = countTextTokens(text, tokenizer);
        expect(Math.abs(counter.total - whole), `${tokenizer} ${s.id}`).toBeLessThanOrEqual(Math.max(2, whole * 0.01));
      }
    }
  });
});

function pct(x: number): string {
  return `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}%`;
}
