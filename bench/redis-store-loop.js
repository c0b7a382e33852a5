// The Redis store alone: what one bench request asks of it (tollgate-bench.yaml's limits: two request
// windows, the daily budget and the daily token window, reserved together and settled together,
// one usage record), CONCURRENCY requests at a time, no HTTP. Prints, per request: redis-server CPU
// (from /proc), the CPU Redis itself accounts to commands (INFO commandstats usec, which leaves out
// the event loop and the sockets), script calls, and the commands the scripts ran.
//
// `npm run build && node bench/redis-store-loop.js [requests] [rounds]`; BENCH_BASE=<checkout> runs
// that checkout's built store instead (same loop, same server), for a before/after.
// LOOP_CONCURRENCY (32) sets how many requests run at once; 1 puts every op in a script call of its own.
// LOOP_SHAPE=split: two reserves and two settles per request (the engine before phase 8a).
// LOOP_CALLGRIND=1 also prints redis-server's instructions per request: the loop runs at native
// speed (under valgrind the store's 650 ms deadline is missed), every script call it made is kept
// and then replayed, one at a time, into a redis-server under callgrind; only the measured rounds
// are counted. A figure the machine's load does not move. LOOP_CAPTURE=file keeps the calls (JSON)
// for replays of variant scripts.
// LOOP_CLOCK=1 gives the store the local clock as its time override (every op carries its time):
// a replay then runs each op at the time it ran natively, so a settle finds the in-flight fields
// its reserve made. Without it, the replayed reserves run at the replay's (slower) TIME while the
// settles name fields of the native run's times: they miss, and in-flight fields pile up.
// LOOP_REPLAY=file replays a LOOP_CAPTURE file's calls under callgrind with this checkout's scripts
// and runs nothing natively: a variant of a script body on the very same calls (same arguments),
// for a lever that changes only what the script does with them.
import { spawn, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Redis } from "ioredis";
import { record } from "./store-loop-record.js";

const ROOT = resolve(process.env.BENCH_BASE ?? join(import.meta.dirname, ".."));
const { RedisServer } = await import(join(ROOT, "dist/testing/redis-server.js"));
const { RedisStore } = await import(join(ROOT, "dist/stores/redis.js"));
const { SCRIPTS } = await import(join(ROOT, "dist/stores/redis-scripts.js"));

const REQUESTS = Number(process.argv[2] ?? 20_000);
const ROUNDS = Number(process.argv[3] ?? 3);
const CONCURRENCY = Number(process.env.LOOP_CONCURRENCY ?? 32);
const CALLGRIND = process.env.LOOP_CALLGRIND === "1";
const DAY = 86_400_000;
const TICKS = 100; // clock ticks per second (/proc stat units)

// LOOP_SHAPE=split: the shape before phase 8 (gate 3's two request windows and gate 6's budget and
// token window reserved and settled apart); otherwise one reserve of all four and one settle (8a).
const SPLIT = process.env.LOOP_SHAPE === "split";
const QUOTA = [
  { key: "limit:main:user:bench-user:requests:60000", max: 1e8, amount: 1, windowMs: 60_000 },
  { key: "limit:main:ip:127.0.0.1:requests:60000", max: 1e8, amount: 1, windowMs: 60_000 },
];
const BUDGET = [
  { key: "budget:user:bench-user:day:2026-12-07", max: 1e12, amount: 482, windowMs: 2 * DAY },
  { key: "limit:main:user:bench-user:tokens:86400000", max: 1e10, amount: 820, windowMs: DAY },
];

async function request(store, n) {
  const id = `req-${n}`;
  if (SPLIT) {
    const q = await store.reserve(`${id}:q`, QUOTA, 600_000, true);
    const b = await store.reserve(`${id}:b`, BUDGET, 600_000, true);
    if (!q.ok || !b.ok) throw new Error("bench counter refused");
    await Promise.all([store.settle(`${id}:q`, [1, 1]), store.settle(`${id}:b`, [11, 28])]);
  } else {
    // As the engine's gates reserve (ownerSettles: phase 11c's marker instead of a record; builds before it ignore the flag).
    const r = await store.reserve(id, [...QUOTA, ...BUDGET], 600_000, true);
    if (!r.ok) throw new Error("bench counter refused");
    await store.settle(id, [1, 1, 11, 28]);
  }
  await store.appendUsage(record(id));
}

async function loop(store, from, count) {
  let next = from;
  const end = from + count;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < end) await request(store, next++);
  }));
}

const cpuTicks = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(f[11]) + Number(f[12]);
};

async function stats(admin) {
  const out = {};
  for (const m of (await admin.info("commandstats")).matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  return out;
}

async function freePort() {
  const srv = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** redis-server under callgrind, counting nothing until toggled on. */
async function callgrindRedis() {
  const port = await freePort();
  const out = join(mkdtempSync(join(tmpdir(), "tg-redis-cg-")), "cg.out");
  const child = spawn("valgrind", ["--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${out}`, "redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const url = `redis://127.0.0.1:${port}/0`;
  for (let i = 0; ; i++) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on("error", () => {});
    const up = await probe.connect().then(() => true, () => false);
    probe.disconnect();
    if (up) break;
    if (i > 600) throw new Error("redis-server under valgrind did not start");
    await new Promise((r) => setTimeout(r, 200));
  }
  const instrument = (state) => execFileSync("callgrind_control", ["-i", state, String(child.pid)], { stdio: "ignore" });
  return {
    url: () => url,
    instrument,
    async dispose() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      const totals = readFileSync(out, "utf8").match(/^totals: (\d+)/m);
      console.log(`callgrind output: ${out} (callgrind_annotate --inclusive=yes it)`);
      return Number(totals?.[1] ?? NaN);
    },
  };
}

/**
 * Sends the script calls the store made, in order and one at a time (the store has one BATCH in
 * flight at a time), to a redis-server under callgrind, counting only those from `from` on. No
 * deadline applies here, so valgrind's slowness changes nothing but the batches' TIME.
 */
async function replay(calls, from) {
  const cg = await callgrindRedis();
  const client = new Redis(cg.url());
  try {
    const shas = new Set();
    for (const s of SCRIPTS) shas.add(await client.script("LOAD", s.lua));
    const batch = SCRIPTS.find((s) => s.name === "batch");
    const batchSha = createHash("sha1").update(batch.lua).digest("hex");
    for (let i = 0; i < calls.length; i++) {
      if (i === from) cg.instrument("on");
      const [name, args] = calls[i];
      // A capture made with another build's scripts (LOOP_REPLAY): the loop calls only BATCH.
      if (name === "evalsha" && !shas.has(args[0])) args[0] = batchSha;
      await client.call(name, ...args);
    }
    cg.instrument("off");
  } finally {
    client.disconnect();
  }
  return cg.dispose();
}

/** The arguments of a command the store encoded itself (resp.ts): RESP bulk strings after the name. */
function respArgs(bytes) {
  const parts = [];
  let o = bytes.indexOf("\r\n") + 2;
  while (o < bytes.length) {
    const eol = bytes.indexOf("\r\n", o);
    const n = Number(bytes.toString("latin1", o + 1, eol));
    parts.push(bytes.toString("utf8", eol + 2, eol + 2 + n));
    o = eol + 4 + n;
  }
  return parts.slice(1);
}

if (process.env.LOOP_REPLAY) {
  const { measuredFrom: from, requests, calls: kept } = JSON.parse(readFileSync(process.env.LOOP_REPLAY, "utf8"));
  const total = await replay(kept, from);
  console.log(`redis-server instructions per request (callgrind replay of ${kept.length - from} script calls of ${process.env.LOOP_REPLAY}): ${Math.round(total / requests)}`);
  process.exit(0);
}

const server = await RedisServer.start();
const admin = new Redis(server.url());
const pid = Number(/process_id:(\d+)/.exec(await admin.info("server"))[1]);
for (const s of SCRIPTS) await admin.script("LOAD", s.lua);
const store = await RedisStore.open(server.url(), { connectTimeoutMs: 30_000, ...(process.env.LOOP_CLOCK === "1" ? { clock: () => Date.now() } : {}) });
// Under LOOP_CALLGRIND every script call is kept, to be replayed under callgrind afterwards: the
// loop itself runs at native speed, so its batches are what a real gateway's would be.
const calls = [];
if (CALLGRIND || process.env.LOOP_CAPTURE) {
  const send = store.redis.sendCommand.bind(store.redis);
  store.redis.sendCommand = (command, ...rest) => {
    if (command.name === "evalsha" || command.name === "eval") calls.push([command.name, command.args.length ? command.args.map(String) : respArgs(command.toWritable())]);
    return send(command, ...rest);
  };
}
let measuredFrom = 0;
let instructions = NaN;
try {
  await loop(store, 1_000_000, 2_000); // warm-up: scripts loaded, JIT warm
  await new Promise((r) => setTimeout(r, 300));
  measuredFrom = calls.length;
  const rows = [];
  for (let round = 0; round < ROUNDS; round++) {
    await admin.config("resetstat");
    const t0 = cpuTicks(pid);
    const c0 = process.cpuUsage();
    await loop(store, 2_000 + round * REQUESTS, REQUESTS);
    await new Promise((r) => setTimeout(r, 300)); // usage records ship behind
    const c1 = process.cpuUsage(c0);
    const s = await stats(admin);
    const serverUs = ((cpuTicks(pid) - t0) * 1e6) / TICKS / REQUESTS;
    const scripts = (s.evalsha?.calls ?? 0) + (s.eval?.calls ?? 0);
    const cmdUs = Object.entries(s).filter(([k]) => !["info", "config", "evalsha", "eval"].includes(k)).reduce((a, [, v]) => a + v.usec, 0);
    const scriptUs = (s.evalsha?.usec ?? 0) + (s.eval?.usec ?? 0);
    rows.push({
      serverCpuUs: serverUs, scriptUs: scriptUs / REQUESTS, innerCmdUs: cmdUs / REQUESTS, scriptCalls: scripts / REQUESTS, clientCpuUs: (c1.user + c1.system) / REQUESTS,
      inner: Object.fromEntries(Object.entries(s).filter(([k]) => !["info", "config", "evalsha", "eval"].includes(k)).map(([k, v]) => [k, `${+(v.calls / REQUESTS).toFixed(2)}x ${(v.usec / REQUESTS).toFixed(1)}us`])),
    });
  }
  const f = (x) => x.toFixed(1);
  console.log(`${ROOT}: ${REQUESTS} requests x ${ROUNDS} rounds, ${CONCURRENCY} at a time`);
  for (const r of rows) {
    console.log(`redis-server CPU ${f(r.serverCpuUs)} µs/req | script usec ${f(r.scriptUs)} | script calls ${r.scriptCalls.toFixed(3)}/req | client CPU ${f(r.clientCpuUs)} µs/req | in scripts: ${JSON.stringify(r.inner)}`);
  }
} finally {
  await store.close();
  admin.disconnect();
  await server.dispose();
}
if (process.env.LOOP_CAPTURE) writeFileSync(process.env.LOOP_CAPTURE, JSON.stringify({ measuredFrom, requests: REQUESTS * ROUNDS, calls }));
if (CALLGRIND) {
  instructions = await replay(calls, measuredFrom);
  console.log(`redis-server instructions per request (callgrind replay of ${calls.length - measuredFrom} script calls, ${CONCURRENCY} at a time): ${Math.round(instructions / (REQUESTS * ROUNDS))}`);
}
