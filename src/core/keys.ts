import { randomUUID } from "node:crypto";
import type { ResolvedConfig } from "./config-types.js";
import type { Store, StoredKey } from "./store.js";
import { TollgateError } from "./errors.js";
import { hashKey, newKeySecret } from "./identity.js";

export interface NewKey {
  user?: string;
  plan: string;
  routes?: string[];
  service?: boolean;
  grants?: string[];
  verified?: boolean;
  expiresAt?: number;
  org?: string;
  /** Micro-dollars. */
  budget?: { daily?: number; monthly?: number; total?: number };
}

/** A key as listings show it: never the secret, never its hash. */
export type KeyInfo = Omit<StoredKey, "hash">;

/**
 * Creates a key in the store and returns its secret — the only time it exists outside the caller's
 * hands: the store keeps its SHA-256. Shared by the CLI and the admin API.
 */
export async function createKey(store: Store, config: ResolvedConfig, spec: NewKey): Promise<{ id: string; key: string; info: KeyInfo }> {
  if (!config.plans[spec.plan]) throw new TollgateError("invalid_request", `unknown plan "${spec.plan}"`, { param: "plan" });
  if (!spec.user && !spec.service) throw new TollgateError("invalid_request", "user is required unless service is true", { param: "user" });
  for (const r of spec.routes ?? []) {
    if (!config.routes.some((x) => x.name === r)) throw new TollgateError("invalid_request", `unknown route "${r}"`, { param: "routes" });
  }
  for (const g of spec.grants ?? []) {
    if (!config.plans[g]) throw new TollgateError("invalid_request", `unknown plan "${g}"`, { param: "grants" });
  }
  if (spec.org !== undefined && !config.orgs[spec.org]) throw new TollgateError("invalid_request", `unknown org "${spec.org}"`, { param: "org" });
  const secret = newKeySecret();
  const stored: StoredKey = {
    id: `key_${randomUUID().replace(/-/g, "").slice(0, 16)}`,
    hash: hashKey(secret),
    prefix: secret.slice(0, 7),
    user: spec.user,
    plan: spec.plan,
    service: spec.service ?? false,
    grants: spec.grants ?? [spec.plan],
    routes: spec.routes,
    verified: spec.verified ?? false,
    createdAt: Date.now(),
    expiresAt: spec.expiresAt,
    org: spec.org,
    budget: spec.budget,
  };
  await store.putKey(stored);
  return { id: stored.id, key: secret, info: keyInfo(stored) };
}

export function keyInfo({ hash: _hash, ...info }: StoredKey): KeyInfo {
  return info;
}
