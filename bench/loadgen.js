// The load generator, always in a child process so the bench's own work never competes with the
// gateway inside one event loop: wrk (1 thread, closed loop, Lua script for the body and a JSON
// summary), or autocannon from node_modules when wrk is not installed (1 ms latency resolution,
// and it costs more CPU than wrk, which a 2-core machine feels).
import { execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(import.meta.url);

export const LOADGEN = process.env.BENCH_LOADGEN ?? (hasWrk() ? "wrk" : "autocannon");

function hasWrk() {
  try {
    execFileSync("wrk", ["--version"], { stdio: "ignore" });
    return true;
  } catch (err) {
    // wrk --version exits 1 after printing its version; only a missing binary is ENOENT.
    return err.code !== "ENOENT";
  }
}

/** Runs one child to completion with a hard deadline (killed, by its own group, past it). */
function run(cmd, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const kill = () => {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        /* gone */
      }
    };
    const timer = setTimeout(kill, timeoutMs);
    process.once("exit", kill);
    child.once("close", (code) => {
      clearTimeout(timer);
      process.off("exit", kill);
      resolve({ code, out, err });
    });
  });
}

const luaStr = (s) => {
  let eq = "=";
  while (s.includes(`]${eq}]`)) eq += "=";
  return `[${eq}[${s}]${eq}]`;
};

/**
 * @param {{ url: string, body: object, headers: Record<string,string>, connections: number, seconds: number, dir: string, tag: string }} o
 * @returns {Promise<{ requests: number, rps: number, p50: number, p99: number, non2xx: number, errors: number, seconds: number }>}
 */
export async function load(o) {
  return LOADGEN === "wrk" ? wrk(o) : autocannon(o);
}

async function wrk({ url, body, headers, connections, seconds, dir, tag }) {
  const script = join(dir, `wrk-${tag}.lua`);
  writeFileSync(
    script,
    [
      'wrk.method = "POST"',
      `wrk.body = ${luaStr(JSON.stringify(body))}`,
      ...Object.entries(headers).map(([k, v]) => `wrk.headers[ ${luaStr(k)} ] = ${luaStr(v)}`),
      "done = function(summary, latency, requests)",
      "  local e = summary.errors",
      `  io.write(string.format('WRKJSON {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50":%.0f,"p99":%.0f}\\n',`,
      "    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))",
      "end",
    ].join("\n"),
  );
  const r = await run("wrk", ["-t1", `-c${connections}`, `-d${seconds}s`, "--timeout", "10s", "-s", script, url], (seconds + 20) * 1000);
  const m = /WRKJSON (\{.*\})/.exec(r.out);
  if (!m) throw new Error(`wrk gave no summary (exit ${r.code}): ${r.err || r.out}`);
  const j = JSON.parse(m[1]);
  return {
    requests: j.requests,
    seconds: j.duration_us / 1e6,
    rps: j.requests / (j.duration_us / 1e6),
    p50: j.p50 / 1000,
    p99: j.p99 / 1000,
    non2xx: j.status,
    errors: j.connect + j.read + j.write + j.timeout,
  };
}

async function autocannon({ url, body, headers, connections, seconds }) {
  const bin = require.resolve("autocannon/autocannon.js");
  const args = [bin, "-c", String(connections), "-d", String(seconds), "-m", "POST", "-b", JSON.stringify(body), "-j", "--timeout", "10"];
  for (const [k, v] of Object.entries(headers)) args.push("-H", `${k}=${v}`);
  args.push(url);
  const r = await run(process.execPath, args, (seconds + 20) * 1000);
  const j = JSON.parse(r.out.slice(r.out.indexOf("{")));
  return {
    requests: j.requests.total,
    seconds: j.duration,
    rps: j.requests.total / j.duration,
    p50: j.latency.p50,
    p99: j.latency.p99,
    non2xx: j.non2xx,
    errors: j.errors + j.timeouts,
  };
}
