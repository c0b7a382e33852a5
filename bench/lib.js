// Shared helpers for `npm run bench`: child processes, load runs, CPU accounting, stats, tables.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";

export const ROOT = join(import.meta.dirname, "..");
export const CLI = join(ROOT, "dist", "cli", "main.js");

// ------------------------------------------------------------------------------------------------
// Child processes

/**
 * Spawns `node ...args` and resolves once a stdout line matches `ready` (its first group is the
 * URL). stdout after that line is drained and dropped, so a chatty child cannot stall on a full pipe.
 */
export async function startChild(name, args, ready, { env = {}, timeoutMs = 20_000, ipc = false } = {}) {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal)));
  child.stderr.setEncoding("utf8").on("data", (d) => {
    if (stderr.length < 64_000) stderr += d;
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start in ${timeoutMs} ms:\n${stderr}`)), timeoutMs);
    const onData = (d) => {
      stdout += d;
      const m = ready.exec(stdout);
      if (!m) return;
      clearTimeout(timer);
      stdout = "";
      resolve(m[1]);
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready:\n${stderr}`));
    });
  });
  return {
    name,
    child,
    url,
    pid: child.pid,
    get stderr() {
      return stderr;
    },
    send: (msg) => request(child, msg),
    /** SIGTERM (tollgate drains and exits 0), SIGKILL after `graceMs`. */
    async stop(graceMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** One IPC request/response with a child that answers `{ id, ... }`. */
function request(child, msg) {
  const id = Math.random().toString(36).slice(2);
  return new Promise((resolve) => {
    const onMessage = (m) => {
      if (m?.id !== id) return;
      child.off("message", onMessage);
      resolve(m);
    };
    child.on("message", onMessage);
    child.send({ ...msg, id });
  });
}

export const startMock = (behavior) =>
  startChild("mock upstream", [join(ROOT, "bench", "mock-server.js"), JSON.stringify(behavior)], /mock listening on (http:\/\/\S+)/, { ipc: true });

export const startBareProxy = (upstreamUrl, mode = "abort-aware") =>
  startChild("bare proxy", [join(ROOT, "bench", "bare-proxy.js"), upstreamUrl, mode], /bare proxy listening on (http:\/\/\S+)/);

/** `tollgate serve` on a config file; BENCH_PROFILE=DIR adds --cpu-prof (written on SIGTERM exit). */
export function startTollgate(configPath, { profileName } = {}) {
  const prof = process.env.BENCH_PROFILE && profileName ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_PROFILE, "--cpu-prof-name", `${profileName}.cpuprofile`] : [];
  return startChild("tollgate", [...prof, CLI, "serve", "--config", configPath, "--port", "0"], /tollgate listening on (http:\/\/\S+)/);
}

// ------------------------------------------------------------------------------------------------
// CPU time of a process, from /proc (Linux), so a run can report CPU per request per process:
// on a shared, noisy 2-core machine that is steadier than requests/s.

let clockTicks;
function ticksPerSecond() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** user+system CPU milliseconds of `pid` so far, or undefined where /proc is not available. */
export function cpuMs(pid) {
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may hold spaces) start at field 3.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/**
 * read() and write() system calls of `pid` so far (all its threads), from /proc/PID/io: how many
 * socket reads and writes a request costs, i.e. how much a gateway's event loop batched.
 */
export function syscalls(pid) {
  try {
    const io = readFileSync(`/proc/${pid}/io`, "utf8");
    return { reads: Number(/syscr: (\d+)/.exec(io)?.[1]), writes: Number(/syscw: (\d+)/.exec(io)?.[1]) };
  } catch {
    return undefined;
  }
}

/** Busy CPU milliseconds of the whole machine (all CPUs) so far, from /proc/stat. */
export function machineBusyMs() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return ((user + nice + system + irq + softirq + (steal ?? 0)) * 1000) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------------------------------------
// Load runs

export const CONNECTIONS = 32;
/** Seconds of measured load per target, split into ROUNDS interleaved rounds. */
export const SECONDS_PER_TARGET = Number(process.env.BENCH_SECONDS ?? 5);
export const ROUNDS = 4;
export const WARMUP_S = 2;

function cannon(url, body, duration) {
  return autocannon({
    url,
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer tg_bench_key" },
    body: JSON.stringify(body),
    connections: CONNECTIONS,
    duration,
    // autocannon checks for the end of a run once per sample interval: at the default 1 s, a
    // 1.25 s run would last 2 s. Requests/s are computed from totals and wall time, not samples.
    sampleInt: 250,
    skipAggregateResult: true,
  });
}

/**
 * Measures several targets side by side: each is warmed up for WARMUP_S, then they take turns
 * (A B C A B C ...) for ROUNDS rounds of SECONDS_PER_TARGET / ROUNDS, so that a noisy neighbour
 * on a shared machine hurts all of them alike rather than whichever ran at the wrong moment.
 * Latency histograms of a target's rounds are merged. CPU time is read from /proc for every
 * process in a target's `procs` ({ label: pid }) over its measured rounds only.
 *
 * @param {{ label: string, url: string, body: object, procs?: Record<string, number> }[]} targets
 */
export async function compare(targets) {
  const acc = targets.map(() => ({ raws: [], wallMs: 0, cpu: {}, roundRps: [], warmupRequests: 0 }));
  for (const [i, t] of targets.entries()) acc[i].warmupRequests = (await cannon(t.url, t.body, WARMUP_S)).totalCompletedRequests;
  const ours = [...new Set([process.pid, ...targets.flatMap((t) => Object.values(t.procs ?? {}))])];
  const oursMs = () => ours.reduce((sum, pid) => sum + (cpuMs(pid) ?? 0), 0);
  const machine0 = machineBusyMs();
  const ours0 = oursMs();
  const wall0 = performance.now();
  const roundS = SECONDS_PER_TARGET / ROUNDS;
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, t] of targets.entries()) {
      const procs = t.procs ?? {};
      const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuMs(pid)]));
      const started = performance.now();
      const raw = await cannon(t.url, t.body, roundS);
      const wallMs = performance.now() - started;
      const a = acc[i];
      a.raws.push(raw);
      a.wallMs += wallMs;
      a.roundRps.push((1000 * raw.totalCompletedRequests) / wallMs);
      for (const [k, pid] of Object.entries(procs)) {
        const after = cpuMs(pid);
        if (before[k] === undefined || after === undefined) continue;
        a.cpu[k] = (a.cpu[k] ?? 0) + (after - before[k]);
      }
    }
  }
  // CPU that processes other than ours used meanwhile (other test runs on a shared machine).
  const machine1 = machineBusyMs();
  const otherLoadPct =
    machine0 === undefined || machine1 === undefined
      ? undefined
      : Math.max(0, (100 * (machine1 - machine0 - (oursMs() - ours0))) / ((performance.now() - wall0) * cpus().length));
  return targets.map((t, i) => {
    const a = acc[i];
    const r = autocannon.aggregateResult(a.raws, { url: t.url, connections: CONNECTIONS });
    const total = r.requests.total;
    const cpu = Object.fromEntries(
      Object.entries(a.cpu).map(([k, ms]) => [k, { pctOfCore: (100 * ms) / a.wallMs, usPerReq: total ? (1000 * ms) / total : undefined }]),
    );
    return {
      label: t.label,
      rps: (1000 * total) / a.wallMs,
      /** Everything this target served in compare(), warm-up included. */
      served: total + a.warmupRequests,
      roundRps: a.roundRps,
      total,
      ok: r["2xx"],
      non2xx: r.non2xx,
      errors: r.errors,
      timeouts: r.timeouts,
      p50: r.latency.p50,
      p99: r.latency.p99,
      mean: r.latency.average,
      cpu,
      otherLoadPct,
    };
  });
}

/** Fails the bench when a run was not all 2xx: a refused request is not a served one. */
export function assertAllOk(label, run) {
  if (run.non2xx || run.errors || run.timeouts) {
    throw new Error(`${label}: ${run.non2xx} non-2xx, ${run.errors} errors, ${run.timeouts} timeouts out of ${run.total}`);
  }
}

// ------------------------------------------------------------------------------------------------
// Stats and output

export function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

export const median = (xs) => quantile([...xs].sort((a, b) => a - b), 0.5);

export function fmt(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return "-";
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export const pct = (n, digits = 0) => (n === undefined || Number.isNaN(n) ? "-" : `${fmt(n, digits)}%`);
export const signed = (n, digits = 1) => (n === undefined || Number.isNaN(n) ? "-" : `${n >= 0 ? "+" : ""}${fmt(n, digits)}`);

/** A table with a header row; columns after the first are right-aligned. */
export function table(headers, rows) {
  const cells = [headers, ...rows].map((r) => r.map((c) => String(c)));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

export function section(title) {
  console.log(`\n## ${title}\n`);
}

/** Resident memory of `pid` in MB, from /proc. */
export function rssMb(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** One request, timed end to end (body read); for the first request a fresh gateway serves. */
export async function timedRequest(url, body) {
  const t0 = performance.now();
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer tg_bench_key" },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return { status: res.status, ms: performance.now() - t0 };
}
