// The gateway configs the bench runs, as objects; writeConfig() puts one in a temp dir as YAML.
//
// Every config logs nothing (`server.log: none`): printing one JSON usage record per request to a
// pipe is a cost of the deployment's log sink, not of the gateway, and would be measured here.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";

export const BENCH_KEY = "tg_bench_key";
export const MODEL = "bench-model";

/** Limits large enough never to refuse in a bench: the point is what checking them costs. */
const HUGE_REQUESTS = 1_000_000_000;
const HUGE_TOKENS = 1_000_000_000_000;
const HUGE_USD = 1_000_000;

/** Five layered limits, as SPEC §4's example route has them (per user/ip/key/route + user tokens). */
export const FIVE_LIMITS = [
  { per: "user", requests: HUGE_REQUESTS, window: "1m" },
  { per: "ip", requests: HUGE_REQUESTS, window: "1m" },
  { per: "key", requests: HUGE_REQUESTS, window: "1m" },
  { per: "route", requests: HUGE_REQUESTS, window: "1m" },
  { per: "user", tokens: HUGE_TOKENS, window: "1d" },
];

/** The spend controls of issue 3: the plan's daily and monthly budget plus a route-wide usd kill switch. */
export const BUDGET = { daily: HUGE_USD, monthly: HUGE_USD * 10 };
export const ROUTE_USD_LIMIT = { per: "route", usd: HUGE_USD, window: "1d" };

/**
 * @param {object} o
 * @param {string} o.upstreamUrl  the mock upstream's base URL (without /v1)
 * @param {string} [o.store]      "memory:" or "sqlite:PATH"
 * @param {boolean} [o.budgets]   plan budget + route usd limit
 * @param {boolean} [o.limits]    the five layered limits
 */
export function gatewayConfig({ upstreamUrl, store = "memory:", budgets = false, limits = false }) {
  const routeLimits = [...(limits ? FIVE_LIMITS : []), ...(budgets ? [ROUTE_USD_LIMIT] : [])];
  return {
    server: { host: "127.0.0.1", port: 0, log: "none", timeout: "60s" },
    store,
    providers: { mock: { type: "openai", base_url: `${upstreamUrl}/v1`, api_key: "sk-bench-upstream" } },
    models: { [MODEL]: { provider: "mock", upstream: "gpt-4o-mini", price: { input: 0.15, output: 0.6 } } },
    plans: { bench: { models: [MODEL], ...(budgets ? { budget: BUDGET } : {}) } },
    keys: [{ key: BENCH_KEY, user: "bench-user", plan: "bench" }],
    routes: {
      chat: {
        path: "/chat",
        plans: ["bench"],
        default_model: MODEL,
        ...(routeLimits.length ? { limits: routeLimits } : {}),
        input: { max_output_tokens: 100 },
      },
    },
  };
}

let dir;
/** Writes `config` as YAML into this run's temp dir and returns the path. */
export function writeConfig(name, config) {
  dir ??= mkdtempSync(join(tmpdir(), "tollgate-bench-"));
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, stringify(config));
  return path;
}

/** A fresh SQLite file path in this run's temp dir. */
export function sqlitePath(name) {
  dir ??= mkdtempSync(join(tmpdir(), "tollgate-bench-"));
  return join(dir, `${name}.db`);
}

export const tempDir = () => dir;

/** The chat request every throughput run sends (the same bytes to the mock, the bare proxy and tollgate). */
export function chatBody({ stream = false } = {}) {
  return {
    model: MODEL,
    messages: [
      { role: "system", content: "You are a terse assistant." },
      { role: "user", content: "Say hello to the benchmark in a few words." },
    ],
    max_tokens: 20,
    ...(stream ? { stream: true } : {}),
  };
}

/** The keys and models of `npm run bench`'s configs (bench/run.js) and `bench/instructions.sh`'s refusals. */
export const BENCH_KEYS = { KEY: "sk-bench-mock", MODEL: "gpt-4o-mini", limited: "sk-bench-limited", broke: "sk-bench-broke" };
/** Priced, but in no plan: asking for it is a 403. */
export const OTHER_MODEL = "gpt-4o";

/** The shared harness's tollgate configs (../shared/bench/tollgate-bench*.yaml), on each store. */
export function tollgateConfig(store, limits, budgets = limits ? "user" : "none") {
  // budgets: "none", "user" (the plan's daily budget) or "levels" (the user's, its org's and its key's).
  const all = budgets === "levels";
  return {
    server: { host: "127.0.0.1", port: 0 },
    store,
    providers: { mock: { type: "openai", base_url: "env:MOCK_URL", api_key: "sk-upstream-bench" } },
    models: { [BENCH_KEYS.MODEL]: { provider: "mock", price: { input: 0.15, output: 0.6 } }, [OTHER_MODEL]: { provider: "mock", price: { input: 2.5, output: 10 } } },
    plans: {
      bench: { models: [BENCH_KEYS.MODEL], ...(budgets !== "none" ? { budget: { daily: 1_000_000 } } : {}) },
      limited: { models: [BENCH_KEYS.MODEL] },
      broke: { models: [BENCH_KEYS.MODEL], budget: { daily: 0.0001 } },
    },
    ...(all ? { orgs: { acme: { budget: { daily: 1_000_000 } } } } : {}),
    keys: [
      { key: BENCH_KEYS.KEY, user: "bench-user", plan: "bench", ...(all ? { org: "acme", budget: { daily: 1_000_000 } } : {}) },
      { key: BENCH_KEYS.limited, user: "bench-limited", plan: "limited" },
      { key: BENCH_KEYS.broke, user: "bench-broke", plan: "broke" },
    ],
    routes: {
      main: {
        path: "/",
        plans: ["bench", "limited", "broke"],
        ...(limits && {
          limits: [
            { per: "user", requests: 1, window: "1m", plans: ["limited"] },
            { per: "user", requests: 100_000_000, window: "1m" },
            { per: "ip", requests: 100_000_000, window: "1m" },
            { per: "user", tokens: 10_000_000_000, window: "1d" },
          ],
          input: { max_prompt_chars: 8000, max_output_tokens: 800 },
        }),
      },
    },
  };
}

