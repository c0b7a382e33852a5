import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import type { UsageRecord } from "../src/core/usage-record.js";

const CLI = join(import.meta.dirname, "..", "dist", "cli", "main.js");

/** A real `tollgate serve` process on a free port, with its stdout usage records collected. */
export class GatewayProcess {
  readonly records: UsageRecord[] = [];
  stdout = "";
  stderr = "";
  url = "";
  private exited?: Promise<number | null>;

  private constructor(readonly child: ChildProcess, readonly configPath: string) {}

  /** `wrap`: a command that runs the gateway's command line (e.g. `unshare -rm sh -c '…; exec "$@"' sh`). */
  static async start(config: object | string, env: NodeJS.ProcessEnv = {}, wrap: string[] = []): Promise<GatewayProcess> {
    const dir = mkdtempSync(join(tmpdir(), "tollgate-e2e-"));
    const configPath = join(dir, "tollgate.yaml");
    writeFileSync(configPath, typeof config === "string" ? config : stringify(config));
    const command = [...wrap, process.execPath, CLI, "serve", "--config", configPath, "--port", "0"];
    const child = spawn(command[0]!, command.slice(1), {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const gw = new GatewayProcess(child, configPath);
    // A test run that dies must not leave gateways behind.
    const reap = () => child.kill("SIGKILL");
    process.once("exit", reap);
    child.once("exit", () => process.off("exit", reap));
    gw.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    let pending = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      gw.stdout += d;
      pending += d;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.startsWith("{")) gw.records.push(JSON.parse(line));
      }
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (gw.stderr += d));
    await new Promise<void>((resolve, reject) => {
      // A gateway that is still starting when the test gives up must not outlive it.
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`gateway did not start:\n${gw.stderr}`));
        // A start that fails exits at once; this only bounds a hung one. Four starting together
        // on a machine at load 25 (vitest's own import took 21 s) needed more than 30 s.
      }, 60_000);
      const check = () => {
        const m = /tollgate listening on (http:\/\/\S+)/.exec(gw.stdout);
        if (m) {
          clearTimeout(timer);
          gw.url = m[1]!;
          resolve();
        }
      };
      child.stdout!.on("data", check);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited with ${code}:\n${gw.stderr}`));
      });
    });
    return gw;
  }

  /**
   * Starts several gateways together. If one fails, the others are stopped once their own start
   * settles, so a failed start leaves no sibling running past the test.
   */
  static async startAll(configs: (object | string)[], env: NodeJS.ProcessEnv = {}): Promise<GatewayProcess[]> {
    const starts = await Promise.allSettled(configs.map((c) => GatewayProcess.start(c, env)));
    const failed = starts.find((s) => s.status === "rejected");
    if (!failed) return starts.map((s) => (s as PromiseFulfilledResult<GatewayProcess>).value);
    await Promise.all(starts.map((s) => (s.status === "fulfilled" ? s.value.stop("SIGKILL") : undefined)));
    throw failed.reason;
  }

  /** Waits until `n` usage records have been printed. */
  async waitForRecords(n: number, timeoutMs = 5_000): Promise<UsageRecord[]> {
    const start = Date.now();
    while (this.records.length < n) {
      if (Date.now() - start > timeoutMs) throw new Error(`expected ${n} usage records, got ${this.records.length}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.records;
  }

  /**
   * Waits until the records stand for `n` requests: past server.max_refusal_records_per_s a
   * summary record carries `count` refusals, written once its second is over.
   */
  async waitForRequests(n: number, timeoutMs = 5_000): Promise<UsageRecord[]> {
    const start = Date.now();
    const total = () => this.records.reduce((a, r) => a + (r.count ?? 1), 0);
    while (total() < n) {
      if (Date.now() - start > timeoutMs) throw new Error(`expected records for ${n} requests, got ${total()}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.records;
  }

  /** The usage record of the request a response answered (by its x-tollgate-request-id). */
  recordOf(response: { headers: Headers }, timeoutMs = 5_000): Promise<UsageRecord> {
    return this.recordFor(response.headers.get("x-tollgate-request-id"), timeoutMs);
  }

  /** Waits for the usage record of one request (records are printed just after the response). */
  async recordFor(requestId: string | null, timeoutMs = 5_000): Promise<UsageRecord> {
    const start = Date.now();
    for (;;) {
      const rec = this.records.find((r) => r.request_id === requestId);
      if (rec) return rec;
      if (Date.now() - start > timeoutMs) throw new Error(`no usage record for request ${requestId}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited!;
  }
}

/** Runs the CLI to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

export function writeConfig(config: object | string): string {
  const dir = mkdtempSync(join(tmpdir(), "tollgate-cfg-"));
  const path = join(dir, "tollgate.yaml");
  writeFileSync(path, typeof config === "string" ? config : stringify(config));
  return path;
}
