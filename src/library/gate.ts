import type { Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import type { Exchange, HeldCounter } from "../core/exchange.js";
import { leaseMs } from "../core/gate.js";
import { runLimit, runPrefix, runWindowMs } from "../core/gates/runs.js";
import { describeLimit, limitKey, limitsFor } from "../core/gates/scope.js";
import type { Identity } from "../core/identity.js";
import { Meter } from "../core/metering/meter.js";
import { tokenizerFor } from "../core/metering/tokens.js";
import type { Ended, UsageRecord } from "../core/usage-record.js";
import type { ReportedUsage, RequestFormat } from "../formats/format.js";
import { meteredFetch } from "../integrations/metered-fetch.js";
import { awaitSubpaths } from "./subpath-methods.js";

/** How long a request's record waits for model calls that have not settled. */
const END_GRACE_MS = 5_000;

/** Why a Gate's signal fired. */
export type GateAbortReason = Ended | "run_limit";

/** A model call the app makes itself, admitted through gates 4-6; settle it once it is done. */
export interface ModelCall {
  /** The body to send: tollgate's model id and output cap applied. */
  readonly body: Record<string, unknown>;
  readonly model: string;
  readonly upstreamModel: string;
  readonly maxOutputTokens: number;
  /** Aborts when the request's gate aborts. */
  readonly signal: AbortSignal;
  /** Counts the response as it passes (wire-format events or bodies of the call's format). */
  readonly meter: Meter;
  /** Replaces the reservation with the actual cost. Unknown usage: give the counted output text. */
  settle(usage: ReportedUsage & { outputText?: string; toolCalls?: number }, ended?: Ended): Promise<void>;
  /** Settles from what `meter` saw. */
  finish(ended?: Ended): Promise<void>;
  /** The call failed before the provider produced anything: give the reservation back. */
  fail(error?: unknown): Promise<void>;
}

/**
 * The per-request handle an app gets in library mode (`req.tollgate`, `c.get("tollgate")`). It is
 * admitted already (gates 1-3); each model call, step, tool call, retrieval and upload inside the
 * request goes through it, so the model never decides when enough work has been done.
 */
export class Gate {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private docs = 0;
  private uploads = 0;
  private seq = 0;
  /** The last refusal a metered SDK call answered with; adapters map the SDK's error back to it. */
  lastRefusal?: TollgateError;
  /** Model calls admitted but not yet settled: the record waits for them. */
  private readonly unsettled = new Set<Promise<void>>();

  constructor(
    private readonly engine: Engine,
    /** The admitted request. */
    readonly exchange: Exchange,
    clientSignal?: AbortSignal,
  ) {
    const route = exchange.route;
    const wallClock = Math.min(route.timeoutMs, route.runs?.maxDurationMs ?? Infinity);
    this.timer = setTimeout(() => this.abort("timeout"), wallClock);
    this.timer.unref();
    if (clientSignal) {
      if (clientSignal.aborted) this.abort("client_disconnect");
      else clientSignal.addEventListener("abort", () => this.abort("client_disconnect"), { once: true });
    }
  }

  /** Aborts on client disconnect, the wall-clock cap (or the run's max_duration), or a cap being hit. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get requestId(): string {
    return this.exchange.id;
  }

  get identity(): Identity {
    return this.exchange.identity!;
  }

  get record(): Readonly<UsageRecord> {
    return this.exchange.record;
  }

  /** One agent step (model call). Throws run_limit_exceeded past the run's max_steps. */
  async step(): Promise<number> {
    this.signal.throwIfAborted();
    const runs = this.exchange.route.runs;
    const prefix = runPrefix(this.exchange);
    if (!runs || !prefix) return ++this.exchange.record.run_step!;
    const counter: HeldCounter = { key: `${prefix}:steps`, max: runs.maxSteps ?? Number.MAX_SAFE_INTEGER, amount: 1, windowMs: runWindowMs(this.exchange), unit: "steps", label: `the run's max_steps of ${runs.maxSteps}` };
    const total = await this.take(counter, () => runLimit(`this run has reached ${counter.label}`));
    this.exchange.record.run_step = total;
    return total;
  }

  /** One tool call; throws run_limit_exceeded past the run's max_tool_calls. */
  async toolCall(name: string): Promise<void> {
    this.signal.throwIfAborted();
    const runs = this.exchange.route.runs;
    const prefix = runPrefix(this.exchange);
    if (runs?.maxToolCalls !== undefined && prefix) {
      const counter: HeldCounter = { key: `${prefix}:tools`, max: runs.maxToolCalls, amount: 1, windowMs: runWindowMs(this.exchange), unit: "tool_calls", label: `the run's max_tool_calls of ${runs.maxToolCalls}` };
      await this.take(counter, () => runLimit(`tool call ${JSON.stringify(name)} refused: this run has reached ${counter.label}`));
    }
    this.exchange.record.tool_calls++;
  }

  /** How many documents this request may retrieve, at most `requested` (max_docs per request and per run). */
  retrieval(requested: number): number {
    const caps = [this.exchange.route.input.maxDocs, this.exchange.route.runs?.maxDocs].filter((c): c is number => c !== undefined);
    const left = Math.max(0, Math.min(Infinity, ...caps) - this.docs);
    const allowed = Math.max(0, Math.min(Math.floor(requested), left));
    this.docs += allowed;
    this.exchange.record.docs_retrieved = this.docs;
    return allowed;
  }

  /** Checks one uploaded file: its size (413), the count per request (413) and `files` windows (429). */
  async upload(file: { size: number; name?: string }): Promise<void> {
    const caps = this.exchange.route.input;
    const what = file.name ? `file ${JSON.stringify(file.name)}` : "the file";
    if (caps.maxAttachmentBytes !== undefined && file.size > caps.maxAttachmentBytes) {
      throw new TollgateError("input_too_large", `${what} is ${file.size} bytes; this route allows ${caps.maxAttachmentBytes} (max_attachment_bytes)`, { limit: "max_attachment_bytes" });
    }
    if (caps.maxAttachments !== undefined && this.uploads + 1 > caps.maxAttachments) {
      throw new TollgateError("input_too_large", `this request already carries ${this.uploads} files; this route allows ${caps.maxAttachments} (max_attachments)`, { limit: "max_attachments" });
    }
    for (const l of limitsFor(this.exchange, "files")) {
      const counter: HeldCounter = { key: limitKey(l, this.exchange), max: l.max, amount: 1, windowMs: l.windowMs, unit: "files", label: describeLimit(l, `${l.max} files`), limitId: l.id };
      await this.take(counter, (retryAfterMs) => {
        const retry = Math.max(1, Math.ceil((retryAfterMs ?? l.windowMs) / 1000));
        return new TollgateError("rate_limited", `rate limited by ${counter.label}; retry in ${retry}s`, { retryAfterSeconds: retry, limit: l.id });
      });
    }
    this.uploads++;
    this.exchange.record.attachments = this.uploads;
  }

  /**
   * Admits one model call the app makes itself: gates 4-6 on `body` in the given API format (the
   * model policy, the output clamp, the budget reservation). Counts as one step of the run.
   */
  async model(format: RequestFormat, body: unknown): Promise<ModelCall> {
    await this.step();
    const ex = this.engine.child(this.exchange, format.endpoint);
    await this.engine.prepare(ex, format, body);
    const meter = new Meter(format, ex.inspection!, tokenizerFor(ex.model!.upstream), ex.upstream!.maxOutputTokens * ex.inspection!.choices);
    meter.sent = true;
    const engine = this.engine;
    let done!: () => void;
    const settled = new Promise<void>((r) => (done = r));
    this.unsettled.add(settled);
    void settled.then(() => this.unsettled.delete(settled));
    const finish = async (ended: Ended = "complete") => {
      meter.started = true;
      await engine.finish(ex, { ended, meter }).finally(done);
    };
    return {
      body: ex.upstreamBody!,
      model: ex.model!.name,
      upstreamModel: ex.model!.upstream,
      maxOutputTokens: ex.upstream!.maxOutputTokens,
      signal: this.signal,
      meter,
      async settle(usage, ended = "complete") {
        if (usage.inputTokens !== undefined || usage.outputTokens !== undefined) meter.usage = usage;
        if (usage.outputText) meter.countText(usage.outputText);
        meter.toolCalls = usage.toolCalls ?? 0;
        await finish(ended);
      },
      finish,
      async fail(error) {
        await engine.finish(ex, { ended: "upstream_error", meter }, error ?? new TollgateError("upstream_error", "the model call failed")).finally(done);
      },
    };
  }

  /**
   * A `fetch` for provider SDKs the app uses directly (`new OpenAI({ fetch: gate.fetch() })`,
   * Anthropic's too): every model call through it is admitted, clamped, reserved, metered and settled.
   */
  fetch(base: typeof fetch = globalThis.fetch): typeof fetch {
    return meteredFetch(this, base);
  }

  /** Writes the request's usage record; the adapters call it when the response ends. */
  /** Resolves once the request's record is written. */
  get ended(): Promise<UsageRecord> {
    return (this.endedPromise ??= new Promise<UsageRecord>((r) => (this.resolveEnded = r)));
  }
  private endedPromise?: Promise<UsageRecord>;
  private resolveEnded?: (r: UsageRecord) => void;

  async end(error?: unknown): Promise<UsageRecord> {
    void this.ended;
    const record = await this.endOnce(error);
    this.resolveEnded?.(record);
    return record;
  }

  private async endOnce(error?: unknown): Promise<UsageRecord> {
    clearTimeout(this.timer);
    const ex = this.exchange;
    // Calls still streaming settle first (they end quickly once the response is gone), so their
    // cost lands in this record; a call the app never settles is not waited for past the grace.
    if (this.unsettled.size) await Promise.race([Promise.all(this.unsettled), new Promise((r) => setTimeout(r, END_GRACE_MS).unref())]);
    if (TollgateError.is(error) && ex.record.code === null) {
      ex.record.decision = "deny";
      ex.record.code = error.code;
    }
    const reason = this.signal.aborted ? (this.signal.reason as { tollgate?: GateAbortReason })?.tollgate : undefined;
    return this.engine.close(ex, reason && reason !== "run_limit" ? reason : "complete");
  }

  /** Takes one unit of a counter for good; throws what `refusal` makes when it is full. */
  private async take(counter: HeldCounter, refusal: (retryAfterMs?: number) => TollgateError): Promise<number> {
    const id = `${this.exchange.id}:g${++this.seq}`;
    const result = await this.engine.store.reserve(id, [counter], leaseMs(this.exchange));
    if (!result.ok) {
      const err = refusal(result.retryAfterMs);
      if (err.code === "run_limit_exceeded") this.abort("run_limit");
      throw err;
    }
    await this.engine.store.settle(id, [counter.amount]);
    return result.totals[0]!;
  }

  private abort(reason: GateAbortReason): void {
    if (!this.controller.signal.aborted) this.controller.abort({ tollgate: reason });
  }
}

awaitSubpaths(Gate.prototype, "gate", { aiSdk: { subpath: "tollgate/ai-sdk" } });

/**
 * The refusal behind an error a handler threw: a TollgateError itself, or the error an SDK raised
 * for a refusal the gate's metered fetch answered with.
 */
export function refusalOf(err: unknown, gate: Gate | undefined): TollgateError | undefined {
  if (TollgateError.is(err)) return err;
  const status = (err as { status?: unknown })?.status;
  if (gate?.lastRefusal && status === gate.lastRefusal.status) return gate.lastRefusal;
  return undefined;
}
