import type { ProviderConfig, ResolvedModel } from "../core/config-types.js";
import { catalogPrice, configPrice, type ModelPrice } from "../core/metering/prices.js";
import { tokenizerFor } from "../core/metering/tokenizer-choice.js";
import { known, type Resolution } from "./resolution.js";

/** `providers:` — where model calls go. */
export function resolveProviders(res: Resolution): Record<string, ProviderConfig> {
  const providers: Record<string, ProviderConfig> = {};
  for (const [name, p] of Object.entries(res.raw.providers)) {
    if (p.type !== "simulated" && !p.base_url) res.issue(`providers.${name}.base_url`, `required for type ${p.type}`);
    if (p.type === "simulated" && (p.base_url || p.api_key)) res.issue(`providers.${name}`, "a simulated provider takes no base_url or api_key");
    providers[name] = {
      name,
      type: p.type,
      baseUrl: p.base_url?.replace(/\/+$/, ""),
      apiKey: p.api_key,
      headers: p.headers,
      tokensPerSecond: p.tokens_per_second,
      anthropicVersion: p.anthropic_version,
    };
  }
  return providers;
}

/** `models:` — each public name with its provider, upstream id, price and tokenizer. */
export function resolveModels(res: Resolution, providers: Record<string, ProviderConfig>): Record<string, ResolvedModel> {
  const models: Record<string, ResolvedModel> = {};
  for (const [name, m] of Object.entries(res.raw.models)) {
    const provider = providers[m.provider];
    if (!provider) {
      res.issue(`models.${name}.provider`, `unknown provider "${m.provider}" (known: ${known(providers)})`);
      continue;
    }
    const upstream = m.upstream ?? name;
    const price = priceOf(res, name, m.price, upstream, provider);
    if (!price) continue;
    models[name] = {
      name,
      provider: m.provider,
      providerType: provider.type,
      upstream,
      price,
      requires: m.requires,
      reasoning: m.reasoning ?? /^(o\d|gpt-5)/.test(upstream),
      tokenizer: m.tokenizer ?? tokenizerFor(upstream),
    };
  }
  return models;
}

/** The config's price, else the bundled catalog's; neither is an issue at `models.NAME.price`. */
function priceOf(res: Resolution, name: string, raw: Parameters<typeof configPrice>[0] | undefined, upstream: string, provider: ProviderConfig): ModelPrice | undefined {
  if (raw) {
    try {
      return configPrice(raw);
    } catch (err) {
      res.issue(`models.${name}.price`, (err as Error).message);
      return undefined;
    }
  }
  const price = catalogPrice(upstream, provider.type);
  if (!price) res.issue(`models.${name}.price`, `no price: "${upstream}" is not in the bundled catalog, so set price: { input, output } (USD per 1M tokens)`);
  return price;
}
