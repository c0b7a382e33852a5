import { CALIBRATION, type Weights } from "./calibration.js";
import { calibratedTokens, encoding, utf8Bytes } from "./encodings.js";
import { encodingOf, isEncoding, type Encoding, type TokenizerName } from "./tokenizer-choice.js";

export interface TokenCounter {
  add(delta: string): void;
  readonly total: number;
  /**
   * At least `total`, in constant time: what a stream checks on every event, so the text is only
   * tokenised once this bound could pass the output cap (and at the end, or at a checkpoint).
   */
  readonly bound: number;
}

/**
 * Counts streamed text so that `total` equals countTextTokens of everything added so far (so the
 * exact count, or more where a chunk is longer than LONG_CHUNK_CHARS; for a calibrated family, its
 * weighted estimate, kept in thousandths of a token).
 *
 * Summing per-delta counts is NOT a bound: BPE can split a concatenation into more tokens than its
 * parts ("generate" + "loop" is 2 tokens apart, 4 together in o200k). So we keep the text since
 * the last *stable cut* and re-count only that tail; the tokens before the cut are committed.
 *
 * A stable cut is a position p where the tokenizer's pre-tokenizer regex starts a chunk and the
 * text after p holds (a) a letter or digit, (b) a character that is not a letter, mark or
 * apostrophe, and (c) a non-digit. No alternative of the o200k/cl100k split regex can match across
 * all three (letter runs stop at (b), punctuation and whitespace runs at (a), digit runs at (c)),
 * so no chunk starting before p can ever reach the end of the text: appending more text cannot
 * change any chunk before p. The regex has no lookbehind, so the text after p chunks the same on
 * its own, and since our count is a sum over chunks, committed = count(text) - count(text after p)
 * stays right forever. Each count walks the tail's chunks once and commits up to the last stable
 * cut, so the tail stays a few words long and a count costs the same at token 10 as at 10,000.
 *
 * `bound` is the committed count plus the tail's UTF-8 bytes (a token is at least one byte; for a
 * calibrated family, times its largest weight), which holds however the tail would split.
 *
 * Text with no stable cut (pure emoji, digits or whitespace) would make each count re-read a
 * growing tail; past TAIL_LIMIT chars we fall back to UTF-8 bytes for the rest of the stream,
 * which still bounds it (each token is at least one byte, and the tail starts at a stable cut). A
 * calibrated estimate needs no bound: it commits the long tail as counted and starts afresh, which
 * misses by at most the token or two a chunk split at that point can cost.
 */
const TAIL_LIMIT = 2048;

const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;
const NOT_LETTER_MARK_APOSTROPHE = /[^\p{L}\p{M}']/u;
const NOT_DIGIT = /\P{N}/u;

/** The index of the last chunk (never the first) from which on the chunks make a stable cut, or 0. */
function stableCutIndex(chunks: readonly string[]): number {
  let letterOrDigit = false;
  let breaksLetters = false;
  let nonDigit = false;
  for (let i = chunks.length - 1; i > 0; i--) {
    const chunk = chunks[i]!;
    letterOrDigit ||= LETTER_OR_DIGIT.test(chunk);
    breaksLetters ||= NOT_LETTER_MARK_APOSTROPHE.test(chunk);
    nonDigit ||= NOT_DIGIT.test(chunk);
    if (letterOrDigit && breaksLetters && nonDigit) return i;
  }
  return 0;
}

/** The last chunk start p > 0 after which the text satisfies the stable-cut conditions, or 0. */
export function findStableCut(text: string, tokenizer: Encoding): number {
  const chunks: string[] = [];
  const starts: number[] = [];
  for (const m of text.matchAll(encoding(tokenizer).split)) {
    chunks.push(m[0]);
    starts.push(m.index);
  }
  const i = stableCutIndex(chunks);
  return i > 0 ? starts[i]! : 0;
}

class BpeCounter implements TokenCounter {
  /** In the unit of `measure`: tokens, or thousandths of a token when calibrated. */
  private committed = 0;
  private tail = "";
  /** UTF-8 bytes of `tail` (a lone surrogate half counted as 3, more than it can add). */
  private tailBytes = 0;
  private cached = 0;
  private stale = false;
  private bytesMode = false;
  private readonly bytes = new BytesCounter();
  private readonly split: RegExp;
  private readonly measure: (chunk: string) => number;
  /** Most units one byte of text can cost: 1 token, or the family's largest weight. */
  private readonly perByte: number;
  /** Reused between counts, so a count allocates nothing that grows with the stream. */
  private readonly chunks: string[] = [];
  private readonly counts: number[] = [];

  constructor(
    tokenizer: Encoding,
    private readonly weights?: Weights,
  ) {
    const enc = encoding(tokenizer);
    this.split = enc.split;
    this.measure = weights ? (chunk) => enc.chunkWeighted(chunk, weights) : (chunk) => enc.chunkTokens(chunk);
    this.perByte = weights ? Math.max(...Object.values(weights)) : 1;
  }

  add(delta: string): void {
    if (delta.length === 0) return;
    if (this.bytesMode) {
      this.bytes.add(delta);
      return;
    }
    this.tail += delta;
    this.tailBytes += utf8Bytes(delta);
    this.stale = true;
  }

  get bound(): number {
    if (this.bytesMode) return this.committed + this.bytes.total;
    if (!this.stale) return this.cached;
    const units = this.committed + this.tailBytes * this.perByte;
    return this.weights ? Math.ceil(units / 1000) : units;
  }

  get total(): number {
    if (this.bytesMode) return this.committed + this.bytes.total;
    if (!this.stale) return this.cached;
    const tailUnits = this.recount();
    if (this.bytesMode) return this.committed + this.bytes.total;
    const sum = this.committed + tailUnits;
    this.cached = this.weights ? calibratedTokens(sum) : sum;
    this.stale = false;
    return this.cached;
  }

  /** Counts the tail chunk by chunk, commits what lies before its last stable cut; returns the rest's count. */
  private recount(): number {
    const { chunks, counts } = this;
    chunks.length = counts.length = 0;
    for (const m of this.tail.matchAll(this.split)) {
      chunks.push(m[0]);
      counts.push(this.measure(m[0]));
    }
    const cut = stableCutIndex(chunks);
    let tailUnits = 0;
    for (let i = 0; i < counts.length; i++) {
      if (i < cut) this.committed += counts[i]!;
      else tailUnits += counts[i]!;
    }
    if (cut > 0) {
      this.tail = chunks.slice(cut).join("");
      this.tailBytes = utf8Bytes(this.tail);
    }
    chunks.length = counts.length = 0;
    if (this.tail.length > TAIL_LIMIT && this.weights) {
      this.committed += tailUnits;
      this.tail = "";
      this.tailBytes = 0;
      return 0;
    }
    if (this.tail.length > TAIL_LIMIT) {
      this.bytesMode = true;
      this.bytes.add(this.tail);
      this.tail = "";
      this.tailBytes = 0;
    }
    return tailUnits;
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

  get bound(): number {
    return this.total;
  }
}

export function createTokenCounter(tokenizer: TokenizerName): TokenCounter {
  if (tokenizer === "bytes") return new BytesCounter();
  return isEncoding(tokenizer) ? new BpeCounter(tokenizer) : new BpeCounter(encodingOf(tokenizer), CALIBRATION[tokenizer]);
}
