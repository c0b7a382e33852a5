// Preloaded into a gateway by bench/answer-path.sh (`node --import`): times, per served request, the
// stretch from the provider's answer reaching the engine (engine.call resolving) to the answer being
// handed to the client's socket (res.end), and prints its percentiles when the process exits.
// Sub-millisecond stretches of one process are far less disturbed by a loaded machine than
// wrk's end-to-end latency, so two builds can be compared on what sits before the write.
import { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";

const dist = process.env.ANSWER_PATH_DIST;
const { Engine } = await import(`${dist}/core/engine.js`);
const answered = new Map();
const samples = [];
const call = Engine.prototype.call;
Engine.prototype.call = async function (ex, signal) {
  const r = await call.call(this, ex, signal);
  answered.set(ex.id, performance.now());
  return r;
};
const end = ServerResponse.prototype.end;
ServerResponse.prototype.end = function (...args) {
  const t0 = answered.get(this.requestId);
  if (t0 !== undefined) {
    answered.delete(this.requestId);
    samples.push(performance.now() - t0);
  }
  return end.apply(this, args);
};
process.once("exit", () => {
  const skip = Number(process.env.ANSWER_PATH_WARMUP ?? 0);
  const s = samples.slice(skip).sort((a, b) => a - b);
  const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] * 1000 : NaN).toFixed(1);
  process.stderr.write(`answer-path ${s.length} requests: p50 ${q(0.5)} us, p90 ${q(0.9)} us, p99 ${q(0.99)} us, mean ${((s.reduce((a, b) => a + b, 0) / s.length) * 1000).toFixed(1)} us\n`);
});
