// Child processes of `npm run bench`: each in its own process group, stopped by group id only,
// on success, on error, on SIGINT/SIGTERM and from a last-resort exit hook. Also free ports,
// port readiness and machine load from /proc.
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { createServer, connect } from "node:net";

const live = new Set();

/** Starts `cmd args` detached (its own process group), stdout+stderr to `logFile`. */
export function startProcess(name, cmd, args, { env = {}, logFile, cwd } = {}) {
  const fd = openSync(logFile, "a");
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, detached: true, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  const p = { name, pid: child.pid, child, logFile, exited: null };
  p.exitedPromise = new Promise((resolve) => child.once("exit", (code, sig) => resolve((p.exited = { code, sig }))));
  live.add(p);
  return p;
}

/** SIGTERM to the group, SIGKILL after `graceMs`. */
export async function stopProcess(p, graceMs = 5_000) {
  if (!live.has(p)) return;
  live.delete(p);
  if (p.exited) return;
  signalGroup(p.pid, "SIGTERM");
  const timer = setTimeout(() => signalGroup(p.pid, "SIGKILL"), graceMs);
  await p.exitedPromise;
  clearTimeout(timer);
}

export const stopAll = () => Promise.all([...live].map((p) => stopProcess(p)));

function signalGroup(pid, sig) {
  try {
    process.kill(-pid, sig);
  } catch {
    /* already gone */
  }
}

process.once("exit", () => {
  for (const p of live) signalGroup(p.pid, "SIGKILL");
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    stopAll().finally(() => process.exit(130));
  });
}

/** A loopback port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once `port` accepts a connection; fails when `p` exits first or after `timeoutMs`. */
export async function waitPort(port, p, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (p.exited) throw new Error(`${p.name} exited (${JSON.stringify(p.exited)}) before listening; see ${p.logFile}`);
    const ok = await new Promise((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${p.name} did not listen on ${port} within ${timeoutMs} ms; see ${p.logFile}`);
}

/** Busy share of the whole machine between two readings of machineBusy(). */
export function machineBusy() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    return { idle, total };
  } catch {
    return undefined;
  }
}
