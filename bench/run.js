// `npm run bench`: what a user of tollgate feels, as issue 15 measures it. A fast mock upstream in
// its own process, a bare undici proxy (the floor any Node gateway pays) and tollgate on each store,
// all driven by an external load generator (wrk, or autocannon) at 32 connections, back to back in
// one run. The robust figure is the gateway's CPU µs per request (from /proc), and its ratio to the
// floor's in the same run; req/s and latency depend on what else the 2 shared cores are doing.
//
// Environment: BENCH_SECONDS (per measurement, default 4), BENCH_WARMUP (s, 2, as the shared harness), BENCH_ROUNDS (2,
// target order rotated each round), BENCH_TARGETS (floor,tg-nolimits,tg-memory,tg-sqlite,tg-redis; also min: bench/min-gateway.js, the least a metering gateway does;
// bare401: a node:http server answering a fixed 401, a refusal's lower bound),
// (also tg-budget-user, tg-budget-levels: memory, no limits, budgets of one level or three),
// BENCH_SCENARIOS (nonstream,stream,refusal; also the refusals of a known key, on the targets with
// limits: ratelimited 429, forbidden 403, budget 402; and stream-paced: the stream a token a ms), BENCH_CONNECTIONS (32), BENCH_LOADGEN (wrk|autocannon),
// BENCH_PROFILE=DIR (tollgate runs under --cpu-prof; summarise with `node bench/profile-stages.js`),
// BENCH_BASE=DIR (another built checkout: a target named `tg-memory@base` runs DIR's dist, so a
// change is measured before/after in the same run).
// `npm run bench:details` has the older sections: Redis commands per request, store scans, the
// pre-flight estimate and cancellation latency.
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { BENCH_KEYS, OTHER_MODEL, tollgateConfig } from "./configs.js";
import { cpuMs, fmt, ROOT, rssMb, syscalls, table } from "./lib.js";
import { load, LOADGEN } from "./loadgen.js";
import { freePort, machineBusy, startProcess, stopAll, stopProcess, waitPort } from "./procs.js";

const env = process.env;
const SECONDS = Number(env.BENCH_SECONDS ?? 4);
const WARMUP = Number(env.BENCH_WARMUP ?? 2);
/** As the shared harness: the warm-up's last requests finish before the measured run starts. */
const DRAIN_MS = 500;
const ROUNDS = Number(env.BENCH_ROUNDS ?? 2);
const CONNS = Number(env.BENCH_CONNECTIONS ?? 32);
const TARGETS = (env.BENCH_TARGETS ?? "floor,tg-nolimits,tg-memory,tg-sqlite,tg-redis").split(",");
const SCENARIOS = (env.BENCH_SCENARIOS ?? "nonstream,stream,refusal").split(",");
const { KEY, MODEL } = BENCH_KEYS;
const dir = mkdtempSync(join(tmpdir(), "tollgate-bench-"));

const MESSAGES = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "Say hello in one short sentence." },
];
/** The shared harness's scenarios: 16-token answers, 50-token streams with a usage chunk, a bad key. */
const SCENARIO = {
  nonstream: { tokens: 16, key: KEY, body: { model: MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0 } },
  stream: { tokens: 50, key: KEY, body: { model: MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0, stream: true, stream_options: { include_usage: true } } },
  // The same stream paced as a real provider sends it (a token every ms): each event reaches the
  // gateway in its own socket read and leaves in its own write, so what a gateway does per read
  // shows. The harness's stream (and the one above) arrives whole in one read (the mock corks it).
  "stream-paced": { tokens: 50, tokenMs: 1, key: KEY, body: { model: MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0, stream: true, stream_options: { include_usage: true } } },
  refusal: { tokens: 16, key: "sk-not-a-key", body: { model: MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0 }, expect: 401 },
  // The refusals of a known key (issue 15: each ≤ 0.5× the floor), on the targets with limits.
  // A key whose per-minute window is full: 429 after its one request of the minute.
  ratelimited: { tokens: 16, key: BENCH_KEYS.limited, body: { model: MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0 }, expect: 429, limited: true },
  // A model the key's plan does not offer: 403 model_not_allowed (gate 5, after the body).
  forbidden: { tokens: 16, key: KEY, body: { model: OTHER_MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0 }, expect: 403, limited: true },
  // A key whose daily budget is spent: what is left ($0.0001) is less than any call's estimate,
  // which is how a budget ends under reservations (402 budget_exceeded at gate 6).
  budget: { tokens: 16, key: BENCH_KEYS.broke, body: { model: MODEL, messages: MESSAGES, max_tokens: 256, temperature: 0 }, expect: 402, limited: true },
};
/** Targets a `limited` scenario runs on: the configs with limits and the keys it needs. */
const LIMITED = new Set(["tg-memory", "tg-sqlite", "tg-redis"]);

const LABEL = {
  floor: "node-floor (bare undici proxy)",
  min: "least metering gateway (bench/min-gateway.js)",
  bare401: "bare node:http answering a fixed 401",
  "tg-nolimits": "tollgate, memory, no limits",
  "tg-memory": "tollgate, memory, 3 limits + budget",
  "tg-sqlite": "tollgate, SQLite, same limits",
  "tg-redis": "tollgate, Redis, same limits",
  "tg-budget-user": "tollgate, memory, user budget only",
  "tg-budget-levels": "tollgate, memory, user + org + key budgets",
};

async function startMock() {
  const port = await freePort();
  const p = startProcess("mock", process.execPath, [join(ROOT, "bench", "fast-mock.js")], { env: { PORT: String(port), TOKENS: "16" }, logFile: join(dir, "mock.log") });
  await waitPort(port, p);
  return { ...p, origin: `http://127.0.0.1:${port}`, port };
}

async function startRedis() {
  const { RedisServer } = await import("../dist/testing/redis-server.js");
  const server = await RedisServer.start();
  const { Redis } = await import("ioredis");
  const admin = new Redis(server.url(), { maxRetriesPerRequest: 1 });
  const info = await admin.info("server");
  /**
   * Script calls (EVALSHA, EVAL) redis-server took so far: the round trips of the store's counter
   * ops. commandstats also counts the commands a script runs inside, so other commands are left
   * out; the bench's keys are in the config, so no request sends a key lookup of its own.
   */
  const commands = async () => {
    const stats = await admin.info("commandstats");
    let n = 0;
    for (const m of stats.matchAll(/cmdstat_(evalsha|eval):calls=(\d+)/g)) n += Number(m[2]);
    return n;
  };
  return { server, admin, commands, pid: Number(/process_id:(\d+)/.exec(info)?.[1]), version: /redis_version:(\S+)/.exec(info)?.[1] };
}

async function startTarget(target, mock, redis) {
  const [name, variant] = target.split("@");
  const root = variant === "base" ? env.BENCH_BASE : ROOT;
  if (!root) throw new Error(`${target}: set BENCH_BASE to the checkout to compare with`);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/v1/chat/completions`;
  if (name === "bare401") {
    const p = startProcess(name, process.execPath, [join(ROOT, "bench", "bare-401.js")], { env: { PORT: String(port) }, logFile: join(dir, `${name}.log`) });
    await waitPort(port, p);
    return { name: target, p, url };
  }
  if (name === "floor" || name === "min") {
    const p = startProcess(name, process.execPath, [join(ROOT, "bench", name === "floor" ? "node-floor.js" : "min-gateway.js")], { env: { PORT: String(port), UPSTREAM: mock.origin, USAGE_LOG: join(dir, `${name}-usage.log`) }, logFile: join(dir, `${name}.log`) });
    await waitPort(port, p);
    return { name: target, p, url };
  }
  const store = { "tg-nolimits": "memory:", "tg-memory": "memory:", "tg-budget-user": "memory:", "tg-budget-levels": "memory:", "tg-sqlite": `sqlite:${join(dir, "bench.db")}`, "tg-redis": redis?.server.url(1) }[name];
  if (!store) throw new Error(`unknown target ${name}`);
  const config = join(dir, `${target}.yaml`);
  const dbs = targets.length + 1;
  const budgets = { "tg-nolimits": "none", "tg-budget-user": "user", "tg-budget-levels": "levels" }[name];
  const limits = name !== "tg-nolimits" && !name.startsWith("tg-budget-");
  writeFileSync(config, stringify(tollgateConfig(name === "tg-sqlite" ? `sqlite:${join(dir, `${target}.db`)}` : name === "tg-redis" ? redis.server.url(dbs) : store, limits, budgets)));
  const prof = env.BENCH_PROFILE ? ["--cpu-prof", "--cpu-prof-dir", env.BENCH_PROFILE, "--cpu-prof-name", `${target}.cpuprofile`] : [];
  const p = startProcess(target, process.execPath, [...prof, join(root, "dist", "cli", "main.js"), "serve", "--config", config, "--port", String(port)], {
    env: { MOCK_URL: `${mock.origin}/v1` },
    logFile: join(dir, `${target}.log`),
  });
  await waitPort(port, p);
  return { name: target, p, url, redisPid: name === "tg-redis" ? redis.pid : undefined, redis: name === "tg-redis" ? redis : undefined };
}

async function setMockTokens(mock, tokens, tokenMs = 0) {
  const res = await fetch(`${mock.origin}/__config`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tokens, token_ms: tokenMs }) });
  if (!res.ok) throw new Error(`mock /__config: ${res.status}`);
}

/** One request per target and scenario, checked, before any load: a broken target must not produce figures. */
async function smoke(t, sc, name) {
  const send = () => fetch(t.url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${sc.key}` }, body: JSON.stringify(sc.body) });
  let res = await send();
  // The limited key's one request a day is served: the next is the 429 measured.
  if (sc.expect === 429 && res.status === 200) res = (await res.text(), await send());
  const text = await res.text();
  const want = sc.expect ?? 200;
  if (t.name === "floor" && sc.expect) return;
  if (res.status !== want) throw new Error(`${t.name} ${name}: status ${res.status}, expected ${want}: ${text.slice(0, 300)}`);
  if (want === 200 && !text.includes('"completion_tokens"')) throw new Error(`${t.name} ${name}: no usage in the answer: ${text.slice(0, 300)}`);
}

const results = { when: new Date().toISOString(), machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version }, loadgen: LOADGEN, connections: CONNS, seconds: SECONDS, rounds: ROUNDS, cells: {} };
const started = performance.now();
const gitHead = (() => {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
  } catch {
    return "?";
  }
})();

console.log("# tollgate bench\n");
console.log(
  `${results.machine.cpus} CPUs (${results.machine.model}), Node ${process.version}, source ${gitHead}. Load: ${LOADGEN} in a child process, ${CONNS} connections, ` +
    `${ROUNDS} round(s) of ${SECONDS} s per target and scenario (after ${WARMUP} s warm-up), target order rotated each round. Scratch: ${dir}`,
);

const redisWanted = TARGETS.some((t) => t.startsWith("tg-redis"));
const mock = await startMock();
const redis = redisWanted ? await startRedis() : undefined;
const targets = [];
try {
  for (const name of TARGETS) targets.push(await startTarget(name, mock, redis));
  for (const name of SCENARIOS) {
    const sc = SCENARIO[name];
    if (!sc) throw new Error(`unknown scenario ${name}`);
    await setMockTokens(mock, sc.tokens, sc.tokenMs);
    const runs = targets.filter((t) => (sc.limited ? LIMITED.has(t.name.split("@")[0]) : !(t.name === "floor" && sc.expect) && !(t.name === "bare401" && !sc.expect)));
    if (!runs.length) continue;
    for (const t of runs) await smoke(t, sc, name);
    const acc = new Map(runs.map((t) => [t.name, { requests: 0, warmup: 0, seconds: 0, cpuMs: 0, redisMs: 0, redisCalls: 0, reads: 0, writes: 0, non2xx: 0, errors: 0, p50: [], p99: [], busy: [], roundCpuUs: [] }]));
    for (let round = 0; round < ROUNDS; round++) {
      const order = runs.map((_, i) => runs[(i + round) % runs.length]);
      for (const t of order) {
        const o = { url: t.url, body: sc.body, headers: { "content-type": "application/json", authorization: `Bearer ${sc.key}` }, connections: CONNS, dir };
        if (WARMUP > 0) acc.get(t.name).warmup += (await load({ ...o, seconds: WARMUP, tag: `${t.name}-${name}-warm` })).requests;
        await new Promise((r) => setTimeout(r, DRAIN_MS));
        const s0 = syscalls(t.p.pid);
        const c0 = cpuMs(t.p.pid);
        const r0 = t.redisPid ? cpuMs(t.redisPid) : 0;
        const k0 = t.redis ? await t.redis.commands() : 0;
        const m0 = machineBusy();
        const r = await load({ ...o, seconds: SECONDS, tag: `${t.name}-${name}` });
        const m1 = machineBusy();
        const a = acc.get(t.name);
        const roundCpuMs = cpuMs(t.p.pid) - c0;
        a.cpuMs += roundCpuMs;
        // Indexed by round, so each ratio pairs a target with the floor measured minutes, not rounds, apart.
        a.roundCpuUs[round] = (1000 * roundCpuMs) / r.requests;
        const s1 = syscalls(t.p.pid);
        if (s0 && s1) (a.reads += s1.reads - s0.reads), (a.writes += s1.writes - s0.writes);
        if (t.redisPid) a.redisMs += cpuMs(t.redisPid) - r0;
        if (t.redis) a.redisCalls += (await t.redis.commands()) - k0;
        a.requests += r.requests;
        a.seconds += r.seconds;
        a.non2xx += r.non2xx;
        a.errors += r.errors;
        a.p50.push(r.p50);
        a.p99.push(r.p99);
        if (m0 && m1) a.busy.push((100 * (1 - (m1.idle - m0.idle) / (m1.total - m0.total))) | 0);
      }
    }
    const cell = {};
    for (const t of runs) {
      const a = acc.get(t.name);
      const expectedNon2xx = sc.expect ? a.requests : 0;
      // The limited key's window admits one request a minute.
      const served = sc.expect === 429 ? Math.ceil(a.seconds / 60) + ROUNDS : 0;
      if (a.errors || a.non2xx > expectedNon2xx || a.non2xx < expectedNon2xx - served) throw new Error(`${t.name} ${name}: ${a.errors} errors, ${a.non2xx} non-2xx of ${a.requests} (expected ${expectedNon2xx})`);
      cell[t.name] = {
        requests: a.requests,
        /** Warm-up included: what a --cpu-prof profile of the run saw (the smoke request aside). */
        served: a.requests + a.warmup,
        rps: a.requests / a.seconds,
        p50: median(a.p50),
        p99: median(a.p99),
        cpuUsPerReq: (1000 * a.cpuMs) / a.requests,
        /** read() and write() calls per request: 2 and 2 when every answer arrives in one read. */
        readsPerReq: a.reads / a.requests,
        writesPerReq: a.writes / a.requests,
        redisUsPerReq: t.redisPid ? (1000 * a.redisMs) / a.requests : undefined,
        /** Script calls per request: the round trips a request costs Redis. */
        redisCallsPerReq: t.redis ? a.redisCalls / a.requests : undefined,
        roundCpuUs: a.roundCpuUs,
        machineBusyPct: median(a.busy),
        rssMb: rssMb(t.p.pid),
      };
    }
    results.cells[name] = cell;
  }
} finally {
  await Promise.all(targets.map((t) => stopProcess(t.p)));
  await stopProcess(mock);
  redis?.admin.disconnect();
  await redis?.server.dispose();
  await stopAll();
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
}

// A refusal is compared with the floor serving a whole non-streaming request: turning a request
// away should cost less than proxying it.
const floorOf = (scenario) => results.cells[SCENARIO[scenario]?.expect ? "nonstream" : scenario]?.floor;
const rows = [];
for (const [scenario, cell] of Object.entries(results.cells)) {
  const floor = floorOf(scenario);
  for (const [name, c] of Object.entries(cell)) {
    const isFloor = name === "floor";
    c.cpuXFloor = floor && !isFloor ? c.cpuUsPerReq / floor.cpuUsPerReq : undefined;
    // Each round's ratio on its own: their spread is this run's noise, the yardstick for "the same
    // ratio as the shared harness" (one 10 s sample per target, so a single draw from that spread).
    const perRound = floor && !isFloor ? c.roundCpuUs.map((us, i) => us / floor.roundCpuUs[i]).filter(Number.isFinite) : [];
    c.cpuXFloorRounds = perRound.length ? [Math.min(...perRound), Math.max(...perRound)] : undefined;
    c.rpsXFloor = floor && !isFloor && !SCENARIO[scenario]?.expect ? c.rps / floor.rps : undefined;
    c.p99MinusFloorMs = floor && !isFloor && !SCENARIO[scenario]?.expect ? c.p99 - floor.p99 : undefined;
    rows.push([
      scenario,
      LABEL[name.split("@")[0]] ? `${LABEL[name.split("@")[0]]}${name.includes("@") ? ` @${name.split("@")[1]}` : ""}` : name,
      fmt(c.rps),
      c.rpsXFloor === undefined ? "-" : `${fmt(c.rpsXFloor, 2)}×`,
      fmt(c.p50, 2),
      fmt(c.p99, 2),
      c.p99MinusFloorMs === undefined ? "-" : `${c.p99MinusFloorMs >= 0 ? "+" : ""}${fmt(c.p99MinusFloorMs, 1)}`,
      fmt(c.cpuUsPerReq),
      isFloor ? "1.0×" : c.cpuXFloor === undefined ? "-" : `${fmt(c.cpuXFloor, 2)}×`,
      c.cpuXFloorRounds === undefined ? "-" : `${fmt(c.cpuXFloorRounds[0], 2)}-${fmt(c.cpuXFloorRounds[1], 2)}×`,
      c.redisUsPerReq === undefined ? "-" : fmt(c.redisUsPerReq),
      c.redisCallsPerReq === undefined ? "-" : fmt(c.redisCallsPerReq, 2),
      `${fmt(c.readsPerReq, 2)} / ${fmt(c.writesPerReq, 2)}`,
      `${fmt(c.machineBusyPct)}%`,
    ]);
  }
}
console.log("");
console.log(table(["scenario", "target", "req/s", "× floor", "p50 ms", "p99 ms", "Δp99 ms", "gateway CPU µs/req", "× floor CPU", "× floor, rounds", "redis-server µs/req", "redis calls/req", "reads / writes per req", "machine busy"], rows));
console.log(
  `\n× floor: against node-floor in the same run and scenario (a refusal against the floor's non-streaming request). ` +
    `Gateway CPU µs/req: user+system CPU of the gateway process / requests served, from /proc; the figure to compare on a shared machine. ` +
    `× floor, rounds: the lowest and highest of the rounds' own ratios, this run's noise; the shared harness takes one sample, so its ratio is one draw from such a spread. ` +
    `Streams: 50 tokens, latency to the last byte (stream-paced: a token every ms, so one socket read per event). Refusal: a bad key, 401; ratelimited: a full per-minute window, 429; ` +
    `forbidden: a model the plan does not offer, 403; budget: a daily budget spent, 402.`,
);
results.totalSeconds = (performance.now() - started) / 1000;
const out = join(ROOT, "bench", "results.json");
writeFileSync(out, JSON.stringify(results, null, 2) + "\n");
console.log(`\nfigures in ${out}; ${fmt(results.totalSeconds)} s in all.`);
