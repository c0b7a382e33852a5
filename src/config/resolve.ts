import { createHash, createHmac } from "node:crypto";
import { parseUsd, type Micros } from "../core/money.js";
import { catalogPrice, configPrice, type ModelPrice, type ProviderKind } from "../core/metering/prices.js";
import { tokenizerFor, type Tokenizer } from "../core/metering/tokenizer-choice.js";
import { parseDuration } from "./duration.js";
import { ConfigError, type ConfigIssue } from "./errors.js";
import { endpointNames, type RawConfig, type RawRoute } from "./schema.js";

/**
 * The config as the engine uses it: durations in ms, money in integer micro-dollars, prices
 * resolved, references checked. Built once at start; nothing on the request path re-reads YAML.
 */
export interface ResolvedConfig {
  server: {
    port: number;
    host: string;
    trustProxy: number;
    maxBodyBytes: number;
    timeoutMs: number;
    firstByteTimeoutMs: number;
    idleTimeoutMs: number;
    bodyTimeoutMs: number;
    log: "usage" | "none";
    metrics: "open" | "admin" | "off";
    maxRefusalRecordsPerSecond: number;
  };
  store: string;
  onStoreError: "closed" | "open";
  adminKey?: string;
  timezone: string;
  budget: BudgetCaps;
  /** Orgs by name: their callers share these budgets. */
  orgs: Record<string, ResolvedOrg>;
  providers: Record<string, ProviderConfig>;
  models: Record<string, ResolvedModel>;
  plans: Record<string, ResolvedPlan>;
  keys: StaticKey[];
  jwt?: RawConfig["jwt"];
  routes: ResolvedRoute[];
  abuse: ResolvedAbuse;
}

export interface ProviderConfig {
  name: string;
  type: ProviderKind;
  baseUrl?: string;
  apiKey?: string;
  headers: Record<string, string>;
  tokensPerSecond: number;
  anthropicVersion: string;
}

export interface ResolvedModel {
  name: string;
  provider: string;
  providerType: ProviderKind;
  upstream: string;
  price: ModelPrice;
  requires: ("verified" | "paid")[];
  reasoning: boolean;
  /** Counts the model's text when the provider's usage never came (tokenizer-choice.ts). */
  tokenizer: Tokenizer;
  maxOutputTokens?: number;
}

export interface BudgetCaps {
  daily?: Micros;
  monthly?: Micros;
  /** The share of each cap past which the caller is under budget pressure (0 < soft < 1). */
  soft?: number;
}

export interface ResolvedOrg {
  budget: BudgetCaps;
  /** The IANA zone whose calendar the org's budgets (and its keys') reset on. */
  timezone: string;
}

export interface ResolvedPlan {
  name: string;
  models: string[];
  budget: BudgetCaps;
  /** The IANA zone whose calendar this plan's per-user budgets reset on. */
  timezone: string;
  /** The model served under budget pressure (a route's outranks it). */
  budgetDowngradeTo?: string;
  paid: boolean;
}

/** A key's own spend caps; `total` never resets. */
export interface KeyBudget extends BudgetCaps {
  total?: Micros;
}

export interface StaticKey {
  id: string;
  org?: string;
  budget?: KeyBudget;
  key: string;
  user?: string;
  plan: string;
  service: boolean;
  grants: string[];
  routes?: string[];
  verified: boolean;
  expiresAt?: number;
}

export type LimitUnit = "requests" | "tokens" | "files" | "usd" | "concurrent";
export type LimitScope = "user" | "ip" | "key" | "route" | "plan" | "network";

export interface ResolvedLimit {
  /** Stable id for store keys and headers, e.g. "chat.1". */
  id: string;
  per: LimitScope;
  unit: LimitUnit;
  /** Requests, tokens or files; micro-dollars for usd. */
  max: number;
  windowMs: number;
  /** Only callers of these plans are limited; absent: everyone. */
  plans?: ReadonlySet<string>;
}

export interface InputCaps {
  maxPromptChars?: number;
  maxOutputTokens: number;
  onExcessOutputTokens: "clamp" | "reject";
  maxMessages?: number;
  maxTools?: number;
  maxAttachments?: number;
  maxAttachmentBytes?: number;
  maxDocs?: number;
  maxN: number;
  maxEmbeddingInputs?: number;
  allowLogprobs: boolean;
  storedState: "reject" | "allow";
}

export interface RunEnvelope {
  per: "user" | "ip" | "key";
  max?: number;
  windowMs?: number;
  maxSteps?: number;
  maxToolCalls?: number;
  maxDocs?: number;
  maxUsd?: Micros;
  maxDurationMs?: number;
}

export type EndpointName = (typeof endpointNames)[number];

export interface ResolvedRoute {
  name: string;
  /** Mount point without a trailing slash; "" for a route at "/". */
  path: string;
  plans: string[];
  defaultModel?: string;
  models?: string[];
  /** The model served under budget pressure, before the plan's. */
  budgetDowngradeTo?: string;
  endpoints: Set<EndpointName>;
  limits: ResolvedLimit[];
  input: InputCaps;
  runs?: RunEnvelope;
  timeoutMs: number;
  challenge?: ResolvedChallenge;
}

/** A route's proof-of-work gate (routes.*.challenge). */
export interface ResolvedChallenge {
  for: "anonymous" | "suspect" | "all";
  minScore?: number;
  /** Counter bounds: a clean caller's challenge, and the hardest one. */
  base: number;
  max: number;
  ttlMs: number;
  /** Signs the challenge, and its derived key; both derived from the configured secret and the route, so a challenge serves one route only. */
  signatureSecret: string;
  keySecret: string;
}

export interface ResolvedAbuse {
  blocklist: string[];
  allowlist: string[];
  downgradeTo?: string;
  downgradeAt?: number;
  blockAt?: number;
  halfLifeMs: number;
  manyUsersThreshold: number;
  manyNetworksThreshold: number;
  manyNetworksWindowMs: number;
  newIdentityAgeMs: number;
  newIdentityBaselinePerHour: number;
  newIdentitySurgeFactor: number;
  poolPressureAt: number;
  runChurnThreshold: number;
  runChurnWindowMs: number;
  weights: {
    refused: number;
    nearCapPrompt: number;
    ipManyUsers: number;
    burstUnderLimit: number;
    newIdentityExpensiveModel: number;
    keyManyNetworks: number;
    newIdentityVelocity: number;
    anonPoolPressure: number;
    runChurn: number;
  };
}

/** When a route sets no output cap, tollgate still sends one upstream so every reservation is bounded. */
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

export function resolveConfig(raw: RawConfig): ResolvedConfig {
  const issues: ConfigIssue[] = [];
  const ms = (v: string) => parseDuration(v)!;
  const micros = (v: number | string | undefined, path: string): Micros | undefined => {
    if (v === undefined) return undefined;
    try {
      return parseUsd(v);
    } catch (err) {
      issues.push({ path, message: (err as Error).message });
      return undefined;
    }
  };

  // A zone the runtime does not know would fail on the first request: refuse it at load, by field.
  const zone = (name: string | undefined, path: string): string => {
    if (name === undefined) return raw.timezone;
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: name });
    } catch {
      issues.push({ path, message: `unknown time zone "${name}" (expected an IANA name like "UTC" or "Europe/Paris")` });
    }
    return name;
  };
  zone(raw.timezone, "timezone");

  const providers: Record<string, ProviderConfig> = {};
  for (const [name, p] of Object.entries(raw.providers)) {
    if (p.type !== "simulated" && !p.base_url) issues.push({ path: `providers.${name}.base_url`, message: `required for type ${p.type}` });
    if (p.type === "simulated" && (p.base_url || p.api_key)) {
      issues.push({ path: `providers.${name}`, message: "a simulated provider takes no base_url or api_key" });
    }
    providers[name] = {
      name,
      type: p.type,
      baseUrl: p.base_url?.replace(/\/+$/, ""),
      apiKey: p.api_key,
      headers: p.headers ?? {},
      tokensPerSecond: p.tokens_per_second ?? 200,
      anthropicVersion: p.anthropic_version ?? "2023-06-01",
    };
  }

  const models: Record<string, ResolvedModel> = {};
  for (const [name, m] of Object.entries(raw.models)) {
    const provider = providers[m.provider];
    if (!provider) {
      issues.push({ path: `models.${name}.provider`, message: `unknown provider "${m.provider}" (known: ${Object.keys(providers).join(", ") || "none"})` });
      continue;
    }
    const upstream = m.upstream ?? name;
    let price: ModelPrice | undefined;
    if (m.price) {
      try {
        price = configPrice(m.price);
      } catch (err) {
        issues.push({ path: `models.${name}.price`, message: (err as Error).message });
      }
    } else {
      price = catalogPrice(upstream, provider.type);
      if (!price) {
        issues.push({ path: `models.${name}.price`, message: `no price: "${upstream}" is not in the bundled catalog, so set price: { input, output } (USD per 1M tokens)` });
      }
    }
    if (!price) continue;
    models[name] = {
      name,
      provider: m.provider,
      providerType: provider.type,
      upstream,
      price,
      requires: m.requires ?? [],
      reasoning: m.reasoning ?? /^(o\d|gpt-5)/.test(upstream),
      tokenizer: m.tokenizer ?? tokenizerFor(upstream),
    };
  }

  const checkModel = (model: string, path: string) => {
    if (!raw.models[model]) issues.push({ path, message: `unknown model "${model}" (known: ${Object.keys(raw.models).join(", ") || "none"})` });
  };

  const plans: Record<string, ResolvedPlan> = {};
  for (const [name, p] of Object.entries(raw.plans)) {
    p.models.forEach((m, i) => checkModel(m, `plans.${name}.models[${i}]`));
    if (p.budget_downgrade_to !== undefined) checkModel(p.budget_downgrade_to, `plans.${name}.budget_downgrade_to`);
    plans[name] = {
      name,
      models: p.models,
      budget: { daily: micros(p.budget?.daily, `plans.${name}.budget.daily`), monthly: micros(p.budget?.monthly, `plans.${name}.budget.monthly`), soft: p.budget?.soft },
      budgetDowngradeTo: p.budget_downgrade_to,
      timezone: zone(p.timezone, `plans.${name}.timezone`),
      paid: p.paid ?? false,
    };
  }
  const checkPlan = (plan: string, path: string) => {
    if (plan !== "anonymous" && !raw.plans[plan]) issues.push({ path, message: `unknown plan "${plan}" (known: ${Object.keys(raw.plans).join(", ") || "none"})` });
    if (plan === "anonymous" && !raw.plans[plan]) issues.push({ path, message: `plan "anonymous" is used but not defined under plans` });
  };

  const routes: ResolvedRoute[] = [];
  const paths = new Map<string, string>();
  for (const [name, r] of Object.entries(raw.routes)) {
    const route = resolveRoute(name, r, ms, micros);
    const prior = paths.get(route.path);
    if (prior) issues.push({ path: `routes.${name}.path`, message: `"${r.path}" is already the path of route ${prior}` });
    paths.set(route.path, name);
    r.plans.forEach((p, i) => checkPlan(p, `routes.${name}.plans[${i}]`));
    r.limits?.forEach((l, i) => l.plans?.forEach((p, j) => checkPlan(p, `routes.${name}.limits[${i}].plans[${j}]`)));
    if (r.default_model) checkModel(r.default_model, `routes.${name}.default_model`);
    r.models?.forEach((m, i) => checkModel(m, `routes.${name}.models[${i}]`));
    if (r.budget_downgrade_to !== undefined) checkModel(r.budget_downgrade_to, `routes.${name}.budget_downgrade_to`);
    if (route.challenge) issues.push(...challengeIssues(name, route, raw));
    routes.push(route);
  }

  const keys: StaticKey[] = [];
  (raw.keys ?? []).forEach((k, i) => {
    checkPlan(k.plan, `keys[${i}].plan`);
    k.grants?.forEach((g, j) => checkPlan(g, `keys[${i}].grants[${j}]`));
    k.routes?.forEach((r, j) => {
      if (!raw.routes[r]) issues.push({ path: `keys[${i}].routes[${j}]`, message: `unknown route "${r}"` });
    });
    if (!k.service && !k.user) issues.push({ path: `keys[${i}].user`, message: "required unless service: true" });
    let expiresAt: number | undefined;
    if (k.expires !== undefined) {
      expiresAt = Date.parse(k.expires);
      if (Number.isNaN(expiresAt)) issues.push({ path: `keys[${i}].expires`, message: "expected an ISO-8601 time" });
    }
    if (k.org !== undefined && !raw.orgs?.[k.org]) issues.push({ path: `keys[${i}].org`, message: `unknown org "${k.org}" (known: ${Object.keys(raw.orgs ?? {}).join(", ") || "none"})` });
    keys.push({
      id: k.id ?? `cfg_${createHash("sha256").update(k.key).digest("hex").slice(0, 12)}`,
      org: k.org,
      budget: k.budget && {
        daily: micros(k.budget.daily, `keys[${i}].budget.daily`),
        monthly: micros(k.budget.monthly, `keys[${i}].budget.monthly`),
        total: micros(k.budget.total, `keys[${i}].budget.total`),
        soft: k.budget.soft,
      },
      key: k.key,
      user: k.user,
      plan: k.plan,
      service: k.service ?? false,
      grants: k.grants ?? [k.plan],
      routes: k.routes,
      verified: k.verified ?? false,
      expiresAt,
    });
  });

  if (raw.jwt) {
    if (!raw.jwt.secret && !raw.jwt.jwks) issues.push({ path: "jwt", message: "set secret (HS256) or jwks (URL)" });
    if (raw.jwt.secret && raw.jwt.jwks) issues.push({ path: "jwt", message: "set secret or jwks, not both" });
    if (raw.jwt.default_plan) checkPlan(raw.jwt.default_plan, "jwt.default_plan");
  }

  const a = raw.abuse ?? {};
  if (a.downgrade_to) checkModel(a.downgrade_to, "abuse.downgrade_to");
  if (a.downgrade_at !== undefined && a.block_at !== undefined && a.downgrade_at > a.block_at) {
    issues.push({ path: "abuse.downgrade_at", message: "must not be above block_at" });
  }
  const abuse: ResolvedAbuse = {
    blocklist: a.blocklist ?? [],
    allowlist: a.allowlist ?? [],
    downgradeTo: a.downgrade_to,
    downgradeAt: a.downgrade_at,
    blockAt: a.block_at,
    halfLifeMs: a.half_life ? ms(a.half_life) : 3_600_000,
    manyUsersThreshold: a.many_users_threshold ?? 5,
    manyNetworksThreshold: a.many_networks_threshold ?? 5,
    manyNetworksWindowMs: ms(a.many_networks_window ?? "1d"),
    newIdentityAgeMs: ms(a.new_identity_age ?? "1d"),
    newIdentityBaselinePerHour: a.new_identity_baseline_per_hour ?? 10,
    newIdentitySurgeFactor: a.new_identity_surge_factor ?? 3,
    poolPressureAt: a.pool_pressure_at ?? 0.5,
    runChurnThreshold: a.run_churn_threshold ?? 6,
    runChurnWindowMs: ms(a.run_churn_window ?? "10m"),
    weights: {
      refused: a.signals?.refused ?? 5,
      nearCapPrompt: a.signals?.near_cap_prompt ?? 5,
      ipManyUsers: a.signals?.ip_many_users ?? 10,
      burstUnderLimit: a.signals?.burst_under_limit ?? 5,
      newIdentityExpensiveModel: a.signals?.new_identity_expensive_model ?? 5,
      keyManyNetworks: a.signals?.key_many_networks ?? 25,
      newIdentityVelocity: a.signals?.new_identity_velocity ?? 60,
      anonPoolPressure: a.signals?.anon_pool_pressure ?? 100,
      runChurn: a.signals?.run_churn ?? 25,
    },
  };

  if (raw.server.metrics === "admin" && !raw.admin_key) issues.push({ path: "server.metrics", message: '"admin" needs admin_key: without it nobody could scrape /metrics' });

  const orgs: Record<string, ResolvedOrg> = Object.fromEntries(
    Object.entries(raw.orgs ?? {}).map(([name, o]) => [
      name,
      {
        budget: { daily: micros(o.budget?.daily, `orgs.${name}.budget.daily`), monthly: micros(o.budget?.monthly, `orgs.${name}.budget.monthly`), soft: o.budget?.soft },
        timezone: zone(o.timezone, `orgs.${name}.timezone`),
      },
    ]),
  );

  if (issues.length) throw new ConfigError(issues);
  return {
    server: {
      port: raw.server.port,
      host: raw.server.host,
      trustProxy: raw.server.trust_proxy,
      maxBodyBytes: raw.server.max_body_bytes,
      timeoutMs: ms(raw.server.timeout),
      firstByteTimeoutMs: ms(raw.server.first_byte_timeout),
      idleTimeoutMs: ms(raw.server.idle_timeout),
      bodyTimeoutMs: ms(raw.server.body_timeout),
      log: raw.server.log,
      metrics: raw.server.metrics,
      maxRefusalRecordsPerSecond: raw.server.max_refusal_records_per_s,
    },
    store: raw.store,
    onStoreError: raw.on_store_error,
    adminKey: raw.admin_key,
    timezone: raw.timezone,
    budget: { daily: micros(raw.budget?.daily, "budget.daily"), monthly: micros(raw.budget?.monthly, "budget.monthly"), soft: raw.budget?.soft },
    orgs,
    providers,
    models,
    plans,
    keys,
    jwt: raw.jwt,
    routes: routes.map((r) => ({ ...r, timeoutMs: Math.min(r.timeoutMs || Infinity, ms(raw.server.timeout)) })),
    abuse,
  };
}

function resolveRoute(
  name: string,
  r: RawRoute,
  ms: (v: string) => number,
  micros: (v: number | string | undefined, path: string) => Micros | undefined,
): ResolvedRoute {
  const i = r.input ?? {};
  return {
    name,
    path: r.path.replace(/\/+$/, ""),
    plans: r.plans,
    defaultModel: r.default_model,
    models: r.models,
    budgetDowngradeTo: r.budget_downgrade_to,
    endpoints: new Set(r.endpoints ?? endpointNames),
    limits: (r.limits ?? []).map((l, idx) => {
      const unit = (["requests", "tokens", "files", "usd", "concurrent"] as const).find((u) => l[u] !== undefined)!;
      const max = unit === "usd" ? micros(l.usd, `routes.${name}.limits[${idx}].usd`) ?? 0 : (l[unit] as number);
      return { id: `${name}.${idx}`, per: l.per, unit, max, windowMs: l.window ? ms(l.window) : 0, plans: l.plans && new Set(l.plans) };
    }),
    input: {
      maxPromptChars: i.max_prompt_chars,
      maxOutputTokens: i.max_output_tokens ?? DEFAULT_MAX_OUTPUT_TOKENS,
      onExcessOutputTokens: i.on_excess_output_tokens ?? "clamp",
      maxMessages: i.max_messages,
      maxTools: i.max_tools,
      maxAttachments: i.max_attachments,
      maxAttachmentBytes: i.max_attachment_bytes,
      maxDocs: i.max_docs,
      maxN: i.max_n ?? 1,
      maxEmbeddingInputs: i.max_embedding_inputs,
      allowLogprobs: i.allow_logprobs ?? false,
      storedState: i.stored_state ?? "reject",
    },
    runs: r.runs && {
      per: r.runs.per,
      max: r.runs.max,
      windowMs: r.runs.window ? ms(r.runs.window) : undefined,
      maxSteps: r.runs.max_steps,
      maxToolCalls: r.runs.max_tool_calls,
      maxDocs: r.runs.max_docs,
      maxUsd: micros(r.runs.max_usd, `routes.${name}.runs.max_usd`),
      maxDurationMs: r.runs.max_duration ? ms(r.runs.max_duration) : undefined,
    },
    timeoutMs: r.timeout ? ms(r.timeout) : 0,
    challenge: r.challenge && {
      for: r.challenge.for,
      minScore: r.challenge.min_score,
      base: r.challenge.difficulty?.base ?? 1_000,
      max: r.challenge.difficulty?.max ?? 50_000,
      ttlMs: ms(r.challenge.ttl ?? "5m"),
      signatureSecret: createHmac("sha256", r.challenge.secret).update(`challenge signature for route ${name}`).digest("hex"),
      keySecret: createHmac("sha256", r.challenge.secret).update(`challenge key for route ${name}`).digest("hex"),
    },
  };
}

/** A challenge that could never be asked for is a config error, like a limit that is never enforced. */
function challengeIssues(name: string, route: ResolvedRoute, raw: RawConfig): ConfigIssue[] {
  const c = route.challenge!;
  const path = `routes.${name}.challenge`;
  const issues: ConfigIssue[] = [];
  const scored = raw.abuse?.downgrade_at !== undefined || raw.abuse?.block_at !== undefined;
  if (c.for === "suspect" && c.minScore === undefined) issues.push({ path: `${path}.min_score`, message: "required with for: suspect" });
  if (c.minScore !== undefined && !scored) issues.push({ path: `${path}.min_score`, message: "needs abuse.downgrade_at or abuse.block_at: without them no suspicion score is kept" });
  if (c.for === "anonymous" && !route.plans.includes("anonymous") && c.minScore === undefined) {
    issues.push({ path: `${path}.for`, message: "this route admits no anonymous callers, so nobody would be asked" });
  }
  if (c.base > c.max) issues.push({ path: `${path}.difficulty.base`, message: `must not be above difficulty.max (${c.max})` });
  return issues;
}
