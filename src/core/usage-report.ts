import { ipNetwork } from "./client-ip.js";
import { requestsOf, type UsageRecord } from "./usage-record.js";
import type { Micros } from "./money.js";

export type GroupBy = "user" | "route" | "model" | "ip" | "signal" | "org" | "key";
/** Every way a report may group records. */
export const GROUP_BYS: readonly GroupBy[] = ["user", "route", "model", "ip", "signal", "org", "key"];

/** "score:57(network)" differs on every request; the part that explains it is its source: "score(network)". */
export const signalName = (signal: string): string => signal.replace(/^score:\d+/, "score");

/**
 * The groups a record belongs to. By signal, a record counts once under each signal it carries
 * (so a request flagged for two reasons is in both rows, and rows do not add up to the total),
 * and a record with none under "-".
 */
function groupsOf(r: UsageRecord, by: GroupBy): string[] {
  // "key" is the record's key_id; records from before orgs were recorded have no org.
  if (by === "key") return [r.key_id ?? "-"];
  if (by !== "signal") return [r[by] ?? "-"];
  return r.signals.length ? [...new Set(r.signals.map(signalName))] : ["-"];
}

export interface Totals {
  requests: number;
  denied: number;
  downgraded: number;
  input_tokens: number;
  output_tokens: number;
  cost_micros: Micros;
}

export interface UsageRow extends Totals {
  group: string;
}

/** Records carry dollars for readers; they were micro-dollars exactly, so this is lossless. */
export const recordMicros = (r: UsageRecord): Micros => Math.round(r.cost_usd * 1e6);

/**
 * How many requests a record stands for in a report. A model call's record (`parent_id`, library
 * mode) is part of its app request, which has its own record: counting it again would make one
 * agent request with five model calls six requests (SPEC §6).
 */
export function requestsIn(r: UsageRecord): number {
  return r.parent_id ? 0 : requestsOf(r);
}

/** Requests the records stand for: refusal summaries as their `count`, model calls as part of their request. */
export function totalRequests(records: UsageRecord[]): number {
  return records.reduce((n, r) => n + requestsIn(r), 0);
}

const zero = (): Totals => ({ requests: 0, denied: 0, downgraded: 0, input_tokens: 0, output_tokens: 0, cost_micros: 0 });

/**
 * Decisions are counted on request records only (a refused model call also marks its app request
 * refused); tokens and dollars on every record, since an app request's record carries none of its
 * model calls' (SPEC §6), so each is counted once.
 */
function add(t: Totals, r: UsageRecord): void {
  const n = requestsIn(r);
  t.requests += n;
  if (r.decision === "deny") t.denied += n;
  if (r.decision === "downgrade") t.downgraded += n;
  t.input_tokens += r.input_tokens;
  t.output_tokens += r.output_tokens;
  t.cost_micros += recordMicros(r);
}

/** Totals per group, most expensive first. */
export function summarize(records: UsageRecord[], by: GroupBy): UsageRow[] {
  const rows = new Map<string, UsageRow>();
  for (const r of records) {
    for (const group of groupsOf(r, by)) {
      let row = rows.get(group);
      if (!row) rows.set(group, (row = { group, ...zero() }));
      add(row, r);
    }
  }
  return [...rows.values()].sort((a, b) => b.cost_micros - a.cost_micros || b.requests - a.requests);
}

export function totalsOf(records: UsageRecord[]): Totals {
  const t = zero();
  for (const r of records) add(t, r);
  return t;
}

/** One value per bucket, in bucket order. */
export interface SeriesValues {
  requests: number[];
  denied: number[];
  tokens: number[];
  cost_micros: Micros[];
}

export interface TimeSeries {
  bucketMs: number;
  /** Start of each bucket (epoch ms), aligned to multiples of bucketMs. */
  buckets: number[];
  total: SeriesValues;
  /** Per group (by), the `top` most expensive in the period, the rest folded into "other". */
  series: ({ group: string } & SeriesValues)[];
}

/** More buckets than this is a chart nobody can read and a response nobody should build. */
export const MAX_BUCKETS = 2_000;

/**
 * Spend, tokens and requests per time bucket over [since, until), in total and per group. Buckets
 * are aligned to the epoch, so two queries over overlapping periods agree on every bucket they share.
 */
export function timeSeries(records: UsageRecord[], opts: { since: number; until: number; bucketMs: number; by?: GroupBy; top?: number }): TimeSeries {
  const { bucketMs } = opts;
  const first = Math.floor(opts.since / bucketMs) * bucketMs;
  const n = Math.max(1, Math.ceil((opts.until - first) / bucketMs));
  if (n > MAX_BUCKETS) throw new RangeError(`${n} buckets is more than ${MAX_BUCKETS}: choose a larger bucket or a shorter period`);
  const empty = (): SeriesValues => ({ requests: Array(n).fill(0), denied: Array(n).fill(0), tokens: Array(n).fill(0), cost_micros: Array(n).fill(0) });
  const addAt = (v: SeriesValues, i: number, r: UsageRecord) => {
    const n = requestsIn(r);
    v.requests[i] += n;
    if (r.decision === "deny") v.denied[i] += n;
    v.tokens[i] += r.input_tokens + r.output_tokens;
    v.cost_micros[i] += recordMicros(r);
  };
  const total = empty();
  const groups = new Map<string, SeriesValues>();
  const by = opts.by;
  const keep = by ? new Set(summarize(records, by).slice(0, opts.top ?? Infinity).map((row) => row.group)) : undefined;
  for (const r of records) {
    const i = Math.floor((Date.parse(r.ts) - first) / bucketMs);
    if (i < 0 || i >= n) continue;
    addAt(total, i, r);
    if (!by) continue;
    for (const raw of groupsOf(r, by)) {
      const group = keep!.has(raw) ? raw : "other";
      let values = groups.get(group);
      if (!values) groups.set(group, (values = empty()));
      addAt(values, i, r);
    }
  }
  const series = [...groups.entries()]
    .map(([group, v]) => ({ group, ...v }))
    .sort((a, b) => (a.group === "other" ? 1 : b.group === "other" ? -1 : sum(b.cost_micros) - sum(a.cost_micros) || sum(b.requests) - sum(a.requests)));
  return { bucketMs, buckets: Array.from({ length: n }, (_, i) => first + i * bucketMs), total, series };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Refused requests by code, most frequent first. */
export function refusalsByCode(records: UsageRecord[]): { code: string; count: number; last_ts: string }[] {
  const rows = new Map<string, { code: string; count: number; last_ts: string }>();
  for (const r of records) {
    if (r.decision !== "deny" || !r.code || requestsIn(r) === 0) continue;
    const row = rows.get(r.code) ?? { code: r.code, count: 0, last_ts: r.ts };
    row.count += requestsOf(r);
    if (r.ts > row.last_ts) row.last_ts = r.ts;
    rows.set(r.code, row);
  }
  return [...rows.values()].sort((a, b) => b.count - a.count);
}

export interface FlaggedCaller {
  user: string | null;
  ip: string | null;
  requests: number;
  downgraded: number;
  blocked: number;
  /** Each signal that fired on this caller's downgraded or blocked requests, with how often. */
  signals: Record<string, number>;
  last_ts: string;
}

/**
 * Callers that were downgraded or blocked, with the signals that fired (SPEC §8: every decision
 * explains itself), most recently flagged first.
 */
export function flaggedCallers(records: UsageRecord[], limit = 50): FlaggedCaller[] {
  const rows = new Map<string, FlaggedCaller>();
  for (const r of records) {
    const blocked = r.code === "blocked";
    // A model call shares its app request's identity and downgrade: the request stands for both.
    if ((r.decision !== "downgrade" && !blocked) || requestsIn(r) === 0) continue;
    const key = `${r.user}\u0000${r.ip}`;
    let row = rows.get(key);
    if (!row) rows.set(key, (row = { user: r.user, ip: r.ip, requests: 0, downgraded: 0, blocked: 0, signals: {}, last_ts: r.ts }));
    const n = requestsIn(r);
    row.requests += n;
    if (blocked) row.blocked += n;
    else row.downgraded += n;
    for (const s of r.signals) {
      const name = signalName(s);
      row.signals[name] = (row.signals[name] ?? 0) + 1;
    }
    if (r.ts > row.last_ts) row.last_ts = r.ts;
  }
  return [...rows.values()].sort((a, b) => (a.last_ts < b.last_ts ? 1 : a.last_ts > b.last_ts ? -1 : 0)).slice(0, limit);
}

export interface FlaggedCohort {
  /**
   * What holds the group together: a cohort signal, one credential across networks, one network,
   * or (`summary`) refusals past max_refusal_records_per_s, counted without their callers.
   */
  cohort: "new_identity_velocity" | "anon_pool_pressure" | "key_many_networks" | "network" | "summary";
  /** The cohort's name: the signal, the credential's user, the /24 (IPv6 /48), or a summary's code. */
  group: string;
  users: number;
  /** Distinct /24s (IPv6 /48s) the group's flagged requests came from. */
  networks: number;
  requests: number;
  downgraded: number;
  blocked: number;
  signals: Record<string, number>;
  last_ts: string;
}

/**
 * Where a flagged request belongs: a cohort signal names its cohort (the new identities of a
 * surge, the anonymous pool), a shared credential is one thing however many networks it came
 * from, and anything else belongs to its network, so a farm is one row whether it sits on one /24
 * or spreads one key over each of 120.
 */
function cohortOf(r: UsageRecord): Pick<FlaggedCohort, "cohort" | "group"> {
  // A summary's signals are the union of its refusals': they cannot say which cohort each was in.
  if (r.count !== undefined) return { cohort: "summary", group: r.code ?? "-" };
  for (const cohort of ["new_identity_velocity", "anon_pool_pressure"] as const) if (r.signals.includes(cohort)) return { cohort, group: cohort };
  if (r.signals.includes("key_many_networks")) return { cohort: "key_many_networks", group: r.user ?? "-" };
  return { cohort: "network", group: r.ip ? ipNetwork(r.ip) : "-" };
}

/** Downgraded and blocked requests grouped by cohort and network, the largest first. */
export function flaggedCohorts(records: UsageRecord[], limit = 50): FlaggedCohort[] {
  const rows = new Map<string, FlaggedCohort & { userSet: Set<string>; networkSet: Set<string> }>();
  for (const r of records) {
    const blocked = r.code === "blocked";
    if ((r.decision !== "downgrade" && !blocked) || requestsIn(r) === 0) continue;
    const { cohort, group } = cohortOf(r);
    const key = `${cohort}\u0000${group}`;
    let row = rows.get(key);
    if (!row) rows.set(key, (row = { cohort, group, users: 0, networks: 0, requests: 0, downgraded: 0, blocked: 0, signals: {}, last_ts: r.ts, userSet: new Set(), networkSet: new Set() }));
    const n = requestsIn(r);
    row.requests += n;
    if (blocked) row.blocked += n;
    else row.downgraded += n;
    if (r.user) row.userSet.add(r.user);
    if (r.ip) row.networkSet.add(ipNetwork(r.ip));
    for (const sig of r.signals) row.signals[signalName(sig)] = (row.signals[signalName(sig)] ?? 0) + 1;
    if (r.ts > row.last_ts) row.last_ts = r.ts;
  }
  return [...rows.values()]
    .map(({ userSet, networkSet, ...row }) => ({ ...row, users: userSet.size, networks: networkSet.size }))
    .sort((a, b) => b.requests - a.requests || (a.last_ts < b.last_ts ? 1 : -1))
    .slice(0, limit);
}
