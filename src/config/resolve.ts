import type { ResolvedConfig } from "../core/config-types.js";
import { ConfigError } from "./errors.js";
import { checkJwt, resolveBudget, resolveKeys, resolveOrgs, resolvePlans } from "./resolve-access.js";
import { resolveAbuse } from "./resolve-abuse.js";
import { resolveDelivery } from "./resolve-delivery.js";
import { resolveModels, resolveProviders } from "./resolve-models.js";
import { resolveRoutes } from "./resolve-routes.js";
import { Resolution } from "./resolution.js";
import type { RawConfig } from "./schema.js";

// The adapters read the resolved config's types from here, next to what produces them.
export type {
  BudgetCaps,
  EndpointName,
  InputCaps,
  JwtConfig,
  KeyBudget,
  LimitScope,
  LimitUnit,
  ProviderConfig,
  ResolvedAbuse,
  ResolvedChallenge,
  ResolvedConfig,
  ResolvedLimit,
  ResolvedModel,
  ResolvedOrg,
  ResolvedPlan,
  ResolvedRoute,
  RunEnvelope,
  StaticKey,
} from "../core/config-types.js";

/**
 * The config as the engine uses it (core/config-types.ts): durations in ms, money in integer
 * micro-dollars, prices resolved, references checked. Built once at start; nothing on the request
 * path re-reads YAML. Defaults are the schema's; each section's resolver is in resolve-*.ts, and
 * every issue in the file is reported at once.
 */
export function resolveConfig(raw: RawConfig): ResolvedConfig {
  const res = new Resolution(raw);
  res.zone(raw.timezone, "timezone");
  const providers = resolveProviders(res);
  const models = resolveModels(res, providers);
  const plans = resolvePlans(res);
  const routes = resolveRoutes(res);
  const keys = resolveKeys(res);
  checkJwt(res);
  const abuse = resolveAbuse(res);
  if (raw.server.metrics === "admin" && !raw.admin_key) res.issue("server.metrics", '"admin" needs admin_key: without it nobody could scrape /metrics');
  const budget = resolveBudget(res, raw.budget, "budget");
  const orgs = resolveOrgs(res);
  const delivery = resolveDelivery(res);
  if (res.issues.length) throw new ConfigError(res.issues);
  return {
    ...delivery,
    server: {
      port: raw.server.port,
      host: raw.server.host,
      trustProxy: raw.server.trust_proxy,
      maxBodyBytes: raw.server.max_body_bytes,
      timeoutMs: res.ms(raw.server.timeout),
      firstByteTimeoutMs: res.ms(raw.server.first_byte_timeout),
      idleTimeoutMs: res.ms(raw.server.idle_timeout),
      bodyTimeoutMs: res.ms(raw.server.body_timeout),
      keepAliveTimeoutMs: res.ms(raw.server.keep_alive_timeout),
      log: raw.server.log,
      metrics: raw.server.metrics,
      maxRefusalRecordsPerSecond: raw.server.max_refusal_records_per_s,
    },
    store: raw.store,
    onStoreError: raw.on_store_error,
    adminKey: raw.admin_key,
    timezone: raw.timezone,
    budget,
    orgs,
    providers,
    models,
    plans,
    keys,
    jwt: raw.jwt,
    routes,
    abuse,
  };
}
