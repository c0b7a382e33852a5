import { ipGroup } from "../core/client-ip.js";
import { TollgateError } from "../core/errors.js";
import { blockedSubjects, type Subject } from "../core/policy.js";
import type { UsageRecord } from "../core/usage-record.js";
import { flaggedCallers, flaggedCohorts, refusalsByCode, summarize, timeSeries, totalsOf, type GroupBy, type SeriesValues, type Totals, type UsageRow } from "../core/usage-report.js";
import { durationParam, groupParam, intParam, timeParam, usd, type AdminCall, type AdminRoute } from "./admin-params.js";

/**
 * Usage queries over the store's records: totals and time series by user, route, model or IP, top
 * spenders, refusals by code, flagged callers, raw records and the live tail. Everything is
 * computed from the same records `tollgate usage` reads, so the dashboard and the CLI agree.
 */
export const USAGE_ROUTES: AdminRoute[] = [
  { method: "GET", path: /^\/admin\/usage$/, handle: usage },
  { method: "GET", path: /^\/admin\/usage\/series$/, handle: series },
  { method: "GET", path: /^\/admin\/refusals$/, handle: refusals },
  { method: "GET", path: /^\/admin\/callers$/, handle: callers },
  { method: "GET", path: /^\/admin\/records$/, handle: records },
  { method: "GET", path: /^\/admin\/overview$/, handle: overview },
  { method: "GET", path: /^\/admin\/tail$/, handle: tail },
];

async function load(call: AdminCall, defaultSince: string): Promise<{ since: number; until: number; records: UsageRecord[] }> {
  const now = Date.now();
  const since = timeParam(call.query, "since", defaultSince, now)!;
  const until = timeParam(call.query, "until", undefined, now) ?? now;
  if (until <= since) throw new TollgateError("invalid_request", "until: must be after since", { param: "until" });
  const records = await call.engine.store.queryUsage({ since, until: call.query.has("until") ? until : undefined });
  return { since, until, records };
}

const period = (since: number, until: number) => ({ since: new Date(since).toISOString(), until: new Date(until).toISOString() });

export function totalsJson(t: Totals) {
  return { requests: t.requests, denied: t.denied, downgraded: t.downgraded, input_tokens: t.input_tokens, output_tokens: t.output_tokens, cost_usd: usd(t.cost_micros) };
}

export function rowJson({ cost_micros, ...row }: UsageRow) {
  return { ...row, cost_usd: usd(cost_micros) };
}

function valuesJson(v: SeriesValues) {
  return { requests: v.requests, denied: v.denied, tokens: v.tokens, cost_usd: v.cost_micros.map(usd) };
}

async function usage(call: AdminCall) {
  const { since, until, records } = await load(call, "24h");
  const by = groupParam(call.query, "by", "user");
  const top = intParam(call.query, "top", 100, 10_000);
  return { body: { ...period(since, until), by, totals: totalsJson(totalsOf(records)), rows: summarize(records, by).slice(0, top).map(rowJson) } };
}

/** A bucket that gives about 60 points over the period, rounded to a readable size. */
export function autoBucket(periodMs: number): number {
  const steps = [60_000, 300_000, 900_000, 1_800_000, 3_600_000, 3 * 3_600_000, 6 * 3_600_000, 86_400_000];
  return steps.find((s) => periodMs / s <= 60) ?? 86_400_000;
}

function seriesJson(call: AdminCall, records: UsageRecord[], since: number, until: number, by: GroupBy | undefined, top: number) {
  const bucketMs = durationParam(call.query.get("bucket") ?? undefined, "bucket") ?? autoBucket(until - since);
  let s;
  try {
    s = timeSeries(records, { since, until, bucketMs, by, top });
  } catch (err) {
    throw new TollgateError("invalid_request", `bucket: ${(err as Error).message}`, { param: "bucket" });
  }
  return { bucket_ms: s.bucketMs, buckets: s.buckets, total: valuesJson(s.total), series: s.series.map(({ group, ...v }) => ({ group, ...valuesJson(v) })) };
}

async function series(call: AdminCall) {
  const { since, until, records } = await load(call, "24h");
  const by = call.query.has("by") ? groupParam(call.query, "by", "route") : undefined;
  return { body: { ...period(since, until), by: by ?? null, ...seriesJson(call, records, since, until, by, intParam(call.query, "top", 6, 50)) } };
}

async function refusals(call: AdminCall) {
  const { since, until, records } = await load(call, "24h");
  return { body: { ...period(since, until), rows: refusalsByCode(records) } };
}

async function callers(call: AdminCall) {
  const { since, until, records } = await load(call, "24h");
  return { body: { ...period(since, until), rows: await withBlockState(call, flaggedCallers(records, intParam(call.query, "limit", 50, 1000))) } };
}

/** Newest first, optionally filtered by user, ip, route, decision or code. */
async function records(call: AdminCall) {
  const { since, until, records } = await load(call, "1h");
  const limit = intParam(call.query, "limit", 100, 1000);
  const filters = (["user", "ip", "route", "decision", "code"] as const).flatMap((f) => (call.query.has(f) ? [[f, call.query.get(f)] as const] : []));
  const out: UsageRecord[] = [];
  for (let i = records.length - 1; i >= 0 && out.length < limit; i--) {
    const r = records[i]!;
    if (filters.every(([f, v]) => r[f] === v)) out.push(r);
  }
  return { body: { ...period(since, until), data: out } };
}

/** Everything the dashboard shows, from one read of the records. */
async function overview(call: AdminCall) {
  const { since, until, records } = await load(call, "1h");
  const top = intParam(call.query, "top", 10, 100);
  const flagged = flaggedCallers(records, 20);
  const users = summarize(records, "user").slice(0, top);
  const ips = summarize(records, "ip").slice(0, top);
  const subjects: Subject[] = [...users.map((u) => ({ kind: "user" as const, id: u.group })), ...ips.map((i) => ({ kind: "ip" as const, id: ipGroup(i.group) }))];
  const blocked = await blockedSubjects(call.engine.store, subjects);
  return {
    body: {
      ...period(since, until),
      totals: totalsJson(totalsOf(records)),
      by_route: seriesJson(call, records, since, until, "route", 6),
      by_model: seriesJson(call, records, since, until, "model", 6),
      top_users: users.map((u, i) => ({ ...rowJson(u), blocked: blocked[i] })),
      top_ips: ips.map((r, i) => ({ ...rowJson(r), blocked: blocked[users.length + i] })),
      refusals: refusalsByCode(records),
      flagged: await withBlockState(call, flagged),
      flagged_cohorts: flaggedCohorts(records, 20),
      recent: records.slice(-25).reverse(),
    },
  };
}

async function withBlockState<T extends { user: string | null; ip: string | null }>(call: AdminCall, rows: T[]) {
  const subjects = rows.flatMap((r): Subject[] => [
    { kind: "user", id: r.user ?? "" },
    { kind: "ip", id: r.ip ? ipGroup(r.ip) : "" },
  ]);
  const state = await blockedSubjects(call.engine.store, subjects);
  return rows.map((r, i) => ({ ...r, blocked_now: { user: state[2 * i]!, ip: state[2 * i + 1]! } }));
}

/** Server-Sent Events of this process's records as they are written. */
async function tail(call: AdminCall) {
  if (!call.observability) throw new TollgateError("not_found", "this gateway has no live tail");
  // The backlog ends with the records still waiting for their sinks.
  call.observability.flush();
  call.observability.tail.subscribe(call.res, intParam(call.query, "backlog", 50, 200));
  return undefined;
}
