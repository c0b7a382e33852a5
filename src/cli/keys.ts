import type { ResolvedConfig } from "../config/resolve.js";
import { TollgateError } from "../core/errors.js";
import { createKey, keyInfo, type NewKey } from "../core/keys.js";
import { parseUsd } from "../core/money.js";
import { openStore } from "../stores/open.js";

/** --daily / --monthly / --total in US dollars. */
function keyBudget(opts: { daily?: string; monthly?: string; total?: string }): NewKey["budget"] {
  const out: NonNullable<NewKey["budget"]> = {};
  for (const k of ["daily", "monthly", "total"] as const) {
    const v = opts[k];
    if (v === undefined) continue;
    if (!/^\d+(\.\d+)?$/.test(v)) throw usage(`keys create: --${k} expects an amount in US dollars, like 5 or 0.50`);
    out[k] = parseUsd(v);
  }
  return Object.keys(out).length ? out : undefined;
}

function usage(message: string): Error {
  return Object.assign(new Error(message), { code: "ERR_PARSE_ARGS_USAGE" });
}

export async function keysCommand(
  config: ResolvedConfig,
  positionals: string[],
  opts: { user?: string; plan?: string; routes?: string; service?: boolean; expires?: string; org?: string; daily?: string; monthly?: string; total?: string; json?: boolean },
): Promise<void> {
  const [action, arg] = positionals;
  const store = await openStore(config.store);
  try {
    if (action === "create") {
      if (!opts.plan) throw usage("keys create: --plan is required");
      let expiresAt: number | undefined;
      if (opts.expires) {
        expiresAt = Date.parse(opts.expires);
        if (Number.isNaN(expiresAt)) throw usage("keys create: --expires expects an ISO-8601 time");
      }
      const routes = opts.routes?.split(",").map((r) => r.trim()).filter(Boolean);
      let created;
      try {
        created = await createKey(store, config, { user: opts.user, plan: opts.plan, routes, service: opts.service, expiresAt, org: opts.org, budget: keyBudget(opts) });
      } catch (err) {
        if (TollgateError.is(err)) throw usage(`keys create: ${err.message}`);
        throw err;
      }
      const { id, key } = created;
      process.stdout.write(opts.json ? JSON.stringify({ id, key, user: opts.user ?? null, plan: opts.plan }) + "\n" : `${key}\n\nid ${id}, user ${opts.user ?? "(service)"}, plan ${opts.plan}. The key is shown only this once.\n`);
    } else if (action === "list") {
      const keys = await store.listKeys();
      if (opts.json) {
        process.stdout.write(JSON.stringify(keys.map(keyInfo), null, 2) + "\n");
        return;
      }
      for (const k of keys) {
        const state = k.revokedAt ? "revoked" : k.expiresAt && k.expiresAt <= Date.now() ? "expired" : "active";
        process.stdout.write(`${k.id}  ${k.prefix}…  ${(k.user ?? "(service)").padEnd(16)} ${k.plan.padEnd(10)} ${state}${k.routes ? `  routes ${k.routes.join(",")}` : ""}\n`);
      }
      if (!keys.length) process.stdout.write("no keys in the store (static keys from the config are not listed)\n");
    } else if (action === "revoke") {
      if (!arg) throw usage("keys revoke: KEY_ID is required");
      if (!(await store.revokeKey(arg))) throw usage(`keys revoke: no key with id ${arg}`);
      process.stdout.write(`revoked ${arg}\n`);
    } else {
      throw usage("keys: expected create, list or revoke");
    }
  } finally {
    await store.close();
  }
}
