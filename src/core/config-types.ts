// The config as the engine reads it. config/ produces these from the file (schema.ts, resolve.ts);
// the engine depends on these shapes only, never on how a file spells them.
import type { ModelPrice, ProviderKind } from "./metering/prices.js";
import type { Tokenizer } from "./metering/tokenizer-choice.js";
import type { Micros } from "./money.js";
import type { AlertType } from "./alerts.js";
import type { KeyAccess } from "./store.js";

/**
 * The config as the engine uses it: durations in ms, money in integer micro-dollars, prices
 * resolved, references checked. Built once at start; nothing on the request path re-reads YAML.
 */
export interface ResolvedConfig extends ResolvedDelivery {
  server: {
    port: number;
    host: string;
    trustProxy: number;
    maxBodyBytes: number;
    timeoutMs: number;
    firstByteTimeoutMs: number;
    idleTimeoutMs: number;
    bodyTimeoutMs: number;
    /** How long an idle client connection is kept for its next request. */
    keepAliveTimeoutMs: number;
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
  jwt?: JwtConfig;
  routes: ResolvedRoute[];
  abuse: ResolvedAbuse;
}

/** End-user tokens, as the config names them (claims are read by these names). */
export interface JwtConfig {
  secret?: string;
  jwks?: string;
  issuer?: string;
  audience?: string;
  user_claim: string;
  plan_claim: string;
  verified_claim: string;
  default_plan?: string;
  org_claim?: string;
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

export interface StaticKey extends KeyAccess {
  budget?: KeyBudget;
  key: string;
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

/** The APIs a route can expose, in the order the gateway mounts them. */
export const ENDPOINT_NAMES = ["chat_completions", "responses", "messages", "embeddings", "models"] as const;
export type EndpointName = (typeof ENDPOINT_NAMES)[number];

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
  newIdentityWindowMs: number;
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

/** A webhook that receives alerts (alerts.webhooks[]). */
export interface ResolvedWebhook {
  name: string;
  url: string;
  /** whsec_…: signs, never shown. */
  secret: string;
  events: ReadonlySet<AlertType>;
}

/** The CloudEvents usage export (export.cloudevents). */
export interface ResolvedCloudEvents {
  /** The outbox sink name of the export. */
  name: "cloudevents";
  url: string;
  batchSize: number;
  source: string;
  type: string;
  headers: Record<string, string>;
}

/** How the outbox retries (config `outbox:`), in ms. */
export interface ResolvedOutboxPolicy {
  /** The first retry's delay; each later one doubles it, up to retryMaxMs. */
  retryMinMs: number;
  retryMaxMs: number;
  /** A message is failed after this many attempts... */
  maxAttempts: number;
  /** ...or once it is this old (since added, or since an operator's retry). */
  maxAgeMs: number;
  /** One send's time limit; a claim's lease is this plus a margin. */
  timeoutMs: number;
  /** How often the outbox is looked at for due messages. */
  pollMs: number;
}

/** `alerts:`, `export:` and `outbox:` as the runtime uses them. */
export interface ResolvedDelivery {
  alerts: { webhooks: ResolvedWebhook[]; abuseEveryMs: number };
  export: { cloudevents?: ResolvedCloudEvents };
  outbox: ResolvedOutboxPolicy;
}
