import { createRequire } from "node:module";

/**
 * Token counting for the pre-flight estimate and for output as it streams. Every number here is an
 * upper bound of what the provider bills: an estimate below the bill lets a request spend money the
 * reservation did not hold.
 */

export type TokenizerName = "o200k_base" | "cl100k_base" | "bytes";

export interface Attachment {
  kind: "image" | "file" | "audio";
  bytes: number;
  detail?: "low" | "high" | "auto";
  width?: number;
  height?: number;
}

export interface PromptShape {
  /** Every text the model reads, one entry per message (system/developer included). */
  messages: { role: string; text: string }[];
  /** JSON text of each tool/function definition. */
  toolDefinitions: string[];
  attachments: Attachment[];
  /** Input sent as token ids rather than text (embeddings): its length is its token count. */
  tokenIds?: number;
}

export interface TokenCounter {
  add(delta: string): void;
  readonly total: number;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer choice

const O200K_MODELS = /^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o)/;
const CL100K_MODELS = /^(gpt-4|gpt-3\.5-turbo|text-embedding-3|text-embedding-ada-002)/;

/**
 * The tokenizer whose count bounds a model's billing. Anything not known to be an OpenAI model
 * (Anthropic, Gemini, gpt-oss, Azure deployment names, ...) gets "bytes": byte-level BPE never emits
 * more tokens than the text has UTF-8 bytes, whatever its vocabulary.
 */
export function tokenizerFor(upstreamModel: string): TokenizerName {
  const id = upstreamModel.trim().toLowerCase().replace(/^openai\//, "");
  if (O200K_MODELS.test(id)) return "o200k_base";
  if (CL100K_MODELS.test(id)) return "cl100k_base";
  return "bytes";
}

// ---------------------------------------------------------------------------------------------
// Encodings

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

type SplitTokenizer = "o200k_base" | "cl100k_base";

interface Encoding {
  /** Tokens of the text; exact unless a chunk is longer than LONG_CHUNK_CHARS. */
  count(text: string): number;
  /** The tokenizer's own pre-tokenizer regex (global). */
  split: RegExp;
}

const encodings = new Map<SplitTokenizer, Encoding>();

function encoding(name: SplitTokenizer): Encoding {
  let enc = encodings.get(name);
  if (!enc) {
    enc = loadEncoding(name);
    encodings.set(name, enc);
  }
  return enc;
}

function loadEncoding(name: SplitTokenizer): Encoding {
  const mod = requireCjs(`gpt-tokenizer/encoding/${name}`) as EncodingModule;
  // The split regex must be the tokenizer's own, so it comes from the library rather than a copy.
  const regexes = requireCjs("gpt-tokenizer/encodingParams/constants") as SplitRegexModule;
  const source = name === "o200k_base" ? regexes.O200K_TOKEN_SPLIT_REGEX : regexes.CL100K_TOKEN_SPLIT_REGEX;
  const split = new RegExp(source.source, source.flags.includes("g") ? source.flags : `${source.flags}g`);
  const core = (mod.default as unknown as { bytePairEncodingCoreProcessor?: Partial<BpeCore> }).bytePairEncodingCoreProcessor;

  if (core && typeof core.getBpeRankFromString === "function" && typeof core.bytePairEncode === "function") {
    const bpe = core as BpeCore;
    // The same loop as gpt-tokenizer's countNative (with no special tokens allowed), except for long chunks.
    return {
      split,
      count(text) {
        let n = 0;
        for (const [chunk] of text.matchAll(split)) {
          if (chunk.length > LONG_CHUNK_CHARS) n += utf8Bytes(chunk);
          else n += bpe.getBpeRankFromString(chunk) !== undefined ? 1 : bpe.bytePairEncode(chunk).length;
        }
        return n;
      },
    };
  }
  // A gpt-tokenizer without that internal: the public count, or bytes for text with a long chunk.
  return {
    split,
    count(text) {
      for (const [chunk] of text.matchAll(split)) if (chunk.length > LONG_CHUNK_CHARS) return utf8Bytes(text);
      return mod.countTokens(text, PLAIN_TEXT);
    },
  };
}

/** Loads the BPE tables now, so the first request does not wait for them. */
export function preloadTokenizers(names: TokenizerName[] = ["o200k_base", "cl100k_base"]): void {
  for (const name of names) if (name !== "bytes") encoding(name);
}

function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

function countUncached(text: string, tokenizer: TokenizerName): number {
  if (text.length === 0) return 0;
  if (tokenizer === "bytes") return utf8Bytes(text);
  return encoding(tokenizer).count(text);
}

// Chat clients resend the whole history and the same system prompt on every turn, so most long
// texts have been counted before. Short texts are cheaper to count than to cache.
const CACHE_MIN_CHARS = 256;
const CACHE_MAX_ENTRIES = 1024;
const CACHE_MAX_CHARS = 4_000_000;

class CountCache {
  private readonly map = new Map<string, number>();
  private chars = 0;

  get(text: string): number | undefined {
    const n = this.map.get(text);
    if (n !== undefined) {
      this.map.delete(text);
      this.map.set(text, n);
    }
    return n;
  }

  set(text: string, n: number): void {
    if (text.length > CACHE_MAX_CHARS / 4) return;
    this.map.set(text, n);
    this.chars += text.length;
    while (this.map.size > CACHE_MAX_ENTRIES || this.chars > CACHE_MAX_CHARS) {
      const oldest = this.map.keys().next().value as string;
      this.map.delete(oldest);
      this.chars -= oldest.length;
    }
  }
}

const caches = { o200k_base: new CountCache(), cl100k_base: new CountCache() };

/**
 * Token count of plain text: exact, except that a pre-tokenizer chunk longer than
 * LONG_CHUNK_CHARS counts as its UTF-8 bytes (more, never less). UTF-8 bytes for "bytes".
 */
export function countTextTokens(text: string, tokenizer: TokenizerName): number {
  if (tokenizer === "bytes" || text.length < CACHE_MIN_CHARS) return countUncached(text, tokenizer);
  const cache = caches[tokenizer];
  let n = cache.get(text);
  if (n === undefined) {
    n = countUncached(text, tokenizer);
    cache.set(text, n);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Prompt estimate

/**
 * ChatML framing as OpenAI bills it: <|im_start|>{role}<|im_sep|>{text}<|im_end|> is 3 tokens
 * plus the role (gpt-4o family; gpt-3.5 uses "\n" separators for 4). We charge 5 plus the role's
 * own tokens, which covers both formats and a `name` field.
 */
export const MESSAGE_OVERHEAD_TOKENS = 5;
/** Every reply is primed with <|im_start|>assistant<|im_sep|>. */
export const REPLY_PRIMING_TOKENS = 3;
/**
 * OpenAI renders tools as a TypeScript-like namespace, which is shorter than their JSON for any
 * definition with parameters; the margins cover the namespace wrapper and a bare definition
 * (`type f = () => any;`), whose JSON can be shorter than its rendering.
 */
export const TOOLS_BLOCK_OVERHEAD_TOKENS = 24;
export const PER_TOOL_OVERHEAD_TOKENS = 8;
/**
 * "bytes" models may add text the caller never sent: Anthropic's tool-use system prompt is 346
 * tokens on current models (530 on Claude 3 Opus), gpt-oss's harmony header ~50.
 */
export const BYTES_TOOL_SYSTEM_PROMPT_TOKENS = 600;
export const BYTES_REQUEST_OVERHEAD_TOKENS = 64;
/** Content-part framing around each attachment. */
export const ATTACHMENT_OVERHEAD_TOKENS = 8;

/**
 * Upper bound of the input tokens a provider bills for this prompt.
 *
 * `upstreamModel` is optional but matters for images, whose price in tokens differs 30x between
 * OpenAI models (gpt-4o-mini bills 2,833 + 5,667 per tile where gpt-4o bills 85 + 170); without it
 * every image is bounded by the most expensive rule that could apply.
 */
export function estimateInputTokens(shape: PromptShape, tokenizer: TokenizerName, upstreamModel?: string): number {
  let total = REPLY_PRIMING_TOKENS + (shape.tokenIds ?? 0);
  for (const m of shape.messages) {
    total += MESSAGE_OVERHEAD_TOKENS + countTextTokens(m.role, tokenizer) + countTextTokens(m.text, tokenizer);
  }
  if (shape.toolDefinitions.length > 0) {
    total += TOOLS_BLOCK_OVERHEAD_TOKENS;
    for (const def of shape.toolDefinitions) total += PER_TOOL_OVERHEAD_TOKENS + countTextTokens(def, tokenizer);
    if (tokenizer === "bytes") total += BYTES_TOOL_SYSTEM_PROMPT_TOKENS;
  }
  if (tokenizer === "bytes") total += BYTES_REQUEST_OVERHEAD_TOKENS;
  const model = upstreamModel?.trim().toLowerCase().replace(/^[a-z-]+\//, "");
  for (const a of shape.attachments) total += ATTACHMENT_OVERHEAD_TOKENS + attachmentTokens(a, tokenizer, model);
  return total;
}

/**
 * Files (PDFs, text): one token per byte bounds any extracted text, since byte-level BPE never
 * emits more tokens than bytes; the fixed part covers a page image and framing. This is a
 * heuristic for PDFs, whose compressed streams can expand and whose every page is also billed as
 * an image, so callers should still cap the total at the model's context window. A file sent by
 * reference (bytes 0) is only bounded by that window.
 */
export const FILE_OVERHEAD_TOKENS = 2_000;
/**
 * Audio: providers bill by duration (OpenAI ~10 tokens/s, Gemini 32 tokens/s). Compressed speech
 * needs at least ~2 kbit/s = 250 bytes/s, so one token per 8 bytes bounds 32 tokens/s.
 */
export const AUDIO_BYTES_PER_TOKEN = 8;
export const AUDIO_OVERHEAD_TOKENS = 32;

function attachmentTokens(a: Attachment, tokenizer: TokenizerName, model: string | undefined): number {
  const bytes = Number.isSafeInteger(a.bytes) && a.bytes > 0 ? a.bytes : 0;
  switch (a.kind) {
    case "file":
      return bytes + FILE_OVERHEAD_TOKENS;
    case "audio":
      return Math.ceil(bytes / AUDIO_BYTES_PER_TOKEN) + AUDIO_OVERHEAD_TOKENS;
    case "image":
      return imageTokens(a, imageRulesFor(tokenizer, model));
  }
}

// ---------------------------------------------------------------------------------------------
// Images

type ImageRule =
  | { kind: "tile"; base: number; tile: number } // OpenAI: 512px tiles after 2048/768 scaling
  | { kind: "patch"; multiplierPercent: number } // OpenAI: 32px patches, at most 1,536, times a multiplier
  | { kind: "anthropic" }
  | { kind: "gemini" };

// From OpenAI's "Calculating costs" table for vision. Order matters: mini/nano before their family.
const OPENAI_IMAGE_RULES: [RegExp, ImageRule][] = [
  [/^(gpt-5-mini|gpt-4\.1-mini)/, { kind: "patch", multiplierPercent: 162 }],
  [/^(gpt-5-nano|gpt-4\.1-nano)/, { kind: "patch", multiplierPercent: 246 }],
  [/^o4-mini/, { kind: "patch", multiplierPercent: 172 }],
  [/^gpt-4o-mini/, { kind: "tile", base: 2833, tile: 5667 }],
  [/^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo|gpt-4-vision|gpt-4-1106-vision)/, { kind: "tile", base: 85, tile: 170 }],
  [/^gpt-5(-chat-latest|-\d{4}-\d{2}-\d{2})?$/, { kind: "tile", base: 70, tile: 140 }],
  [/^(o1|o3)/, { kind: "tile", base: 75, tile: 150 }],
  [/^computer-use-preview/, { kind: "tile", base: 65, tile: 129 }],
];
const ALL_OPENAI_RULES: ImageRule[] = OPENAI_IMAGE_RULES.map(([, rule]) => rule);
const ANTHROPIC_RULE: ImageRule = { kind: "anthropic" };
const GEMINI_RULE: ImageRule = { kind: "gemini" };

/**
 * The rules that may price an image for this model. An unknown model gets every rule its
 * tokenizer family could mean, and the estimate takes the largest.
 */
function imageRulesFor(tokenizer: TokenizerName, model: string | undefined): ImageRule[] {
  if (model) {
    for (const [pattern, rule] of OPENAI_IMAGE_RULES) if (pattern.test(model)) return [rule];
    if (model.includes("claude")) return [ANTHROPIC_RULE];
    if (model.includes("gemini")) return [GEMINI_RULE];
  }
  if (tokenizer === "bytes") return [...ALL_OPENAI_RULES, ANTHROPIC_RULE, GEMINI_RULE];
  return ALL_OPENAI_RULES;
}

function imageTokens(a: Attachment, rules: ImageRule[]): number {
  const dims = validDims(a.width, a.height);
  let max = 0;
  for (const rule of rules) max = Math.max(max, imageTokensByRule(rule, dims, a.detail === "low"));
  return max;
}

function validDims(width: number | undefined, height: number | undefined): { w: number; h: number } | undefined {
  if (width === undefined || height === undefined) return undefined;
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width <= 0 || height <= 0) return undefined;
  // Larger than any provider accepts: the numbers are not trustworthy, use the size-free bound.
  if (width > 100_000 || height > 100_000) return undefined;
  return { w: width, h: height };
}

function ceilDiv(a: number, b: number): number {
  const r = a % b;
  return (a - r) / b + (r > 0 ? 1 : 0);
}

/**
 * 512px tiles after OpenAI's scaling: fit within 2048x2048, then shrink so the short side is 768
 * if it is longer. The scaled sides are rationals; ceil over the exact ratio never undercounts a
 * provider that rounds sides to pixels. At most 4 x 2 tiles (e.g. 2048x768): base + 8 tiles.
 */
export function openAiImageTiles(width: number, height: number): number {
  const long = Math.max(width, height);
  const short = Math.min(width, height);
  const shortAfterFit = long > 2048 ? (short * 2048) / long : short;
  if (shortAfterFit > 768) return 2 * ceilDiv(3 * long, 2 * short); // short -> 768 (2 tiles), long -> 768*long/short
  if (long > 2048) return 4 * ceilDiv(4 * short, long); // long -> 2048 (4 tiles), short -> 2048*short/long
  return ceilDiv(long, 512) * ceilDiv(short, 512);
}

const OPENAI_MAX_TILES = 8;
const OPENAI_MAX_PATCHES = 1536;
/**
 * Anthropic: about width*height/750 tokens, images scaled down to ~1,600 tokens. The formula is
 * documented as approximate, so we add 5%.
 */
const ANTHROPIC_MAX_IMAGE_TOKENS = 1600;
/**
 * Gemini: 258 tokens when both sides are <= 384px, else 258 per crop of floor(min side / 1.5)
 * pixels. Gemini 3's high media resolution is 1,120 per image. Without dimensions we assume at most
 * 16 crops (a 3072px square).
 */
const GEMINI_TOKENS_PER_TILE = 258;
const GEMINI_MIN_IMAGE_TOKENS = 1120;
const GEMINI_UNKNOWN_SIZE_TILES = 16;

function imageTokensByRule(rule: ImageRule, dims: { w: number; h: number } | undefined, low: boolean): number {
  switch (rule.kind) {
    case "tile": {
      if (low) return rule.base;
      const tiles = dims ? openAiImageTiles(dims.w, dims.h) : OPENAI_MAX_TILES;
      return rule.base + rule.tile * tiles;
    }
    case "patch": {
      // `detail` is not documented for patch models, so it never lowers their bound.
      const patches = dims ? Math.min(OPENAI_MAX_PATCHES, ceilDiv(dims.w, 32) * ceilDiv(dims.h, 32)) : OPENAI_MAX_PATCHES;
      return ceilDiv(patches * rule.multiplierPercent, 100);
    }
    case "anthropic": {
      const tokens = dims ? Math.min(ANTHROPIC_MAX_IMAGE_TOKENS, ceilDiv(dims.w * dims.h, 750)) : ANTHROPIC_MAX_IMAGE_TOKENS;
      return ceilDiv(tokens * 105, 100);
    }
    case "gemini": {
      if (!dims) return Math.max(GEMINI_MIN_IMAGE_TOKENS, GEMINI_TOKENS_PER_TILE * GEMINI_UNKNOWN_SIZE_TILES);
      if (dims.w <= 384 && dims.h <= 384) return GEMINI_MIN_IMAGE_TOKENS;
      const crop = Math.max(1, Math.floor((2 * Math.min(dims.w, dims.h)) / 3));
      return Math.max(GEMINI_MIN_IMAGE_TOKENS, GEMINI_TOKENS_PER_TILE * ceilDiv(dims.w, crop) * ceilDiv(dims.h, crop));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Streaming output

/**
 * Counts streamed text so that `total` equals countTextTokens of everything added so far (so the
 * exact count, or more where a chunk is longer than LONG_CHUNK_CHARS).
 *
 * Summing per-delta counts is NOT a bound: BPE can split a concatenation into more tokens than its
 * parts ("generate" + "loop" is 2 tokens apart, 4 together in o200k). So we keep the text since
 * the last *stable cut* and re-count it on each read; the tokens before the cut are committed.
 *
 * A stable cut is a position p where the tokenizer's pre-tokenizer regex starts a chunk and the
 * text after p holds (a) a letter or digit, (b) a character that is not a letter, mark or
 * apostrophe, and (c) a non-digit. No alternative of the o200k/cl100k split regex can match across
 * all three (letter runs stop at (b), punctuation and whitespace runs at (a), digit runs at (c)),
 * so no chunk starting before p can ever reach the end of the text: appending more text cannot
 * change any chunk before p. The regex has no lookbehind, so the text after p chunks the same on
 * its own, and since our count is a sum over chunks, committed = count(text) - count(text after p)
 * stays right forever.
 *
 * Text with no stable cut (pure emoji, digits or whitespace) would make each read re-count a
 * growing tail; past TAIL_LIMIT chars we fall back to UTF-8 bytes for the rest of the stream,
 * which still bounds it (each token is at least one byte, and the tail starts at a stable cut).
 */
const COMPACT_AT = 256;
const TAIL_LIMIT = 2048;

const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;
const NOT_LETTER_MARK_APOSTROPHE = /[^\p{L}\p{M}']/u;
const NOT_DIGIT = /\P{N}/u;

/** The last chunk start p > 0 after which the text satisfies the stable-cut conditions, or 0. */
export function findStableCut(text: string, tokenizer: SplitTokenizer): number {
  const starts: number[] = [];
  for (const m of text.matchAll(encoding(tokenizer).split)) starts.push(m.index);
  let letterOrDigit = false;
  let breaksLetters = false;
  let nonDigit = false;
  let end = text.length;
  for (let i = starts.length - 1; i > 0; i--) {
    const start = starts[i]!;
    const chunk = text.slice(start, end);
    letterOrDigit ||= LETTER_OR_DIGIT.test(chunk);
    breaksLetters ||= NOT_LETTER_MARK_APOSTROPHE.test(chunk);
    nonDigit ||= NOT_DIGIT.test(chunk);
    if (letterOrDigit && breaksLetters && nonDigit) return start;
    end = start;
  }
  return 0;
}

class BpeCounter implements TokenCounter {
  private committed = 0;
  private tail = "";
  private cached = 0;
  private stale = false;
  private bytesMode = false;
  private readonly bytes = new BytesCounter();

  constructor(private readonly tokenizer: SplitTokenizer) {}

  add(delta: string): void {
    if (delta.length === 0) return;
    if (this.bytesMode) {
      this.bytes.add(delta);
      return;
    }
    this.tail += delta;
    this.stale = true;
  }

  get total(): number {
    if (this.bytesMode) return this.committed + this.bytes.total;
    if (!this.stale) return this.cached;
    const enc = encoding(this.tokenizer);
    let tailTokens = enc.count(this.tail);
    if (this.tail.length > COMPACT_AT) {
      const cut = findStableCut(this.tail, this.tokenizer);
      if (cut > 0) {
        const rest = this.tail.slice(cut);
        const restTokens = enc.count(rest);
        this.committed += tailTokens - restTokens;
        this.tail = rest;
        tailTokens = restTokens;
      }
      if (this.tail.length > TAIL_LIMIT) {
        this.bytesMode = true;
        this.bytes.add(this.tail);
        this.tail = "";
        return this.committed + this.bytes.total;
      }
    }
    this.cached = this.committed + tailTokens;
    this.stale = false;
    return this.cached;
  }
}

/**
 * Exact UTF-8 length of the concatenation. A delta may end between the halves of a surrogate pair:
 * alone the high half would count as a 3-byte U+FFFD, with its partner the pair is 4 bytes, so it
 * is held back (and counted as 3 while held, the most it can add).
 */
class BytesCounter implements TokenCounter {
  private committed = 0;
  private held = "";

  add(delta: string): void {
    if (delta.length === 0) return;
    let text = this.held + delta;
    this.held = "";
    const last = text.charCodeAt(text.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) {
      this.held = text.slice(-1);
      text = text.slice(0, -1);
    }
    this.committed += utf8Bytes(text);
  }

  get total(): number {
    return this.committed + (this.held ? 3 : 0);
  }
}

export function createTokenCounter(tokenizer: TokenizerName): TokenCounter {
  return tokenizer === "bytes" ? new BytesCounter() : new BpeCounter(tokenizer);
}
