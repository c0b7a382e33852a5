import { createRequire } from "node:module";
import { CALIBRATION, classifyChunk, type Weights } from "./calibration.js";
import { isEncoding, type Encoding as EncodingName, type TokenizerName } from "./tokenizer-choice.js";

/**
 * Counting text with gpt-tokenizer's OpenAI encodings: exact counts (bounded for pathological
 * chunks) for OpenAI models, and the weighted counts calibrated families are estimated from.
 */


type EncodingModule = typeof import("gpt-tokenizer/encoding/o200k_base");
type SplitRegexModule = typeof import("gpt-tokenizer/encodingParams/constants");

/** gpt-tokenizer's per-chunk BPE, which its countTokens runs on every pre-tokenizer chunk. */
interface BpeCore {
  getBpeRankFromString(chunk: string): number | undefined;
  bytePairEncode(chunk: string): number[];
}

// require() rather than a static import: each BPE table costs 150-350 ms and tens of MB to load,
// and processes that never count (CLI commands, bytes-only configs) should not pay it.
const requireCjs = createRequire(import.meta.url);

// Special-token text such as "<|endoftext|>" in a prompt is ordinary text to the API; by default
// gpt-tokenizer throws on it, which would let any caller fail the estimate.
const PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

/**
 * gpt-tokenizer's BPE merge is quadratic in the length of one pre-tokenizer chunk: 32,000 chars
 * of unbroken CJK take 6 s, of emoji 3 s, which any caller could send. A chunk longer than this is
 * counted as its UTF-8 bytes instead, an upper bound (a token is at least one byte) in linear time.
 * Ordinary text never has such chunks: words, numbers and punctuation runs split far sooner.
 */
export const LONG_CHUNK_CHARS = 64;

interface Encoding {
  /** Tokens of the text; exact unless a chunk is longer than LONG_CHUNK_CHARS. */
  count(text: string): number;
  /**
   * Thousandths of a token: each chunk's tokens times its class's weight (calibration.ts). A long
   * chunk is counted in LONG_CHUNK_CHARS slices rather than as bytes: an estimate needs no bound,
   * and a slice boundary where BPE would have merged costs about a token.
   */
  weighted(text: string, weights: Weights): number;
  /** `count` of one pre-tokenizer chunk, so a caller walking the chunks itself sums the same. */
  chunkTokens(chunk: string): number;
  /** `weighted` of one pre-tokenizer chunk. */
  chunkWeighted(chunk: string, weights: Weights): number;
  /** The tokenizer's own pre-tokenizer regex (global). */
  split: RegExp;
}

const encodings = new Map<EncodingName, Encoding>();

export function encoding(name: EncodingName): Encoding {
  let enc = encodings.get(name);
  if (!enc) {
    enc = loadEncoding(name);
    encodings.set(name, enc);
  }
  return enc;
}

function loadEncoding(name: EncodingName): Encoding {
  const mod = requireCjs(`gpt-tokenizer/encoding/${name}`) as EncodingModule;
  // The split regex must be the tokenizer's own, so it comes from the library rather than a copy.
  const regexes = requireCjs("gpt-tokenizer/encodingParams/constants") as SplitRegexModule;
  const source = name === "o200k_base" ? regexes.O200K_TOKEN_SPLIT_REGEX : regexes.CL100K_TOKEN_SPLIT_REGEX;
  const split = new RegExp(source.source, source.flags.includes("g") ? source.flags : `${source.flags}g`);
  const countSplit = new RegExp(split);
  const core = (mod.default as unknown as { bytePairEncodingCoreProcessor?: Partial<BpeCore> }).bytePairEncodingCoreProcessor;

  let tokensOf: (chunk: string) => number;
  if (core && typeof core.getBpeRankFromString === "function" && typeof core.bytePairEncode === "function") {
    const bpe = core as BpeCore;
    // The same per-chunk step as gpt-tokenizer's countNative (with no special tokens allowed).
    tokensOf = (chunk) => (bpe.getBpeRankFromString(chunk) !== undefined ? 1 : bpe.bytePairEncode(chunk).length);
  } else {
    // A gpt-tokenizer without that internal: its public count, one chunk at a time.
    tokensOf = (chunk) => mod.countTokens(chunk, PLAIN_TEXT);
  }
  const chunkTokens = (chunk: string): number => (chunk.length > LONG_CHUNK_CHARS ? utf8Bytes(chunk) : tokensOf(chunk));
  const chunkWeighted = (chunk: string, weights: Weights): number => weights[classifyChunk(chunk)] * (chunk.length > LONG_CHUNK_CHARS ? sliced(chunk, tokensOf) : tokensOf(chunk));
  return {
    split,
    chunkTokens,
    chunkWeighted,
    count(text) {
      // exec on a regex of its own rather than matchAll, which builds a new RegExp per call.
      const re = countSplit;
      re.lastIndex = 0;
      let n = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        const chunk = m[0];
        if (chunk.length === 0) re.lastIndex++;
        else n += chunkTokens(chunk);
      }
      return n;
    },
    weighted(text, weights) {
      let n = 0;
      for (const [chunk] of text.matchAll(split)) n += chunkWeighted(chunk, weights);
      return n;
    },
  };
}

function sliced(chunk: string, tokensOf: (slice: string) => number): number {
  let n = 0;
  for (let i = 0; i < chunk.length; ) {
    let end = Math.min(chunk.length, i + LONG_CHUNK_CHARS);
    // Never between the halves of a surrogate pair.
    const last = chunk.charCodeAt(end - 1);
    if (end < chunk.length && last >= 0xd800 && last <= 0xdbff) end++;
    n += tokensOf(chunk.slice(i, end));
    i = end;
  }
  return n;
}

/** Loads the BPE tables now, so the first request does not wait for them. */
export function preloadTokenizers(names: EncodingName[] = ["o200k_base", "cl100k_base"]): void {
  for (const name of names) encoding(name);
}

export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

function countUncached(text: string, tokenizer: TokenizerName): number {
  if (text.length === 0) return 0;
  if (tokenizer === "bytes") return utf8Bytes(text);
  if (isEncoding(tokenizer)) return encoding(tokenizer).count(text);
  return calibratedTokens(encoding("o200k_base").weighted(text, CALIBRATION[tokenizer]));
}

/** A calibrated estimate from thousandths of a token: the nearest token, and never 0 for some text. */
export function calibratedTokens(milli: number): number {
  return milli > 0 ? Math.max(1, Math.round(milli / 1000)) : 0;
}

// Chat clients resend the whole history and the same system prompt on every turn, and apps send
// the same instructions with every request, so most texts have been counted before. Looking a
// text up in a small Map is cheaper than counting it even for a few words: counting walks the
// split regex and looks every chunk up in the encoding's 200k-entry rank table.
export const COUNT_CACHE_MAX_ENTRIES = 2048;
const CACHE_MAX_CHARS = 2_000_000;
/** A text longer than this is counted each time rather than evict everything else. */
const CACHE_MAX_TEXT_CHARS = CACHE_MAX_CHARS / 4;

/**
 * Counts of texts seen recently. Two generations rather than an LRU list, so a hit moves nothing
 * (one or two Map lookups): texts go into the young generation, and when it is full (entries or
 * characters) it becomes the old one and the old one is dropped. A text found in the old
 * generation moves to the young one, so what keeps being asked for stays. At most twice the
 * bounds are held.
 */
class CountCache {
  private young = new Map<string, number>();
  private old = new Map<string, number>();
  private youngChars = 0;

  get(text: string): number | undefined {
    const n = this.young.get(text);
    if (n !== undefined) return n;
    const aged = this.old.get(text);
    if (aged !== undefined) this.set(text, aged);
    return aged;
  }

  set(text: string, n: number): void {
    if (text.length > CACHE_MAX_TEXT_CHARS) return;
    if (this.young.size >= COUNT_CACHE_MAX_ENTRIES || this.youngChars + text.length > CACHE_MAX_CHARS) {
      this.old = this.young;
      this.young = new Map();
      this.youngChars = 0;
    }
    this.young.set(text, n);
    this.youngChars += text.length;
  }

  /** Texts held, both generations (tests). */
  get size(): number {
    return this.young.size + this.old.size;
  }
}

const caches = new Map<Exclude<TokenizerName, "bytes">, CountCache>();

/** Texts whose counts are held for this tokenizer (tests check the bound). */
export function countCacheSize(tokenizer: TokenizerName): number {
  return tokenizer === "bytes" ? 0 : (caches.get(tokenizer)?.size ?? 0);
}

/**
 * Token count of plain text. For an OpenAI encoding it is exact, except that a pre-tokenizer chunk
 * longer than LONG_CHUNK_CHARS counts as its UTF-8 bytes (more, never less); for a calibrated
 * family it is the calibrated estimate; for "bytes" it is the UTF-8 length.
 */
export function countTextTokens(text: string, tokenizer: TokenizerName): number {
  if (tokenizer === "bytes" || text.length === 0) return countUncached(text, tokenizer);
  let cache = caches.get(tokenizer);
  if (!cache) caches.set(tokenizer, (cache = new CountCache()));
  let n = cache.get(text);
  if (n === undefined) {
    n = countUncached(text, tokenizer);
    cache.set(text, n);
  }
  return n;
}

