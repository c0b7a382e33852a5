import { Writable } from "node:stream";
import { expect } from "vitest";
import { resolveConfig } from "../config/resolve.js";
import { configSchema } from "../config/schema.js";
import type { Store } from "../core/store.js";
import { emptyUsageRecord } from "../core/usage-record.js";
import { createLogs } from "../observability/logger.js";

/**
 * For stores that keep a record's JSON (storedJson): the usage line is the text the store just
 * wrote, and a record the caller changed and appended again is written, and logged, as it is
 * then. `stored` reads the texts the store holds, oldest first.
 */
export async function expectUsageLineIsStoredText(store: Store, stored: () => Promise<string[]> | string[]): Promise<void> {
  const lines: string[] = [];
  const stdout = new Writable({ write: (chunk, _enc, done) => done(void lines.push(...String(chunk).split("\n").filter(Boolean))) });
  const logs = createLogs(resolveConfig(configSchema.parse({ providers: {}, models: {}, plans: {}, routes: {} })), { stdout });
  const rec = { ...emptyUsageRecord("r1", new Date(Date.UTC(2025, 0, 1))), decision: "allow" as const, user: 'a "quoted"\nuser' };
  await store.appendUsage(rec);
  logs.usage(rec);
  const first = JSON.stringify(rec);
  // A caller may reuse its object: the next entry and line are the record as it is now.
  rec.request_id = "r2";
  rec.cost_usd = 0.25;
  await store.appendUsage(rec);
  logs.usage(rec);
  await new Promise((r) => setImmediate(r));
  const texts = await stored();
  expect(texts).toEqual([first, JSON.stringify(rec)]);
  expect(lines).toEqual(texts);
}
