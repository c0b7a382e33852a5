import { describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import type { HeldCounter } from "./exchange.js";
import { gatewayBudgets, orgBudgets, userBudgets } from "./budget-levels.js";

const config = resolveConfig(
  parseConfig({
    providers: { sim: { type: "simulated" } },
    models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
    plans: { free: { models: ["m"], budget: { daily: 2, monthly: 30, soft: 0.5 } } },
    orgs: { acme: { budget: { daily: 100 }, timezone: "Europe/Paris" } },
    budget: { daily: 1000 },
    keys: [{ key: "tg_levels_ann", user: "ann", plan: "free" }],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "m" } },
  }),
);
const NOON = Date.UTC(2026, 2, 10, 12);

function user(now: number, amount: number, override?: { daily?: number }, anonymous = false, name = "ann"): HeldCounter[] {
  const out: HeldCounter[] = [];
  userBudgets(out, config, "free", anonymous, name, override, now, amount);
  return out;
}

describe("calendar budget counters", () => {
  it("name the subject, level and period in their keys, as before, and carry the cap, soft share and reset", () => {
    const [daily, monthly] = user(NOON, 7);
    expect(daily).toMatchObject({ key: "bud:d:u:ann:2026-03-10", max: 2_000_000, amount: 7, unit: "usd", period: "daily", softAt: 1_000_000, resetsAt: Date.UTC(2026, 2, 11), label: "the free plan's daily budget" });
    expect(monthly).toMatchObject({ key: "bud:m:u:ann:2026-03", max: 30_000_000, amount: 7, period: "monthly" });
    expect(user(NOON, 7, undefined, true, "198.51.100.0/24")[0]!.key).toBe("bud:d:ip:198.51.100.0/24:2026-03-10");
    const out: HeldCounter[] = [];
    orgBudgets(out, config, "acme", undefined, NOON, 0);
    gatewayBudgets(out, config, NOON, 0);
    expect(out.map((c) => c.key)).toEqual(["bud:o:d:acme:2026-03-10", "bud:gw:d:2026-03-10"]);
  });

  it("are the same objects for a caller's requests while nothing they say changes, and new ones when something does", () => {
    const [peeked] = user(NOON, 0);
    const [reserved] = user(NOON + 1_000, 5_000);
    // Gate 3's spent check and gate 6's reservation share the key string (hashed once in the store's maps).
    expect(user(NOON + 2_000, 0)[0], "peek again").toBe(peeked);
    expect(user(NOON + 3_000, 5_000)[0], "reserve again").toBe(reserved);
    expect(reserved!.key).toBe(peeked!.key);
    expect(reserved).toMatchObject({ ...peeked, amount: 5_000 });
    // Another estimate: another amount, the same everything else.
    expect(user(NOON, 6_000)[0]).toMatchObject({ ...peeked, amount: 6_000 });
    // An operator's override, a new day, another subject: counters of their own.
    expect(user(NOON, 0, { daily: 3_000_000 })[0]).toMatchObject({ key: peeked!.key, max: 3_000_000, label: "this caller's daily budget (set by the operator)" });
    expect(user(NOON, 0)[0]!.max).toBe(2_000_000);
    expect(user(NOON + 86_400_000, 0)[0]!.key).toBe("bud:d:u:ann:2026-03-11");
    expect(user(NOON, 0, undefined, false, "bo")[0]!.key).toBe("bud:d:u:bo:2026-03-10");
  });
});
