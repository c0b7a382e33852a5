import type { ResolvedRoute } from "./config-types.js";
import type { Inspection, RequestFormat } from "./format.js";
import type { CallerContext, Exchange, HeldCounter } from "./exchange.js";
import type { GateEnv } from "./gate.js";
import type { Identity } from "./identity.js";
import type { UsageRecord } from "./usage-record.js";
import { inNetworks } from "./client-ip.js";
import { TollgateError } from "./errors.js";
import { abuseEnabled } from "./gates/abuse.js";
import { budgetCounters, budgetRefusal, budgetReservation } from "./gates/budget.js";
import { notOffered } from "./gates/model-policy.js";
import { allowedOutputTokens, normalise } from "./gates/normalise.js";
import { rateLimitState, requestWindows, type CallerWindows } from "./gates/request-windows.js";

/**
 * Refusals of a known caller worked out from this process's memory, before an exchange is built:
 * only where gates 1-3 would give their verdict without a store trip and leave nothing to record
 * beyond the refusal's code (the engine answers them once the code's records of the second are
 * spent, so they are only counted into its summary).
 */

/**
 * Who the caller is, when gates 1 and 2 would say it without the store and gates 2 and 3 keep
 * nothing of the request: a config key or an anonymous caller, no operator policy or suspicion
 * score to read, no blocklisted address, no challenge, no run. Undefined: only the gates can say.
 */
export function plainIdentity(env: GateEnv, caller: CallerContext, route: ResolvedRoute): Identity | undefined {
  if (route.challenge || route.runs || env.config.adminKey !== undefined || abuseEnabled(env)) return undefined;
  if (inNetworks(env.blocklist, caller.ip) && !inNetworks(env.allowlist, caller.ip)) return undefined;
  return env.identifier.knownIdentity(caller.credentials, route, caller.ip);
}

/** A refusal answered early, with the headers the gates would have put on the exchange. */
export interface KnownRefusal {
  error: TollgateError;
  headers: Readonly<Record<string, string>>;
}

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * Gate 5's 403 for a model the caller's plan or the route does not offer, when every gate before
 * it passes by what this process knows (`gatesBefore5`). The refusal carries the RateLimit headers
 * gate 3 gives it. Undefined: the request goes the whole way (it may be served, or refused by
 * another gate).
 */
export function modelRefusal(env: GateEnv, caller: CallerContext, route: ResolvedRoute, facts: BodyFacts): KnownRefusal | undefined {
  const named = modelNamed(env, facts);
  const identity = named !== undefined ? plainIdentity(env, caller, route) : undefined;
  // A model the plan offers is served or refused by the gates (its `requires` among them).
  if (!identity || !notOffered(env.config, route, identity.plan, named!)) return undefined;
  const passed = gatesBefore5(env, route, identity, facts);
  if (!passed) return undefined;
  return { error: notAllowed(identity.plan, named!), headers: gate3Headers(passed) };
}

/**
 * Gate 6's 402 for a request whose estimate cannot fit a calendar or lifetime budget even at what
 * is known settled of it (RecentTotals.settledAtLeast; holds are not counted, as they settle
 * lower), when gates 1-5 pass by what this process knows and every counter the reservation takes
 * before that budget is known to have room: the store would name the same budget. Undefined: the
 * reservation asks the store.
 */
export function budgetRefusal402(env: GateEnv, caller: CallerContext, route: ResolvedRoute, facts: BodyFacts): KnownRefusal | undefined {
  const named = modelNamed(env, facts);
  const identity = named !== undefined ? plainIdentity(env, caller, route) : undefined;
  if (!identity || notOffered(env.config, route, identity.plan, named!)) return undefined;
  const model = env.config.models[named!]!;
  // Gate 5's other refusals, and a downgrade under budget pressure (gatesBefore5 leaves that out).
  if (model.requires.length || !env.providers[model.provider]?.supports(caller.endpoint)) return undefined;
  const passed = gatesBefore5(env, route, identity, facts);
  if (!passed) return undefined;
  const { counters, estimate } = reservationOf(env, route, identity, facts, passed.inspection);
  const recent = env.recent;
  const totals = recent.totals(counters);
  for (let i = 0; i < counters.length; i++) {
    const c = counters[i]!;
    if (totals && totals[i]! + c.amount <= c.max) continue;
    // Only a calendar or lifetime budget's settled spend stays put (a usd window's leaves its window).
    const least = c.unit === "usd" && c.period !== undefined ? recent.settledAtLeast(c.key) : -1;
    if (least < 0 || least + c.amount <= c.max) return undefined;
    // What is left is the settled spend's: the store's answer too while nothing is held. (A recent
    // total is no help here: it is an upper bound, its holds at their estimates.)
    return { error: spentRefusal(c, least, estimate, env.now()), headers: gate3Headers(passed) };
  }
  return undefined;
}

/**
 * Gate 6's counters and estimate for this caller and body. The estimate (the tokenizer's bound)
 * depends on the body alone and the counters' keys on the caller and the calendar periods, so the
 * body's facts keep those of the last caller asked until the first of those periods ends.
 */
function reservationOf(env: GateEnv, route: ResolvedRoute, identity: Identity, facts: BodyFacts, inspection: Inspection): { counters: HeldCounter[]; estimate: number } {
  const who = whoOf(identity);
  const now = env.now();
  const kept = facts.reservation;
  if (kept && kept.who === who && now < kept.until) return kept;
  const model = env.config.models[facts.model!]!;
  const scratch = {
    route,
    identity,
    policy: undefined,
    inspection,
    model,
    upstream: { model: model.upstream, maxOutputTokens: inspection.producesOutput === false ? 0 : allowedOutputTokens(inspection.outputTokens, route.input.maxOutputTokens), reasoning: model.reasoning },
    record: { estimated_cost_usd: 0 } as UsageRecord,
    estimate: 0,
    estimatedInputTokens: 0,
  };
  const counters = budgetReservation(scratch as unknown as Exchange, env);
  facts.reservation = { who, until: untilReset(counters), counters, estimate: scratch.estimate };
  return facts.reservation;
}

/**
 * The store's word on a budget gate 6 was refused on, for `budgetRefusal402`: its settled spend,
 * asked at most once per RECENT_TOTAL_MS per budget, off the refusal's path (nothing waits for it).
 */
export function learnSettled(env: GateEnv, c: HeldCounter): void {
  if (c.unit !== "usd" || c.period === undefined || !env.store.peekDetail || env.recent.settledFresh(c.key)) return;
  // One question per budget at a time: a flood of 402s (or a store that fails) must not start one per refusal.
  let asking = askingBy.get(env.recent);
  if (!asking) askingBy.set(env.recent, (asking = new Set()));
  if (asking.has(c.key)) return;
  asking.add(c.key);
  env.store.peekDetail([c]).then(
    ([d]) => {
      asking!.delete(c.key);
      if (d) env.recent.noteSettled(c.key, d.total - d.reserved);
    },
    () => void asking!.delete(c.key),
  );
}
/** Budgets whose settled spend is being asked (learnSettled), per engine's recent totals. */
const askingBy = new WeakMap<object, Set<string>>();

/**
 * What a request body says to the early refusals. Its model, body and inspection depend on the
 * body, the route and the format alone (not on the caller, the clock or any total), so a flood of
 * one body works them out once; `reservation` alone is kept for one caller and one period.
 */
export interface BodyFacts {
  /** The model the body names, when it names one as a string. */
  readonly model: string | undefined;
  /** The parsed body (read, never changed), its format and endpoint. */
  readonly body: unknown;
  readonly format: RequestFormat;
  readonly endpoint: CallerContext["endpoint"];
  /**
   * Its inspection when it inspects, names that model where gate 5 reads it, and passes gate 4
   * (null: it does not); worked out on first need (`inspectionOf`), so a body served meanwhile costs none.
   */
  inspection?: Inspection | null;
  /** Gate 6's counters and estimate for the last caller asked, until the first calendar period among them ends. */
  reservation?: { who: string; until: number; counters: HeldCounter[]; estimate: number };
}

/** A parsed body's facts. */
export function factsOf(env: GateEnv, route: ResolvedRoute, format: RequestFormat, endpoint: CallerContext["endpoint"], body: unknown): BodyFacts {
  const named = typeof body === "object" && body !== null ? (body as { model?: unknown }).model : undefined;
  const model = typeof named === "string" ? named : undefined;
  return { model, body, format, endpoint };
}

/** The body's inspection when it passes gate 4 (factsOf), worked out once. */
function inspectionOf(env: GateEnv, route: ResolvedRoute, facts: BodyFacts): Inspection | undefined {
  if (facts.inspection === undefined) facts.inspection = passesGate4(env, route, facts.format, facts.body, facts.endpoint) ?? null;
  return facts.inspection ?? undefined;
}

/** Bodies larger than this are not kept for comparison: a flood's body is small, and memory stays bounded. */
const MAX_KEPT_BODY = 64 * 1024;
/** The last body seen on each route and format, and its facts. */
const lastBodies = new WeakMap<ResolvedRoute, Map<RequestFormat, { endpoint: string; bytes: Buffer; facts: BodyFacts }>>();

/**
 * The facts of a body still in bytes. The same bytes as the last body on this route and format
 * have that body's facts (a flood of one refused request is parsed once); otherwise `parse` is
 * called (its error, for a body that is not JSON: undefined, the gates give it).
 */
export function factsOfBytes(env: GateEnv, route: ResolvedRoute, format: RequestFormat, endpoint: CallerContext["endpoint"], bytes: Buffer, parse: () => unknown): BodyFacts | undefined {
  let byFormat = lastBodies.get(route);
  const last = byFormat?.get(format);
  if (last && last.endpoint === endpoint && last.bytes.equals(bytes)) return last.facts;
  let body: unknown;
  try {
    body = parse();
  } catch {
    return undefined;
  }
  const facts = factsOf(env, route, format, endpoint, body);
  if (bytes.length <= MAX_KEPT_BODY) {
    if (!byFormat) lastBodies.set(route, (byFormat = new Map()));
    // A copy: nothing may change what a later body is compared with.
    byFormat.set(format, { endpoint, bytes: Buffer.from(bytes), facts });
  }
  return facts;
}

/** The body's model, when it names one and nothing asks for the gates' whole way (alerts to raise). */
function modelNamed(env: GateEnv, facts: BodyFacts): string | undefined {
  return env.alerts ? undefined : facts.model;
}

interface Passed {
  windows: CallerWindows;
  /** Gate 3's windows' recent totals. */
  totals: number[];
  inspection: Inspection;
}

/**
 * Gates 3 and 4 by what this process knows: gate 3's windows have room and no budget is spent or
 * past its soft share (no downgrade) by fresh recent totals, as the joint reservation's
 * `windowsSeen` and gate 3's peek take them; the body inspects and passes gate 4's caps.
 */
function gatesBefore5(env: GateEnv, route: ResolvedRoute, identity: Identity, facts: BodyFacts): Passed | undefined {
  const windows = requestWindows({ route, identity, windows: undefined });
  const limits = windows.counters;
  // budgetCounters hands back the caller's counters built once per period (budget-levels.ts).
  const spent = budgetCounters({ identity, policy: undefined }, env, 0);
  const totals = env.recent.totals(limits.length && spent.length ? [...limits, ...spent] : limits.length ? limits : spent);
  if (!totals || (env.recent.anyFull && env.recent.refusal(limits))) return undefined;
  for (let i = 0; i < limits.length; i++) if (totals[i]! + limits[i]!.amount > limits[i]!.max) return undefined;
  for (let i = 0; i < spent.length; i++) if (totals[limits.length + i]! >= Math.min(spent[i]!.max, spent[i]!.softAt ?? Infinity)) return undefined;
  const inspection = inspectionOf(env, route, facts);
  return inspection && { windows, totals, inspection };
}

/** What a caller's budget counters are keyed by: its kind, user, plan, org and key. */
function whoOf(id: Identity): string {
  return `${id.kind}\u0000${id.user}\u0000${id.plan}\u0000${id.org ?? ""}\u0000${id.keyId ?? ""}`;
}

/** When the first calendar period among these counters ends (their keys name it); lifetime budgets never do. */
function untilReset(counters: readonly HeldCounter[]): number {
  let until = Infinity;
  for (const c of counters) if (c.resetsAt !== undefined && c.resetsAt < until) until = c.resetsAt;
  return until;
}

/** Gate 3's RateLimit headers for a request it let through, this request counted in (as windowsSeen gives them). */
function gate3Headers({ windows, totals }: Passed): Readonly<Record<string, string>> {
  if (!windows.policy) return NO_HEADERS;
  const seen = windows.counters.map((c, i) => totals[i]! + c.amount);
  return { "ratelimit-policy": windows.policy, ratelimit: rateLimitState(windows, seen) };
}

/** The body's inspection when it inspects and gate 4 lets it through, on a scratch exchange (nothing of it is kept). */
function passesGate4(env: GateEnv, route: ResolvedRoute, format: RequestFormat, body: unknown, endpoint: CallerContext["endpoint"]): Inspection | undefined {
  const scratch = { route, caller: { endpoint }, record: { clamped: {} } as UsageRecord, headers: {} as Record<string, string>, inspection: undefined as Inspection | undefined };
  try {
    const inspection = (scratch.inspection = format.inspect(body));
    // The body's model is what gate 5 reads (a format that names it elsewhere goes the whole way).
    if (inspection.model !== (body as { model: string }).model) return undefined;
    const pending = normalise(scratch as unknown as Exchange, env);
    if (pending) {
      // A prompt near its cap fires a signal and waits for it: the gates' way, not this one.
      pending.catch(() => {});
      return undefined;
    }
    return inspection;
  } catch {
    return undefined;
  }
}

/** The last early 402 of each budget: a flood of one call gives it again while its numbers and wait stay the same. */
const lastSpent = new Map<string, { counter: HeldCounter; used: number; estimate: number; retry: number | undefined; error: TollgateError }>();

/** budgetRefusal, made once per budget, spend, estimate and wait in seconds, and frozen: its body is then serialised once per API. */
function spentRefusal(c: HeldCounter, used: number, estimate: number, now: number): TollgateError {
  const retry = c.resetsAt === undefined ? undefined : Math.max(1, Math.ceil((c.resetsAt - now) / 1000));
  const last = lastSpent.get(c.key);
  // The same budget of the same config (engines in one process may name one key with another cap).
  if (last && last.used === used && last.estimate === estimate && last.retry === retry && sameBudget(last.counter, c)) return last.error;
  const error = Object.freeze(budgetRefusal(c, used, estimate, now));
  if (!last && lastSpent.size >= MAX_REMEMBERED) lastSpent.clear();
  lastSpent.set(c.key, { counter: c, used, estimate, retry, error });
  return error;
}

/** Whether two counters of one key would word a refusal alike. */
function sameBudget(a: HeldCounter, b: HeldCounter): boolean {
  return a === b || (a.max === b.max && a.label === b.label && a.resetsAt === b.resetsAt && a.timezone === b.timezone && a.limitId === b.limitId);
}

/** Refusals of a plan and model, made once: their body is then serialised once per API. */
const refusals = new Map<string, TollgateError>();
/** Model names are the caller's: a flood of distinct ones cannot grow memory. */
const MAX_REMEMBERED = 1_000;

function notAllowed(plan: string, model: string): TollgateError {
  const key = `${plan}\u0000${model}`;
  let err = refusals.get(key);
  if (err) return err;
  err = Object.freeze(new TollgateError("model_not_allowed", `model ${model} is not available to plan ${plan} on this route`, { param: "model" }));
  if (refusals.size >= MAX_REMEMBERED) refusals.clear();
  refusals.set(key, err);
  return err;
}
