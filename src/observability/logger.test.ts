import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../config/resolve.js";
import { configSchema } from "../config/schema.js";
import { emptyUsageRecord } from "../core/usage-record.js";
import { createLogs } from "./logger.js";

const config = resolveConfig(
  configSchema.parse({
    admin_key: "admin-secret-0001",
    providers: { up: { type: "openai", base_url: "http://127.0.0.1:1/v1", api_key: "sk-provider-secret-0002" } },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    keys: [{ key: "tg_static_secret_0003", user: "alice", plan: "free" }],
    jwt: { secret: "jwt-secret-0004-long-enough" },
    routes: { chat: { path: "/chat", plans: ["free"], challenge: { for: "all", secret: "challenge-secret-0005-at-least-32-chars" } } },
  }),
);
const challengeKeys = [config.routes[0]!.challenge!.signatureSecret, config.routes[0]!.challenge!.keySecret];

function sink() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  });
  return { stream, lines };
}

describe("logs", () => {
  it("writes each usage record as exactly its own JSON, one line, nothing added, within the same turn", async () => {
    const out = sink();
    const logs = createLogs(config, { stdout: out.stream, stderr: sink().stream });
    const rec = { ...emptyUsageRecord("req-1", new Date(0)), user: 'a "quoted"\nuser', clamped: { max_tokens: { from: null, to: 800 } }, signals: ["near_cap_prompt"], cost_usd: 0.000123 };
    logs.usage(rec);
    logs.usage(emptyUsageRecord("req-2", new Date(0)));
    await new Promise((r) => setImmediate(r));
    expect(out.lines).toEqual([JSON.stringify(rec), JSON.stringify(emptyUsageRecord("req-2", new Date(0)))]);
  });

  it("keeps every secret the config holds, and any bearer or tollgate key, out of the operational log", () => {
    const err = sink();
    const logs = createLogs(config, { stdout: sink().stream, stderr: err.stream });
    logs.ops.info({ headers: { authorization: "Bearer tg_whatever_1234567", "x-api-key": "sk-provider-secret-0002" }, api_key: "x" }, "plain");
    logs.ops.warn("upstream said: invalid key sk-provider-secret-0002 for admin-secret-0001");
    logs.ops.error({ err: new Error("jwt-secret-0004-long-enough rejected tg_static_secret_0003 and tg_store_key_abcdefgh") }, "boom");
    logs.ops.info({ note: "Authorization: Bearer some-opaque-token" }, "header echo");
    logs.ops.warn(`signing with ${challengeKeys.join(" and ")}`);
    const text = err.lines.join("\n");
    for (const secret of ["sk-provider-secret-0002", "admin-secret-0001", "tg_static_secret_0003", "jwt-secret-0004-long-enough", "tg_whatever_1234567", "tg_store_key_abcdefgh", "some-opaque-token", ...challengeKeys]) {
      expect(text).not.toContain(secret);
    }
    expect(err.lines).toHaveLength(5);
    expect(JSON.parse(err.lines[0]!)).toMatchObject({ level: 30, msg: "plain", headers: { authorization: "[redacted]", "x-api-key": "[redacted]" }, api_key: "[redacted]" });
  });

  it("writes nothing on stdout with server.log: none", async () => {
    const out = sink();
    const logs = createLogs({ ...config, server: { ...config.server, log: "none" } }, { stdout: out.stream, stderr: sink().stream });
    logs.usage(emptyUsageRecord("req-3", new Date(0)));
    await new Promise((r) => setImmediate(r));
    expect(out.lines).toEqual([]);
  });
});

describe("usage line batching", () => {
  it("writes the records finished in one turn of the event loop in one write, each still its own line", async () => {
    const writes: string[] = [];
    const stream = new Writable({
      write(chunk, _enc, done) {
        writes.push(String(chunk));
        done();
      },
    });
    const logs = createLogs(config, { stdout: stream, stderr: sink().stream });
    for (let i = 0; i < 100; i++) logs.usage(emptyUsageRecord(`req-${i}`, new Date(0)));
    expect(writes).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(1);
    expect(writes[0]!.split("\n").filter(Boolean).map((l) => JSON.parse(l).request_id)).toEqual(Array.from({ length: 100 }, (_, i) => `req-${i}`));
    logs.usage(emptyUsageRecord("req-next", new Date(0)));
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(2);
  });

  it("does not lose lines still batched when the process exits at once (serve ends in process.exit)", () => {
    const batch = pathToFileURL(join(import.meta.dirname, "../../dist/observability/line-batch.js")).href;
    const script = `import { LineBatch } from ${JSON.stringify(batch)}; const b = new LineBatch(process.stdout); b.push("one\\n"); b.push("two\\n"); process.exit(0);`;
    expect(execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" })).toBe("one\ntwo\n");
  });
});
