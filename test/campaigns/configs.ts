import { CHEAP, FRONTIER, MAX_PROMPT_CHARS, OUTPUT_TOKENS, PRICES, type Population } from "./traffic.js";

/**
 * The gateway the campaigns run against, before and after issue 17. Before: per-user, per-IP and
 * a per-route limit (the only global lever), and the suspicion signals of one caller. After: the
 * per-route limit gives way to plan pools (anonymous 60/min, free 600/min) and the cross-network
 * and cohort signals weigh in.
 */
export function campaignConfig(opts: { upstream: string; pop: Population; protected: boolean; store?: string; compressed?: boolean }): Record<string, unknown> {
  const before = [
    { per: "ip", requests: 60, window: "1m" },
    { per: "user", requests: 300, window: "1d" },
    { per: "route", requests: 240, window: "1m" },
  ];
  const after = [
    { per: "ip", requests: 60, window: "1m" },
    { per: "user", requests: 300, window: "1d" },
    { per: "plan", plans: ["anonymous"], requests: 60, window: "1m" },
    // A day replayed in a minute puts all its free calls in one window: the pool is sized for that.
    { per: "plan", plans: ["free"], requests: opts.compressed ? 2000 : 600, window: "1m" },
  ];
  const off = { key_many_networks: 0, new_identity_velocity: 0, anon_pool_pressure: 0, run_churn: 0 };
  return {
    store: opts.store ?? "memory:",
    server: { trust_proxy: 1 },
    providers: { up: { type: "openai", base_url: `${opts.upstream}/v1`, api_key: "sk-up" } },
    models: Object.fromEntries(Object.entries(PRICES).map(([name, p]) => [name, { provider: "up", upstream: p.upstream, price: { input: p.input, output: p.output } }])),
    plans: {
      anonymous: { models: [FRONTIER, CHEAP], budget: { daily: 0.05 } },
      free: { models: [FRONTIER, CHEAP], budget: { daily: 0.5 } },
      pro: { models: [FRONTIER, CHEAP], budget: { daily: 20 } },
    },
    keys: opts.pop.keys,
    routes: {
      chat: {
        path: "/chat",
        plans: ["anonymous", "free", "pro"],
        default_model: FRONTIER,
        limits: opts.protected ? after : before,
        input: { max_prompt_chars: MAX_PROMPT_CHARS, max_output_tokens: OUTPUT_TOKENS },
      },
      agent: {
        path: "/agent",
        plans: ["free", "pro"],
        default_model: FRONTIER,
        limits: [{ per: "user", requests: 300, window: "1d" }],
        runs: { per: "user", max: 60, window: "1d", max_steps: 10 },
        input: { max_prompt_chars: MAX_PROMPT_CHARS, max_output_tokens: OUTPUT_TOKENS },
      },
    },
    abuse: {
      downgrade_to: CHEAP,
      downgrade_at: 50,
      block_at: 100,
      // The operator's expectations: about five sign-ups an hour, agent users starting a few runs an hour.
      ...(opts.protected ? { new_identity_baseline_per_hour: 5, run_churn_threshold: 4 } : { signals: off }),
    },
  };
}
