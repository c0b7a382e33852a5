import { z } from "zod";
import { ENDPOINT_NAMES } from "../core/config-types.js";
import { ALERT_TYPES } from "../core/alerts.js";
import { TOKENIZER_NAMES, TOKENIZERS } from "../core/metering/tokenizer-choice.js";
import { DURATION_HINT, parseDuration } from "../core/duration.js";

/**
 * The config file's shape (docs/config.md is generated from it: `npm run docs:config`). Every object is strict: a misspelled key is an error, because a
 * limit that is written down but silently ignored is the worst failure this product can have.
 * Values stay as the user wrote them here; resolve.ts turns them into milliseconds, micro-dollars
 * and prices, so the JSON Schema that editors see matches the file. Every default that does not
 * depend on another value is stated here (`.default()`), once: resolve.ts reads it, and the
 * reference shows it. An optional object whose keys have defaults is `.prefault({})`, so they
 * apply when it is absent too.
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
  base_url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }).optional().describe("The API's base URL, e.g. https://api.openai.com/v1; required for openai and anthropic."),
  api_key: z.string().optional().describe("The provider's key; use env:NAME. Never sent to or shown to callers."),
  headers: z.record(z.string(), z.string()).default({}).describe("Extra headers sent upstream (e.g. OpenAI-Organization)."),
  tokens_per_second: positiveInt.default(200).describe("simulated: streaming speed in tokens per second."),
  anthropic_version: z.string().default("2023-06-01").describe("anthropic: the anthropic-version header sent upstream."),
});

export const priceSchema = z.strictObject({
  input: usdPerMillion.describe("US dollars per 1M input tokens."),
  output: usdPerMillion.describe("US dollars per 1M output tokens (reasoning tokens included)."),
  cached_input: usdPerMillion.optional().describe("US dollars per 1M input tokens read from the provider's prompt cache (default: the input price)."),
  cache_write: usdPerMillion.optional().describe("US dollars per 1M input tokens written to the provider's prompt cache (default: the input price)."),
  tiers: z
    .array(
      z.strictObject({
        above_input_tokens: positiveInt.describe("The tier applies to requests with more input tokens than this."),
        input: usdPerMillion.describe("US dollars per 1M input tokens in this tier."),
        output: usdPerMillion.describe("US dollars per 1M output tokens in this tier."),
      }),
    )
    .optional()
    .describe("Long-context prices: the highest tier whose threshold a request's input exceeds sets its prices."),
});

export const modelSchema = z.strictObject({
  provider: z.string().describe("A name under providers."),
  upstream: z.string().optional().describe("The provider's model id, when the public name is an alias."),
  price: priceSchema.optional().describe("Overrides the bundled catalog price."),
  requires: z.array(z.enum(["verified", "paid"])).default([]).describe("Callers must be verified (JWT claim or key) or on a paid plan."),
  reasoning: z.boolean().optional().describe("Hidden reasoning tokens: a cut stream is charged its full reserved output (default: true for o-series and gpt-5 models)."),
  tokenizer: z
    .enum(TOKENIZER_NAMES)
    .optional()
    .describe(
      `How the tokens of a stream cut before the provider's usage came are counted (default: inferred from the upstream model id). ${Object.entries(TOKENIZERS)
        .map(([name, what]) => `${name}: ${what}`)
        .join("; ")}.`,
    ),
});

const soft = z
  .number()
  .gt(0, { error: "expected a share of the budget between 0 and 1, like 0.8" })
  .lt(1, { error: "expected a share of the budget between 0 and 1, like 0.8" })
  .describe(
    "A share of each of these budgets (0 < soft < 1) past which the caller is under budget pressure: its requests are served by the route's or plan's `budget_downgrade_to` model (or the asked one, if neither names one), recorded `decision: downgrade` with the signal `budget_soft`. The budget itself still refuses with 402 when spent.",
  );

const timezone = z.string().describe('An IANA time zone name, like "UTC", "Europe/Berlin" or "America/New_York".');

export const budgetSchema = z.strictObject({
  daily: usd.optional().describe("US dollars per calendar day (in the budget's time zone)."),
  monthly: usd.optional().describe("US dollars per calendar month (in the budget's time zone)."),
  soft: soft.optional(),
});

const budgetDowngradeTo = z
  .string()
  .describe("The model served instead of the asked one while the caller is past a budget's `soft` share (when this plan and route allow it; a route's outranks its plan's).");

export const planSchema = z.strictObject({
  models: z.array(z.string()).describe("Models this plan may call (public names)."),
  budget: budgetSchema.optional().describe("Per-user spend over the calendar day / month, across all routes."),
  budget_downgrade_to: budgetDowngradeTo.optional(),
  timezone: timezone
    .optional()
    .describe("The IANA time zone whose calendar days and months this plan's per-user budgets reset on (default: the top-level `timezone`)."),
  paid: z.boolean().default(false).describe("Callers on this plan satisfy `requires: [paid]`."),
});

export const keyBudgetSchema = z.strictObject({
  daily: usd.optional().describe("US dollars this key may spend per calendar day (in its org's time zone, else its plan's)."),
  monthly: usd.optional().describe("US dollars this key may spend per calendar month (in its org's time zone, else its plan's)."),
  total: usd.optional().describe("A lifetime cap: what this key may ever spend (trial keys). Never resets."),
  soft: soft.optional(),
});

export const orgSchema = z.strictObject({
  budget: budgetSchema.optional().describe("Spend of all the org's callers together over the calendar day / month, across all routes."),
  timezone: timezone
    .optional()
    .describe("The IANA time zone whose calendar days and months the org's budget (and its keys' budgets) reset on (default: the top-level `timezone`)."),
});

export const keySchema = z.strictObject({
  key: z.string().min(1).describe("The secret callers send as a bearer token or x-api-key; use env:NAME."),
  id: z.string().optional().describe("The key's id in usage records and the admin API (default: cfg_ and a hash of the key)."),
  user: z.string().optional().describe("The user the key belongs to (default: the key's id)."),
  plan: z.string().describe("A name under plans."),
  service: z.boolean().default(false).describe("May act for end users with x-tollgate-user / x-tollgate-plan."),
  grants: z.array(z.string()).optional().describe("Plans a service key may grant with x-tollgate-plan (default: its own)."),
  routes: z.array(z.string()).optional().describe("Route names this key may use (default: every route its plan may use)."),
  verified: z.boolean().default(false).describe("Callers with this key satisfy `requires: [verified]`."),
  expires: z.string().optional().describe("ISO-8601 time after which the key is refused."),
  org: z.string().optional().describe("The org (under orgs:) whose budget this key's calls also count against."),
  budget: keyBudgetSchema.optional().describe("This key's own spend caps, on top of its user's, org's and plan's."),
});

export const jwtSchema = z.strictObject({
  secret: z.string().optional().describe("HS256 shared secret."),
  jwks: z.url().optional().describe("JWKS URL for RS256/ES256 tokens."),
  issuer: z.string().optional().describe("Tokens must carry this iss claim."),
  audience: z.string().optional().describe("Tokens must carry this aud claim."),
  user_claim: z.string().default("sub").describe("The claim that names the user."),
  plan_claim: z.string().default("plan").describe("The claim that names the user's plan."),
  verified_claim: z.string().default("email_verified").describe("The claim that, when true, satisfies `requires: [verified]`."),
  default_plan: z.string().optional().describe("The plan of a token without a plan claim (without either, the token is refused)."),
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
    requests: positiveInt.optional().describe("Requests per window."),
    tokens: positiveInt.optional().describe("Tokens (input + output) per window."),
    files: positiveInt.optional().describe("Uploaded files (attachments) per window."),
    usd: usd.optional().describe("Spend in US dollars per window, reserved before the call and settled on its usage."),
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
  max_prompt_chars: positiveInt.optional().describe("Longest prompt in characters (413 input_too_large; absent: no cap)."),
  max_output_tokens: positiveInt.default(4096).describe("Output tokens a request may ask for; a request that names none gets this as its cap."),
  on_excess_output_tokens: z.enum(["clamp", "reject"]).default("clamp").describe("A request asking for more than max_output_tokens: clamp it to the cap, or reject it (400 output_tokens_exceeded)."),
  max_messages: positiveInt.optional().describe("Most messages (or input items) per request (absent: no cap)."),
  max_tools: nonNegativeInt.optional().describe("Most tool definitions per request (absent: no cap)."),
  max_attachments: nonNegativeInt.optional().describe("Most files (images, documents, audio) per request (absent: no cap)."),
  max_attachment_bytes: positiveInt.optional().describe("Largest file in bytes (absent: no cap)."),
  max_docs: nonNegativeInt.optional().describe("Retrieval results per request: what gate.retrieval(k) allows in library mode (absent: no cap)."),
  max_n: positiveInt.default(1).describe("Largest `n` (choices per request) allowed."),
  max_embedding_inputs: positiveInt.optional().describe("Most inputs per embeddings request (absent: no cap)."),
  allow_logprobs: z.boolean().default(false).describe("Allow logprobs / top_logprobs / logit_bias (otherwise 400 param_not_allowed)."),
  stored_state: z
    .enum(["reject", "allow"])
    .default("reject")
    .describe(
      "Cost tollgate cannot see or estimate: Responses previous_response_id, conversation, stored prompt, item_reference, background; files and documents by id or URL; provider-hosted tools (web search, file search, code execution, MCP) and Chat web_search_options; Chat audio output (modalities: audio, audio) and earlier audio replies by id. reject (default: param_not_allowed) or allow, reserving the model's whole context window as input.",
    ),
});

export const runsSchema = z.strictObject({
  per: z.enum(["user", "ip", "key"]).default("user").describe("Whose runs `max` counts."),
  max: positiveInt.optional().describe("Runs (x-tollgate-run ids) per caller per window (absent: no cap)."),
  window: duration.optional().describe("The window `max` counts over."),
  max_steps: positiveInt.optional().describe("Model calls (steps) per run; past it 429 run_limit_exceeded (absent: no cap)."),
  max_tool_calls: nonNegativeInt.optional().describe("Tool calls per run (absent: no cap)."),
  max_docs: nonNegativeInt.optional().describe("Retrieval results per run (absent: no cap)."),
  max_usd: usd.optional().describe("Spend in US dollars per run (absent: no cap)."),
  max_duration: duration.optional().describe("Wall-clock time per run (absent: no cap)."),
});

export const challengeSchema = z.strictObject({
  for: z
    .enum(["anonymous", "suspect", "all"])
    .describe("Who must present a solved proof-of-work challenge: anonymous callers, suspect callers (suspicion score at min_score or above), or every caller."),
  min_score: z
    .number()
    .nonnegative()
    .optional()
    .describe("Callers whose suspicion score is at least this must solve a challenge too, whatever `for` says; required with `for: suspect`. Needs abuse.downgrade_at or abuse.block_at (else no score is kept)."),
  difficulty: z
    .strictObject({
      base: positiveInt.default(1000).describe("The largest counter a challenge for a caller with a clean score hides: the solver tries between half of it and all of it."),
      max: positiveInt.default(50000).describe("The largest counter at all, reached at abuse.block_at (or a score of 100) or when the anonymous pool is full; in between it rises geometrically."),
    })
    .prefault({})
    .describe("How much work a challenge asks for, in key derivations (PBKDF2-SHA-256, 100 iterations each; docs/security.md quotes solve times)."),
  ttl: duration.default("5m").describe("How long a challenge may be solved and used; a solution is accepted once within it."),
  secret: z
    .string()
    .min(32, { error: "expected at least 32 characters; use env:NAME" })
    .describe("The HMAC secret challenges are signed with; every process serving the route needs the same one. Use env:NAME."),
});

export const endpointNames = ENDPOINT_NAMES;

export const routeSchema = z.strictObject({
  path: z
    .string()
    .regex(/^\/[A-Za-z0-9._~\-/]*$/, { error: 'expected a path starting with "/", like "/chat"' })
    .describe("Mount point: the OpenAI API at PATH/v1/…, Anthropic's at PATH/v1/messages."),
  plans: z.array(z.string()).min(1).describe("Plans whose callers may use this route."),
  default_model: z.string().optional().describe("The model of a request that names none."),
  models: z.array(z.string()).optional().describe("Restricts this route to these models (on top of the plan)."),
  budget_downgrade_to: budgetDowngradeTo.optional(),
  endpoints: z
    .array(z.enum(endpointNames))
    .default([...endpointNames])
    .describe("Endpoints this route exposes."),
  limits: z.array(limitSchema).optional().describe("Window limits; every one must admit a request."),
  input: inputSchema.prefault({}).describe("Caps on what one request may carry or ask for."),
  runs: runsSchema.optional().describe("The envelope of an agent run (requests sharing an x-tollgate-run id, or one library request)."),
  timeout: duration.optional().describe("Wall-clock cap per request on this route (default and upper bound: server.timeout)."),
  challenge: challengeSchema
    .optional()
    .describe("A proof-of-work gate: the callers it names must send a solved challenge (x-tollgate-challenge) or are refused 403 challenge_required with a fresh one."),
});

export const abuseSchema = z.strictObject({
  blocklist: z.array(z.string()).default([]).describe("IP addresses and CIDR ranges refused with 403."),
  allowlist: z.array(z.string()).default([]).describe("IP addresses and CIDR ranges never downgraded or blocked for suspicion."),
  downgrade_to: z.string().optional().describe("The model a suspicious caller gets instead of the one it asked for."),
  downgrade_at: z.number().nonnegative().optional().describe("Suspicion score from which a caller is downgraded (absent: never)."),
  block_at: z.number().nonnegative().optional().describe("Suspicion score from which a caller is refused with 403 (absent: never)."),
  half_life: duration.default("1h").describe("A suspicion score halves over this long."),
  signals: z
    .strictObject({
      refused: z.number().nonnegative().default(5).describe("Added when a request is refused (any 4xx but a block)."),
      near_cap_prompt: z.number().nonnegative().default(5).describe("Added for a prompt within 10% of max_prompt_chars."),
      ip_many_users: z.number().nonnegative().default(10).describe("Added when more than many_users_threshold users call from one network."),
      burst_under_limit: z.number().nonnegative().default(5).describe("Added when a caller reaches 90% of a requests limit of 5 or more."),
      new_identity_expensive_model: z.number().nonnegative().default(5).describe("Added when an identity with only a few requests so far calls an expensive model."),
      key_many_networks: z
        .number()
        .nonnegative()
        .default(25)
        .describe("Added on each request of a key (or a signed-in user) seen from more than many_networks_threshold networks (IPv4 /16s, IPv6 /32s) within many_networks_window: a shared or stolen credential."),
      new_identity_velocity: z
        .number()
        .nonnegative()
        .default(70)
        .describe(
          "A cohort term: while new identities (younger than new_identity_age) appear at new_identity_surge_factor times their baseline rate or faster, every identity of that cohort scores this much more, and an identity first seen during such a surge keeps scoring it for as long as it is young; identities with a history are untouched. Below block_at, the cohort alone is downgraded and only its members with evidence of their own are blocked.",
        ),
      anon_pool_pressure: z
        .number()
        .nonnegative()
        .default(100)
        .describe(
          "A cohort term: anonymous callers on a route with a `per: plan` requests limit for the anonymous plan score this weight times the pool's pressure (anonymous demand over the pool's rate, 0 to 1) once the pressure reaches pool_pressure_at.",
        ),
      run_churn: z.number().nonnegative().default(25).describe("Added on each request of a caller that started more than run_churn_threshold agent runs (fresh x-tollgate-run ids) within run_churn_window."),
    })
    .prefault({})
    .describe("The weight each signal adds to the caller's suspicion score."),
  many_users_threshold: positiveInt.default(5).describe("Distinct users from one network before ip_many_users fires."),
  many_networks_threshold: positiveInt.default(5).describe("Distinct networks (IPv4 /16s, IPv6 /32s) one key or user may call from within many_networks_window before key_many_networks fires."),
  many_networks_window: duration.default("1d").describe("The window key_many_networks counts networks over."),
  new_identity_age: duration
    .default("1d")
    .describe("An identity (user or key, not anonymous) first seen less than this long ago belongs to the new-identity cohort, and the evidence against it (its signals) is kept with this half-life instead of half_life: a fresh account cannot wait out its record."),
  new_identity_window: duration
    .default("30m")
    .describe("How recent the new-identity rate new_identity_velocity compares with the baseline is: a moving count of new identities with this half-life. Shorter reacts sooner to a farm and more often to chance bunching of honest sign-ups."),
  new_identity_baseline_per_hour: z
    .number()
    .positive()
    .default(10)
    .describe("The least baseline rate of new identities per hour: the baseline is the larger of this and the rate of the past week (a moving average with a week's half-life)."),
  new_identity_surge_factor: z
    .number()
    .gt(1)
    .default(3)
    .describe("new_identity_velocity fires while new identities of the past new_identity_window appear at this many times the baseline rate or faster."),
  pool_pressure_at: z
    .number()
    .min(0)
    .max(1)
    .default(0.5)
    .describe("The anonymous pool's pressure (0 to 1) from which anon_pool_pressure adds to every anonymous caller's score."),
  run_churn_threshold: positiveInt.default(6).describe("Agent runs one caller may start within run_churn_window before run_churn fires."),
  run_churn_window: duration.default("1h").describe("The window run_churn counts runs over."),
});

const sinkName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, { error: "expected a name of letters, digits, _ and -" });

export const webhookSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }).describe("Where alerts are POSTed, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)."),
  secret: z
    .string()
    .regex(/^whsec_[A-Za-z0-9+/]{16,}={0,2}$/, { error: "expected a Standard Webhooks secret: whsec_ followed by base64 (at least 12 bytes)" })
    .describe("The signing secret, whsec_ and base64 (use env:NAME). Never logged or shown by the admin API."),
  events: z.array(z.enum(ALERT_TYPES)).min(1).optional().describe(`The alerts this webhook receives (default: all of ${ALERT_TYPES.join(", ")}).`),
  name: sinkName
    .optional()
    .describe("The name its messages are filed under in the outbox, metrics and the admin API (default: webhook- and a hash of the URL). Keep it when the URL changes, so pending alerts follow."),
});

export const alertsSchema = z.strictObject({
  webhooks: z.array(webhookSchema).optional().describe("Receivers of signed alerts; every alert goes through the store's outbox, retried until delivered."),
  abuse_every: duration
    .optional()
    .describe("At most one abuse.downgrade and one abuse.block alert per caller in this window, however many requests it makes.")
    .meta({ default: "1h" }),
});

export const cloudEventsSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }).describe("Where usage records are POSTed as CloudEvents batches (application/cloudevents-batch+json), e.g. OpenMeter's /api/v1/events."),
  batch_size: positiveInt.max(1000).optional().describe("Most events per POST.").meta({ default: 100 }),
  source: z.string().min(1).optional().describe("The CloudEvents source of every event.").meta({ default: "tollgate" }),
  type: z.string().min(1).optional().describe("The CloudEvents type of every event (an OpenMeter meter's event type).").meta({ default: "tollgate.usage" }),
  headers: z.record(z.string(), z.string()).optional().describe("Extra headers on every POST, e.g. authorization: env:OPENMETER_TOKEN. Never logged."),
});

export const exportSchema = z.strictObject({
  cloudevents: cloudEventsSchema.optional().describe("Served requests' usage (one event per request: subject = user, id = request id), sent through the store's outbox."),
});

export const outboxSchema = z.strictObject({
  retry_min: duration.optional().describe("The first retry's delay after a failed send; each later one doubles, with jitter.").meta({ default: "1s" }),
  retry_max: duration.optional().describe("The longest delay between retries.").meta({ default: "5m" }),
  max_attempts: positiveInt.optional().describe("Sends before a message is marked failed (it stays listed in GET /admin/outbox for a retry).").meta({ default: 50 }),
  max_age: duration.optional().describe("Age after which a message that still fails is marked failed.").meta({ default: "3d" }),
  timeout: duration.optional().describe("One send's time limit.").meta({ default: "10s" }),
  poll: duration.optional().describe("How often each process looks for due messages (new ones go at once).").meta({ default: "1s" }),
});

export const serverSchema = z.strictObject({
  port: z.number().int().min(0).max(65535).default(8787).describe("The gateway's port (0: any free port)."),
  host: z.string().default("127.0.0.1").describe("The address the gateway listens on."),
  trust_proxy: nonNegativeInt.default(0).describe("Trusted reverse-proxy hops in X-Forwarded-For; 0: the socket address is the client's."),
  max_body_bytes: positiveInt.default(1_048_576).describe("Largest request body in bytes (413)."),
  timeout: duration.default("120s").describe("Total wall-clock cap per request, streaming included."),
  first_byte_timeout: duration.default("30s").describe("The provider's time to its first byte."),
  idle_timeout: duration.default("30s").describe("Longest silence between stream chunks."),
  body_timeout: duration
    .default("10s")
    .describe("How long a client may take to send its request body. Quota is reserved only once the body is in, so a slow body holds no limit's slot; this bounds how long it holds a socket."),
  keep_alive_timeout: duration
    .default("65s")
    .describe(
      "How long an idle client connection stays open for its next request. Keep it above the idle timeout of any load balancer or client pool in front of the gateway (AWS ALB: 60s): when the gateway closes first, a request sent on the closing connection fails with a reset.",
    ),
  log: z.enum(["usage", "none"]).default("usage").describe("usage: one JSON usage record per request on stdout."),
  max_refusal_records_per_s: nonNegativeInt
    .default(100)
    .describe(
      "Refused requests that get a usage record of their own, per refusal code and second (per process). Beyond it, one summary record per code (and route, endpoint) and second carries `count`, the refusals it stands for, so a flood of refusals cannot fill the store; metrics and `tollgate usage` still count every refusal.",
    ),
  metrics: z
    .enum(["open", "admin", "off"])
    .default("open")
    .describe("GET /metrics: open (Prometheus scrapes without credentials), admin (bearer admin_key), off."),
});

export const configSchema = z.strictObject({
  server: serverSchema.prefault({}).describe("The gateway's HTTP server; library mode reads trust_proxy and timeout."),
  store: z
    .string()
    // `store: memory:` is not valid YAML (it reads as a mapping), so plain `memory` is accepted too.
    .regex(/^(memory:?|sqlite:.+|redis:\/\/.+|rediss:\/\/.+)$/, { error: 'expected "memory:", "sqlite:PATH" or "redis://HOST:PORT[/DB]"' })
    .default("sqlite:./.tollgate/tollgate.db")
    .describe("Where counters, keys and usage live: memory:, sqlite:PATH (needs the optional better-sqlite3 package) or redis://HOST:PORT[/DB] (see docs/stores.md)."),
  on_store_error: z
    .enum(["closed", "open"])
    .default("closed")
    .describe("When Redis is unavailable: closed refuses with 503 store_unavailable; open falls back to this process's in-memory limits."),
  admin_key: z.string().optional().describe("Bearer token for /admin/* and the dashboard; use env:NAME (absent: both disabled)."),
  timezone: timezone
    .default("UTC")
    .describe("The IANA time zone whose calendar days and months budgets reset on: the gateway's budget, and every plan's and org's that names none."),
  budget: budgetSchema.optional().describe("Caps the whole gateway's spend."),
  providers: z.record(z.string(), providerSchema).describe("Upstream APIs, by a name of your choice."),
  models: z.record(z.string(), modelSchema).describe("Models callers may name, by public name. Each needs a price, from the bundled catalog or `price`."),
  plans: z.record(z.string(), planSchema).describe("What a caller may use and spend, by plan name."),
  orgs: z.record(z.string(), orgSchema).default({}).describe("Companies or teams: their callers share the org's budget on top of their own."),
  keys: z.array(keySchema).default([]).describe("Static API keys; more live in the store (`tollgate keys`, the admin API)."),
  jwt: jwtSchema.optional().describe("End-user tokens (HS256 secret or a JWKS URL)."),
  routes: z.record(z.string(), routeSchema).describe("The gateway's routes (and library mode's route names), by name."),
  abuse: abuseSchema.prefault({}).describe("Blocklists and the suspicion score that downgrades or blocks a caller."),
  alerts: alertsSchema.optional().describe("Signed webhook alerts: budget pressure, exhaustion and burn rate, abuse downgrades and blocks."),
  export: exportSchema.optional().describe("Usage export to a billing or metering system."),
  outbox: outboxSchema.optional().describe("How alerts and exports are retried: the store holds them until delivered."),
});

export type RawConfig = z.output<typeof configSchema>;
/** The config as written (a file, or the object given to createTollgate): defaulted keys may be left out. */
export type ConfigInput = z.input<typeof configSchema>;
export type RawRoute = z.output<typeof routeSchema>;
export type RawLimit = z.output<typeof limitSchema>;

export function configJsonSchema(): unknown {
  return z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" });
}
