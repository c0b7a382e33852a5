import { randomUUID } from "node:crypto";
import { emptyUsageRecord, type UsageRecord } from "./usage-record.js";

/**
 * Caps per-request refusal records (SPEC §6, `server.max_refusal_records_per_s`). In each second,
 * the first `max` refusals of a code get their own record; the rest of that second are folded into
 * one summary record per code, route and endpoint whose `count` says how many it stands for. The
 * route and endpoint are part of the key so that the summary's labels are exact for metrics; both
 * come from the config, so the number of summaries per second stays bounded.
 *
 * A summary is emitted once its second is over: by the first refusal of a later second, or by a
 * timer while any summary is open, or by flush() at shutdown.
 */
export class RefusalRecords {
  private readonly perCode = new Map<string, { second: number; kept: number }>();
  /** Open summaries by code, route and endpoint, with the second (epoch s) each counts. */
  private readonly open = new Map<string, { second: number; summary: UsageRecord }>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly max: number,
    private readonly emit: (summary: UsageRecord) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** True: the refusal gets a record of its own. False: it was counted into its second's summary. */
  admit(rec: UsageRecord): boolean {
    const second = Math.floor(this.now() / 1000);
    const code = rec.code ?? "";
    if (this.keep(code, second)) return true;
    const summary = this.summary(code, rec.route ?? "", rec.endpoint ?? "", second);
    summary.count!++;
    for (const s of rec.signals) if (!summary.signals.includes(s)) summary.signals.push(s);
    return false;
  }

  /**
   * A refusal with nothing to say beyond its code, route and endpoint (no caller, no signal: a
   * credential no identity comes from), counted before anything is built for it. True: it was
   * counted into its second's summary. False: its code still has records this second, so it
   * must get one of its own through admit().
   */
  fold(code: string, route: string, endpoint: string): boolean {
    const second = Math.floor(this.now() / 1000);
    const c = this.perCode.get(code);
    if (!c || c.second !== second || c.kept < this.max) return false;
    this.summary(code, route, endpoint, second).count!++;
    return true;
  }

  /** Whether the code's records of this second are spent: its refusals now only count. */
  spent(code: string): boolean {
    const c = this.perCode.get(code);
    return c !== undefined && c.kept >= this.max && c.second === Math.floor(this.now() / 1000);
  }

  /** Takes one of the code's records of this second, if any is left. */
  private keep(code: string, second: number): boolean {
    let c = this.perCode.get(code);
    if (!c || c.second !== second) this.perCode.set(code, (c = { second, kept: 0 }));
    if (c.kept >= this.max) return false;
    c.kept++;
    return true;
  }

  /** The open summary of a code, route and endpoint for this second, once an earlier one is out. */
  private summary(code: string, route: string, endpoint: string, second: number): UsageRecord {
    const key = `${code}\u0000${route}\u0000${endpoint}`;
    let open = this.open.get(key);
    if (open && open.second !== second) {
      this.open.delete(key);
      this.emit(open.summary);
      open = undefined;
    }
    if (!open) {
      const summary = emptyUsageRecord(`refusals-${randomUUID()}`, new Date(second * 1000));
      Object.assign(summary, { route: route || null, endpoint: endpoint || null, decision: "deny", code: code || null, count: 0 });
      this.open.set(key, (open = { second, summary }));
      this.arm();
    }
    return open.summary;
  }

  /** Emits every open summary (those of the current second too): at shutdown. */
  flush(): void {
    this.emitBefore(Infinity);
  }

  private emitBefore(second: number): void {
    for (const [key, open] of this.open) {
      if (open.second >= second) continue;
      this.open.delete(key);
      this.emit(open.summary);
    }
    if (!this.open.size && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private arm(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.emitBefore(Math.floor(this.now() / 1000)), 250);
    this.timer.unref();
  }
}
