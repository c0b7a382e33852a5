import { createHmac } from "node:crypto";
import type { ResolvedChallenge, ResolvedLimit, ResolvedRoute, RunEnvelope } from "../core/config-types.js";
import type { Resolution } from "./resolution.js";
import type { RawLimit, RawRoute } from "./schema.js";

const LIMIT_UNITS = ["requests", "tokens", "files", "usd", "concurrent"] as const;

/** `routes:` — paths, who may use them, their limits, input caps and run envelopes. */
export function resolveRoutes(res: Resolution): ResolvedRoute[] {
  const routes: ResolvedRoute[] = [];
  const paths = new Map<string, string>();
  const serverTimeoutMs = res.ms(res.raw.server.timeout);
  for (const [name, r] of Object.entries(res.raw.routes)) {
    const route = resolveRoute(res, name, r);
    const prior = paths.get(route.path);
    if (prior) res.issue(`routes.${name}.path`, `"${r.path}" is already the path of route ${prior}`);
    paths.set(route.path, name);
    r.plans.forEach((p, i) => res.checkPlan(p, `routes.${name}.plans[${i}]`));
    r.limits?.forEach((l, i) => l.plans?.forEach((p, j) => res.checkPlan(p, `routes.${name}.limits[${i}].plans[${j}]`)));
    if (r.default_model) res.checkModel(r.default_model, `routes.${name}.default_model`);
    r.models?.forEach((m, i) => res.checkModel(m, `routes.${name}.models[${i}]`));
    if (r.budget_downgrade_to !== undefined) res.checkModel(r.budget_downgrade_to, `routes.${name}.budget_downgrade_to`);
    if (route.challenge) checkChallenge(res, name, route);
    // A route's timeout can shorten server.timeout, never lengthen it.
    routes.push({ ...route, timeoutMs: Math.min(route.timeoutMs || Infinity, serverTimeoutMs) });
  }
  return routes;
}

function resolveRoute(res: Resolution, name: string, r: RawRoute): ResolvedRoute {
  const i = r.input;
  return {
    name,
    path: r.path.replace(/\/+$/, ""),
    plans: r.plans,
    defaultModel: r.default_model,
    models: r.models,
    budgetDowngradeTo: r.budget_downgrade_to,
    endpoints: new Set(r.endpoints),
    limits: (r.limits ?? []).map((l, idx) => resolveLimit(res, `${name}.${idx}`, l, `routes.${name}.limits[${idx}]`)),
    input: {
      maxPromptChars: i.max_prompt_chars,
      maxOutputTokens: i.max_output_tokens,
      onExcessOutputTokens: i.on_excess_output_tokens,
      maxMessages: i.max_messages,
      maxTools: i.max_tools,
      maxAttachments: i.max_attachments,
      maxAttachmentBytes: i.max_attachment_bytes,
      maxDocs: i.max_docs,
      maxN: i.max_n,
      maxEmbeddingInputs: i.max_embedding_inputs,
      allowLogprobs: i.allow_logprobs,
      storedState: i.stored_state,
    },
    runs: r.runs && resolveRuns(res, r.runs, `routes.${name}.runs`),
    timeoutMs: r.timeout ? res.ms(r.timeout) : 0,
    challenge: r.challenge && resolveChallenge(res, name, r.challenge),
  };
}

function resolveLimit(res: Resolution, id: string, l: RawLimit, path: string): ResolvedLimit {
  // The schema admits exactly one unit per limit.
  const unit = LIMIT_UNITS.find((u) => l[u] !== undefined)!;
  const max = unit === "usd" ? (res.micros(l.usd, `${path}.usd`) ?? 0) : (l[unit] as number);
  return { id, per: l.per, unit, max, windowMs: l.window ? res.ms(l.window) : 0, plans: l.plans && new Set(l.plans) };
}

function resolveRuns(res: Resolution, runs: NonNullable<RawRoute["runs"]>, path: string): RunEnvelope {
  return {
    per: runs.per,
    max: runs.max,
    windowMs: runs.window ? res.ms(runs.window) : undefined,
    maxSteps: runs.max_steps,
    maxToolCalls: runs.max_tool_calls,
    maxDocs: runs.max_docs,
    maxUsd: res.micros(runs.max_usd, `${path}.max_usd`),
    maxDurationMs: runs.max_duration ? res.ms(runs.max_duration) : undefined,
  };
}

function resolveChallenge(res: Resolution, route: string, c: NonNullable<RawRoute["challenge"]>): ResolvedChallenge {
  return {
    for: c.for,
    minScore: c.min_score,
    base: c.difficulty.base,
    max: c.difficulty.max,
    ttlMs: res.ms(c.ttl),
    signatureSecret: createHmac("sha256", c.secret).update(`challenge signature for route ${route}`).digest("hex"),
    keySecret: createHmac("sha256", c.secret).update(`challenge key for route ${route}`).digest("hex"),
  };
}

/** A challenge that could never be asked for is a config error, like a limit that is never enforced. */
function checkChallenge(res: Resolution, name: string, route: ResolvedRoute): void {
  const c = route.challenge!;
  const path = `routes.${name}.challenge`;
  const scored = res.raw.abuse.downgrade_at !== undefined || res.raw.abuse.block_at !== undefined;
  if (c.for === "suspect" && c.minScore === undefined) res.issue(`${path}.min_score`, "required with for: suspect");
  if (c.minScore !== undefined && !scored) res.issue(`${path}.min_score`, "needs abuse.downgrade_at or abuse.block_at: without them no suspicion score is kept");
  if (c.for === "anonymous" && !route.plans.includes("anonymous") && c.minScore === undefined) {
    res.issue(`${path}.for`, "this route admits no anonymous callers, so nobody would be asked");
  }
  if (c.base > c.max) res.issue(`${path}.difficulty.base`, `must not be above difficulty.max (${c.max})`);
}
