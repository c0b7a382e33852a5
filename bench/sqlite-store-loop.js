// The SQLite store alone: what one bench request asks of it (tollgate-bench.yaml's limits: two
// request windows, the daily budget and the daily token window, reserved together, then settled
// with the usage record in one op), LOOP_CONCURRENCY (32) requests at a time, no HTTP. Prints the
// process's CPU µs per request per round, and the commits per request.
//
//   npm run build && node bench/sqlite-store-loop.js [requests] [rounds]
//   BENCH_BASE=<checkout>: that checkout's built store instead (same loop), for a before/after.
//   Instructions (noise-free): CG=1 valgrind --tool=callgrind --instr-atstart=no \
//     --callgrind-out-file=/tmp/cg.out node bench/sqlite-store-loop.js 3000 1; then "totals:" / 3000.
//     Under CG=1 the warm-up round is not counted (callgrind_control toggles it on for the rest).
//     LOOP_CHECKPOINTER=0 opens the store without its checkpointer thread (SQLite checkpoints in the
//     commits): under valgrind the thread's restarts hold the write lock past the store's 500 ms.
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { record } from "./store-loop-record.js";

const ROOT = resolve(process.env.BENCH_BASE ?? join(import.meta.dirname, ".."));
const { SqliteStore } = await import(join(ROOT, "dist/stores/sqlite.js"));

const REQUESTS = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const WARMUP = Number(process.env.LOOP_WARMUP ?? 10_000);
const CONCURRENCY = Number(process.env.LOOP_CONCURRENCY ?? 32);
const CG = process.env.CG === "1";
const DAY = 86_400_000;

const COUNTERS = [
  { key: "limit:main:user:bench-user:requests:60000", max: 1e8, amount: 1, windowMs: 60_000 },
  { key: "limit:main:ip:127.0.0.1:requests:60000", max: 1e8, amount: 1, windowMs: 60_000 },
  { key: "budget:user:bench-user:day:2026-12-07", max: 1e12, amount: 482, windowMs: 2 * DAY },
  { key: "limit:main:user:bench-user:tokens:86400000", max: 1e10, amount: 820, windowMs: DAY },
];

let commits = 0;
async function request(store, n) {
  const id = `req-${n}`;
  const r = await store.reserve(id, COUNTERS, 600_000);
  if (!r.ok) throw new Error("bench counter refused");
  // The provider's answer comes in a later turn.
  await new Promise((resolve) => setImmediate(resolve));
  await store.settleWithRecord(id, [1, 1, 11, 28], record(id));
}

async function loop(store, from, count) {
  let next = from;
  const end = from + count;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < end) await request(store, next++);
  }));
}

const store = SqliteStore.open(join(mkdtempSync(join(tmpdir(), "tg-sqlite-loop-")), "bench.db"), { checkpointer: process.env.LOOP_CHECKPOINTER !== "0" });
// Count commits: every batch is one `counters`/op-named guard call that writes.
const guard = store.guard;
store.guard = function (op, write, fn) {
  if (write) commits++;
  return guard.call(this, op, write, fn);
};
let n = 0;
await loop(store, n, WARMUP);
n += WARMUP;
if (CG) execFileSync("callgrind_control", ["-i", "on", String(process.pid)], { stdio: "ignore" });
for (let round = 0; round < ROUNDS; round++) {
  const c0 = commits;
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  await loop(store, n, REQUESTS);
  n += REQUESTS;
  const used = process.cpuUsage(cpu);
  const wall = performance.now() - t0;
  console.log(
    `${ROOT}: ${(((used.user + used.system) / REQUESTS)).toFixed(1)} µs CPU/request, ${((commits - c0) / REQUESTS).toFixed(3)} commits/request, ${Math.round((REQUESTS / wall) * 1000)} req/s`,
  );
}
if (CG) execFileSync("callgrind_control", ["-i", "off", String(process.pid)], { stdio: "ignore" });
await store.close();
