import type { ResolvedConfig } from "../config/resolve.js";
import { parseDuration } from "../config/duration.js";
import { formatUsd } from "../core/money.js";
import { summarize, type GroupBy } from "../core/usage-report.js";
import { openStore } from "../stores/open.js";

const GROUPS: GroupBy[] = ["user", "route", "model", "ip"];

export async function usageCommand(config: ResolvedConfig, opts: { since?: string; by?: string; json?: boolean; top?: string }): Promise<void> {
  const sinceMs = parseDuration(opts.since ?? "24h");
  if (sinceMs === undefined) throw Object.assign(new Error(`--since: expected a duration like "1h", "24h", "7d"`), { code: "ERR_PARSE_ARGS_USAGE" });
  const by = (opts.by ?? "user") as GroupBy;
  if (!GROUPS.includes(by)) throw Object.assign(new Error(`--by: expected one of ${GROUPS.join(", ")}`), { code: "ERR_PARSE_ARGS_USAGE" });
  const top = opts.top === undefined ? Infinity : Number(opts.top);
  const store = await openStore(config.store);
  try {
    const records = await store.queryUsage({ since: Date.now() - sinceMs });
    const rows = summarize(records, by).slice(0, top);
    if (opts.json) {
      const out = rows.map(({ cost_micros, ...r }) => ({ [by]: r.group, ...r, group: undefined, cost_usd: cost_micros / 1e6 }));
      process.stdout.write(JSON.stringify({ since: opts.since ?? "24h", by, rows: out }, null, 2) + "\n");
      return;
    }
    const header = [by, "requests", "denied", "downgraded", "input_tokens", "output_tokens", "cost_usd"];
    const table = rows.map((r) => [r.group, r.requests, r.denied, r.downgraded, r.input_tokens, r.output_tokens, formatUsd(r.cost_micros)].map(String));
    const total = rows.reduce((t, r) => t + r.cost_micros, 0);
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
    process.stdout.write([line(header), ...table.map(line), "", `${records.length} requests, $${formatUsd(total)} in the last ${opts.since ?? "24h"}`].join("\n") + "\n");
  } finally {
    await store.close();
  }
}
