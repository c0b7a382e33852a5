import type { ResolvedRoute } from "./config-types.js";
import type { RequestFormat } from "./format.js";
import type { CallerContext, Exchange } from "./exchange.js";
import type { GateEnv } from "./gate.js";
import type { Identity } from "./identity.js";
import type { UsageRecord } from "./usage-record.js";
import { inNetworks } from "./client-ip.js";
import { TollgateError } from "./errors.js";
import { abuseEnabled } from "./gates/abuse.js";
import { budgetCounters } from "./gates/budget.js";
import { notOffered } from "./gates/model-policy.js";
import { normalise } from "./gates/normalise.js";
import { rateLimitState, requestWindows } from "./gates/request-windows.js";

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
 * it passes by what this process knows: gate 3's windows have room and no budget is spent by
 * fresh recent totals (as the joint reservation's `windowsSeen` takes them), the body inspects and
 * passes gate 4's caps. The refusal carries the RateLimit headers gate 3 gives it. Undefined: the
 * request goes the whole way (it may be served, or refused by another gate).
 */
export function modelRefusal(env: GateEnv, caller: CallerContext, route: ResolvedRoute, format: RequestFormat, body: unknown): KnownRefusal | undefined {
  const named = typeof body === "object" && body !== null ? (body as { model?: unknown }).model : undefined;
  if (typeof named !== "string" || env.alerts) return undefined;
  const identity = plainIdentity(env, caller, route);
  // A model the plan offers is served or refused by the gates (its `requires` among them).
  if (!identity || !notOffered(env.config, route, identity.plan, named)) return undefined;
  const caller3 = { route, identity, windows: undefined, policy: undefined };
  const windows = requestWindows(caller3);
  const limits = windows.counters;
  const spent = budgetCounters(caller3, env, 0);
  const totals = env.recent.totals(limits.length && spent.length ? [...limits, ...spent] : limits.length ? limits : spent);
  if (!totals || (env.recent.anyFull && env.recent.refusal(limits))) return undefined;
  for (let i = 0; i < limits.length; i++) if (totals[i]! + limits[i]!.amount > limits[i]!.max) return undefined;
  for (let i = 0; i < spent.length; i++) if (totals[limits.length + i]! >= spent[i]!.max) return undefined;
  if (!passesGate4(env, route, format, body, caller.endpoint)) return undefined;
  const error = notAllowed(identity.plan, named);
  if (!windows.policy) return { error, headers: NO_HEADERS };
  // Gate 3's headers count this request in, as windowsSeen does.
  const seen = limits.map((c, i) => totals[i]! + c.amount);
  return { error, headers: { "ratelimit-policy": windows.policy, ratelimit: rateLimitState(windows, seen) } };
}

/** Whether the body inspects and gate 4 lets it through, on a scratch exchange (nothing of it is kept). */
function passesGate4(env: GateEnv, route: ResolvedRoute, format: RequestFormat, body: unknown, endpoint: CallerContext["endpoint"]): boolean {
  const scratch = { route, caller: { endpoint }, record: { clamped: {} } as UsageRecord, headers: {} as Record<string, string>, inspection: undefined as Exchange["inspection"] };
  try {
    scratch.inspection = format.inspect(body);
    // The body's model is what gate 5 reads (a format that names it elsewhere goes the whole way).
    if (scratch.inspection.model !== (body as { model: string }).model) return false;
    const pending = normalise(scratch as unknown as Exchange, env);
    if (pending) {
      // A prompt near its cap fires a signal and waits for it: the gates' way, not this one.
      pending.catch(() => {});
      return false;
    }
    return true;
  } catch {
    return false;
  }
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
