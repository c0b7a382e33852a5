import { createHash } from "node:crypto";
import type { BudgetCaps, ResolvedOrg, ResolvedPlan, StaticKey } from "../core/config-types.js";
import { known, type Resolution } from "./resolution.js";
import type { RawConfig } from "./schema.js";

// Who may call and what they may spend: plans, orgs, the gateway's budget, static keys and JWTs.

type RawBudget = NonNullable<RawConfig["budget"]>;

export function resolveBudget(res: Resolution, b: RawBudget | undefined, path: string): BudgetCaps {
  return { daily: res.micros(b?.daily, `${path}.daily`), monthly: res.micros(b?.monthly, `${path}.monthly`), soft: b?.soft };
}

/** `plans:` — the models each plan may call, its per-user budget and its downgrade model. */
export function resolvePlans(res: Resolution): Record<string, ResolvedPlan> {
  const plans: Record<string, ResolvedPlan> = {};
  for (const [name, p] of Object.entries(res.raw.plans)) {
    p.models.forEach((m, i) => res.checkModel(m, `plans.${name}.models[${i}]`));
    if (p.budget_downgrade_to !== undefined) res.checkModel(p.budget_downgrade_to, `plans.${name}.budget_downgrade_to`);
    plans[name] = {
      name,
      models: p.models,
      budget: resolveBudget(res, p.budget, `plans.${name}.budget`),
      budgetDowngradeTo: p.budget_downgrade_to,
      timezone: res.zone(p.timezone, `plans.${name}.timezone`),
      paid: p.paid,
    };
  }
  return plans;
}

/** `orgs:` — budgets their callers share, on the org's calendar. */
export function resolveOrgs(res: Resolution): Record<string, ResolvedOrg> {
  return Object.fromEntries(
    Object.entries(res.raw.orgs).map(([name, o]) => [name, { budget: resolveBudget(res, o.budget, `orgs.${name}.budget`), timezone: res.zone(o.timezone, `orgs.${name}.timezone`) }]),
  );
}

/** `keys:` — static API keys, with the plans they grant, the routes they reach and their own caps. */
export function resolveKeys(res: Resolution): StaticKey[] {
  const { raw } = res;
  return raw.keys.map((k, i) => {
    const path = `keys[${i}]`;
    res.checkPlan(k.plan, `${path}.plan`);
    k.grants?.forEach((g, j) => res.checkPlan(g, `${path}.grants[${j}]`));
    k.routes?.forEach((r, j) => {
      if (!raw.routes[r]) res.issue(`${path}.routes[${j}]`, `unknown route "${r}"`);
    });
    if (!k.service && !k.user) res.issue(`${path}.user`, "required unless service: true");
    let expiresAt: number | undefined;
    if (k.expires !== undefined) {
      expiresAt = Date.parse(k.expires);
      if (Number.isNaN(expiresAt)) res.issue(`${path}.expires`, "expected an ISO-8601 time");
    }
    if (k.org !== undefined && !raw.orgs[k.org]) res.issue(`${path}.org`, `unknown org "${k.org}" (known: ${known(raw.orgs)})`);
    return {
      // A stable id that names the key without showing it.
      id: k.id ?? `cfg_${createHash("sha256").update(k.key).digest("hex").slice(0, 12)}`,
      org: k.org,
      budget: k.budget && { ...resolveBudget(res, k.budget, `${path}.budget`), total: res.micros(k.budget.total, `${path}.budget.total`) },
      key: k.key,
      user: k.user,
      plan: k.plan,
      service: k.service,
      grants: k.grants ?? [k.plan],
      routes: k.routes,
      verified: k.verified,
      expiresAt,
    };
  });
}

/** `jwt:` — one way to check tokens, and a default plan that exists. */
export function checkJwt(res: Resolution): void {
  const jwt = res.raw.jwt;
  if (!jwt) return;
  if (!jwt.secret && !jwt.jwks) res.issue("jwt", "set secret (HS256) or jwks (URL)");
  if (jwt.secret && jwt.jwks) res.issue("jwt", "set secret or jwks, not both");
  if (jwt.default_plan) res.checkPlan(jwt.default_plan, "jwt.default_plan");
}
