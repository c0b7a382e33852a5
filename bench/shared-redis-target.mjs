// tollgate on Redis as a target of the shared harness (../shared/bench/run.sh, EXTRA_TARGETS_FILE=
// bench/shared-targets-redis.json): starts a private redis-server on a free loopback port, serves
// the harness's config (--config, its `store:` pointed at that Redis) with this checkout's
// dist/cli/main.js on --port, and stops both when the harness stops it.
//
// redis-server runs in a process group of its own, so the harness's "gateway CPU" (the target's
// process group) is tollgate's alone, as for the other stores; redis-server's own CPU is printed
// on stderr when the target stops (the harness keeps it in the target's log) and, while it runs,
// is in /proc/<pid>/stat of the pid printed at the start.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const arg = (name) => {
  const i = process.argv.indexOf(name);
  if (i < 0 || !process.argv[i + 1]) throw new Error(`shared-redis-target: ${name} is required`);
  return process.argv[i + 1];
};
const configPath = arg("--config");
const port = arg("--port");

async function freePort() {
  const srv = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const p = srv.address().port;
  await new Promise((r) => srv.close(r));
  return p;
}

const redisPort = await freePort();
// In a group of its own, with a watchdog that kills it once this wrapper is gone, however it went
// (the harness ends with SIGKILL to the target's group when SIGTERM was not enough).
const watchdog = spawn("sh", ["-c", `redis-server --port ${redisPort} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & r=$!; echo $r; while kill -0 ${process.pid} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 1; done; kill -9 $r 2>/dev/null`], { detached: true, stdio: ["ignore", "pipe", "ignore"] });
const redisPid = Number(await new Promise((resolve) => watchdog.stdout.once("data", (d) => resolve(String(d).trim()))));
process.stderr.write(`shared-redis-target: redis-server pid ${redisPid} on 127.0.0.1:${redisPort}\n`);

const config = parse(readFileSync(configPath, "utf8"));
config.store = `redis://127.0.0.1:${redisPort}/0`;
const dir = mkdtempSync(join(tmpdir(), "tollgate-shared-redis-"));
writeFileSync(join(dir, "tollgate.yaml"), stringify(config));

const cpuMs = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
};

// The gateway's open() waits for Redis (5 s), so it may start before redis-server listens.
const gateway = spawn(process.execPath, [join(ROOT, "dist", "cli", "main.js"), "serve", "--config", join(dir, "tollgate.yaml"), "--port", port], { stdio: "inherit" });

let stopping = false;
/** Stops the gateway first (it ships what it buffered to Redis as it closes), then Redis. */
function stop() {
  if (stopping) return;
  stopping = true;
  gateway.kill("SIGTERM");
}
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, stop);
gateway.on("exit", (code) => {
  try {
    process.stderr.write(`shared-redis-target: redis-server CPU ${cpuMs(redisPid)} ms in all\n`);
    process.kill(redisPid, "SIGKILL");
  } catch {
    // Already gone.
  }
  process.exit(stopping ? 0 : (code ?? 1));
});
