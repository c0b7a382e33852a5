// The bench's private Redis (a throwaway redis-server on a free loopback port, as the tests use)
// and section 2c: the Redis commands one request costs, per config.
//
// Counting: INFO commandstats before and after a fixed number of requests gives every command
// Redis ran, but it counts the commands a Lua script runs as well as the EVALSHA that ran it. A
// MONITOR connection over the same requests tells the two apart (a command run by a script is
// reported with source "lua") and names the script behind each EVALSHA, by its SHA1. MONITOR makes
// Redis several times slower, which changes no count except how many usage records share a batch.
import { createHash } from "node:crypto";
import autocannon from "autocannon";
import { Redis } from "ioredis";
import { RedisServer } from "../dist/testing/redis-server.js";
import { SCRIPTS } from "../dist/stores/redis-scripts.js";
import { BENCH_KEY, chatBody, gatewayConfig, writeConfig } from "./configs.js";
import { CONNECTIONS, startTollgate } from "./lib.js";

const CHAT = "/v1/chat/completions";
/** Requests per count: under load (CONNECTIONS at once, so usage records ship in batches) and one at a time. */
export const LOADED_REQUESTS = 1_000;
export const SEQUENTIAL_REQUESTS = 200;
/** A count ends once Redis has seen nothing from the gateway for this long (usage records ship behind). */
const QUIET_MS = 300;
/** Commands of the bench's own connections, not of tollgate. */
const ADMIN = new Set(["info", "flushall", "config", "monitor", "client", "ping"]);

const scriptBySha = new Map(SCRIPTS.map((s) => [createHash("sha1").update(s.lua).digest("hex"), s.name]));

/** Starts redis-server and an admin connection to it. */
export async function startRedis() {
  const server = await RedisServer.start();
  const admin = new Redis(server.url(), { lazyConnect: true, maxRetriesPerRequest: 1 });
  await admin.connect();
  return {
    server,
    admin,
    port: server.port,
    url: (db) => server.url(db),
    version: (await admin.info("server")).match(/redis_version:(\S+)/)?.[1],
    flushAll: () => admin.flushall(),
    pid: Number((await admin.info("server")).match(/process_id:(\d+)/)?.[1]),
    async stop() {
      admin.disconnect();
      await server.dispose();
    },
  };
}

/** INFO commandstats as { command: calls }. */
async function commandStats(admin) {
  const out = {};
  for (const m of (await admin.info("commandstats")).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** A MONITOR connection that tallies tollgate's commands: sent (by script name for EVALSHA/EVAL) and run inside scripts. */
async function startMonitor(url) {
  const client = new Redis(url, { lazyConnect: true });
  await client.connect();
  const monitor = await client.monitor();
  const tally = { sent: {}, inScripts: {}, lastAt: performance.now() };
  monitor.on("monitor", (_time, args, source) => {
    const cmd = String(args[0]).toLowerCase();
    if (ADMIN.has(cmd)) return;
    tally.lastAt = performance.now();
    if (source === "lua") {
      tally.inScripts[cmd] = (tally.inScripts[cmd] ?? 0) + 1;
      return;
    }
    const name = cmd === "evalsha" ? `${cmd} ${scriptBySha.get(String(args[1])) ?? String(args[1]).slice(0, 8)}` : cmd;
    tally.sent[name] = (tally.sent[name] ?? 0) + 1;
  });
  return {
    tally,
    reset() {
      tally.sent = {};
      tally.inScripts = {};
    },
    /** Resolves once Redis has seen nothing from tollgate for QUIET_MS (write-behind usage has shipped). */
    async quiet(timeoutMs = 5_000) {
      const deadline = performance.now() + timeoutMs;
      while (performance.now() - tally.lastAt < QUIET_MS && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    },
    stop: () => {
      monitor.disconnect();
      client.disconnect();
    },
  };
}

async function sequential(url, n) {
  const body = JSON.stringify(chatBody());
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${BENCH_KEY}` }, body });
    await res.arrayBuffer();
    if (res.ok) ok++;
  }
  return ok;
}

async function loaded(url, n) {
  const r = await autocannon({
    url,
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${BENCH_KEY}` },
    body: JSON.stringify(chatBody()),
    connections: CONNECTIONS,
    amount: n,
  });
  if (r["2xx"] !== n || r.non2xx || r.errors || r.timeouts) {
    throw new Error(`redis command count: ${r["2xx"]} of ${n} requests 2xx (${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts)`);
  }
  return r["2xx"];
}

const diff = (after, before) =>
  Object.fromEntries(
    Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)])
      .filter(([k, v]) => v > 0 && !ADMIN.has(k.split("|")[0])),
  );
const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);

/**
 * Section 2c: for each config, on an emptied Redis and a fresh gateway, the commands Redis ran for
 * LOADED_REQUESTS requests at CONNECTIONS at once, then for SEQUENTIAL_REQUESTS one at a time.
 * @param {{ key: string, label: string, opts: object }[]} configs
 */
export async function commandsPerRequest(redis, mockUrl, configs) {
  const out = [];
  for (const f of configs) {
    await redis.flushAll();
    const tg = await startTollgate(writeConfig(`redis-count-${f.key}`, gatewayConfig({ upstreamUrl: mockUrl, store: redis.url(0), ...f.opts })));
    const monitor = await startMonitor(redis.url(0));
    try {
      const url = `${tg.url}/chat${CHAT}`;
      // Warm-up: the first use of each script (EVAL after NOSCRIPT) and the JIT stay out of the count.
      await sequential(url, 50);
      const row = { key: f.key, label: f.label };
      for (const [mode, n, run] of [
        ["loaded", LOADED_REQUESTS, loaded],
        ["sequential", SEQUENTIAL_REQUESTS, sequential],
      ]) {
        await monitor.quiet();
        monitor.reset();
        const before = await commandStats(redis.admin);
        const served = await run(url, n);
        if (served !== n) throw new Error(`redis command count (${f.key}, ${mode}): ${served} of ${n} requests 2xx`);
        await monitor.quiet();
        const stats = diff(await commandStats(redis.admin), before);
        const { sent, inScripts } = monitor.tally;
        row[mode] = {
          served,
          perRequest: Object.fromEntries(Object.entries(stats).map(([k, v]) => [k, v / served])),
          totalPerRequest: sum(stats) / served,
          sentPerRequest: Object.fromEntries(Object.entries(sent).map(([k, v]) => [k, v / served])),
          sentTotalPerRequest: sum(sent) / served,
          inScriptsPerRequest: Object.fromEntries(Object.entries(inScripts).map(([k, v]) => [k, v / served])),
          inScriptsTotalPerRequest: sum(inScripts) / served,
          /** INFO commandstats total minus what MONITOR saw: 0 unless some command escaped the monitor. */
          unattributed: sum(stats) - sum(sent) - sum(inScripts),
        };
      }
      out.push(row);
    } finally {
      monitor.stop();
      await tg.stop();
    }
  }
  return out;
}
