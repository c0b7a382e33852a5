import type { ErrorCode } from "./errors.js";

export type Decision = "allow" | "downgrade" | "deny";
/** `refused`: an app request (library mode) stopped by a refusal after its admission. */
export type Ended = "complete" | "client_disconnect" | "output_cap" | "timeout" | "upstream_error" | "refused";
export type UsageSource = "provider" | "counted" | "reserved";

/**
 * One record per request, refused ones included. Field names are the contract:
 * dashboards and the acceptance checks read them as they are. Money here is in US dollars for
 * readers; the engine computes it from integer micro-dollars.
 */
export interface UsageRecord {
  ts: string;
  request_id: string;
  user: string | null;
  key_id: string | null;
  /** The org whose budget the caller also spends (keys[].org, a JWT org_claim, x-tollgate-org, identify()). */
  org: string | null;
  ip: string | null;
  route: string | null;
  plan: string | null;
  endpoint: string | null;
  model_requested: string | null;
  model: string | null;
  decision: Decision;
  code: ErrorCode | null;
  input_tokens: number;
  output_tokens: number;
  tool_calls: number;
  run_id: string | null;
  run_step: number | null;
  docs_retrieved: number;
  attachments: number;
  estimated_cost_usd: number;
  cost_usd: number;
  usage_source: UsageSource | null;
  duration_ms: number;
  ttft_ms: number | null;
  stream: boolean;
  ended: Ended | null;
  signals: string[];
  clamped: Record<string, { from: number | null; to: number }>;
  /** Library mode: a model call's record names the app request it was made in. */
  parent_id: string | null;
  /**
   * Only on a summary record: the refusals of one code, route and endpoint in one second that got
   * no record of their own (server.max_refusal_records_per_s). Absent: the record is one request.
   */
  count?: number;
}

/** JSON a store just wrote for a record, until the usage line takes it (see storedJson). */
const written = new WeakMap<UsageRecord, string>();

/**
 * A record's JSON as a store writes it now (the caller may reuse the object, so it is always made
 * afresh), kept for the usage line: the engine logs a record right after the store took it, and
 * serialising the ~0.5 KB record again cost as much as the row's insert (~26k instructions).
 */
export function storedJson(record: UsageRecord): string {
  const json = JSON.stringify(record);
  written.set(record, json);
  return json;
}

/** The record's JSON for the usage line: the text its store row holds when a store just wrote it, else made now. */
export function recordJson(record: UsageRecord): string {
  const json = written.get(record);
  if (json === undefined) return JSON.stringify(record);
  written.delete(record);
  return json;
}

/** How many requests a record stands for: a summary's `count`, else one. */
export function requestsOf(r: UsageRecord): number {
  return r.count ?? 1;
}

/** `now`: a Date, or its ISO 8601 form already made. */
export function emptyUsageRecord(requestId: string, now: Date | string): UsageRecord {
  return {
    ts: typeof now === "string" ? now : now.toISOString(),
    request_id: requestId,
    user: null,
    key_id: null,
    org: null,
    ip: null,
    route: null,
    plan: null,
    endpoint: null,
    model_requested: null,
    model: null,
    decision: "allow",
    code: null,
    input_tokens: 0,
    output_tokens: 0,
    tool_calls: 0,
    run_id: null,
    run_step: null,
    docs_retrieved: 0,
    attachments: 0,
    estimated_cost_usd: 0,
    cost_usd: 0,
    usage_source: null,
    duration_ms: 0,
    ttft_ms: null,
    stream: false,
    ended: null,
    signals: [],
    clamped: {},
    parent_id: null,
  };
}
