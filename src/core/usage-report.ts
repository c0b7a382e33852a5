import type { UsageRecord } from "./usage-record.js";
import type { Micros } from "./money.js";

export type GroupBy = "user" | "route" | "model" | "ip";

export interface UsageRow {
  group: string;
  requests: number;
  denied: number;
  downgraded: number;
  input_tokens: number;
  output_tokens: number;
  cost_micros: Micros;
}

/** Records carry dollars for readers; they were micro-dollars exactly, so this is lossless. */
export const recordMicros = (r: UsageRecord): Micros => Math.round(r.cost_usd * 1e6);

/** Totals per group, most expensive first. */
export function summarize(records: UsageRecord[], by: GroupBy): UsageRow[] {
  const rows = new Map<string, UsageRow>();
  for (const r of records) {
    const group = (r[by] ?? "-") as string;
    let row = rows.get(group);
    if (!row) rows.set(group, (row = { group, requests: 0, denied: 0, downgraded: 0, input_tokens: 0, output_tokens: 0, cost_micros: 0 }));
    row.requests++;
    if (r.decision === "deny") row.denied++;
    if (r.decision === "downgrade") row.downgraded++;
    row.input_tokens += r.input_tokens;
    row.output_tokens += r.output_tokens;
    row.cost_micros += recordMicros(r);
  }
  return [...rows.values()].sort((a, b) => b.cost_micros - a.cost_micros || b.requests - a.requests);
}
