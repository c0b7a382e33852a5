import { z } from "zod";
import { TOKENIZER_NAMES, TOKENIZERS } from "../core/metering/tokenizer-choice.js";
import { DURATION_HINT, parseDuration } from "./duration.js";

/**
 * The config file's shape (SPEC §4). Every object is strict: a misspelled key is an error, because a
 * limit that is written down but silently ignored is the worst failure this product can have.
 * Values stay as the user wrote them here; resolve.ts turns them into milliseconds, micro-dollars
 * and prices, so the JSON Schema that editors see matches the file.
 */

const duration = z
  .string()
  .refine((s) => parseDuration(s) !== undefined, { error: DURATION_HINT })
  .describe('A duration: "30s", "1m", "1h", "1d".');

const usd = z
  .union([z.number(), z.string().regex(/^\d+(\.\d+)?$/)], { error: "expected US dollars as a decimal number, like 0.50" })
  .refine((v) => Number(v) >= 0, { error: "expected a non-negative amount of US dollars" })
  .describe("US dollars as a decimal number.");

const usdPerMillion = usd.describe("US dollars per 1M tokens.");

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

export const providerSchema = z.strictObject({
  type: z.enum(["openai", "anthropic", "simulated"]).describe("Wire protocol: openai (any OpenAI-compatible API), anthropic, or the built-in simulated provider."),
  base_url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }).optional(),
  api_key: z.string().optional().describe("The provider's key; use env:NAME. Never sent to or shown to callers."),
  headers: z.record(z.string(), z.string()).optional().describe("Extra headers sent upstream (e.g. OpenAI-Organization)."),
  tokens_per_second: positiveInt.optional().describe("simulated: streaming speed (default 200)."),
  anthropic_version: z.string().optional(),
});

export const priceSchema = z.strictObject({
  input: usdPerMillion,
  output: usdPerMillion,
  cached_input: usdPerMillion.optional(),
  cache_write: usdPerMillion.optional(),
  tiers: z.array(z.strictObject({ above_input_tokens: positiveInt, input: usdPerMillion, output: usdPerMillion })).optional(),
});

export const modelSchema = z.strictObject({
  provider: z.string(),
  upstream: z.string().optional().describe("The provider's model id, when the public name is an alias."),
  price: priceSchema.optional().describe("Overrides the bundled catalog price."),
  requires: z.array(z.enum(["verified", "paid"])).optional().describe("Callers must be verified (JWT claim or key) or on a paid plan."),
  reasoning: z.boolean().optional().describe("Hidden reasoning tokens: a cut stream is charged its full reserved output."),
  tokenizer: z
    .enum(TOKENIZER_NAMES)
    .optional()
    .describe(
      `How the tokens of a stream cut before the provider's usage came are counted (default: inferred from the upstream model id). ${Object.entries(TOKENIZERS)
        .map(([name, what]) => `${name}: ${what}`)
        .join("; ")}.`,
    ),
});

export const budgetSchema = z.strictObject({
  daily: usd.optional(),
  monthly: usd.optional(),
});

export const planSchema = z.strictObject({
  models: z.array(z.string()).describe("Models this plan may call (public names)."),
  budget: budgetSchema.optional().describe("Per-user spend over the calendar day / month, across all routes."),
  paid: z.boolean().optional().describe("Callers on this plan satisfy `requires: [paid]`."),
});

export const keyBudgetSchema = z.strictObject({
  daily: usd.optional(),
  monthly: usd.optional(),
  total: usd.optional().describe("A lifetime cap: what this key may ever spend (trial keys). Never resets."),
});

export const orgSchema = z.strictObject({
  budget: budgetSchema.optional().describe("Spend of all the org's callers together over the calendar day / month, across all routes."),
});

export const keySchema = z.strictObject({
  key: z.string().min(1),
  id: z.string().optional(),
  user: z.string().optional(),
  plan: z.string(),
  service: z.boolean().optional().describe("May act for end users with x-tollgate-user / x-tollgate-plan."),
  grants: z.array(z.string()).optional().describe("Plans a service key may grant with x-tollgate-plan (default: its own)."),
  routes: z.array(z.string()).optional(),
  verified: z.boolean().optional(),
  expires: z.string().optional().describe("ISO-8601 time after which the key is refused."),
  org: z.string().optional().describe("The org (under orgs:) whose budget this key's calls also count against."),
  budget: keyBudgetSchema.optional().describe("This key's own spend caps, on top of its user's, org's and plan's."),
});

export const jwtSchema = z.strictObject({
  secret: z.string().optional().describe("HS256 shared secret."),
  jwks: z.url().optional().describe("JWKS URL for RS256/ES256 tokens."),
  issuer: z.string().optional(),
  audience: z.string().optional(),
  user_claim: z.string().default("sub"),
  plan_claim: z.string().default("plan"),
  verified_claim: z.string().default("email_verified"),
  default_plan: z.string().optional(),
  org_claim: z.string().optional().describe("The claim naming the caller's org (under orgs:); absent or unknown: no org."),
});

const limitUnits = ["requests", "tokens", "files", "usd", "concurrent"] as const;

export const limitSchema = z
  .strictObject({
    per: z
      .enum(["user", "ip", "key", "route", "plan", "network"])
      .describe("What shares one counter: each user, ip (IPv6 by /64), key, the whole route, each plan (a pool all its callers share), or each network (IPv4 /24, IPv6 /48)."),
    plans: z
      .array(z.string())
      .min(1)
      .optional()
      .describe("Only callers of these plans are counted and limited (e.g. a pool for anonymous traffic alone); absent: every caller."),
    requests: positiveInt.optional(),
    tokens: positiveInt.optional(),
    files: positiveInt.optional(),
    usd: usd.optional(),
    concurrent: positiveInt
      .optional()
      .describe("In-flight requests at once: each holds a slot until it ends (or, if its process dies, until its lease runs out). Takes no window."),
    window: duration.optional().describe("The sliding window the limit counts over; required for every unit but concurrent."),
  })
  .superRefine((limit, ctx) => {
    const units = limitUnits.filter((u) => limit[u] !== undefined);
    if (units.length !== 1) {
      ctx.addIssue({ code: "custom", message: `a limit counts exactly one of ${limitUnits.join(", ")} (found ${units.length ? units.join(", ") : "none"})` });
    } else if (units[0] === "concurrent" && limit.window !== undefined) {
      ctx.addIssue({ code: "custom", path: ["window"], message: "a concurrent limit counts requests in flight and takes no window" });
    } else if (units[0] !== "concurrent" && limit.window === undefined) {
      ctx.addIssue({ code: "custom", path: ["window"], message: 'required: a duration like "1m", "1h", "1d"' });
    }
  });

export const inputSchema = z.strictObject({
  max_prompt_chars: positiveInt.optional(),
  max_output_tokens: positiveInt.optional(),
  on_excess_output_tokens: z.enum(["clamp", "reject"]).optional(),
  max_messages: positiveInt.optional(),
  max_tools: nonNegativeInt.optional(),
  max_attachments: nonNegativeInt.optional(),
  max_attachment_bytes: positiveInt.optional(),
  max_docs: nonNegativeInt.optional(),
  max_n: positiveInt.optional().describe("Largest `n` (choices per request) allowed; default 1."),
  max_embedding_inputs: positiveInt.optional(),
  allow_logprobs: z.boolean().optional(),
  stored_state: z
    .enum(["reject", "allow"])
    .optional()
    .describe(
      "Cost tollgate cannot see or estimate: Responses previous_response_id, conversation, stored prompt, item_reference, background; files and documents by id or URL; provider-hosted tools (web search, file search, code execution, MCP) and Chat web_search_options; Chat audio output (modalities: audio, audio) and earlier audio replies by id. reject (default: param_not_allowed) or allow, reserving the model's whole context window as input.",
    ),
});

export const runsSchema = z.strictObject({
  per: z.enum(["user", "ip", "key"]).default("user"),
  max: positiveInt.optional(),
  window: duration.optional(),
  max_steps: positiveInt.optional(),
  max_tool_calls: nonNegativeInt.optional(),
  max_docs: nonNegativeInt.optional(),
  max_usd: usd.optional(),
  max_duration: duration.optional(),
});

export const endpointNames = ["chat_completions", "responses", "messages", "embeddings", "models"] as const;

export const routeSchema = z.strictObject({
  path: z.string().regex(/^\/[A-Za-z0-9._~\-/]*$/, { error: 'expected a path starting with "/", like "/chat"' }),
  plans: z.array(z.string()).min(1),
  default_model: z.string().optional(),
  models: z.array(z.string()).optional().describe("Restricts this route to these models (on top of the plan)."),
  endpoints: z.array(z.enum(endpointNames)).optional().describe("Endpoints this route exposes (default: all)."),
  limits: z.array(limitSchema).optional(),
  input: inputSchema.optional(),
  runs: runsSchema.optional(),
  timeout: duration.optional(),
});

export const abuseSchema = z.strictObject({
  blocklist: z.array(z.string()).optional(),
  allowlist: z.array(z.string()).optional(),
  downgrade_to: z.string().optional(),
  downgrade_at: z.number().nonnegative().optional(),
  block_at: z.number().nonnegative().optional(),
  half_life: duration.optional(),
  signals: z
    .strictObject({
      refused: z.number().nonnegative().optional(),
      near_cap_prompt: z.number().nonnegative().optional(),
      ip_many_users: z.number().nonnegative().optional(),
      burst_under_limit: z.number().nonnegative().optional(),
      new_identity_expensive_model: z.number().nonnegative().optional(),
    })
    .optional(),
  many_users_threshold: positiveInt.optional(),
});

export const serverSchema = z.strictObject({
  port: z.number().int().min(0).max(65535).default(8787),
  host: z.string().default("127.0.0.1"),
  trust_proxy: nonNegativeInt.default(0),
  max_body_bytes: positiveInt.default(1_048_576),
  timeout: duration.default("120s"),
  first_byte_timeout: duration.default("30s"),
  idle_timeout: duration.default("30s"),
  body_timeout: duration
    .default("10s")
    .describe("How long a client may take to send its request body. Quota is reserved only once the body is in, so a slow body holds no limit's slot; this bounds how long it holds a socket."),
  log: z.enum(["usage", "none"]).default("usage").describe("usage: one JSON usage record per request on stdout."),
  metrics: z
    .enum(["open", "admin", "off"])
    .default("open")
    .describe("GET /metrics: open (Prometheus scrapes without credentials), admin (bearer admin_key), off."),
});

export const configSchema = z.strictObject({
  server: serverSchema.default(serverSchema.parse({})),
  store: z
    .string()
    // `store: memory:` is not valid YAML (it reads as a mapping), so plain `memory` is accepted too.
    .regex(/^(memory:?|sqlite:.+|redis:\/\/.+|rediss:\/\/.+)$/, { error: 'expected "memory:", "sqlite:PATH" or "redis://HOST:PORT[/DB]"' })
    .default("sqlite:./.tollgate/tollgate.db"),
  on_store_error: z.enum(["closed", "open"]).default("closed"),
  admin_key: z.string().optional(),
  timezone: z.string().default("UTC"),
  budget: budgetSchema.optional().describe("Caps the whole gateway's spend."),
  providers: z.record(z.string(), providerSchema),
  models: z.record(z.string(), modelSchema),
  plans: z.record(z.string(), planSchema),
  orgs: z.record(z.string(), orgSchema).optional().describe("Companies or teams: their callers share the org's budget on top of their own."),
  keys: z.array(keySchema).optional(),
  jwt: jwtSchema.optional(),
  routes: z.record(z.string(), routeSchema),
  abuse: abuseSchema.optional(),
});

export type RawConfig = z.output<typeof configSchema>;
export type RawRoute = z.output<typeof routeSchema>;
export type RawLimit = z.output<typeof limitSchema>;

export function configJsonSchema(): unknown {
  return z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" });
}
