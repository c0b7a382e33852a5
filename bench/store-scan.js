// Section 2b: the cost of one reservation (reserve + settle, one counter) as a function of how many
// entries the counter already holds in its window, straight against the store classes.
//
// Stores keep every counter as a sliding log (src/stores/store.ts), and a reservation sums the
// counter's live entries. The number of entries is bounded by `max` for a request limit, but not for
// a usd budget or a token limit: a route-wide daily usd kill switch holds one entry per request of
// the day. This measures what that costs as the log grows.
import { MemoryStore } from "../dist/stores/memory.js";
import { SqliteStore } from "../dist/stores/sqlite.js";
import { sqlitePath } from "./configs.js";
import { median } from "./lib.js";

/** Entry counts to measure at; SQLite's are lower because filling its log is quadratic too. */
export const CHECKPOINTS = { memory: [0, 5_000, 10_000, 20_000], sqlite: [0, 1_000, 2_500, 5_000] };
const SAMPLE = 300;
const DAY_MS = 86_400_000;

async function scan(store, checkpoints) {
  // Warm-up on another key, so the first checkpoint is not the JIT's.
  for (let i = 0; i < 2_000; i++) {
    await store.reserve(`w${i}`, [{ key: "warm", max: 1e15, amount: 1, windowMs: DAY_MS }], 60_000);
    await store.settle(`w${i}`, [1]);
  }
  const counter = { key: "route:usd", max: Number.MAX_SAFE_INTEGER, amount: 100, windowMs: DAY_MS };
  let n = 0;
  const op = async () => {
    const id = `r${n++}`;
    const r = await store.reserve(id, [counter], 60_000);
    if (!r.ok) throw new Error("bench counter refused");
    await store.settle(id, [90]);
  };
  const points = [];
  for (const at of checkpoints) {
    while (n < at) await op();
    // Median of single operations: a shared machine preempts some of them, the median ignores that.
    const us = [];
    for (let i = 0; i < SAMPLE; i++) {
      const t0 = performance.now();
      await op();
      us.push((performance.now() - t0) * 1000);
    }
    points.push({ entries: at, usPerReservation: median(us) });
  }
  // Least-squares slope: the cost each entry already in the window adds to a reservation.
  const mx = points.reduce((a, p) => a + p.entries, 0) / points.length;
  const my = points.reduce((a, p) => a + p.usPerReservation, 0) / points.length;
  const slope =
    points.reduce((a, p) => a + (p.entries - mx) * (p.usPerReservation - my), 0) / points.reduce((a, p) => a + (p.entries - mx) ** 2, 0);
  return { points, usPer1000Entries: slope * 1000, interceptUs: my - slope * mx };
}

export async function storeScan() {
  const memory = new MemoryStore();
  const sqlite = SqliteStore.open(sqlitePath("scan"));
  try {
    return { memory: await scan(memory, CHECKPOINTS.memory), sqlite: await scan(sqlite, CHECKPOINTS.sqlite) };
  } finally {
    await Promise.all([memory.close(), sqlite.close()]);
  }
}
