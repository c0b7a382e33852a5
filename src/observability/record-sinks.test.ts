import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../config/resolve.js";
import { configSchema } from "../config/schema.js";
import { emptyUsageRecord, type UsageRecord } from "../core/usage-record.js";
import { Observability } from "./index.js";

const config = resolveConfig(
  configSchema.parse({
    providers: { sim: { type: "simulated" } },
    models: { "gpt-4o-mini": { provider: "sim" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    routes: { chat: { path: "/chat", plans: ["free"] } },
  }),
);

const served = (id: string): UsageRecord => ({ ...emptyUsageRecord(id, new Date(0)), route: "chat", endpoint: "chat_completions", plan: "free", model: "gpt-4o-mini", cost_usd: 0.00001, input_tokens: 3, output_tokens: 4, ended: "complete" });

/** An Observability writing its usage lines into `writes`. */
function observed() {
  const writes: string[] = [];
  const stdout = new Writable({
    write(chunk, _enc, done) {
      writes.push(String(chunk));
      done();
    },
  });
  const obs = new Observability(config, { stdout, stderr: new Writable({ write: (_c, _e, done) => done() }) });
  const lines = () => writes.join("").split("\n").filter(Boolean).map((l) => (JSON.parse(l) as UsageRecord).request_id);
  return { obs, writes, lines };
}

/** What /metrics counts: requests and tokens. */
async function counted(obs: Observability): Promise<{ requests: number; tokens: number }> {
  const sum = async (name: string) => ((await obs.metrics.registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
  return { requests: await sum("tollgate_requests_total"), tokens: await sum("tollgate_tokens_total") };
}

const turn = () => new Promise((r) => setImmediate(r));

describe("record sinks", () => {
  it("run at the end of the turn a record was handed over in, for all of the turn's records, each once", async () => {
    const { obs, writes, lines } = observed();
    for (let i = 0; i < 50; i++) obs.onRecord(served(`req-${i}`));
    // Handing a record over is all the engine waits for: nothing has reached a sink yet.
    expect(writes).toEqual([]);
    expect(obs.tail.recent()).toEqual([]);
    await turn();
    expect(writes).toHaveLength(1);
    expect(lines()).toEqual(Array.from({ length: 50 }, (_, i) => `req-${i}`));
    expect(obs.tail.recent().map((r) => r.request_id)).toEqual(lines());
    expect(await counted(obs)).toEqual({ requests: 50, tokens: 350 });
    await turn();
    await turn();
    expect(lines()).toHaveLength(50);
    expect(await counted(obs)).toEqual({ requests: 50, tokens: 350 });
  });

  it("are run at once by flush (a reader of the metrics or the tail, shutdown), and not again at the turn's end", async () => {
    const { obs, lines } = observed();
    obs.onRecord(served("early"));
    obs.flush();
    expect(lines()).toEqual(["early"]);
    expect(await counted(obs)).toEqual({ requests: 1, tokens: 7 });
    await turn();
    expect(lines()).toEqual(["early"]);
    expect(await counted(obs)).toEqual({ requests: 1, tokens: 7 });
  });

  it("keep the other sinks going when one throws", async () => {
    const { obs, lines } = observed();
    obs.metrics.record = () => {
      throw new Error("broken sink");
    };
    obs.onRecord(served("a"));
    obs.onRecord(served("b"));
    await turn();
    expect(lines()).toEqual(["a", "b"]);
    expect(obs.tail.recent().map((r) => r.request_id)).toEqual(["a", "b"]);
  });

  it("do not lose a record handed over just before the process exits at once (serve ends in process.exit)", () => {
    const dist = (p: string) => JSON.stringify(pathToFileURL(join(import.meta.dirname, "../../dist", p)).href);
    const script = [
      `import { Observability } from ${dist("observability/index.js")};`,
      `import { resolveConfig } from ${dist("config/resolve.js")};`,
      `import { configSchema } from ${dist("config/schema.js")};`,
      `import { emptyUsageRecord } from ${dist("core/usage-record.js")};`,
      `const obs = new Observability(resolveConfig(configSchema.parse(${JSON.stringify({ providers: {}, models: {}, plans: {}, routes: {} })})));`,
      `obs.onRecord(emptyUsageRecord("last-1", new Date(0)));`,
      `obs.onRecord(emptyUsageRecord("last-2", new Date(0)));`,
      `process.exit(0);`,
    ].join("\n");
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    expect(out.split("\n").filter(Boolean).map((l) => JSON.parse(l).request_id)).toEqual(["last-1", "last-2"]);
  });
});
