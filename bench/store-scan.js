// Section 2b: the cost of one reservation (reserve + settle, one counter) as a function of how many
// settled reservations the counter already holds in its window, straight against the store classes.
//
// A counter keeps its settled amounts in at most ~65 time buckets plus its in-flight reservations
// (src/stores/store.ts), so this should be flat: a route-wide daily usd kill switch at 10 req/s
// holds 864k settled reservations by evening, and a check must not scan them.
//
// Standalone: `npm run build && node bench/store-scan.js [--redis]` prints the table (and JSON with --json).
import { pathToFileURL } from "node:url";
import { MemoryStore } from "../dist/stores/memory.js";
import { SqliteStore } from "../dist/stores/sqlite.js";
import { sqlitePath } from "./configs.js";
import { median } from "./lib.js";

/** Settled reservations already in the window at each measuring point. */
export const CHECKPOINTS = { memory: [0, 5_000, 20_000], sqlite: [0, 5_000, 20_000], redis: [0, 5_000, 20_000] };
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
  // Least-squares slope: the cost each settled reservation already in the window adds to a reservation.
  const mx = points.reduce((a, p) => a + p.entries, 0) / points.length;
  const my = points.reduce((a, p) => a + p.usPerReservation, 0) / points.length;
  const slope =
    points.reduce((a, p) => a + (p.entries - mx) * (p.usPerReservation - my), 0) / points.reduce((a, p) => a + (p.entries - mx) ** 2, 0);
  return { points, usPer1000Entries: slope * 1000, interceptUs: my - slope * mx };
}

/**
 * Memory and SQLite always; Redis when `redis` is true (starts its own redis-server) or a URL
 * (an empty Redis the caller owns, e.g. `npm run bench`'s).
 */
export async function storeScan({ redis = false } = {}) {
  const out = {};
  const memory = new MemoryStore();
  try {
    out.memory = await scan(memory, CHECKPOINTS.memory);
  } finally {
    await memory.close();
  }
  const sqlite = SqliteStore.open(sqlitePath("scan"));
  try {
    out.sqlite = await scan(sqlite, CHECKPOINTS.sqlite);
  } finally {
    await sqlite.close();
  }
  if (redis) {
    const { RedisStore } = await import("../dist/stores/redis.js");
    let server;
    if (typeof redis !== "string") {
      const { RedisServer } = await import("../dist/testing/redis-server.js");
      server = await RedisServer.start();
    }
    try {
      const store = await RedisStore.open(typeof redis === "string" ? redis : server.url(), { log: () => {} });
      try {
        out.redis = await scan(store, CHECKPOINTS.redis);
      } finally {
        await store.close();
      }
    } finally {
      await server?.dispose();
    }
  }
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await storeScan({ redis: process.argv.includes("--redis") });
  if (process.argv.includes("--json")) console.log(JSON.stringify(result, null, 2));
  for (const [kind, r] of Object.entries(result)) {
    const cells = r.points.map((p) => `${p.entries}: ${p.usPerReservation.toFixed(1)} µs`).join(", ");
    console.log(`${kind.padEnd(7)} ${cells}   (slope ${r.usPer1000Entries.toFixed(2)} µs per 1,000 settled)`);
  }
}
