import type { ResolvedConfig } from "../config/resolve.js";
import { parseDuration } from "../core/duration.js";
import { budgetReport, type BudgetLevelRow } from "../core/budget-report.js";
import { TollgateError } from "../core/errors.js";
import { parseUsd } from "../core/money.js";
import { checkBudgetSubject, readBudgetOverride, setBudgetOverride, type BudgetOverride, type BudgetSubject } from "../core/policy.js";
import { lapseParam, subjectOf } from "../gateway/admin-policy.js";
import { openStore } from "../stores/open.js";
import { align } from "./usage.js";

export interface BudgetsOptions {
  since?: string;
  top?: string;
  json?: boolean;
  daily?: string;
  monthly?: string;
  total?: string;
  until?: string;
}

const LEVELS = ["user", "ip", "org", "key"] as const;
const usage = (message: string) => Object.assign(new Error(message), { code: "ERR_PARSE_ARGS_USAGE" });

/**
 * `tollgate budgets`: every budget level and where it stands; `budgets set` / `budgets clear`
 * write an operator's override into the store, as PUT / DELETE /admin/budgets do.
 */
export async function budgetsCommand(config: ResolvedConfig, positionals: string[], opts: BudgetsOptions): Promise<void> {
  const [action, level, id] = positionals;
  if (action !== undefined && action !== "set" && action !== "clear") throw usage(`budgets: expected set or clear, or nothing to list`);
  const store = await openStore(config.store);
  try {
    if (action === undefined) {
      process.stdout.write(await listing(config, store, opts));
      return;
    }
    // Gate 2 reads overrides only where the admin API can set them: elsewhere one would be ignored.
    if (config.adminKey === undefined) throw usage(`budgets ${action}: this config has no admin_key, and gateways without one do not read operator overrides; set admin_key first`);
    const subject = await subjectArg(config, store, action, level, id);
    if (action === "clear") {
      await setBudgetOverride(store, subject, {});
    } else {
      const override = amounts(subject, opts);
      let forMs: number | undefined;
      try {
        forMs = lapseParam(undefined, opts.until, Date.now());
      } catch (err) {
        throw usage(`budgets set: --${(err as Error).message}`);
      }
      await setBudgetOverride(store, subject, override, forMs);
    }
    const now = await readBudgetOverride(store, subject);
    process.stdout.write(opts.json ? JSON.stringify({ ...subject, ...overrideJson(subject, now) }) + "\n" : describeOverride(subject, now));
  } finally {
    await store.close();
  }
}

async function listing(config: ResolvedConfig, store: Awaited<ReturnType<typeof openStore>>, opts: BudgetsOptions): Promise<string> {
  const since = opts.since ?? "31d";
  const sinceMs = parseDuration(since);
  if (sinceMs === undefined) throw usage(`--since: expected a duration like "7d", "31d"`);
  const top = opts.top === undefined ? 20 : Number(opts.top);
  if (!(Number.isSafeInteger(top) && top >= 1)) throw usage("--top: expected a whole number of at least 1");
  const records = await store.queryUsage({ since: Date.now() - sinceMs });
  const rows = await budgetReport(config, store, records, { topUsers: top });
  if (opts.json) return JSON.stringify({ users_since: since, budgets: rows }, null, 2) + "\n";
  if (!rows.length) return "no budgets: the config sets none, and no operator override is in the store\n";
  const money = (v: number | null) => (v === null ? "-" : v.toFixed(6).replace(/0{1,4}$/, ""));
  const table = rows.map((r: BudgetLevelRow) => [
    r.level,
    r.subject ?? "-",
    r.period,
    money(r.limit_usd),
    money(r.used_usd),
    money(r.reserved_usd),
    money(r.remaining_usd),
    r.state ?? "-",
    r.resets_at ? `${r.resets_at.slice(0, 16).replace("T", " ")}Z${r.timezone && r.timezone !== "UTC" ? ` (${r.timezone})` : ""}` : "-",
    r.until ? `until ${r.until.slice(0, 19).replace("T", " ")}Z` : r.name.endsWith("(set by the operator)") ? "set" : "",
  ]);
  const header = ["level", "subject", "period", "limit_usd", "used_usd", "reserved_usd", "remaining_usd", "state", "resets_at", "override"];
  const notes = `used: settled spend, reserved: held by requests in flight; users: the ${top} who spent most in the last ${since}; soft: past the budget's soft share (cheaper model served), exhausted: refused with 402`;
  return [...align([header, ...table], true), "", notes].join("\n") + "\n";
}

async function subjectArg(config: ResolvedConfig, store: Awaited<ReturnType<typeof openStore>>, action: string, level: string | undefined, id: string | undefined): Promise<BudgetSubject> {
  if (!level || !(LEVELS as readonly string[]).includes(level)) throw usage(`budgets ${action}: expected a level, one of ${LEVELS.join(", ")}`);
  if (!id) throw usage(`budgets ${action}: expected the ${level}'s id after the level`);
  try {
    const subject: BudgetSubject = level === "user" || level === "ip" ? subjectOf(level, id, level) : { kind: level as "org" | "key", id };
    await checkBudgetSubject(config, store, subject);
    return subject;
  } catch (err) {
    if (TollgateError.is(err)) throw usage(`budgets ${action}: ${err.message}`);
    throw err;
  }
}

function amounts(subject: BudgetSubject, opts: BudgetsOptions): BudgetOverride {
  const out: BudgetOverride = {};
  for (const k of ["daily", "monthly", "total"] as const) {
    const v = opts[k];
    if (v === undefined) continue;
    if (k === "total" && subject.kind !== "key") throw usage("budgets set: --total: only a key has a lifetime budget");
    if (!/^\d+(\.\d+)?$/.test(v)) throw usage(`budgets set: --${k} expects an amount in US dollars, like 5 or 0.50`);
    out[k] = parseUsd(v);
  }
  if (!Object.keys(out).length) throw usage(`budgets set: give --daily, --monthly${subject.kind === "key" ? " or --total" : ""} (budgets clear removes an override)`);
  return out;
}

function overrideJson(subject: BudgetSubject, o: BudgetOverride) {
  const usd = (v: number | undefined) => (v === undefined ? null : v / 1e6);
  return {
    daily_usd: usd(o.daily),
    monthly_usd: usd(o.monthly),
    ...(subject.kind === "key" ? { total_usd: usd(o.total) } : {}),
    until: o.until !== undefined ? new Date(o.until).toISOString() : null,
  };
}

function describeOverride(subject: BudgetSubject, o: BudgetOverride): string {
  const parts = (["daily", "monthly", "total"] as const).filter((k) => o[k] !== undefined).map((k) => `${k} $${o[k]! / 1e6}`);
  if (!parts.length) return `${subject.kind} ${subject.id}: no override; the configured budgets apply\n`;
  return `${subject.kind} ${subject.id}: ${parts.join(", ")} ${o.until !== undefined ? `until ${new Date(o.until).toISOString()}` : "until cleared"} (replaces the configured budget; periods not named keep it)\n`;
}
