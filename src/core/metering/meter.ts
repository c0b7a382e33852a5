import type { Inspection, Reading, ReportedUsage, RequestFormat, SseEvent } from "../../formats/format.js";
import { createTokenCounter, type TokenCounter, type TokenizerName } from "./tokens.js";

/**
 * Counts what a response carries as it passes: output tokens (text and tool-call arguments,
 * tokenized as they stream), tool calls, the provider's own usage when it comes, and the time to
 * the first token. It decides when a stream has reached the route's output cap.
 */
export class Meter {
  private readonly counter: TokenCounter;
  toolCalls = 0;
  usage?: ReportedUsage;
  firstTokenAt?: number;
  error?: string;
  last: { id?: string; model?: string } = {};
  capped = false;
  /** The call left for the provider. */
  sent = false;
  /** The provider accepted the call and began to answer. */
  started = false;

  constructor(
    private readonly format: RequestFormat,
    private readonly inspection: Inspection,
    tokenizer: TokenizerName,
    /** Most output tokens the response may carry, all choices together. */
    private readonly cap: number,
  ) {
    this.counter = createTokenCounter(tokenizer);
  }

  get counted(): number {
    return this.counter.total;
  }

  response(body: unknown): void {
    this.apply(this.format.readResponse(body));
  }

  /** Reads one stream event; says whether to forward it and whether the cap is reached. */
  event(e: SseEvent): { forward: boolean } {
    const r = this.format.readEvent(e, this.inspection);
    const before = this.counter.total;
    this.apply(r);
    if (this.counter.total > this.cap) {
      // This event would take the client past the cap: withhold it and end the stream here.
      this.capped = true;
      return { forward: false };
    }
    if (this.counter.total > before && this.firstTokenAt === undefined) this.firstTokenAt = performance.now();
    return { forward: !r.drop && !r.error };
  }

  private apply(r: Reading): void {
    if (r.text) this.counter.add(r.text);
    if (r.toolCalls) this.toolCalls += r.toolCalls;
    if (r.usage) this.usage = { ...this.usage, ...definedOnly(r.usage) };
    if (r.error) this.error = r.error;
    if (r.id) this.last.id = r.id;
    if (r.model) this.last.model = r.model;
  }
}

function definedOnly(u: ReportedUsage): ReportedUsage {
  return Object.fromEntries(Object.entries(u).filter(([, v]) => v !== undefined));
}
