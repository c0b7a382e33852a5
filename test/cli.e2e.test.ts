import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MockUpstream } from "../src/testing/mock-upstream.js";
import { GatewayProcess, runCli, writeConfig } from "./gateway-process.js";

let mock: MockUpstream;
beforeAll(async () => {
  mock = await MockUpstream.start();
});
afterAll(() => mock?.close());

const valid = () => ({
  store: "memory:",
  providers: { openai: { type: "openai", base_url: "https://api.openai.com/v1", api_key: "env:CLI_TEST_OPENAI_KEY" }, local: { type: "simulated" } },
  models: { "gpt-4o-mini": { provider: "openai" }, "house-model": { provider: "local", price: { input: 0.5, output: 1.5 } } },
  plans: { free: { models: ["gpt-4o-mini", "house-model"], budget: { daily: 0.1 } } },
  routes: { chat: { path: "/chat", plans: ["free"], limits: [{ per: "user", requests: 20, window: "1d" }], input: { max_output_tokens: 800 } } },
});

describe("tollgate CLI", () => {
  it("check prints what the config resolved to, prices and their source included, secrets masked", async () => {
    const r = await runCli(["check", "--config", writeConfig(valid())], { CLI_TEST_OPENAI_KEY: "sk-cli-secret-value" });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/gpt-4o-mini\s+-> openai\/gpt-4o-mini\s+in \$0\.15\/1M\s+out \$0\.60\/1M.*\[catalog openai\/gpt-4o-mini\]/);
    expect(r.stdout).toMatch(/house-model.*in \$0\.50\/1M\s+out \$1\.50\/1M.*\[config\]/);
    expect(r.stdout).toContain("limit chat.0: 20 requests per 1d per user");
    expect(r.stdout).not.toContain("sk-cli-secret-value");
  });

  for (const [name, mutate, expected] of [
    ["a bad duration", (c: any) => (c.routes.chat.limits[0].window = "1 day"), 'routes.chat.limits[0].window: expected a duration like "1m", "1h", "1d"'],
    ["an unknown provider", (c: any) => (c.models["gpt-4o-mini"].provider = "openia"), 'models.gpt-4o-mini.provider: unknown provider "openia"'],
    ["a model with no price", (c: any) => (c.models["my-model"] = { provider: "local" }), "models.my-model.price: no price"],
    ["a misspelled key", (c: any) => (c.routes.chat.input = { max_prompt_char: 8000 }), 'routes.chat.input.max_prompt_char: unknown key (did you mean "max_prompt_chars"?)'],
  ] as const) {
    it(`exits 2 naming the field for ${name}`, async () => {
      const cfg = valid();
      mutate(cfg);
      const file = writeConfig(cfg);
      for (const cmd of ["check", "serve"]) {
        const r = await runCli([cmd, "--config", file], { CLI_TEST_OPENAI_KEY: "x" });
        expect(r.code).toBe(2);
        expect(r.stderr).toContain(expected);
      }
    });
  }

  it("schema prints a JSON Schema an editor can use", async () => {
    const r = await runCli(["schema"]);
    expect(r.code).toBe(0);
    const schema = JSON.parse(r.stdout);
    expect(schema.properties.routes).toBeDefined();
    expect(schema.additionalProperties).toBe(false);
  });

  it("--help lists the commands; an unknown command exits 2", async () => {
    const help = await runCli(["--help"]);
    expect(help.code).toBe(0);
    for (const cmd of ["serve", "check", "demo", "keys", "usage", "schema"]) expect(help.stdout).toContain(cmd);
    expect((await runCli(["frobnicate"])).code).toBe(2);
  });

  it("serve drains an in-flight stream on SIGTERM and exits 0", async () => {
    mock.setBehavior({ outputTokens: 20, tokenIntervalMs: 50 });
    const gw = await GatewayProcess.start({
      store: "memory:",
      providers: { up: { type: "openai", base_url: `${mock.url}/v1`, api_key: "k" } },
      models: { "gpt-4o-mini": { provider: "up" } },
      plans: { free: { models: ["gpt-4o-mini"] } },
      keys: [{ key: "tg_cli", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"] } },
    });
    const seen = mock.requests.length;
    const res = await fetch(`${gw.url}/chat/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: "Bearer tg_cli", "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true }),
    });
    const text = res.text();
    // The headers leave with the first token, so the stream is in flight now (20 tokens, 1 s);
    // a fixed sleep here could outlast it on a loaded machine and test no drain at all.
    expect(mock.requests[seen]!.finishedAt).toBeUndefined();
    const code = gw.stop("SIGTERM");
    expect(await text).toContain("[DONE]");
    expect(await code).toBe(0);
    // Records are read from the pipe, which can still hold the last line when the process exits.
    expect(await gw.recordOf(res)).toMatchObject({ ended: "complete", output_tokens: 20 });
  });

  it("serve writes, on SIGTERM, every record once: served, refused, and the refusal summary of the second it stopped in", async () => {
    const gw = await GatewayProcess.start({
      store: "memory:",
      server: { max_refusal_records_per_s: 1 },
      providers: { up: { type: "openai", base_url: `${mock.url}/v1`, api_key: "k" } },
      models: { "gpt-4o-mini": { provider: "up" } },
      plans: { free: { models: ["gpt-4o-mini"] } },
      keys: [{ key: "tg_cli_stop", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"] } },
    });
    const ask = (key: string) =>
      fetch(`${gw.url}/chat/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }),
      });
    const answers = await Promise.all([...Array.from({ length: 3 }, () => ask("tg_cli_stop")), ...Array.from({ length: 8 }, () => ask("tg_cli_wrong"))]);
    expect(answers.map((r) => r.status).sort()).toEqual([200, 200, 200, 401, 401, 401, 401, 401, 401, 401, 401]);
    // Stopped at once: the summary of this second is still open, and the last records may still
    // be waiting for their sinks.
    expect(await gw.stop("SIGTERM")).toBe(0);
    const records = await gw.waitForRequests(11);
    expect(new Set(records.map((r) => r.request_id)).size).toBe(records.length);
    expect(records.filter((r) => r.decision === "allow")).toHaveLength(3);
    expect(records.filter((r) => r.code === "unauthorized").reduce((n, r) => n + (r.count ?? 1), 0)).toBe(8);
    for (const r of answers) if (r.status === 200) expect(records.map((x) => x.request_id)).toContain(r.headers.get("x-tollgate-request-id"));
  }, 60_000);
});

