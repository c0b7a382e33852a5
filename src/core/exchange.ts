import type { EndpointName, ResolvedModel, ResolvedRoute } from "./config-types.js";
import type { Inspection, RequestFormat, UpstreamPlan } from "./format.js";
import type { JsonSource } from "./json-source.js";
import type { Counter } from "./store.js";
import type { Credentials, Identity } from "./identity.js";
import type { Micros } from "./money.js";
import type { CallerPolicy } from "./policy.js";
import type { CallerWindows } from "./gates/request-windows.js";
import { emptyUsageRecord, type UsageRecord } from "./usage-record.js";

/** What a caller's transport layer knows before any gate runs. */
export interface CallerContext {
  route: string;
  endpoint: EndpointName;
  /** The client's address as the transport believes it (after trust_proxy). */
  ip: string;
  credentials: Credentials;
  /** x-tollgate-run: ties calls into one agent run. */
  runId?: string;
  /** x-tollgate-challenge: a solved proof-of-work challenge (altcha's base64 payload), for routes that ask for one. */
  challenge?: string;
  requestId?: string;
  /** An app request in library mode: model calls inside it are steps of their own. */
  library?: boolean;
}

/** A counter the request holds, with what it means, to explain a refusal and settle it later. */
export interface HeldCounter extends Counter {
  unit: "requests" | "concurrent" | "tokens" | "files" | "usd" | "steps" | "tool_calls" | "runs" | "docs";
  /** Human name: "plan free daily budget", "route chat limit #1 (20 requests per 1d per user)". */
  label: string;
  /** For calendar budgets: when the period resets. */
  resetsAt?: number;
  /** For calendar budgets: the IANA zone whose midnight `resetsAt` is. */
  timezone?: string;
  /** For calendar budgets: when the period began (budget.burn_rate alerts). */
  startsAt?: number;
  /** For budgets: the period they count. */
  period?: "daily" | "monthly" | "total";
  /** For rate limits: the config limit id, for RateLimit headers. */
  limitId?: string;
  /** For budgets with a `soft` share: the spend (micro-dollars) from which the caller is under pressure. */
  softAt?: number;
}

/** One request's journey through the gates; everything the usage record needs accumulates here. */
export class Exchange {
  readonly id: string;
  readonly startedAt = performance.now();
  readonly record: UsageRecord;
  identity?: Identity;
  downgrade = false;
  /** A budget is spent past its `soft` share: gate 5 serves the budget_downgrade_to model. */
  budgetPressure = false;
  /** Few requests on record for this user: asking for an expensive model is a signal. */
  newIdentity = false;
  signals: string[] = [];
  /** Operator blocks and budget overrides (gate 2 reads them when the admin API is on). */
  policy?: CallerPolicy;
  format?: RequestFormat;
  inspection?: Inspection;
  /** The parsed body gate 4 validated; the upstream body is rebuilt from it. */
  inspectedBody?: Record<string, unknown>;
  model?: ResolvedModel;
  upstream?: UpstreamPlan;
  upstreamBody?: Record<string, unknown>;
  /** The body's bytes as the client sent them (the gateway), so the upstream body can patch them. */
  source?: JsonSource;
  /** What the format set in `upstreamBody` at its top level, when that is all it changed. */
  upstreamFields?: Record<string, unknown>;
  estimatedInputTokens = 0;
  estimate: Micros = 0;
  /** Settled cost, the record's cost_usd in integer micro-dollars. */
  costMicros: Micros = 0;
  /** Library mode: the request this model call belongs to, and how many calls it made. */
  parent?: Exchange;
  children = 0;
  quota?: { id: string; counters: readonly HeldCounter[] };
  /** Gate 3's request windows for this caller (asked for before and after the body): shared, read-only. */
  windows?: CallerWindows;
  /** Gate 3 only checked before the body arrived; its reservation is taken once the body is in. */
  quotaDeferred = false;
  /** The runs-per-window slot a run's first step took. */
  runStart?: { id: string; counters: HeldCounter[] };
  /** `totals`: each counter's total with this reservation in it (the alerts check a crossing after settling). */
  budget?: { id: string; counters: HeldCounter[]; totals?: number[] };
  /** Budget totals gate 3 saw before this request (core/alerts.ts). */
  budgetSeen?: Map<string, number>;
  /** Response headers the transport should send (rate limits, model, budget, clamps). */
  readonly headers: Record<string, string> = {};
  finished = false;
  /** Stops an open stream's checkpoints (engine.call starts them, finish stops them). */
  stopCheckpoints?: () => void;

  constructor(
    readonly caller: CallerContext,
    readonly route: ResolvedRoute,
    id: string,
  ) {
    this.id = id;
    this.record = emptyUsageRecord(id, isoTimestamp(Date.now()));
    this.record.route = route.name;
    this.record.endpoint = caller.endpoint;
    this.record.ip = caller.ip;
    this.record.run_id = caller.runId ?? null;
  }
}

let isoSecond = NaN;
let isoPrefix = "";

/**
 * `new Date(ms).toISOString()`, formatting the date only once per second: a record's timestamp
 * was a microsecond of every request.
 */
export function isoTimestamp(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, -4);
  }
  const milli = ms - second * 1000;
  return `${isoPrefix}${milli < 10 ? "00" : milli < 100 ? "0" : ""}${milli}Z`;
}
