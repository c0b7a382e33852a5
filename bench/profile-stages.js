// Where a request's time goes, by gate/stage, from a V8 .cpuprofile of `tollgate serve` under load
// (`BENCH_PROFILE=DIR npm run bench`). Startup (module loading, tokenizer tables) is cut off: only
// samples from the first request on count. Each busy sample is charged to the innermost frame of its
// stack that names a stage (so node's socket write under sendJson is "response write", pino under
// the engine's record is "usage log"); samples with no tollgate frame are charged by package.
// With REQUESTS (served while profiled) it prints µs per request; shares are what to compare, since
// --cpu-prof itself adds about 10-20 % to the process.
// Usage: node bench/profile-stages.js FILE.cpuprofile [REQUESTS]
import { readFileSync } from "node:fs";
import { fmt, table } from "./lib.js";

const [file, requestsArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: node bench/profile-stages.js FILE.cpuprofile [REQUESTS]\n");
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, "utf8"));

/** [stage, test(functionName, url)] from the most specific; the first match walking leaf → root wins. */
const RULES = [
  ["identity: key lookup (sha256, store)", (f, u) => u.includes("/core/identity.js") || u.includes("/gates/identify.js")],
  ["gate: abuse/IP checks", (f, u) => u.includes("/gates/abuse.js") || u.includes("/core/client-ip.js")],
  ["gate: quota/limits", (f, u) => u.includes("/gates/quota.js") || u.includes("/gates/limits.js") || u.includes("/gates/rate")],
  ["gate: budget", (f, u) => u.includes("/gates/budget.js") || u.includes("/core/calendar.js")],
  ["gate: input caps/other gates", (f, u) => u.includes("/core/gates/")],
  ["token counting (BPE)", (f, u) => u.includes("/metering/tokens.js") || u.includes("gpt-tokenizer")],
  ["meter (usage, cost)", (f, u) => u.includes("/core/metering/")],
  ["format parse/inspect", (f, u) => u.includes("/dist/formats/") || u.includes("/zod/")],
  ["store: SQLite", (f, u) => u.includes("/stores/sqlite") || u.includes("better-sqlite3")],
  ["store: Redis", (f, u) => u.includes("/stores/redis") || u.includes("ioredis") || u.includes("redis-parser") || u.includes("/denque/")],
  ["store: memory/buckets", (f, u) => u.includes("/dist/stores/")],
  ["usage log line", (f, u) => u.includes("/observability/logger.js") || u.includes("/pino") || u.includes("sonic-boom") || u.includes("quick-format")],
  ["metrics (prom-client)", (f, u) => u.includes("/observability/metrics.js") || u.includes("prom-client")],
  ["tracing (OTel API, no SDK)", (f, u) => u.includes("/observability/tracing.js") || u.includes("@opentelemetry")],
  ["live tail", (f, u) => u.includes("/observability/tail.js")],
  ["upstream call (provider + undici)", (f, u) => u.includes("/dist/providers/") || u.includes("/undici/")],
  ["body read + JSON.parse", (f, u) => u.includes("/gateway/body.js")],
  ["response write (JSON)", (f) => f === "sendJson" || f === "sendError"],
  ["stream relay (relayStream)", (f, u) => u.includes("/gateway/stream-relay.js") || (u.includes("/gateway/server.js") && ["pipeStream", "writeEvent", "writeAll", "drained"].includes(f))],
  ["engine bookkeeping", (f, u) => u.includes("/core/engine.js") || u.includes("/core/exchange.js") || u.includes("/core/usage-record.js")],
  ["gateway routing/headers", (f, u) => u.includes("/gateway/")],
  ["node HTTP server (parse, sockets)", (f, u) => u.startsWith("node:_http") || u.startsWith("node:net") || u.startsWith("node:internal/stream_base") || u.startsWith("node:stream") || u.startsWith("node:internal/streams")],
];

const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const NODE_CORE = RULES.at(-1);
const SPECIFIC = RULES.slice(0, -1);

/** The stage of a sample's stack: the innermost frame a specific rule names, else node core by package. */
const stageOf = new Map();
function stage(id) {
  if (stageOf.has(id)) return stageOf.get(id);
  const name = nodes.get(id).callFrame.functionName;
  let s;
  if (name === "(garbage collector)") s = "GC";
  else if (name === "(idle)" || name === "(program)") s = null;
  else s = walk(id, SPECIFIC) ?? walk(id, [NODE_CORE]) ?? "other (node core, microtasks)";
  stageOf.set(id, s);
  return s;
}

function walk(id, rules) {
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const cf = nodes.get(x).callFrame;
    for (const [label, test] of rules) if (test(cf.functionName, cf.url)) return label;
  }
  return undefined;
}

/** True when the node's stack holds the gateway's request handler: the load has started. */
function inRequest(id) {
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const cf = nodes.get(x).callFrame;
    if (cf.url.includes("/gateway/server.js") && (cf.functionName === "handle" || cf.functionName === "modelCall")) return true;
  }
  return false;
}

let t = profile.startTime;
let started = false;
let startAt = 0;
const byStage = new Map();
let busy = 0;
for (let i = 0; i < profile.samples.length; i++) {
  t += profile.timeDeltas[i] ?? 0;
  const id = profile.samples[i];
  if (!started) {
    if (!inRequest(id)) continue;
    started = true;
    startAt = t;
  }
  const s = stage(id);
  if (s === null) continue;
  const dt = profile.timeDeltas[i + 1] ?? 0;
  byStage.set(s, (byStage.get(s) ?? 0) + dt);
  busy += dt;
}
const requests = Number(requestsArg ?? 0);
console.log(`${file}: ${fmt(busy / 1000)} ms busy over ${fmt((t - startAt) / 1e6, 1)} s from the first request${requests ? `, ${fmt(requests)} requests` : ""}\n`);
const rows = [...byStage.entries()]
  .sort((a, b) => b[1] - a[1])
  .map(([s, us]) => [s, `${fmt((100 * us) / busy, 1)}%`, requests ? fmt(us / requests, 1) : "-"]);
console.log(table(["stage", "share of busy CPU", "µs/req (profiled)"], rows));
