import { countTextTokens } from "./encodings.js";
import { isEncoding, type TokenizerName } from "./tokenizer-choice.js";

/**
 * The prompt's input tokens. With a bounding tokenizer (an OpenAI encoding, or "bytes") the count
 * is an upper bound of what the provider bills, which is what a reservation needs: an estimate below
 * the bill lets a request spend money the reservation did not hold. With a calibrated family
 * (tokenizer-choice.ts) it is the best estimate, which is what a charge needs when the provider's
 * usage never came. Tokenizer choice, counting and calibration live beside this file.
 */

export { countTextTokens, LONG_CHUNK_CHARS, preloadTokenizers } from "./encodings.js";
export { CALIBRATION } from "./calibration.js";
export { createTokenCounter, findStableCut, type TokenCounter } from "./token-counter.js";
export { boundingTokenizer, encodingOf, isEncoding, TOKENIZER_NAMES, TOKENIZERS, tokenizerFor, type Tokenizer, type TokenizerName } from "./tokenizer-choice.js";

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
  if (!isEncoding(tokenizer)) return [...ALL_OPENAI_RULES, ANTHROPIC_RULE, GEMINI_RULE];
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

