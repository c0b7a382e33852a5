import type { RequestFormat } from "./format.js";
import { startCheckpoints } from "./checkpoint.js";
import type { Engine } from "./engine.js";
import { storeFailure, TollgateError } from "./errors.js";
import type { Exchange, HeldCounter } from "./exchange.js";
import { leaseMs, type GateEnv } from "./gate.js";
import { runLimit, runPrefix, runWindowMs } from "./gates/runs.js";
import { describeLimit, limitKey, limitsFor } from "./gates/scope.js";
import type { Terminal } from "./metered-stream.js";
import type { Meter } from "./metering/meter.js";
import type { Ended, UsageRecord } from "./usage-record.js";

/** How long a request's record waits for model calls that have not settled. */
const END_GRACE_MS = 5_000;

/** A model call inside an app request, admitted through gates 4-6; it ends exactly once. */
export interface ModelCall {
  /** The call's own exchange: its record has `parent_id` set to the app request's id. */
  readonly exchange: Exchange;
  /** The body to send: tollgate's model id and output cap applied. */
  readonly body: Record<string, unknown>;
  readonly model: string;
  readonly upstreamModel: string;
  readonly maxOutputTokens: number;
  /** Counts the response as it passes. */
  readonly meter: Meter;
  /**
   * The provider started streaming: from now on what the stream delivers is checkpointed into the
   * call's lease every second, so a crash of the app forgets at most a second of it (as in the gateway).
   */
  streaming(): void;
  /** Settles the call and writes its record; only the first call counts, later ones get the same record. */
  end(t: Terminal): Promise<UsageRecord>;
}

/**
 * Library mode: one app request (`endpoint: "app"`) as the engine sees it. Every counter the app
 * moves — steps, tool calls, documents, uploads, model calls — is taken here against the same store
 * and with the same refusals as the gateway's gates; the Gate handed to the app only translates.
 */
export class AppRequest {
  private seq = 0;
  /** Tool calls the model asked for and the run has counted, by name: the app's own gate.toolCall() for them is free. */
  private readonly counted = new Map<string, number>();
  private readonly unsettled = new Set<Promise<unknown>>();

  constructor(
    private readonly engine: Engine,
    private readonly env: GateEnv,
    readonly exchange: Exchange,
  ) {}

  /** One agent step (model call). Throws run_limit_exceeded past the run's max_steps. */
  async step(): Promise<number> {
    const ex = this.exchange;
    const runs = ex.route.runs;
    const prefix = runPrefix(ex);
    if (!runs || !prefix) return ++ex.record.run_step!;
    const counter: HeldCounter = { key: `${prefix}:steps`, max: runs.maxSteps ?? Number.MAX_SAFE_INTEGER, amount: 1, windowMs: runWindowMs(ex), unit: "steps", label: `the run's max_steps of ${runs.maxSteps}` };
    const total = await this.take(counter, () => runLimit(`this run has reached ${counter.label}`));
    ex.record.run_step = total;
    return total;
  }

  /**
   * One tool call; throws run_limit_exceeded past max_tool_calls. `fromModel`: the model asked for
   * it (the AI SDK middleware); the app confirming the same call later is not counted again.
   */
  async toolCall(name: string, fromModel = false): Promise<void> {
    if (!fromModel) {
      const credit = this.counted.get(name) ?? 0;
      if (credit > 0) {
        this.counted.set(name, credit - 1);
        return;
      }
    }
    const ex = this.exchange;
    const runs = ex.route.runs;
    const prefix = runPrefix(ex);
    if (runs?.maxToolCalls !== undefined && prefix) {
      const counter: HeldCounter = { key: `${prefix}:tools`, max: runs.maxToolCalls, amount: 1, windowMs: runWindowMs(ex), unit: "tool_calls", label: `the run's max_tool_calls of ${runs.maxToolCalls}` };
      await this.take(counter, () => runLimit(`tool call ${JSON.stringify(name)} refused: this run has reached ${counter.label}`));
    }
    ex.record.tool_calls++;
    if (fromModel) this.counted.set(name, (this.counted.get(name) ?? 0) + 1);
  }

  /** How many documents this request may retrieve, at most `requested` (max_docs per request and per run). */
  retrieval(requested: number): number {
    const ex = this.exchange;
    const caps = [ex.route.input.maxDocs, ex.route.runs?.maxDocs].filter((c): c is number => c !== undefined);
    const left = Math.max(0, Math.min(Infinity, ...caps) - ex.record.docs_retrieved);
    const allowed = Math.max(0, Math.min(Math.floor(requested), left));
    ex.record.docs_retrieved += allowed;
    return allowed;
  }

  /** Checks one uploaded file: its size (413), the count per request (413) and `files` windows (429). */
  async upload(file: { size: number; name?: string }): Promise<void> {
    const ex = this.exchange;
    const caps = ex.route.input;
    const what = file.name ? `file ${JSON.stringify(file.name)}` : "the file";
    if (caps.maxAttachmentBytes !== undefined && file.size > caps.maxAttachmentBytes) {
      throw this.refused(new TollgateError("input_too_large", `${what} is ${file.size} bytes; this route allows ${caps.maxAttachmentBytes} (max_attachment_bytes)`, { limit: "max_attachment_bytes" }));
    }
    if (caps.maxAttachments !== undefined && ex.record.attachments + 1 > caps.maxAttachments) {
      throw this.refused(new TollgateError("input_too_large", `this request already carries ${ex.record.attachments} files; this route allows ${caps.maxAttachments} (max_attachments)`, { limit: "max_attachments" }));
    }
    for (const l of limitsFor(ex, "files")) {
      const counter: HeldCounter = { key: limitKey(l, ex), max: l.max, amount: 1, windowMs: l.windowMs, unit: "files", label: describeLimit(l, `${l.max} files`), limitId: l.id };
      await this.take(counter, (retryAfterMs) => {
        const retry = Math.max(1, Math.ceil((retryAfterMs ?? l.windowMs) / 1000));
        return new TollgateError("rate_limited", `rate limited by ${counter.label}; retry in ${retry}s`, { retryAfterSeconds: retry, limit: l.id });
      });
    }
    ex.record.attachments++;
  }

  /**
   * Admits one model call the app makes: a step of the run, then gates 4-6 on `body` in the given
   * API format (model policy, output clamp, budget reservation). The call writes its own record.
   */
  async model(format: RequestFormat, body: unknown): Promise<ModelCall> {
    await this.step();
    const ex = this.engine.child(this.exchange, format.endpoint);
    try {
      await this.engine.prepare(ex, format, body);
    } catch (err) {
      throw this.refused(storeFailure(err));
    }
    const meter = this.engine.meterFor(ex);
    meter.sent = true;
    let done: Promise<UsageRecord> | undefined;
    const end = (t: Terminal) => {
      if (!done) {
        done = this.engine.finish(ex, { ended: t.ended, meter }, t.error);
        this.unsettled.add(done);
        void done.finally(() => this.unsettled.delete(done!)).catch(() => {});
        if (t.ended === "refused" && t.error) this.refused(t.error);
      }
      return done;
    };
    const engine = this.engine;
    const streaming = () => {
      meter.started = true;
      if (!done && !ex.stopCheckpoints) ex.stopCheckpoints = startCheckpoints(ex, meter, engine.store, engine.config);
    };
    return { exchange: ex, body: ex.upstreamBody!, model: ex.model!.name, upstreamModel: ex.model!.upstream, maxOutputTokens: ex.upstream!.maxOutputTokens, meter, streaming, end };
  }

  /** Marks the app request as stopped by a refusal after its admission (SPEC §6) and returns it. */
  refused(err: TollgateError): TollgateError {
    const rec = this.exchange.record;
    if (rec.ended !== "refused") {
      rec.decision = "deny";
      rec.code = err.code;
      rec.ended = "refused";
    }
    return err;
  }

  /** Writes the app request's record once its model calls have settled (or the grace ran out). */
  async close(ended: Ended = "complete"): Promise<UsageRecord> {
    if (this.unsettled.size) await Promise.race([Promise.allSettled(this.unsettled), new Promise((r) => setTimeout(r, END_GRACE_MS).unref())]);
    return this.engine.close(this.exchange, ended);
  }

  /** Takes one unit of a counter for good; throws what `refusal` makes when it is full. */
  private async take(counter: HeldCounter, refusal: (retryAfterMs?: number) => TollgateError): Promise<number> {
    const id = `${this.exchange.id}:g${++this.seq}`;
    let result;
    try {
      result = await this.env.store.reserve(id, [counter], leaseMs(this.exchange), true);
      if (result.ok) await this.env.store.settle(id, [counter.amount]);
    } catch (err) {
      throw this.refused(storeFailure(err));
    }
    if (!result.ok) throw this.refused(refusal(result.retryAfterMs));
    return result.totals[0]!;
  }
}
