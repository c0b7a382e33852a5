// Preloaded into a gateway (bench/answer-path.sh with NODE_OPTIONS="--import <this file>"; it acts
// only in the process that has ANSWER_PATH_DIST, the gateway): how long a SQLite store's
// synchronous work holds the event loop. Times every write the store runs (SqliteStore's guard: a
// turn's transaction, begin to commit) and the loop's delay (monitorEventLoopDelay, on any store),
// and prints both at exit, after COMMIT_HOOK_WARMUP_MS (2 s). What it answers: whether a request's
// p99 over the floor's comes from commits that stall the loop, or from the CPU every request costs
// (run CONFIG=memory beside CONFIG=sqlite: the loop's delay without any commit).
import { monitorEventLoopDelay, performance } from "node:perf_hooks";

const dist = process.env.ANSWER_PATH_DIST;
if (dist) {
  const { SqliteStore } = await import(`${dist}/stores/sqlite.js`);
  const writes = [];
  const guard = SqliteStore.prototype.guard;
  SqliteStore.prototype.guard = function (op, write, fn) {
    if (!write) return guard.call(this, op, write, fn);
    return guard.call(this, op, write, () => {
      const t0 = performance.now();
      try {
        return fn();
      } finally {
        writes.push(performance.now() - t0);
      }
    });
  };
  const delay = monitorEventLoopDelay({ resolution: 1 });
  let started = performance.now();
  // Warm-up: the first 2 s of the gateway (answer-path.sh's first ~2,000 requests on a quiet machine).
  const timer = setTimeout(() => {
    started = performance.now();
    writes.length = 0;
    delay.enable();
  }, Number(process.env.COMMIT_HOOK_WARMUP_MS ?? 2_000));
  timer.unref();
  process.once("exit", () => {
    delay.disable();
    const s = writes.sort((a, b) => a - b);
    const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] * 1000 : NaN).toFixed(0);
    const sum = s.reduce((a, b) => a + b, 0);
    const wall = performance.now() - started;
    const ms = (ns) => (ns / 1e6).toFixed(2);
    process.stderr.write(
      `sqlite writes ${s.length}: p50 ${q(0.5)} us, p90 ${q(0.9)} us, p99 ${q(0.99)} us, p99.9 ${q(0.999)} us, max ${q(1)} us; ` +
        `${((100 * sum) / wall).toFixed(1)}% of the wall clock; ` +
        `loop delay p50 ${ms(delay.percentile(50))} ms, p99 ${ms(delay.percentile(99))} ms, max ${ms(delay.max)} ms\n`,
    );
  });
}
