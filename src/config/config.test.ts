import { describe, expect, it } from "vitest";
import { ConfigError } from "./errors.js";
import { parseConfig } from "./load.js";
import { resolveConfig } from "./resolve.js";

const base = () => ({
  store: "memory:",
  providers: { openai: { type: "openai", base_url: "https://api.openai.com/v1", api_key: "env:OPENAI_API_KEY" }, local: { type: "simulated" } },
  models: { "gpt-4o-mini": { provider: "openai" }, "house-model": { provider: "local", price: { input: 0.5, output: 1.5 } } },
  plans: { free: { models: ["gpt-4o-mini"], budget: { daily: 0.1 } } },
  routes: {
    chat: {
      path: "/chat",
      plans: ["free"],
      limits: [
        { per: "user", requests: 20, window: "1d" },
        { per: "route", usd: 50, window: "1d" },
      ],
      input: { max_prompt_chars: 8000, max_output_tokens: 800 },
    },
  },
});

const env = { OPENAI_API_KEY: "sk-test" };

function issues(doc: unknown, e: NodeJS.ProcessEnv = env): string[] {
  try {
    resolveConfig(parseConfig(doc, e));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error("expected a config error");
}

describe("config", () => {
  it("resolves durations to ms, dollars to micro-dollars and prices from the catalog", () => {
    const c = resolveConfig(parseConfig(base(), env));
    const chat = c.routes[0]!;
    expect(chat.limits[0]).toMatchObject({ id: "chat.0", per: "user", unit: "requests", max: 20, windowMs: 86_400_000 });
    expect(chat.limits[1]).toMatchObject({ unit: "usd", max: 50_000_000 });
    expect(c.plans.free!.budget.daily).toBe(100_000);
    expect(c.models["gpt-4o-mini"]!.price).toMatchObject({ input: 150_000, output: 600_000, source: "catalog" });
    expect(c.models["house-model"]!.price).toMatchObject({ input: 500_000, output: 1_500_000, source: "config" });
    expect(c.providers.openai!.apiKey).toBe("sk-test");
    expect(c.server).toMatchObject({ port: 8787, host: "127.0.0.1", timeoutMs: 120_000, trustProxy: 0 });
  });

  it("takes a model's tokenizer from config, or infers it from the upstream model id", () => {
    const doc = base() as any;
    doc.models["house-model"].tokenizer = "claude";
    doc.models.sonnet = { provider: "local", upstream: "claude-sonnet-4-20250514", price: { input: 3, output: 15 } };
    doc.models.oss = { provider: "local", upstream: "gpt-oss-120b", price: { input: 0.1, output: 0.5 } };
    const c = resolveConfig(parseConfig(doc, env));
    expect(c.models["house-model"]!.tokenizer).toBe("claude");
    expect(c.models.sonnet!.tokenizer).toBe("claude");
    expect(c.models.oss!.tokenizer).toBe("o200k_base");
    expect(c.models["gpt-4o-mini"]!.tokenizer).toBe("o200k_base");
    doc.models["house-model"].tokenizer = "sentencepiece";
    expect(issues(doc)[0]).toMatch(/^models\.house-model\.tokenizer: .*o200k_base.*claude/);
  });

  it("names a bad duration's exact field", () => {
    const doc = base();
    (doc.routes.chat.limits[1] as { window: string }).window = "1 day";
    expect(issues(doc)).toEqual(['routes.chat.limits[1].window: expected a duration like "1m", "1h", "1d"']);
  });

  it("refuses a misspelled key instead of ignoring the limit", () => {
    const doc = base() as any;
    doc.routes.chat.input = { max_prompt_char: 8000 };
    expect(issues(doc)).toEqual(['routes.chat.input.max_prompt_char: unknown key (did you mean "max_prompt_chars"?)']);
  });

  it("refuses a model that names an unknown provider", () => {
    const doc = base() as any;
    doc.models["gpt-4o-mini"].provider = "opnai";
    expect(issues(doc)[0]).toBe('models.gpt-4o-mini.provider: unknown provider "opnai" (known: openai, local)');
  });

  it("refuses a model with no price rather than serving it free", () => {
    const doc = base() as any;
    doc.models["my-finetune"] = { provider: "local" };
    expect(issues(doc)[0]).toMatch(/^models\.my-finetune\.price: no price/);
  });

  it("refuses a missing environment variable, naming where it is used", () => {
    expect(issues(base(), {})).toEqual(["providers.openai.api_key: environment variable OPENAI_API_KEY is not set"]);
  });

  it("refuses a limit with no unit or two units", () => {
    const doc = base() as any;
    doc.routes.chat.limits.push({ per: "user", window: "1m" }, { per: "ip", requests: 1, tokens: 5, window: "1m" });
    expect(issues(doc)).toEqual([
      "routes.chat.limits[2]: a limit counts exactly one of requests, tokens, files, usd, concurrent (found none)",
      "routes.chat.limits[3]: a limit counts exactly one of requests, tokens, files, usd, concurrent (found requests, tokens)",
    ]);
  });

  it("refuses a window on a concurrency cap and a window limit without one", () => {
    const doc = base() as any;
    doc.routes.chat.limits.push({ per: "user", concurrent: 2, window: "1m" }, { per: "user", requests: 5 });
    expect(issues(doc)).toEqual([
      "routes.chat.limits[2].window: a concurrent limit counts requests in flight and takes no window",
      'routes.chat.limits[3].window: required: a duration like "1m", "1h", "1d"',
    ]);
  });

  it("refuses a key naming an org that is not under orgs", () => {
    const doc = base() as any;
    doc.orgs = { acme: { budget: { daily: 10 } } };
    doc.keys = [{ key: "k", user: "u", plan: "free", org: "acmee" }];
    expect(issues(doc)).toEqual(['keys[0].org: unknown org "acmee" (known: acme)']);
  });

  it("refuses a pooled limit naming a plan that does not exist", () => {
    const doc = base() as any;
    doc.routes.chat.limits.push({ per: "plan", plans: ["anonymus"], requests: 600, window: "1m" });
    expect(issues(doc)).toEqual(['routes.chat.limits[2].plans[0]: unknown plan "anonymus" (known: free)']);
  });

  it("checks references between sections", () => {
    const doc = base() as any;
    doc.plans.free.models.push("gpt-9");
    doc.routes.chat.plans.push("gold");
    doc.keys = [{ key: "k", plan: "free" }];
    expect(issues(doc)).toEqual([
      'plans.free.models[1]: unknown model "gpt-9" (known: gpt-4o-mini, house-model)',
      'routes.chat.plans[1]: unknown plan "gold" (known: free)',
      "keys[0].user: required unless service: true",
    ]);
  });

  it("refuses negative money and wrong types with the field path", () => {
    const doc = base() as any;
    doc.plans.free.budget.daily = -1;
    doc.server = { port: "eighty" };
    expect(issues(doc)).toEqual(["server.port: Invalid input: expected number, received string", "plans.free.budget.daily: expected a non-negative amount of US dollars"]);
  });

  it("budget_downgrade_to must name a known model, in the exact field; soft is a share between 0 and 1", () => {
    const doc = base() as any;
    doc.plans.free.budget_downgrade_to = "gpt-4o-mni";
    doc.routes.chat.budget_downgrade_to = "nope";
    expect(issues(doc)).toEqual([
      'plans.free.budget_downgrade_to: unknown model "gpt-4o-mni" (known: gpt-4o-mini, house-model)',
      'routes.chat.budget_downgrade_to: unknown model "nope" (known: gpt-4o-mini, house-model)',
    ]);
    const soft = base() as any;
    soft.plans.free.budget.soft = 1;
    soft.budget = { daily: 5, soft: 0 };
    expect(issues(soft)).toEqual([
      "budget.soft: expected a share of the budget between 0 and 1, like 0.8",
      "plans.free.budget.soft: expected a share of the budget between 0 and 1, like 0.8",
    ]);
    const ok = base() as any;
    ok.plans.free.budget.soft = 0.8;
    ok.plans.free.budget_downgrade_to = "gpt-4o-mini";
    ok.orgs = { acme: { budget: { monthly: 10, soft: 0.9 } } };
    const c = resolveConfig(parseConfig(ok, env));
    expect(c.plans.free).toMatchObject({ budget: { daily: 100_000, soft: 0.8 }, budgetDowngradeTo: "gpt-4o-mini" });
    expect(c.orgs.acme!.budget).toMatchObject({ monthly: 10_000_000, soft: 0.9 });
  });

  it("refuses a gateway or org budget it cannot hold exactly, instead of running without it", () => {
    // These two used to be read after the issues were checked: an amount past what micro-dollars
    // can hold was dropped and the gateway ran uncapped.
    const doc = base() as any;
    doc.budget = { daily: 100_000_000_000 };
    doc.orgs = { acme: { budget: { monthly: "100000000000" } } };
    expect(issues(doc)).toEqual(["budget.daily: amount of USD too large: 100000000000", "orgs.acme.budget.monthly: amount of USD too large: 100000000000"]);
  });

  it("applies the schema's defaults when a section is left out", () => {
    const c = resolveConfig(parseConfig(base(), env));
    expect(c.routes[0]!.input).toMatchObject({ maxOutputTokens: 800, onExcessOutputTokens: "clamp", maxN: 1, allowLogprobs: false, storedState: "reject" });
    expect([...c.routes[0]!.endpoints]).toEqual(["chat_completions", "responses", "messages", "embeddings", "models"]);
    expect(c.abuse).toMatchObject({ blocklist: [], allowlist: [], halfLifeMs: 3_600_000, manyUsersThreshold: 5, weights: { refused: 5, nearCapPrompt: 5, ipManyUsers: 10, burstUnderLimit: 5, newIdentityExpensiveModel: 5 } });
    expect(c.providers.local).toMatchObject({ tokensPerSecond: 200, headers: {} });
    expect(c.providers.openai!.anthropicVersion).toBe("2023-06-01");
  });
});
