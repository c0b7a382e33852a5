import { parseDuration } from "../core/duration.js";
import { parseUsd, type Micros } from "../core/money.js";
import type { ConfigIssue } from "./errors.js";
import type { RawConfig } from "./schema.js";

/**
 * What every section's resolver shares: the validated file, the issues found so far (all of them
 * are reported at once, not the first) and the conversions and cross-references they all need.
 */
export class Resolution {
  readonly issues: ConfigIssue[] = [];

  constructor(readonly raw: RawConfig) {}

  issue(path: string, message: string): void {
    this.issues.push({ path, message });
  }

  /** A duration the schema already validated, in ms. */
  ms(text: string): number {
    return parseDuration(text)!;
  }

  /** Dollars to integer micro-dollars; an amount that cannot be held exactly is an issue at `path`. */
  micros(v: number | string | undefined, path: string): Micros | undefined {
    if (v === undefined) return undefined;
    try {
      return parseUsd(v);
    } catch (err) {
      this.issue(path, (err as Error).message);
      return undefined;
    }
  }

  /**
   * A time zone by IANA name, checked now (one the runtime does not know would fail on the first
   * request); absent: the top-level `timezone`.
   */
  zone(name: string | undefined, path: string): string {
    if (name === undefined) return this.raw.timezone;
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: name });
    } catch {
      this.issue(path, `unknown time zone "${name}" (expected an IANA name like "UTC" or "Europe/Paris")`);
    }
    return name;
  }

  checkModel(model: string, path: string): void {
    if (!this.raw.models[model]) this.issue(path, `unknown model "${model}" (known: ${known(this.raw.models)})`);
  }

  checkPlan(plan: string, path: string): void {
    if (this.raw.plans[plan]) return;
    this.issue(path, plan === "anonymous" ? `plan "anonymous" is used but not defined under plans` : `unknown plan "${plan}" (known: ${known(this.raw.plans)})`);
  }
}

export const known = (map: object): string => Object.keys(map).join(", ") || "none";
