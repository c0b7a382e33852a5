import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/stores/sqlite.js";
import { MockUpstream } from "../src/testing/mock-upstream.js";

/**
 * Library mode, SPEC §7.4: an app killed with `kill -9` while a model call streams through
 * `gate.fetch()` forgets at most a second of what was delivered — the call is checkpointed into its
 * lease like a gateway stream, and the next process on the store settles and records it.
 */
const DIST = join(import.meta.dirname, "..", "dist", "index.js");
let mock: MockUpstream;
/**
 * Lease = timeout + 5 s. The wall clock must outlast the wait for 50 tokens however slowly a
 * loaded machine streams them, or it ends the stream before the kill and nothing is left to recover.
 */
const TIMEOUT = "10s";
const LEASE_MS = 15_000;
const apps: ChildProcess[] = [];

beforeAll(async () => {
  mock = await MockUpstream.start();
});
afterAll(async () => {
  for (const a of apps) a.kill("SIGKILL");
  await mock?.close();
});

/** A small app: one route that streams a model call through gate.fetch() with the openai SDK. */
function startApp(dir: string, db: string): Promise<{ child: ChildProcess; url: string }> {
  const script = join(dir, "app.mjs");
  writeFileSync(
    script,
    `
import http from "node:http";
import OpenAI from "openai";
import { createTollgate } from ${JSON.stringify(DIST)};
const tg = await createTollgate({ config: {
  store: ${JSON.stringify(`sqlite:${db}`)},
  server: { timeout: ${JSON.stringify(TIMEOUT)}, log: "none" },
  providers: { up: { type: "openai", base_url: ${JSON.stringify(`${mock.url}/v1`)}, api_key: "sk-up" } },
  models: { "gpt-4o-mini": { provider: "up" } },
  plans: { free: { models: ["gpt-4o-mini"], budget: { daily: 1 } } },
  keys: [{ key: "tg_app", user: "ava", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "gpt-4o-mini", input: { max_output_tokens: 500 } } },
} });
http.createServer(async (req, res) => {
  const gate = await tg.admit({ route: "chat", ip: "127.0.0.1", token: "tg_app", signal: undefined });
  const client = new OpenAI({ baseURL: ${JSON.stringify(`${mock.url}/v1`)}, apiKey: "unused", fetch: gate.fetch(), maxRetries: 0 });
  const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "go on" }], stream: true });
  res.writeHead(200, { "content-type": "text/plain" });
  for await (const chunk of stream) res.write(chunk.choices[0]?.delta?.content ?? "");
  res.end();
  await gate.end();
}).listen(0, "127.0.0.1", function () { console.log("app on http://127.0.0.1:" + this.address().port); });
`,
  );
  const child = spawn(process.execPath, [script], { cwd: join(import.meta.dirname, ".."), stdio: ["ignore", "pipe", "pipe"] });
  apps.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`app did not start: ${err}`));
      // Only bounds a hung start: a failing one exits at once. Loaded machines need long starts.
    }, 60_000);
    child.stderr!.on("data", (d) => (err += d));
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /app on (http:\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]! });
      }
    });
  });
}

describe("library mode: kill -9 mid-stream", () => {
  it("the next process on the store records and charges what gate.fetch() had delivered", async () => {
    // Inside the project (git-ignored), so the app resolves openai from the project's node_modules.
    const scratch = join(import.meta.dirname, "..", ".tollgate");
    mkdirSync(scratch, { recursive: true });
    const dir = mkdtempSync(join(scratch, "libcrash-"));
    const db = join(dir, "t.db");
    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 40 });
    const app = await startApp(dir, db);
    const reading = fetch(`${app.url}/`).then((r) => r.text()).catch(() => "");
    // Past two seconds of tokens: checkpointed at least once.
    const deadline = Date.now() + 8_000;
    while (!((mock.requests[0]?.chunksSent ?? 0) >= 50) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    const delivered = mock.requests[0]!.chunksSent;
    expect(delivered).toBeGreaterThanOrEqual(50);
    // Still streaming at the kill: neither ended by the mock nor cut by the app's wall clock.
    expect([mock.requests[0]!.finishedAt, mock.requests[0]!.closedAt]).toEqual([undefined, undefined]);
    app.child.kill("SIGKILL");
    await reading;

    // A new process on the same file sweeps at start and every second, once the lease has lapsed.
    const again = await startApp(dir, db);
    let recovered: Awaited<ReturnType<SqliteStore["queryUsage"]>> = [];
    const recoverBy = Date.now() + LEASE_MS + 15_000;
    while (Date.now() < recoverBy && !recovered.length) {
      await new Promise((r) => setTimeout(r, 100));
      const store = SqliteStore.open(db);
      recovered = (await store.queryUsage({ since: 0 })).filter((r) => r.signals.includes("recovered_after_crash"));
      await store.close();
    }
    again.child.kill("SIGKILL");
    expect(recovered).toHaveLength(1);
    const [rec] = recovered;
    expect(rec!.parent_id).toBeTruthy();
    expect(rec!.endpoint).toBe("chat_completions");
    expect(rec!.cost_usd).toBeGreaterThan(0);
    // At most a second of tokens (25 at 40 ms) forgotten; never more than was delivered.
    expect(rec!.output_tokens).toBeGreaterThanOrEqual(delivered - 26);
    expect(rec!.output_tokens).toBeLessThanOrEqual(delivered + 2);
  }, 90_000);
});
