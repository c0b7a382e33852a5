import type { AppRequest, ModelCall as CoreModelCall } from "../core/app-request.js";
import { findRefusal, TollgateError } from "../core/errors.js";
import type { Exchange } from "../core/exchange.js";
import type { Identity } from "../core/identity.js";
import type { Terminal } from "../core/metered-stream.js";
import type { Meter } from "../core/metering/meter.js";
import type { Ended, UsageRecord } from "../core/usage-record.js";
import type { RequestFormat } from "../core/format.js";
import { meteredFetch } from "../integrations/metered-fetch.js";
import { awaitSubpaths } from "./subpath-methods.js";

/** Why a Gate's signal fired. */
export type GateAbortReason = Ended | "run_limit";

/** A model call the app makes itself, admitted through gates 4-6; it ends exactly once. */
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
  /** The provider started streaming: what it delivers is checkpointed every second from now on, so a crash forgets at most a second. */
  streaming(): void;
  /** Settles the call from what `meter` saw and writes its record; only the first call counts. */
  end(t?: Terminal): Promise<UsageRecord>;
}

/**
 * The per-request handle an app gets in library mode (`req.tollgate`, `c.get("tollgate")`). It is
 * admitted already (gates 1-3). It translates and nothing more: every step, tool call, retrieval,
 * upload and model call is counted by the engine (core/app-request.ts); the Gate adds the request's
 * abort signal and the SDK shells (`aiSdk()`, `fetch()`).
 */
export class Gate {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  /** The last refusal a metered SDK call answered with; adapters map the SDK's error back to it. */
  lastRefusal?: TollgateError;
  /** Set once the app wraps a model: its response waits for the first call's admission. */
  private firstCall?: { decided: Promise<TollgateError | undefined>; decide: (r: TollgateError | undefined) => void };

  constructor(
    private readonly app: AppRequest,
    clientSignal?: AbortSignal,
  ) {
    const route = app.exchange.route;
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

  /** The admitted app request (engine side). */
  get exchange(): Exchange {
    return this.app.exchange;
  }

  /** Response headers as the gateway sends them: request id, rate limits, and the first call's model and budget. */
  get headers(): Record<string, string> {
    return { "x-tollgate-request-id": this.requestId, ...this.exchange.headers, ...this.callHeaders };
  }
  private callHeaders: Record<string, string> = {};

  /** One agent step (model call). Throws run_limit_exceeded past the run's max_steps. */
  step(): Promise<number> {
    return this.guard(() => this.app.step());
  }

  /**
   * One tool call; throws run_limit_exceeded past max_tool_calls. A tool call the model made through
   * `aiSdk()` was counted already: confirming it here does not count it twice.
   */
  toolCall(name: string): Promise<void> {
    return this.guard(() => this.app.toolCall(name));
  }

  /** How many documents this request may retrieve, at most `requested` (max_docs per request and per run). */
  retrieval(requested: number): number {
    return this.app.retrieval(requested);
  }

  /** Checks one uploaded file: its size (413), the count per request (413) and `files` windows (429). */
  upload(file: { size: number; name?: string }): Promise<void> {
    return this.app.upload(file);
  }

  /**
   * Admits one model call the app makes itself: gates 4-6 on `body` in the given API format (the
   * model policy, the output clamp, the budget reservation). Counts as one step of the run.
   */
  async model(format: RequestFormat, body: unknown): Promise<ModelCall> {
    let call: CoreModelCall;
    try {
      // No abort on a refusal here: the AI SDK must still deliver it as an error part.
      this.signal.throwIfAborted();
      call = await this.app.model(format, body);
    } catch (err) {
      if (TollgateError.is(err)) this.firstCall?.decide(err);
      throw err;
    }
    if (!Object.keys(this.callHeaders).length) {
      const h = call.exchange.headers;
      for (const name of ["x-tollgate-model", "x-tollgate-budget-remaining", "x-tollgate-clamped", "x-tollgate-downgraded"]) if (h[name]) this.callHeaders[name] = h[name]!;
    }
    this.firstCall?.decide(undefined);
    return {
      body: call.body,
      model: call.model,
      upstreamModel: call.upstreamModel,
      maxOutputTokens: call.maxOutputTokens,
      signal: this.signal,
      meter: call.meter,
      streaming: () => call.streaming(),
      end: (t = { ended: "complete" }) => call.end(t),
    };
  }

  /**
   * Resolves once the response may start: at once when the app has wrapped no model, else when its
   * first model call is admitted (undefined) or refused (the refusal, to be answered with its own
   * status instead of a stream that breaks).
   */
  firstDecision(): Promise<TollgateError | undefined> | undefined {
    return this.firstCall?.decided;
  }

  /**
   * A `fetch` for provider SDKs the app uses directly (`new OpenAI({ fetch: gate.fetch() })`,
   * Anthropic's too): every model call through it is admitted, clamped, reserved, metered and settled.
   */
  fetch(base: typeof fetch = globalThis.fetch): typeof fetch {
    this.expectModelCalls();
    return meteredFetch(this, base);
  }

  /** Counts a tool call the model made (the AI SDK middleware). */
  modelToolCall(name: string): Promise<void> {
    return this.app.toolCall(name, true);
  }

  /** Resolves once the request's record is written. */
  get ended(): Promise<UsageRecord> {
    return (this.endedPromise ??= new Promise<UsageRecord>((r) => (this.resolveEnded = r)));
  }
  private endedPromise?: Promise<UsageRecord>;
  private resolveEnded?: (r: UsageRecord) => void;
  private ending?: Promise<UsageRecord>;

  /** Writes the request's usage record; the adapters call it when the response ends. */
  end(error?: unknown): Promise<UsageRecord> {
    void this.ended;
    return (this.ending ??= (async () => {
      clearTimeout(this.timer);
      this.firstCall?.decide(undefined);
      if (TollgateError.is(error)) this.app.refused(error);
      const reason = this.signal.aborted ? (this.signal.reason as { tollgate?: GateAbortReason })?.tollgate : undefined;
      const record = await this.app.close(reason && reason !== "run_limit" ? reason : "complete");
      this.resolveEnded?.(record);
      return record;
    })());
  }

  /** The app wrapped a model (aiSdk(), fetch()): its response waits for the first call's admission. */
  expectModelCalls(): void {
    if (this.firstCall) return;
    let decide!: (r: TollgateError | undefined) => void;
    const decided = new Promise<TollgateError | undefined>((r) => (decide = r));
    this.firstCall = { decided, decide };
  }

  /** Runs a counter move; a run limit also aborts the request's signal, so nothing more is generated. */
  private async guard<T>(move: () => Promise<T>): Promise<T> {
    this.signal.throwIfAborted();
    try {
      return await move();
    } catch (err) {
      if (TollgateError.is(err) && err.code === "run_limit_exceeded") this.abort("run_limit");
      throw err;
    }
  }

  private abort(reason: GateAbortReason): void {
    if (!this.controller.signal.aborted) this.controller.abort({ tollgate: reason });
  }
}

awaitSubpaths(Gate.prototype, "gate", { aiSdk: { subpath: "tollgate/ai-sdk" } });

/**
 * The refusal behind an error a handler threw: a TollgateError itself (also when the AI SDK
 * wrapped it), or the error an SDK raised for a refusal the gate's metered fetch answered with.
 */
export function refusalOf(err: unknown, gate: Gate | undefined): TollgateError | undefined {
  const found = findRefusal(err);
  if (found) return found;
  const status = (err as { status?: unknown })?.status;
  if (gate?.lastRefusal && status === gate.lastRefusal.status) return gate.lastRefusal;
  return undefined;
}
