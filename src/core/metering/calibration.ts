import type { CalibratedTokenizer } from "./tokenizer-choice.js";

/**
 * Token estimates for families whose tokenizer is not public (Claude) or not bundled (Gemini,
 * Llama): each o200k_base pre-tokenizer chunk is counted with o200k_base and weighted by how many
 * tokens the family spends, relative to o200k, on that kind of text. Scripts and emoji are where
 * vocabularies differ most (Gemini packs CJK and emoji tighter than o200k, Claude spends ~1.5x on
 * CJK), so one ratio per family would miss by far more than 25% on them.
 *
 * The weights are a least-squares fit (on log error) to test/fixtures/token-calibration.json,
 * whose sources that file names; tokens.calibration.test.ts checks every sample stays within 25%.
 */

export type ChunkClass = "latin" | "cjk" | "script" | "emoji" | "symbol";

/** Weights in thousandths of a token per o200k token, so estimates stay integer arithmetic. */
export type Weights = Readonly<Record<ChunkClass, number>>;

export const CALIBRATION: Readonly<Record<CalibratedTokenizer, Weights>> = {
  // Claude 3 to 4.6 and Opus 4.7 (whose tokenizer spends ~45% more on English) both within 25%:
  // one weight sits between the two generations.
  claude: { latin: 1360, cjk: 1510, script: 1850, emoji: 1310, symbol: 1430 },
  gemini: { latin: 1000, cjk: 820, script: 890, emoji: 550, symbol: 1290 },
  llama: { latin: 1070, cjk: 1000, script: 1140, emoji: 1400, symbol: 930 },
};

const CJK = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]/u;
const LATIN = /\p{Script=Latin}/u;
const LETTER = /\p{L}/u;
const EMOJI = /[\p{Extended_Pictographic}\p{Regional_Indicator}]/u;

/** What kind of text one pre-tokenizer chunk is (a chunk is a word, a number or a run of symbols). */
export function classifyChunk(chunk: string): ChunkClass {
  if (CJK.test(chunk)) return "cjk";
  if (LATIN.test(chunk)) return "latin";
  if (LETTER.test(chunk)) return "script";
  if (EMOJI.test(chunk)) return "emoji";
  return "symbol";
}
