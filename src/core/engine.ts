import { randomUUID } from "node:crypto";
import type { ResolvedConfig, ResolvedRoute } from "./config-types.js";
import type { RequestFormat } from "./format.js";
import type { CallSignal } from "./cancel.js";
import type { JsonSource } from "./json-source.js";
import type { Provider, UpstreamResult } from "./provider.js";
import { StoreUnavailableError, type Store } from "./store.js";
import { afterSettle, refusalAlert, type EngineEvents } from "./alerts.js";
import { AppRequest } from "./app-request.js";
import { admissionActuals, joint, reservationActuals, startCheckpoints } from "./checkpoint.js";
import { compileNetworks } from "./client-ip.js";
import { storeFailure, TollgateError } from "./errors.js";
import { Exchange, type CallerContext } from "./exchange.js";
import type { Gate, GateEnv } from "./gate.js";
import { abuse, abuseEnabled, lookOnly, scoreRefusal } from "./gates/abuse.js";
import { budget } from "./gates/budget.js";
import { challenge, challengePressure, challengeRequired, isChallengeOffer, issueChallenge, type Challenge } from "./gates/challenge.js";
import { identify } from "./gates/identify.js";
import { jointReservation } from "./gates/joint-reservation.js";
import { modelPolicy } from "./gates/model-policy.js";
import { normalise } from "./gates/normalise.js";
import { knownWindowRefusal, quota, quotaPeek } from "./gates/quota.js";
import { requestWindows } from "./gates/request-windows.js";
import { Identifier } from "./identity.js";
import { budgetRefusal402, factsOf, factsOfBytes, modelRefusal, plainIdentity, type BodyFacts } from "./known-refusals.js";
import { abortReason } from "./metered-stream.js";
import { Meter } from "./metering/meter.js";
import { quotaReport, type QuotaReport } from "./quota-report.js";
import { chargeFor, reservation, type Charge } from "./metering/settlement.js";
import { RecentTotals } from "./recent-totals.js";
import { RefusalRecords } from "./refusal-records.js";
import type { Ended, UsageRecord } from "./usage-record.js";

/**
 * The gates in SPEC §2 order (docs/lifecycle.md draws them). Admission runs before the body is
 * read; preparation needs it. The provider call and settlement follow.
 */
export const ADMISSION: readonly Gate[] = [identify, abuse, challenge, quota];
export const PREPARATION: readonly Gate[] = [normalise, modelPolicy, budget];
/**
 * Admission while the body is still arriving (the gateway): gate 3 only checks, and takes its
 * reservation at the start of preparation, so a stalled body holds no quota.
 */
const ADMISSION_BODY_PENDING: readonly Gate[] = [identify, abuse, challenge, quotaPeek];
const PREPARATION_DEFERRED_QUOTA: readonly Gate[] = [quota, ...PREPARATION];
/** The same gates with one reservation for gates 3 and 6 (gates/joint-reservation.ts). */
const PREPARATION_JOINT: readonly Gate[] = [jointReservation];
/** A request that only reads (models, quota, a challenge): who it is and whether it is blocked. */
const LOOK: readonly Gate[] = [identify, abuse];
export { abortReason };

export interface EngineOptions {
  config: ResolvedConfig;
  store: Store;
  providers: Record<string, Provider>;
  /** Receives every usage record once it is final (after the store has it). */
  onRecord?: (record: UsageRecord) => void;
  /** Operational warnings (the ops log); stderr when not given. Never passed a secret. */
  warn?: (fields: Record<string, unknown>, message: string) => void;
  now?: () => number;
  /** Alerts and usage export (the runtime's outbox); absent: none. */
  events?: EngineEvents;
}

/** A refusal answered before an exchange is built (Engine.refuseEarly), with the headers it carries. */
export interface EarlyRefusal {
  error: TollgateError;
  headers: Readonly<Record<string, string>>;
}
const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/** How a provider call ended, as the transport saw it. */
export interface Outcome {
  ended: Ended;
  meter: Meter;
}

/**
 * The HTTP-free policy engine. The gateway, the framework adapters and the AI SDK middleware all
 * drive one request through it the same way: open -> admit -> prepare -> call -> finish, with
 * `refuse` wherever a gate says no. Every request ends in exactly one usage record.
 */
export class Engine {
  readonly config: ResolvedConfig;
  readonly store: Store;
  private readonly env: GateEnv;
  private readonly onRecord: (record: UsageRecord) => void;
  private readonly warn: (fields: Record<string, unknown>, message: string) => void;
  private readonly routes: Map<string, ResolvedConfig["routes"][number]>;
  private readonly refusals: RefusalRecords;
  /** Summary records being written, so close() can wait for them. */
  private readonly summaryWrites = new Set<Promise<void>>();
  private readonly events?: EngineEvents;

  constructor(opts: EngineOptions) {
    this.config = opts.config;
    this.store = opts.store;
    this.onRecord = opts.onRecord ?? (() => {});
    this.warn = opts.warn ?? ((fields, message) => process.stderr.write(`tollgate: ${message} ${JSON.stringify(fields)}\n`));
    this.routes = new Map(opts.config.routes.map((r) => [r.name, r]));
    this.events = opts.events;
    // Calendar periods follow the store's clock when it has one (Redis), so replicas agree on the day.
    const now = opts.now ?? (opts.store.clock ? () => opts.store.clock!() : Date.now);
    // Refusal records count per second of the same clock as the gates that refuse.
    this.refusals = new RefusalRecords(opts.config.server.maxRefusalRecordsPerSecond, (summary) => this.writeSummary(summary), now);
    this.env = {
      config: opts.config,
      store: opts.store,
      identifier: new Identifier(opts.config, opts.store),
      providers: opts.providers,
      blocklist: compileNetworks(opts.config.abuse.blocklist),
      allowlist: compileNetworks(opts.config.abuse.allowlist),
      now,
      alerts: opts.events,
      recent: new RecentTotals(undefined, now),
    };
  }

  open(caller: CallerContext): Exchange {
    const route = this.routes.get(caller.route);
    if (!route) throw new Error(`unknown route ${caller.route}`);
    return new Exchange(caller, route, caller.requestId ?? randomUUID());
  }

  /**
   * A refusal gate 1 gives without an exchange (credentials no identity comes from: none, an
   * unusable one, a key remembered as unknown or dead), once its code's records of this second are
   * spent (SPEC §6): it is then only counted into its second's summary record, and returned for
   * the transport to answer. Undefined: open() and admit() as usual (the refusal, if any, gets its
   * own record). A flood of bad keys costs no Exchange, record or promise per request.
   */
  refuseEarly(caller: CallerContext): EarlyRefusal | undefined {
    const route = this.routes.get(caller.route);
    if (!route) return undefined;
    const err = this.env.identifier.knownRefusal(caller.credentials, route);
    if (err) return this.refusals.fold(err.code, caller.route, caller.endpoint) ? { error: err, headers: NO_HEADERS } : undefined;
    // A window this process knows is full (RecentTotals.noteFull), once the 429s' records of this
    // second are spent. Looked for only then: no other request pays for it.
    return this.env.recent.anyFull && this.refusals.spent("rate_limited") ? this.knownFull(caller, route) : undefined;
  }

  /**
   * Gate 3's 429 for a window this process knows is full, answered before an exchange when gates
   * 1-3 would give it without a store trip and with nothing else to record: a config key or an
   * anonymous caller, no operator policy or suspicion score to read (gate 2 keeps no signal), no
   * challenge, no run. The same refusal, headers and summary count as the way through admit().
   */
  private knownFull(caller: CallerContext, route: ResolvedRoute): EarlyRefusal | undefined {
    const env = this.env;
    const identity = plainIdentity(env, caller, route);
    if (!identity) return undefined;
    const counters = requestWindows({ route, identity, windows: undefined }).counters;
    const full = env.recent.refusal(counters);
    if (!full || !this.refusals.fold("rate_limited", caller.route, caller.endpoint)) return undefined;
    return knownWindowRefusal(counters, full);
  }

  /**
   * Whether a request's body is worth a look before its exchange (`refuseFromBody`): only while
   * the 403s' or 402s' records of this second are spent. A served request pays two map reads.
   */
  get bodyRefusalsFolding(): boolean {
    return this.refusals.spent("model_not_allowed") || this.refusals.spent("budget_exceeded");
  }

  /**
   * Gate 5's 403 for a model the caller's plan or the route does not offer, or gate 6's 402 for an
   * estimate no settled budget can take, answered from the parsed body before an exchange when
   * gates 1-4 would let the request through without a store trip (known-refusals.ts), once the
   * code's records of this second are spent: it is only counted into its second's summary.
   * Undefined: open() and the gates as usual.
   */
  refuseFromBody(caller: CallerContext, format: RequestFormat, body: unknown): EarlyRefusal | undefined {
    const route = this.routes.get(caller.route);
    return route && this.refuseFromFacts(caller, route, factsOf(this.env, route, format, caller.endpoint, body));
  }

  /**
   * refuseFromBody for a body still in bytes: one byte for byte the same as the last on its route
   * and format is not parsed again (known-refusals.ts factsOfBytes). `parse` is called otherwise.
   */
  refuseFromBytes(caller: CallerContext, format: RequestFormat, bytes: Buffer, parse: () => unknown): EarlyRefusal | undefined {
    const route = this.routes.get(caller.route);
    const facts = route && factsOfBytes(this.env, route, format, caller.endpoint, bytes, parse);
    return facts && this.refuseFromFacts(caller, route, facts);
  }

  private refuseFromFacts(caller: CallerContext, route: ResolvedRoute, facts: BodyFacts): EarlyRefusal | undefined {
    const known =
      (this.refusals.spent("model_not_allowed") ? modelRefusal(this.env, caller, route, facts) : undefined) ??
      (this.refusals.spent("budget_exceeded") ? budgetRefusal402(this.env, caller, route, facts) : undefined);
    return known && this.refusals.fold(known.error.code, caller.route, caller.endpoint) ? known : undefined;
  }

  /**
   * Gates 1-3: identify, abuse, quota. Throws the refusal after recording it. With `bodyPending`
   * gate 3 refuses what is already full but reserves nothing until `prepare` has the body.
   */
  async admit(ex: Exchange, opts: { bodyPending?: boolean } = {}): Promise<void> {
    const pending = this.run(ex, opts.bodyPending ? ADMISSION_BODY_PENDING : ADMISSION, 0);
    if (pending) await pending;
  }

  /**
   * The models this caller may use on this route (GET /v1/models): identity and abuse gates only;
   * listing spends nothing, so it takes no quota and writes no usage record.
   */
  async modelsFor(ex: Exchange): Promise<string[]> {
    await this.look(ex);
    const id = ex.identity!;
    const plan = this.config.plans[id.plan];
    return (plan?.models ?? []).filter((name) => {
      const model = this.config.models[name];
      if (!model || (ex.route.models && !ex.route.models.includes(name))) return false;
      if (model.requires.includes("verified") && !id.verified) return false;
      if (model.requires.includes("paid") && !plan?.paid) return false;
      return true;
    });
  }

  /**
   * The caller's budgets and limits on this route (GET /v1/me), so an app can show "you have
   * $0.42 left today": identity and abuse gates, then one peek; nothing is reserved or recorded.
   */
  async quotaFor(ex: Exchange): Promise<QuotaReport> {
    await this.look(ex);
    return quotaReport(ex, this.env).catch((err) => Promise.reject(storeFailure(err)));
  }

  /**
   * A fresh proof-of-work challenge for this caller on this route (GET /v1/challenge), at the
   * difficulty its score asks for, and whether the route would ask it for one: identity and abuse
   * gates only, nothing reserved or recorded. 404 on a route without `challenge`.
   */
  async challengeFor(ex: Exchange): Promise<{ challenge: Challenge; required: boolean }> {
    if (!ex.route.challenge) throw new TollgateError("not_found", `route ${ex.route.name} asks for no proof-of-work challenge`);
    await this.look(ex);
    const pressure = await challengePressure(ex, this.env);
    return { challenge: await issueChallenge(ex, this.env, pressure), required: challengeRequired(ex.route.challenge, ex, pressure) };
  }

  /** Identity and abuse gates for a request that only reads (models, quota): nothing recorded. */
  private async look(ex: Exchange): Promise<void> {
    lookOnly(ex);
    try {
      for (const gate of LOOK) {
        const pending = gate(ex, this.env);
        if (pending) await pending;
      }
    } catch (err) {
      throw storeFailure(err);
    }
  }

  /**
   * A model call inside an admitted app request (library mode: an agent loop makes several). The
   * child shares the parent's identity, run and operator policy, runs gates 4-6 and settles on its
   * own, and writes its own record with `parent_id` (SPEC §6).
   */
  child(parent: Exchange, endpoint: Exchange["caller"]["endpoint"]): Exchange {
    const ex = new Exchange({ ...parent.caller, endpoint }, parent.route, `${parent.id}:${++parent.children}`);
    ex.parent = parent;
    ex.identity = parent.identity;
    ex.policy = parent.policy;
    ex.downgrade = parent.downgrade;
    ex.budgetPressure = parent.budgetPressure;
    ex.budgetSeen = parent.budgetSeen;
    ex.newIdentity = parent.newIdentity;
    ex.signals = [...parent.signals];
    ex.record.user = parent.record.user;
    ex.record.key_id = parent.record.key_id;
    ex.record.org = parent.record.org;
    ex.record.plan = parent.record.plan;
    ex.record.run_id = parent.record.run_id;
    ex.record.run_step = parent.record.run_step;
    ex.record.parent_id = parent.id;
    return ex;
  }

  /** The engine's side of an admitted app request (library mode): its counters and model calls. */
  app(ex: Exchange): AppRequest {
    return new AppRequest(this, this.env, ex);
  }

  /** The meter for a prepared call: its format, tokenizer and output cap. */
  meterFor(ex: Exchange): Meter {
    return new Meter(ex.format!, ex.inspection!, ex.model!.tokenizer, ex.upstream!.maxOutputTokens * ex.inspection!.choices);
  }

  /**
   * Ends a request that ran no model call of its own through `call` (library mode): settles what
   * admission took — tool calls the app reported count against the run — and writes the record.
   */
  async close(ex: Exchange, ended: Ended = "complete"): Promise<UsageRecord> {
    if (ex.finished) return ex.record;
    ex.finished = true;
    if (ex.record.ended === null) ex.record.ended = ended;
    this.freed(ex);
    try {
      // A library request's tool calls were taken one by one through gate.toolCall().
      await this.settleAdmission(ex, 0);
    } finally {
      await this.write(ex);
    }
    return ex.record;
  }

  /** Gates 4-6 for a parsed body: normalise, model policy, budget reservation. */
  async prepare(ex: Exchange, format: RequestFormat, body: unknown, source?: JsonSource): Promise<void> {
    ex.format = format;
    ex.source = source;
    try {
      ex.inspection = format.inspect(body);
      ex.inspectedBody = body as Record<string, unknown>;
    } catch (err) {
      await this.refused(ex, err);
    }
    const pending = this.run(ex, preparation(ex), 0);
    if (pending) await pending;
  }

  /** Gate 7: the provider call; the signal must fire on client disconnect and the wall-clock cap. */
  async call(ex: Exchange, signal: CallSignal): Promise<{ result: UpstreamResult; meter: Meter }> {
    const meter = this.meterFor(ex);
    const provider = this.env.providers[ex.model!.provider]!;
    try {
      signal.throwIfAborted();
      meter.sent = true;
      const result = await provider.call({
        format: ex.format!,
        body: ex.upstreamBody!,
        patch: ex.source && ex.upstreamFields && { source: ex.source, fields: ex.upstreamFields },
        plan: ex.upstream!,
        stream: ex.inspection!.stream,
        signal,
        firstByteTimeoutMs: this.config.server.firstByteTimeoutMs,
        idleTimeoutMs: this.config.server.idleTimeoutMs,
      });
      meter.started = true;
      if (result.kind === "json") {
        meter.response(result.body);
        // The answer is never forwarded: its message may name the provider key (SPEC §5.2).
        if (meter.error) throw new TollgateError("upstream_error", `the provider ${provider.name} answered with an error`);
      } else {
        ex.stopCheckpoints = startCheckpoints(ex, meter, this.store, this.config);
      }
      return { result, meter };
    } catch (err) {
      const failure = toTollgateError(err, signal);
      await this.finish(ex, { ended: endedBy(err, signal), meter }, failure);
      throw failure;
    }
  }

  /**
   * Gate 8, exactly once per served request: the reservation becomes the actual cost and the usage
   * record is written. A second call is a no-op, so every exit path may call it.
   */
  async finish(ex: Exchange, outcome: Outcome, error?: unknown): Promise<UsageRecord> {
    if (ex.finished) return ex.record;
    ex.finished = true;
    ex.stopCheckpoints?.();
    const rec = ex.record;
    const { meter } = outcome;
    const charge = chargeFor(ex, outcome.ended, meter, this.config);
    for (const w of charge.warnings) this.warn({ request_id: ex.id, ...w.fields }, w.message);
    applyCharge(ex, charge);
    rec.tool_calls = meter.toolCalls;
    rec.ended = outcome.ended;
    rec.ttft_ms = meter.firstTokenAt !== undefined ? Math.round(meter.firstTokenAt - ex.startedAt) : null;
    if (error !== undefined) rec.code = toTollgateError(error, undefined).code;
    // One write for the settle and the record, where the store offers it.
    const together = this.settleWithRecord(ex, charge, meter);
    if (together && (await together)) {
      this.freed(ex);
      const alerting = afterSettle(ex, this.env);
      if (alerting) await alerting.catch((err) => this.warn({ request_id: ex.id, reason: reasonOf(err) }, "checking a settled request's budgets for alerts failed"));
      return rec;
    }
    // A served request is never thrown away: whatever fails while settling, the record is written.
    // Nothing held (no limits, no budget): nothing to wait for.
    if (ex.budget || ex.quota || ex.runStart) {
      this.freed(ex);
      const budget = ex.budget && this.settleBudget(ex, charge, meter);
      const admission =
        ((ex.quota && !joint(ex)) || ex.runStart) &&
        this.settleAdmission(ex, meter.toolCalls).catch((err) => this.settleFailed(ex, "quota", err, "settling a served request's quota failed; its lease expires on its own"));
      await (budget && admission ? Promise.all([budget, admission]) : (budget ?? admission));
    }
    const alerting = charge.generated && afterSettle(ex, this.env);
    if (alerting) await alerting.catch((err) => this.warn({ request_id: ex.id, reason: reasonOf(err) }, "checking a settled request's budgets for alerts failed"));
    try {
      await this.write(ex);
    } catch (err) {
      this.warn({ request_id: ex.id, reason: reasonOf(err) }, "the store did not take a served request's usage record; it is on stdout only");
    }
    return rec;
  }

  /**
   * Commits the charge against the budget, and gate 3's windows when one reservation holds both;
   * when the store refuses it, the reservation is charged. The store's own promise, not an async
   * function's: the settle path is on every request.
   */
  private settleBudget(ex: Exchange, charge: Charge, meter: Meter): Promise<void> {
    const budget = ex.budget!;
    if (!charge.generated) {
      const windows = jointWindows(ex, meter);
      // The request still happened: its windows count it, its budgets nothing.
      const given = windows ? this.store.settle(budget.id, [...windows, ...budget.counters.map(() => 0)]) : this.store.release(budget.id);
      return given.catch((err) => this.settleFailed(ex, "budget", err, "releasing a failed call's reservation failed; its lease expires on its own"));
    }
    const tokens = charge.inputTokens + charge.outputTokens;
    let settled: Promise<void>;
    try {
      settled = this.store.settle(budget.id, reservationActuals(ex, meter.toolCalls, charge.cost, tokens));
    } catch (err) {
      settled = Promise.reject(err);
    }
    return settled.catch((err: unknown) => {
      this.settleFailed(ex, "budget", err, "settling a served request failed; its reservation is charged");
      applyCharge(ex, reservation(ex, meter));
      const reserved = budget.counters.map((c) => c.amount);
      const windows = jointWindows(ex, meter);
      return this.store.settle(budget.id, windows ? [...windows, ...reserved] : reserved).catch(() => {
        // The lease expires and settles on its own; the record already says what was charged.
      });
    });
  }

  /**
   * A served request holding one reservation (the gateway's joint one, or a budget alone), on a
   * store that settles and appends in one write: the answer waits for one commit, not a settle's
   * and then the record's. Resolves false when the store took neither: finish then settles (or
   * charges the reservation) and writes the record as usual. Undefined: not this request (a
   * failed call, a run's or a separate quota reservation to settle too, records to export).
   */
  private settleWithRecord(ex: Exchange, charge: Charge, meter: Meter): Promise<boolean> | undefined {
    const budget = ex.budget;
    if (!budget || !this.store.settleWithRecord || !charge.generated || ex.runStart || (ex.quota && !joint(ex)) || this.events?.usage) return undefined;
    let written: Promise<void>;
    try {
      written = this.store.settleWithRecord(budget.id, reservationActuals(ex, meter.toolCalls, charge.cost, charge.inputTokens + charge.outputTokens), this.sealed(ex));
    } catch (err) {
      written = Promise.reject(err);
    }
    return written.then(
      () => {
        this.onRecord(ex.record);
        return true;
      },
      (err: unknown) => {
        this.settleFailed(ex, "budget", err, "settling a served request with its record failed; settling it alone");
        return false;
      },
    );
  }

  private settleFailed(ex: Exchange, what: string, err: unknown, message: string): void {
    this.warn({ request_id: ex.id, settling: what, reason: reasonOf(err) }, message);
  }

  /** Makes what gate 3 took permanent; the run's tool-call counter takes the calls the model made. */
  private async settleAdmission(ex: Exchange, toolCalls: number): Promise<void> {
    const quota = ex.quota && !joint(ex) && this.store.settle(ex.quota.id, admissionActuals(ex.quota.counters, toolCalls));
    const run = ex.runStart && this.store.settle(ex.runStart.id, admissionActuals(ex.runStart.counters, 0));
    if (quota && run) await Promise.all([quota, run]);
    else await (quota ?? run);
  }

  /**
   * This request gives back or settles what it held: counters this process knew full may have
   * room again (RecentTotals.noteFull).
   */
  private freed(ex: Exchange): void {
    const recent = this.env.recent;
    if (!recent.anyFull) return;
    if (ex.quota) recent.freed(ex.quota.counters);
    if (ex.budget) recent.freed(ex.budget.counters);
    if (ex.runStart) recent.freed(ex.runStart.counters);
  }

  /** Records a refusal: gives back what earlier gates took and feeds the suspicion score. */
  async refuse(ex: Exchange, err: TollgateError): Promise<void> {
    if (ex.finished) return;
    ex.finished = true;
    const rec = ex.record;
    rec.decision = "deny";
    rec.code = err.code;
    this.freed(ex);
    const releases: Promise<unknown>[] = [];
    if (ex.quota) releases.push(this.store.release(ex.quota.id));
    if (ex.budget && !joint(ex)) releases.push(this.store.release(ex.budget.id));
    if (ex.runStart) releases.push(this.store.release(ex.runStart.id));
    const { weights } = this.config.abuse;
    // Refusals the caller could not cause (store or provider trouble) do not make it suspicious,
    // nor does being offered a challenge: that is how an honest page learns it must solve one.
    if (ex.identity && abuseEnabled(this.env) && err.status < 500 && err.code !== "blocked" && !isChallengeOffer(err) && weights.refused > 0) {
      releases.push(scoreRefusal(ex, this.env));
    }
    if (releases.length) await Promise.allSettled(releases);
    refusalAlert(ex, this.env, err);
    rec.signals = ex.signals;
    // Under a flood most refusals are only counted into their second's summary record.
    if (!this.refusals.admit(rec)) return;
    // A store that cannot take the record (disk full, Redis away) must not turn the refusal the
    // caller earned (a bad key's 401, a 429) into a 503: the line still reaches stdout and the sinks.
    await this.write(ex).catch((err: unknown) => this.warn({ request_id: ex.id, reason: reasonOf(err) }, "the store did not take a refusal's usage record; it is on stdout only"));
  }

  /** Writes the refusal summaries still open; the runtime calls it before closing the store. */
  async flushRefusals(): Promise<void> {
    this.refusals.flush();
    await Promise.allSettled([...this.summaryWrites]);
  }

  private writeSummary(summary: UsageRecord): void {
    const done = this.store
      .appendUsage(summary)
      .catch((err: unknown) => this.warn({ err: (err as Error).message, count: summary.count, code: summary.code }, "a refusal summary record could not be stored"))
      .finally(() => {
        this.onRecord(summary);
        this.summaryWrites.delete(done);
      });
    this.summaryWrites.add(done);
  }

  /**
   * Settles the reservations of processes that died mid-stream at their last checkpoint and
   * writes their records (SPEC §7.4); the runtime calls it at start and every second.
   */
  async recover(): Promise<UsageRecord[]> {
    const records = await this.store.recover();
    await Promise.all(records.map((r) => this.export(r)));
    for (const r of records) this.onRecord(r);
    return records;
  }

  /**
   * Runs gates[from..] in order. A gate that finished synchronously costs no turn of the microtask
   * queue, and when none waited the run makes no promise at all.
   */
  private run(ex: Exchange, gates: readonly Gate[], from: number): Promise<void> | undefined {
    for (let i = from; i < gates.length; i++) {
      let pending: Promise<void> | void;
      try {
        pending = gates[i]!(ex, this.env);
      } catch (err) {
        return this.refused(ex, err);
      }
      if (pending) {
        return pending.then(
          () => this.run(ex, gates, i + 1),
          (err: unknown) => this.refused(ex, err),
        );
      }
    }
    return undefined;
  }

  /**
   * A gate threw: a refusal, or the store failing (SPEC §7.6: explicit), is recorded and thrown.
   * Anything else is a bug: it goes up unchanged, to be logged and answered 500, and the leases
   * give back what it held.
   */
  private async refused(ex: Exchange, err: unknown): Promise<never> {
    const refusal = storeFailure(err);
    await this.refuse(ex, refusal);
    throw refusal;
  }

  /** The record as it is written: its signals and duration taken now. */
  private sealed(ex: Exchange): UsageRecord {
    const rec = ex.record;
    rec.signals = ex.signals;
    rec.duration_ms = Math.round(performance.now() - ex.startedAt);
    return rec;
  }

  private async write(ex: Exchange): Promise<void> {
    const rec = this.sealed(ex);
    // Queued for export alongside the store write, so a record that reached the log is in the outbox.
    const exported = this.export(rec);
    try {
      await this.store.appendUsage(rec);
    } finally {
      if (exported) await exported;
      this.onRecord(rec);
    }
  }

  /** Served requests' records go to the usage export; refusals and library app requests cost nothing there (no promise). */
  private export(rec: UsageRecord): Promise<void> | undefined {
    if (!this.events?.usage || rec.decision === "deny" || rec.endpoint === "app") return undefined;
    return this.events.usage(rec).catch((err: unknown) => this.warn({ request_id: rec.request_id, reason: reasonOf(err) }, "a usage record could not be queued for export"));
  }
}

/**
 * The gates after admission for this exchange. In the gateway gate 3 takes its reservation once
 * the body is in; with request windows to hold, gates 3 and 6 take one reservation together. A
 * run's steps keep gate 3's own: their totals decide refusals (max_duration, runs per window)
 * before gate 4 runs.
 */
function preparation(ex: Exchange): readonly Gate[] {
  if (!ex.quotaDeferred) return PREPARATION;
  if (ex.route.runs) return PREPARATION_DEFERRED_QUOTA;
  // Without request windows the deferred gate 3 has nothing to take.
  return requestWindows(ex).counters.length ? PREPARATION_JOINT : PREPARATION;
}

/** Puts a charge on the request's record. */
/** Gate 3's windows' actuals when one reservation holds them with the budgets: the rare settle paths. */
function jointWindows(ex: Exchange, meter: Meter): number[] | undefined {
  return joint(ex) ? admissionActuals(ex.quota!.counters, meter.toolCalls) : undefined;
}

function applyCharge(ex: Exchange, charge: Charge): void {
  const rec = ex.record;
  rec.input_tokens = charge.generated ? charge.inputTokens : 0;
  rec.output_tokens = charge.outputTokens;
  ex.costMicros = charge.cost;
  rec.cost_usd = charge.cost / 1e6;
  rec.usage_source = charge.generated ? charge.source : null;
}

/** An error's message for the ops log; store and network errors name no secret. */
function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function endedBy(err: unknown, signal: CallSignal): Ended {
  if (signal.aborted) return abortReason(signal);
  if (TollgateError.is(err) && err.code === "upstream_timeout") return "timeout";
  return "upstream_error";
}


export function toTollgateError(err: unknown, signal: CallSignal | undefined): TollgateError {
  if (TollgateError.is(err)) return err;
  if (err instanceof StoreUnavailableError) return storeFailure(err);
  if (signal?.aborted && abortReason(signal) === "timeout") return new TollgateError("upstream_timeout", "the request ran past the wall-clock cap");
  return new TollgateError("upstream_error", "the provider call failed", { cause: err });
}
