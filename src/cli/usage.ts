import type { ResolvedConfig } from "../config/resolve.js";
import { parseDuration } from "../core/duration.js";
import { formatUsd } from "../core/money.js";
import { GROUP_BYS, summarize, timeSeries, totalRequests, type GroupBy, type TimeSeries } from "../core/usage-report.js";
import type { UsageRecord } from "../core/usage-record.js";
import { openStore } from "../stores/open.js";

/** Groups shown as columns of a --series table when --by is given without --top. */
const SERIES_GROUPS = 5;
const BAR_WIDTH = 24;

export interface UsageOptions {
  since?: string;
  by?: string;
  json?: boolean;
  top?: string;
  series?: string;
}

const usageError = (message: string) => Object.assign(new Error(message), { code: "ERR_PARSE_ARGS_USAGE" });

/** `tollgate usage`: totals per group, most expensive first, or (--series) one row per time bucket. */
export async function usageCommand(config: ResolvedConfig, opts: UsageOptions): Promise<void> {
  const since = opts.since ?? "24h";
  const sinceMs = parseDuration(since);
  if (sinceMs === undefined) throw usageError(`--since: expected a duration like "1h", "24h", "7d"`);
  if (opts.by !== undefined && !GROUP_BYS.includes(opts.by as GroupBy)) throw usageError(`--by: expected one of ${GROUP_BYS.join(", ")}`);
  const top = opts.top === undefined ? undefined : Number(opts.top);
  if (top !== undefined && !(Number.isSafeInteger(top) && top >= 1)) throw usageError(`--top: expected a whole number of at least 1`);
  const bucketMs = opts.series === undefined ? undefined : parseDuration(opts.series);
  if (opts.series !== undefined && !bucketMs) throw usageError(`--series: expected a bucket size like "5m", "1h", "1d"`);

  const store = await openStore(config.store);
  try {
    const until = Date.now();
    const records = await store.queryUsage({ since: until - sinceMs });
    const out =
      bucketMs !== undefined
        ? seriesReport(records, { since, sinceMs, until, bucketMs, series: opts.series!, by: opts.by as GroupBy | undefined, top: top ?? SERIES_GROUPS, json: opts.json })
        : totalsReport(records, { since, by: (opts.by ?? "user") as GroupBy, top: top ?? Infinity, json: opts.json });
    process.stdout.write(out);
  } finally {
    await store.close();
  }
}

function totalsReport(records: UsageRecord[], o: { since: string; by: GroupBy; top: number; json?: boolean }): string {
  const rows = summarize(records, o.by).slice(0, o.top);
  if (o.json) {
    const out = rows.map(({ cost_micros, group, ...r }) => ({ [o.by]: group, ...r, cost_usd: cost_micros / 1e6 }));
    return JSON.stringify({ since: o.since, by: o.by, rows: out }, null, 2) + "\n";
  }
  const header = [o.by, "requests", "denied", "downgraded", "input_tokens", "output_tokens", "cost_usd"];
  const table = rows.map((r) => [r.group, r.requests, r.denied, r.downgraded, r.input_tokens, r.output_tokens, formatUsd(r.cost_micros)].map(String));
  const total = records.reduce((t, r) => t + Math.round(r.cost_usd * 1e6), 0);
  const shown = Number.isFinite(o.top) && summarize(records, o.by).length > rows.length ? ` (top ${rows.length} ${o.by}s shown)` : "";
  return [...align([header, ...table]), "", `${totalRequests(records)} requests, $${formatUsd(total)} in the last ${o.since}${shown}`].join("\n") + "\n";
}

function seriesReport(
  records: UsageRecord[],
  o: { since: string; sinceMs: number; until: number; bucketMs: number; series: string; by?: GroupBy; top: number; json?: boolean },
): string {
  let s: TimeSeries;
  try {
    s = timeSeries(records, { since: o.until - o.sinceMs, until: o.until, bucketMs: o.bucketMs, by: o.by, top: o.top });
  } catch (err) {
    throw usageError(`--series: ${(err as Error).message}`);
  }
  const groups = s.series.map((g) => g.group);
  if (o.json) {
    const buckets = s.buckets.map((start, i) => ({
      start: new Date(start).toISOString(),
      requests: s.total.requests[i],
      denied: s.total.denied[i],
      tokens: s.total.tokens[i],
      cost_usd: s.total.cost_micros[i]! / 1e6,
      ...(o.by ? { by: Object.fromEntries(s.series.map((g) => [g.group, g.cost_micros[i]! / 1e6])) } : {}),
    }));
    return JSON.stringify({ since: o.since, bucket: o.series, by: o.by ?? null, buckets }, null, 2) + "\n";
  }
  const max = Math.max(1, ...s.total.cost_micros);
  const header = ["bucket (UTC)", "requests", "denied", "tokens", "cost_usd", ...groups.map((g) => `${o.by}:${g}`), "spend"];
  const rows = s.buckets.map((start, i) => [
    new Date(start).toISOString().slice(0, 16).replace("T", " "),
    String(s.total.requests[i]),
    String(s.total.denied[i]),
    String(s.total.tokens[i]),
    formatUsd(s.total.cost_micros[i]!),
    ...s.series.map((g) => formatUsd(g.cost_micros[i]!)),
    "█".repeat(Math.round((s.total.cost_micros[i]! / max) * BAR_WIDTH)),
  ]);
  const total = s.total.cost_micros.reduce((a, b) => a + b, 0);
  return [...align([header, ...rows], true), "", `${totalRequests(records)} requests, $${formatUsd(total)} in the last ${o.since}, per ${o.series}`].join("\n") + "\n";
}

/** Left-aligns the first column, right-aligns the others (but a trailing bar column stays left). */
export function align(rows: string[][], lastLeft = false): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
  const last = rows[0]!.length - 1;
  return rows.map((cells) =>
    cells
      .map((c, i) => (i === 0 || (lastLeft && i === last) ? (i === last ? c : c.padEnd(widths[i]!)) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
}
