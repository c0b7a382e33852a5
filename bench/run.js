// `npm run bench`: tollgate's cost per request next to the mock upstream and a bare proxy, what
// budgets and limits add on each store, the pre-flight estimate, and cancellation latency.
// Prints a table per section and writes every figure to bench/results.json.
//
// Environment: BENCH_SECONDS (measured seconds per target, default 5),
// BENCH_PROFILE=DIR (run every throughput gateway under --cpu-prof, profiles written to DIR;
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
import { features, MOCK_BEHAVIOR, proxyOverhead, startMock } from "./throughput.js";

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
  featureRows = {};
  const rows2 = [];
  for (const store of ["memory", "sqlite"]) {
    const fr = await features(mock, store);
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
        r.roundRps.map((x) => fmt(x)).join(" -> "),
        fmt(r.served),
        `${fmt(r.rssMbAtStart)} -> ${fmt(r.rssMb)}`,
      ]);
    }
  }
  results.features = featureRows;
  console.log(table(["store   config", "req/s", "% of none", "p50 ms", "p99 ms", "CPU µs/req", "Δ CPU µs", "req/s by round", "served", "RSS MB start -> end"], rows2));
  console.log("\n" + ["memory", "sqlite"].map((k) => `${k}: ${otherLoadNote(featureRows[k])}`).join("; "));
  console.log(
    "budgets on: plan budget daily $1,000,000 + monthly $10,000,000, route { per: route, usd: $1,000,000, window: 1d }; " +
      "five limits: per user/ip/key/route requests (1e9 per 1m) + per user tokens (1e12 per 1d). None ever refuses: " +
      "the figures are what checking them costs. One key, so every counter is hot (one user, one IP): " +
      "each usd/token counter (and each 1m request counter, as a gateway lives < 1 min here) ends with about `served` entries (see 2b).",
  );
} finally {
  await mock.stop();
}

section("2b. Store: one reservation (reserve + settle, one usd counter, 1-day window) vs entries already in its window");
const scan = await storeScan();
results.storeScan = scan;
const scanRows = [];
for (const kind of ["memory", "sqlite"]) {
  for (const p of scan[kind].points) scanRows.push([kind, fmt(p.entries), fmt(p.usPerReservation, 1)]);
}
console.log(table(["store", "entries in window", "median µs"], scanRows));
console.log(
  `\nslope: memory ${fmt(scan.memory.usPer1000Entries, 1)} µs, sqlite ${fmt(scan.sqlite.usPer1000Entries, 1)} µs per 1,000 entries per counter scanned. ` +
    `A request with budgets on scans 5 counters (quota peeks daily+monthly, budget reserves daily+monthly+route usd); ` +
    `usd and token windows hold one entry per request, bounded by traffic, not by the limit.`,
);

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
