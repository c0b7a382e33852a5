import type { Inspection, Reading, ReportedUsage, RequestFormat, SseEvent, StreamTail } from "../format.js";
import { createTokenCounter, isEncoding, type TokenCounter, type Tokenizer } from "./tokens.js";

type Forward = { readonly forward: boolean };
// One answer object each, shared by every event of every stream: they are read, never kept or changed.
const FORWARD: Forward = Object.freeze({ forward: true });
const WITHHOLD: Forward = Object.freeze({ forward: false });

/**
 * Counts what a response carries as it passes: output tokens (text and tool-call arguments,
 * tokenized as they stream), tool calls, the provider's own usage when it comes, and the time to
 * the first token. It decides when a stream has reached the route's output cap.
 */
export class Meter {
  private readonly counter: TokenCounter;
  /** The count is exact (an OpenAI encoding), not a calibrated estimate. */
  private readonly exact: boolean;
  toolCalls = 0;
  usage?: ReportedUsage;
  firstTokenAt?: number;
  error?: string;
  /** What the stream showed; `outputTokens` is filled in by `ending`, not on every event. */
  readonly last: StreamTail = {};
  /** Some output text has passed (so `counted` > 0), known without tokenising. */
  output = false;
  capped = false;
  /** The call left for the provider. */
  sent = false;
  /** The provider accepted the call and began to answer. */
  started = false;

  constructor(
    private readonly format: RequestFormat,
    private readonly inspection: Inspection,
    tokenizer: Tokenizer,
    /** Most output tokens the response may carry, all choices together. */
    private readonly cap: number,
  ) {
    this.counter = createTokenCounter(tokenizer);
    this.exact = isEncoding(tokenizer);
  }

  /**
   * Output tokens to bill when the provider's usage never came (SPEC §7.8: the model's own
   * tokenizer, else its calibrated estimate). An estimate above the cap is the estimate's error,
   * not tokens — the provider was told the cap — unless even its lowest reading overran.
   */
  get counted(): number {
    const n = this.counter.total;
    const counted = this.exact || this.fewest > this.cap ? n : Math.min(n, this.cap);
    // The event that crossed the cap was withheld: the client got at most the cap.
    return this.capped ? Math.min(counted, this.cap) : counted;
  }

  /**
   * The fewest tokens the provider can have generated: the count, or for a calibrated estimate
   * (kept within 25% of the provider's count) four fifths of it. The output cap guards against a
   * provider ignoring the max_tokens it was sent, and must not cut an honest stream short.
   */
  private get fewest(): number {
    const n = this.counter.total;
    return this.exact ? n : Math.floor((n * 4) / 5);
  }

  /** The stream's tail for the events that close a stream cut short, with the output counted so far. */
  get ending(): StreamTail {
    this.last.outputTokens = this.counted;
    return this.last;
  }

  /** Counts output text the transport saw some other way (library mode). */
  countText(text: string): void {
    this.addText(text);
  }

  response(body: unknown): void {
    this.apply(this.format.readResponse(body));
  }

  /** Reads one stream event; says whether to forward it and whether the cap is reached. */
  event(e: SseEvent): Forward {
    return this.read(this.format.readEvent(e, this.inspection, this.last));
  }

  /** Counts one part of a response read by the transport itself (the AI SDK's stream parts). */
  read(r: Reading): Forward {
    this.apply(r);
    // The bound is checked first, so an event far from the cap costs no tokenising.
    if (this.fewestBound > this.cap && this.fewest > this.cap) {
      // This event would take the client past the cap: withhold it and end the stream here.
      this.capped = true;
      return WITHHOLD;
    }
    if (r.text && this.firstTokenAt === undefined) this.firstTokenAt = performance.now();
    return !r.drop && !r.error ? FORWARD : WITHHOLD;
  }

  /** At least `fewest`, in constant time. */
  private get fewestBound(): number {
    const n = this.counter.bound;
    return this.exact ? n : Math.floor((n * 4) / 5);
  }

  private addText(text: string): void {
    if (text.length === 0) return;
    this.counter.add(text);
    this.output = true;
  }

  private apply(r: Reading): void {
    if (r.text) this.addText(r.text);
    if (r.toolCalls) this.toolCalls += r.toolCalls;
    if (r.usage) this.usage = withReported(this.usage, r.usage);
    if (r.error) this.error = r.error;
    if (r.id) this.last.id = r.id;
    if (r.model) this.last.model = r.model;
  }
}

/** A new usage: the earlier one with each field `u` reports (not undefined) over it. */
function withReported(earlier: ReportedUsage | undefined, u: ReportedUsage): ReportedUsage {
  const merged: ReportedUsage = { ...earlier };
  // A loop, not Object.entries/filter/fromEntries: this runs for every response with usage.
  for (const k in u) {
    const v = u[k as keyof ReportedUsage];
    if (v !== undefined) merged[k as keyof ReportedUsage] = v;
  }
  return merged;
}
