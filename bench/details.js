// `npm run bench:details`: tollgate's cost per request next to the mock upstream and a bare proxy, what
// budgets and limits add on each store (memory, SQLite, Redis), the Redis commands a request costs,
// the pre-flight estimate, and cancellation latency.
// Prints a table per section and writes every figure to bench/results.json.
//
// Environment: BENCH_SECONDS (measured seconds per target, default 5),
// The Redis store runs against a private redis-server on a free loopback port (needs `redis-server`
// on PATH, as the tests do). BENCH_PROFILE=DIR (run every throughput gateway under --cpu-prof, profiles written to DIR;
// summarise one with `node bench/profile-top.js DIR/<name>.cpuprofile`).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { cancellation, GIVE_UP_MS, HOLD_MS, RUNS, SLOW_STREAM, SPEC_MS } from "./cancel.js";
import { tempDir } from "./configs.js";
import { CONNECTIONS, cpuMs, fmt, machineBusyMs, pct, ROOT, ROUNDS, SECONDS_PER_TARGET, section as heading, signed, table, WARMUP_S } from "./lib.js";
import { budgetPeriods, preflight, PROMPT_CHARS } from "./preflight.js";
import { storeScan } from "./store-scan.js";
import { commandsPerRequest, LOADED_REQUESTS, SEQUENTIAL_REQUESTS, startRedis } from "./redis.js";
import { features, FEATURE_SETS, MOCK_BEHAVIOR, proxyOverhead, startMock } from "./throughput.js";

const started = performance.now();
const results = {
  when: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
  settings: { connections: CONNECTIONS, secondsPerTarget: SECONDS_PER_TARGET, rounds: ROUNDS, warmupSeconds: WARMUP_S, mock: MOCK_BEHAVIOR },
};

const cpuOf = (row, proc) => row.cpu[proc];

// Seconds each section took, printed at the end.
const timings = [];
let sectionStart;
let sectionName;
function section(title) {
  closeSection();
  sectionName = title.split(" ")[0].replace(/\.$/, "");
  sectionStart = performance.now();
  heading(title);
}
function closeSection() {
  if (sectionName) timings.push([sectionName, (performance.now() - sectionStart) / 1000]);
  sectionName = undefined;
}

function git(...args) {
  try {
    return execFileSync("git", args, { cwd: ROOT, encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}
results.source = { commit: git("rev-parse", "--short", "HEAD"), uncommittedFiles: git("status", "--porcelain", "--", "src")?.split("\n").filter(Boolean).length };

/** Share of the machine's CPU used by other processes over `ms` (a shared machine is noisy). */
async function otherLoad(ms) {
  const m0 = machineBusyMs();
  const o0 = cpuMs(process.pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const m1 = machineBusyMs();
  if (m0 === undefined || m1 === undefined) return undefined;
  return Math.max(0, (100 * (m1 - m0 - (cpuMs(process.pid) - o0))) / ((performance.now() - t0) * cpus().length));
}
const otherLoadNote = (rows) => `other processes on the machine used ${pct(rows[0]?.otherLoadPct)} of its CPU during these runs`;

console.log("# tollgate bench");
console.log(
  `\n${results.machine.cpus} CPUs (${results.machine.model}), Node ${process.version}. autocannon, ${CONNECTIONS} connections, ` +
    `${SECONDS_PER_TARGET} s measured per target as ${ROUNDS} interleaved rounds (A B C A B C) after a ${WARMUP_S} s warm-up each.\n` +
    `Processes: autocannon in the bench process; the mock upstream, the bare proxy and each tollgate are separate processes.\n` +
    `Gateways run with server.log: none, so writing usage records to stdout is not part of the figures.\n` +
    `Mock: ${MOCK_BEHAVIOR.outputTokens} output tokens, no delay. CPU µs/req: user+system CPU of that process / requests served ` +
    `(from /proc; steadier than req/s on a shared machine). Latency percentiles have 1 ms resolution.`,
);

results.otherLoadBeforePct = await otherLoad(1_000);
console.log(
  `Source: ${results.source.commit ?? "?"} (+${results.source.uncommittedFiles ?? "?"} uncommitted files under src/), built into dist/. ` +
    `Other processes used ${pct(results.otherLoadBeforePct)} of the machine's CPU in the second before the bench.`,
);

// ---------------------------------------------------------------------------------------------
const mock = await startMock(MOCK_BEHAVIOR);
const redis = await startRedis();
results.machine.redis = redis.version;
let overhead;
let featureRows;
try {
  section("1. Proxy overhead: mock directly vs bare Node proxy vs tollgate (memory store, no budgets, no limits)");
  overhead = await proxyOverhead(mock);
  results.proxyOverhead = overhead;
  const rows = [];
  const ratios = [];
  for (const [mode, label] of [["non_streaming", "non-stream"], ["streaming", "stream"]]) {
    const all = overhead.modes[mode];
    const find = (l) => all.find((r) => r.label === l);
    const [direct, bare, buffered, tg] = [find("mock directly"), find("bare proxy"), find("bare proxy, buffered"), find("tollgate")];
    for (const r of all) {
      const proxy = cpuOf(r, "proxy");
      rows.push([
        `${label}  ${r.label}`,
        fmt(r.rps),
        fmt(r.p50),
        fmt(r.p99),
        fmt(r.mean, 1),
        r === direct ? "-" : pct((100 * r.rps) / bare.rps),
        r === direct ? "-" : signed(r.p50 - bare.p50, 0),
        r === direct ? "-" : signed(r.p99 - bare.p99, 0),
        proxy ? fmt(proxy.usPerReq) : "-",
        proxy ? pct(proxy.pctOfCore) : "-",
        fmt(cpuOf(r, "mock")?.usPerReq),
        fmt(cpuOf(r, "client")?.usPerReq),
      ]);
    }
    const tgCpu = cpuOf(tg, "proxy")?.usPerReq;
    const bareCpu = cpuOf(bare, "proxy")?.usPerReq;
    const ratio = {
      mode,
      tollgatePctOfBareRps: (100 * tg.rps) / bare.rps,
      bareProxyPctOfMockRps: (100 * bare.rps) / direct.rps,
      addedP50Ms: tg.p50 - bare.p50,
      addedP99Ms: tg.p99 - bare.p99,
      tollgateCpuUsPerReq: tgCpu,
      bareCpuUsPerReq: bareCpu,
      addedCpuUsPerReq: tgCpu - bareCpu,
      cpuRatio: tgCpu / bareCpu,
      ...(buffered && {
        tollgatePctOfBufferedRps: (100 * tg.rps) / buffered.rps,
        addedCpuUsPerReqVsBuffered: tgCpu - cpuOf(buffered, "proxy")?.usPerReq,
        bufferedCpuUsPerReq: cpuOf(buffered, "proxy")?.usPerReq,
      }),
    };
    ratios.push(ratio);
  }
  overhead.ratios = ratios;
  console.log(
    table(
      ["target", "req/s", "p50 ms", "p99 ms", "mean ms", "% of bare", "Δp50", "Δp99", "proxy CPU µs/req", "proxy CPU", "mock µs/req", "client µs/req"],
      rows,
    ),
  );
  console.log("");
  for (const r of ratios) {
    console.log(
      `${r.mode === "streaming" ? "stream:    " : "non-stream:"} tollgate = ${pct(r.tollgatePctOfBareRps)} of the bare proxy's req/s ` +
        `(bare proxy = ${pct(r.bareProxyPctOfMockRps)} of the mock's), added latency p50 ${signed(r.addedP50Ms, 0)} ms, p99 ${signed(r.addedP99Ms, 0)} ms; ` +
        `CPU ${fmt(r.tollgateCpuUsPerReq)} vs ${fmt(r.bareCpuUsPerReq)} µs/req (${fmt(r.cpuRatio, 1)}x, ${signed(r.addedCpuUsPerReq, 0)} µs)` +
        (r.bufferedCpuUsPerReq === undefined
          ? ""
          : `;\n            vs the buffered bare proxy: ${pct(r.tollgatePctOfBufferedRps)} of its req/s, CPU ${signed(r.addedCpuUsPerReqVsBuffered, 0)} µs/req`),
    );
  }
  console.log(otherLoadNote(overhead.modes.non_streaming) + " (non-stream), " + pct(overhead.modes.streaming[0]?.otherLoadPct) + " (stream)");
  console.log(
    `first request to a fresh tollgate: ${fmt(overhead.coldFirstRequestMs, 1)} ms (second: ${fmt(overhead.secondRequestMs, 1)} ms); ` +
      `tollgate RSS after the runs: ${fmt(overhead.tollgateRssMb)} MB`,
  );

  // -------------------------------------------------------------------------------------------
  section("2. Budgets and layered limits: tollgate non-streaming, side by side, per store");
  const STORES = ["memory", "sqlite", "redis"];
  featureRows = {};
  const rows2 = [];
  for (const store of STORES) {
    const fr = await features(mock, store, { redis });
    featureRows[store] = fr;
    const base = fr.find((r) => r.key === "none");
    for (const r of fr) {
      const cpu = cpuOf(r, "proxy")?.usPerReq;
      const baseCpu = cpuOf(base, "proxy")?.usPerReq;
      r.pctOfNone = (100 * r.rps) / base.rps;
      r.addedCpuUsPerReq = cpu - baseCpu;
      rows2.push([
        `${store.padEnd(6)}  ${r.label}`,
        fmt(r.rps),
        r === base ? "-" : pct(r.pctOfNone),
        fmt(r.p50),
        fmt(r.p99),
        fmt(cpu),
        r === base ? "-" : signed(r.addedCpuUsPerReq, 0),
        fmt(cpuOf(r, "redis")?.usPerReq),
        r.roundRps.map((x) => fmt(x)).join(" -> "),
        fmt(r.served),
        `${fmt(r.rssMbAtStart)} -> ${fmt(r.rssMb)}`,
      ]);
    }
  }
  results.features = featureRows;
  console.log(
    table(["store   config", "req/s", "% of none", "p50 ms", "p99 ms", "CPU µs/req", "Δ CPU µs", "redis µs/req", "req/s by round", "served", "RSS MB start -> end"], rows2),
  );
  console.log("\n" + STORES.map((k) => `${k}: ${otherLoadNote(featureRows[k])}`).join(";\n"));
  // Tollgate on Redis next to tollgate on memory, config by config (the two ran minutes apart, not interleaved).
  results.redisVsMemory = FEATURE_SETS.map(({ key, label }) => {
    const [m, r] = ["memory", "redis"].map((s) => featureRows[s].find((x) => x.key === key));
    return {
      key,
      label,
      pctOfMemoryRps: (100 * r.rps) / m.rps,
      addedP50Ms: r.p50 - m.p50,
      addedP99Ms: r.p99 - m.p99,
      addedTollgateCpuUsPerReq: cpuOf(r, "proxy")?.usPerReq - cpuOf(m, "proxy")?.usPerReq,
      redisCpuUsPerReq: cpuOf(r, "redis")?.usPerReq,
    };
  });
  console.log(
    `\ntollgate on redis vs on memory (redis-server ${redis.version}, one for the three gateways, a database each; ` +
      `the memory and redis rows ran about a minute apart, not interleaved, and redis-server shares the machine's CPUs):`,
  );
  for (const x of results.redisVsMemory) {
    console.log(
      `  ${x.label.padEnd(36)} ${pct(x.pctOfMemoryRps).padStart(4)} of memory's req/s, p50 ${signed(x.addedP50Ms, 0)} ms, p99 ${signed(x.addedP99Ms, 0)} ms, ` +
        `tollgate CPU ${signed(x.addedTollgateCpuUsPerReq, 0)} µs/req, redis-server ${fmt(x.redisCpuUsPerReq)} µs/req`,
    );
  }
  console.log(
    "budgets on: plan budget daily $1,000,000 + monthly $10,000,000, route { per: route, usd: $1,000,000, window: 1d }; " +
      "five limits: per user/ip/key/route requests (1e9 per 1m) + per user tokens (1e12 per 1d). None ever refuses: " +
      "the figures are what checking them costs. One key, so every counter is hot (one user, one IP). " +
      "A counter keeps its settled amounts in at most ~65 time buckets per window (1/64 of the window wide), plus its in-flight " +
      "reservations, so what a check reads no longer grows with `served` (see 2b).",
  );

  // -------------------------------------------------------------------------------------------
  section("2b. Store: one reservation (reserve + settle, one usd counter, 1-day window) vs settled reservations already in its window");
  await redis.flushAll();
  const scan = await storeScan({ redis: redis.url(0) });
  results.storeScan = scan;
  const scanRows = [];
  const scanKinds = Object.keys(scan);
  for (const kind of scanKinds) {
    for (const p of scan[kind].points) scanRows.push([kind, fmt(p.entries), fmt(p.usPerReservation, 1)]);
  }
  console.log(table(["store", "settled in window", "median µs"], scanRows));
  console.log(
    `\nslope per 1,000 settled reservations already in the window: ${scanKinds.map((k) => `${k} ${signed(scan[k].usPer1000Entries, 2)} µs`).join(", ")}. ` +
      `A counter keeps settled amounts in time buckets (1/64 of its window wide: 22.5 min for 1 day), at most ~65 per window, ` +
      `plus its in-flight reservations; the 20,000 here land in one or two buckets, and a full day of traffic would fill at most 65. ` +
      `So a reservation costs the same however much traffic the window has seen: the slope is noise around 0. ` +
      `A request with budgets on touches 5 counters (quota peeks daily+monthly, budget reserves daily+monthly+route usd).`,
  );

  // -------------------------------------------------------------------------------------------
  section(
    `2c. Redis commands per request: ${fmt(LOADED_REQUESTS)} requests at ${CONNECTIONS} connections, then ${fmt(SEQUENTIAL_REQUESTS)} one at a time, per config`,
  );
  const counts = await commandsPerRequest(redis, mock.url, FEATURE_SETS);
  results.redisCommands = counts;
  const cols = counts.flatMap((c) => [
    [c, "loaded"],
    [c, "sequential"],
  ]);
  const upper = (k) => k.replace(/^(\S+)/, (m) => m.toUpperCase());
  const keysOf = (field) => {
    const all = new Map();
    for (const [c, m] of cols) for (const [k, v] of Object.entries(c[m][field])) all.set(k, (all.get(k) ?? 0) + v);
    return [...all.entries()].sort((a, b) => b[1] - a[1]).map(([k]) => k);
  };
  const line = (label, get) => [label, ...cols.map(([c, m]) => fmt(get(c[m]), 2))];
  const rows2c = [
    ...keysOf("sentPerRequest").map((k) => line(`sent      ${upper(k)}`, (x) => x.sentPerRequest[k] ?? 0)),
    line("sent      total (round trips)", (x) => x.sentTotalPerRequest),
    ...keysOf("inScriptsPerRequest").map((k) => line(`in script ${upper(k)}`, (x) => x.inScriptsPerRequest[k] ?? 0)),
    line("in script total", (x) => x.inScriptsTotalPerRequest),
    line("all       INFO commandstats total", (x) => x.totalPerRequest),
  ];
  const short = { none: "none", budgets: "budgets", limits: "5 limits" };
  console.log(table(["calls per served request", ...cols.map(([c, m]) => `${short[c.key] ?? c.key} ${m === "loaded" ? `${CONNECTIONS}c` : "1by1"}`)], rows2c));
  const unattributed = counts.flatMap((c) => [c.loaded.unattributed, c.sequential.unattributed]);
  console.log(
    `\nPer config: FLUSHALL, a fresh gateway on db 0, 50 warm-up requests, then INFO commandstats before and after each count ` +
      `(all 2xx; the count waits until Redis has been quiet for 300 ms, so usage records shipped behind are in it). ` +
      `"sent" is what tollgate sends (one EVALSHA per script run; EVAL only after NOSCRIPT); "in script" is what those scripts run ` +
      `inside Redis (INFO commandstats counts both), told apart by a MONITOR connection, which slows Redis: ` +
      `under load only the share of usage records per APPEND_USAGE batch depends on timing. ` +
      `Commands the two sources did not agree on: ${unattributed.every((u) => u === 0) ? "none" : unattributed.join(", ")}.`,
  );
} finally {
  await Promise.all([mock.stop(), redis.stop()]);
}

// ---------------------------------------------------------------------------------------------
section(`3. Pre-flight estimate: input tokens of a ${fmt(PROMPT_CHARS)}-character English prompt (in-process, after warm-up)`);
const pf = preflight();
results.preflight = pf;
console.log(
  table(
    ["estimate", "tokens", "median µs", "p99 µs", "iterations"],
    pf.rows.map((r) => [r.label, fmt(r.tokens), fmt(r.medianUs, 1), fmt(r.p99Us, 1), fmt(r.iterations)]),
  ),
);
console.log(`\nfirst estimate in a fresh process (loads the o200k BPE table): ${fmt(pf.coldFirstEstimateMs)} ms`);

const periods = budgetPeriods();
results.budgetPeriods = periods;
console.log("\nbudget bookkeeping that does not depend on the prompt (calendar/period() from dist/core/calendar.js):\n");
console.log(table(["per call", "median µs", "p99 µs", "iterations"], periods.map((r) => [r.label, fmt(r.medianUs, 1), fmt(r.p99Us, 1), fmt(r.iterations)])));
console.log("a request with a plan budget computes both periods twice (gate 3 peek, gate 6 reservation).");

// ---------------------------------------------------------------------------------------------
section(`4. Cancellation: client disconnect -> upstream abort (stream ${JSON.stringify(SLOW_STREAM)}, client leaves after ${HOLD_MS} ms)`);
const cx = await cancellation();
results.cancellation = { runs: RUNS, holdMs: HOLD_MS, giveUpMs: GIVE_UP_MS, specMs: SPEC_MS, rows: cx };
console.log(
  table(
    ["path", "runs", "aborted", "median ms", `p99 ms`, "max ms", `<= ${SPEC_MS} ms`],
    cx.map((r) => [r.label, fmt(r.runs), `${r.aborted}/${r.runs}`, fmt(r.medianMs, 2), fmt(r.p99Ms, 2), fmt(r.maxMs, 2), `${r.withinSpec}/${r.runs}`]),
  ),
);
const naive = cx.find((r) => r.orphanReport);
if (naive?.orphanReport) {
  const o = naive.orphanReport;
  console.log(
    `\nnaive bare proxy: ${o.stillOpenAtEnd}/${naive.runs} upstream streams were still open when the proxy was stopped ` +
      `(${GIVE_UP_MS} ms wait each); the mock kept generating after the client left: ${o.tokensAfterClientLeft.join(", ")} tokens ` +
      `over ${o.secondsSinceClientLeft.join(", ")} s. p99 of ${RUNS} runs is their maximum.`,
  );
}

// ---------------------------------------------------------------------------------------------
closeSection();
results.sectionSeconds = Object.fromEntries(timings.map(([k, v]) => [k, Math.round(v)]));
const outPath = join(ROOT, "bench", "results.json");
results.totalSeconds = (performance.now() - started) / 1000;
writeFileSync(outPath, JSON.stringify(results, null, 2) + "\n");
console.log(
  `\nfigures written to ${outPath}; configs in ${tempDir()}; total ${fmt(results.totalSeconds)} s ` +
    `(${timings.map(([k, v]) => `§${k} ${fmt(v)} s`).join(", ")})`,
);
