import { TollgateError } from "../errors.js";
import type { ResolvedConfig, ResolvedModel, ResolvedRoute } from "../config-types.js";
import type { Exchange } from "../exchange.js";
import type { Gate, GateEnv } from "../gate.js";
import { fireSignal } from "./abuse.js";
import { allowedOutputTokens } from "./normalise.js";

/**
 * Gate 5: is this model allowed for this plan and route; resolve the alias; apply a downgrade;
 * expensive models can require a verified or paid caller. Ends by building the upstream body.
 */
export const modelPolicy: Gate = function modelPolicy(ex, env) {
  const inspection = ex.inspection!;
  const id = ex.identity!;
  const requested = inspection.model ?? ex.route.defaultModel;
  if (!requested) throw new TollgateError("invalid_request", "model: required (this route has no default_model)", { param: "model" });
  ex.record.model_requested = requested;
  const plan = env.config.plans[id.plan];
  if (!allowed(env, ex, requested)) {
    throw new TollgateError("model_not_allowed", `model ${requested} is not available to plan ${id.plan} on this route`, { param: "model" });
  }
  const model = env.config.models[requested]!;
  for (const need of model.requires) {
    if (need === "verified" && !id.verified) throw new TollgateError("model_not_allowed", `model ${requested} requires a verified account`, { param: "model" });
    if (need === "paid" && !plan?.paid) throw new TollgateError("model_not_allowed", `model ${requested} requires a paid plan`, { param: "model" });
  }
  // Only a new identity asking for an expensive model waits (for the signal's score).
  if (ex.newIdentity && isExpensive(model)) return fireSignal(ex, env, "new_identity_expensive_model").then(() => serve(ex, env, model));
  serve(ex, env, model);
};

/** The rest of gate 5: a downgrade, the provider's check, the upstream body. */
function serve(ex: Exchange, env: GateEnv, model: ResolvedModel): void {
  const inspection = ex.inspection!;
  const id = ex.identity!;
  const requested = ex.record.model_requested!;
  const plan = env.config.plans[id.plan];
  const cheaper = env.config.abuse.downgradeTo;
  if (ex.downgrade && cheaper && cheaper !== requested && env.config.models[cheaper]) {
    model = env.config.models[cheaper]!;
    ex.record.decision = "downgrade";
    ex.headers["x-tollgate-downgraded"] = ex.signals.join(", ") || "suspicious";
  } else if (ex.budgetPressure) {
    // Under budget pressure the caller gets the operator's cheaper model, but never one its plan or
    // route would refuse it outright: then it keeps the one it asked for until the hard limit.
    const fallback = ex.route.budgetDowngradeTo ?? plan?.budgetDowngradeTo;
    const target = fallback !== undefined ? env.config.models[fallback] : undefined;
    if (target && target.name !== model.name && allowed(env, ex, target.name) && meetsRequires(target, id.verified, !!plan?.paid)) {
      model = target;
      ex.signals.push(BUDGET_SOFT_SIGNAL);
      ex.record.decision = "downgrade";
      ex.headers["x-tollgate-downgraded"] = BUDGET_SOFT_SIGNAL;
    }
  }
  const provider = env.providers[model.provider]!;
  if (!provider.supports(ex.caller.endpoint)) {
    throw new TollgateError("invalid_request", `model ${model.name} cannot be called through the ${ex.caller.endpoint} endpoint`, { param: "model" });
  }
  ex.model = model;
  ex.record.model = model.name;
  ex.headers["x-tollgate-model"] = model.name;
  ex.upstream = { model: model.upstream, maxOutputTokens: inspection.producesOutput === false ? 0 : allowedOutputTokens(inspection.outputTokens, ex.route.input.maxOutputTokens), reasoning: model.reasoning };
  const body = ex.inspectedBody!;
  const fields = ex.format!.upstreamFields?.(body, ex.upstream, inspection);
  ex.upstreamFields = fields;
  ex.upstreamBody = fields ? { ...body, ...fields } : ex.format!.rewrite(body, ex.upstream, inspection);
}

/** Whether the caller's plan and the route both offer this model. */
function allowed(env: GateEnv, ex: Exchange, name: string): boolean {
  return !notOffered(env.config, ex.route, ex.identity!.plan, name);
}

/** Whether a caller on this plan gets gate 5's first 403 for this model: the plan or the route does not offer it. */
export function notOffered(config: ResolvedConfig, route: ResolvedRoute, plan: string, name: string): boolean {
  return !config.models[name] || !config.plans[plan]?.models.includes(name) || (!!route.models && !route.models.includes(name));
}

/** The signal recorded when a request is downgraded because a budget is past its `soft` share. */
export const BUDGET_SOFT_SIGNAL = "budget_soft";

function meetsRequires(model: ResolvedModel, verified: boolean, paid: boolean): boolean {
  return model.requires.every((need) => (need === "verified" ? verified : paid));
}

/** Output at $10 per 1M tokens or more, or gated by `requires`: worth stealing. */
const EXPENSIVE_OUTPUT_MICROS_PER_M = 10_000_000;

function isExpensive(model: ResolvedModel): boolean {
  return model.requires.length > 0 || model.price.output >= EXPENSIVE_OUTPUT_MICROS_PER_M;
}
