import { CALIBRATION, type Weights } from "./calibration.js";
import { calibratedTokens, encoding, utf8Bytes } from "./encodings.js";
import { encodingOf, isEncoding, type Encoding, type TokenizerName } from "./tokenizer-choice.js";

export interface TokenCounter {
  add(delta: string): void;
  readonly total: number;
}

/**
 * Counts streamed text so that `total` equals countTextTokens of everything added so far (so the
 * exact count, or more where a chunk is longer than LONG_CHUNK_CHARS; for a calibrated family, its
 * weighted estimate, kept in thousandths of a token).
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
 * which still bounds it (each token is at least one byte, and the tail starts at a stable cut). A
 * calibrated estimate needs no bound: it commits the long tail as counted and starts afresh, which
 * misses by at most the token or two a chunk split at that point can cost.
 */
const COMPACT_AT = 256;
const TAIL_LIMIT = 2048;

const LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;
const NOT_LETTER_MARK_APOSTROPHE = /[^\p{L}\p{M}']/u;
const NOT_DIGIT = /\P{N}/u;

/** The last chunk start p > 0 after which the text satisfies the stable-cut conditions, or 0. */
export function findStableCut(text: string, tokenizer: Encoding): number {
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
  /** In the unit of `measure`: tokens, or thousandths of a token when calibrated. */
  private committed = 0;
  private tail = "";
  private cached = 0;
  private stale = false;
  private bytesMode = false;
  private readonly bytes = new BytesCounter();
  private readonly measure: (text: string) => number;

  constructor(
    private readonly tokenizer: Encoding,
    private readonly weights?: Weights,
  ) {
    const enc = encoding(tokenizer);
    this.measure = weights ? (text) => enc.weighted(text, weights) : (text) => enc.count(text);
  }

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
    let tailTokens = this.measure(this.tail);
    if (this.tail.length > COMPACT_AT) {
      const cut = findStableCut(this.tail, this.tokenizer);
      if (cut > 0) {
        const rest = this.tail.slice(cut);
        const restTokens = this.measure(rest);
        this.committed += tailTokens - restTokens;
        this.tail = rest;
        tailTokens = restTokens;
      }
      if (this.tail.length > TAIL_LIMIT && this.weights) {
        this.committed += tailTokens;
        this.tail = "";
        tailTokens = 0;
      } else if (this.tail.length > TAIL_LIMIT) {
        this.bytesMode = true;
        this.bytes.add(this.tail);
        this.tail = "";
        return this.committed + this.bytes.total;
      }
    }
    const sum = this.committed + tailTokens;
    this.cached = this.weights ? calibratedTokens(sum) : sum;
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
  if (tokenizer === "bytes") return new BytesCounter();
  return isEncoding(tokenizer) ? new BpeCounter(tokenizer) : new BpeCounter(encodingOf(tokenizer), CALIBRATION[tokenizer]);
}
