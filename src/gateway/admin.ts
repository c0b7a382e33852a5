import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Engine } from "../core/engine.js";
import { storeFailure, TollgateError } from "../core/errors.js";
import { createKey, keyInfo, type NewKey } from "../core/keys.js";
import { parseUsd } from "../core/money.js";
import { openaiErrorBody } from "../formats/errors.js";
import { optArray, optBool, optString } from "../formats/fields.js";
import type { Observability } from "../observability/index.js";
import { StoreUnavailableError } from "../core/store.js";
import { jsonBody, type AdminCall, type AdminRoute } from "./admin-params.js";
import { POLICY_ROUTES } from "./admin-policy.js";
import { USAGE_ROUTES } from "./admin-usage.js";
import { OUTBOX_ROUTES } from "./admin-outbox.js";

const digest = (s: string) => createHash("sha256").update(s).digest();

const KEY_ROUTES: AdminRoute[] = [
  {
    method: "GET",
    path: /^\/admin\/keys$/,
    handle: async ({ engine }) => ({ body: { data: (await engine.store.listKeys()).map(keyInfo) } }),
  },
  {
    method: "POST",
    path: /^\/admin\/keys$/,
    async handle({ req, engine, observability }) {
      const body = await jsonBody(req);
      const expires = optString(body, "expires");
      const expiresAt = expires === undefined ? undefined : Date.parse(expires);
      if (expiresAt !== undefined && Number.isNaN(expiresAt)) throw new TollgateError("invalid_request", "expires: expected an ISO-8601 time", { param: "expires" });
      const created = await createKey(engine.store, engine.config, {
        user: optString(body, "user"),
        plan: optString(body, "plan") ?? "",
        routes: optArray(body, "routes") as string[] | undefined,
        grants: optArray(body, "grants") as string[] | undefined,
        service: optBool(body, "service"),
        verified: optBool(body, "verified"),
        expiresAt,
        org: optString(body, "org"),
        budget: keyBudget(body),
      });
      // The id only: the secret leaves in this response and nowhere else.
      observability?.logs.ops.info({ admin: "key_create", key_id: created.id, user: created.info.user ?? null, plan: created.info.plan }, "an operator created a key");
      return { status: 201, body: { ...created.info, key: created.key } };
    },
  },
  {
    method: "DELETE",
    path: /^\/admin\/keys\/([^/]+)$/,
    async handle({ engine, params, observability }) {
      if (!(await engine.store.revokeKey(params[0]!))) throw new TollgateError("not_found", `no key with id ${params[0]}`);
      observability?.logs.ops.info({ admin: "key_revoke", key_id: params[0] }, "an operator revoked a key");
      return { body: { id: params[0], revoked: true } };
    },
  },
];

const ROUTES: readonly AdminRoute[] = [...KEY_ROUTES, ...USAGE_ROUTES, ...POLICY_ROUTES, ...OUTBOX_ROUTES];

export interface Admin {
  /** /admin/*: JSON endpoints behind the admin key. */
  handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void>;
  /** GET /metrics, open or behind the admin key as `server.metrics` says. */
  metrics(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/**
 * Operator endpoints behind `admin_key`. Absent key = the whole surface does not exist. The bearer
 * is compared as SHA-256 digests with timingSafeEqual, so neither length nor content leaks through
 * timing. The endpoints themselves live with their subject: keys here, usage queries in
 * admin-usage.ts, blocks, budgets and scores in admin-policy.ts.
 */
export function createAdmin(engine: Engine, observability?: Observability): Admin {
  const expected = engine.config.adminKey ? digest(engine.config.adminKey) : undefined;
  const blockedHere = new Set<string>();

  function authorised(req: IncomingMessage): boolean {
    if (!expected) return false;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
    return !!m && timingSafeEqual(digest(m[1]!.trim()), expected);
  }

  return {
    async handle(req, res, path) {
      if (!expected) return send(res, 404, openaiErrorBody(new TollgateError("not_found", "the admin API is disabled (no admin_key)")));
      if (!authorised(req)) return send(res, 401, openaiErrorBody(new TollgateError("unauthorized", "admin key required")), { "www-authenticate": 'Bearer realm="tollgate-admin"' });
      try {
        let pathMatched = false;
        for (const route of ROUTES) {
          const m = route.path.exec(path);
          if (!m) continue;
          pathMatched = true;
          if (route.method !== req.method) continue;
          const call: AdminCall = {
            req,
            res,
            params: m.slice(1).map(decodeParam),
            query: new URL(req.url ?? "/", "http://admin").searchParams,
            engine,
            observability,
            blockedHere,
          };
          const result = await route.handle(call);
          if (result) send(res, result.status ?? 200, result.body);
          return;
        }
        throw new TollgateError(pathMatched ? "invalid_request" : "not_found", `no admin endpoint ${req.method} ${path}`);
      } catch (err) {
        if (res.headersSent) return void res.destroy();
        if (!TollgateError.is(err)) observability?.logs.ops.error({ err, path }, "admin request failed");
        // The store failing is a 503 with Retry-After; anything else is a bug, a 500 (never a guessed 503).
        if (!TollgateError.is(err) && !(err instanceof StoreUnavailableError)) {
          return send(res, 500, { error: { message: "internal error", type: "api_error", code: "internal_error", param: null } });
        }
        const e = storeFailure(err);
        return send(res, e.status, openaiErrorBody(e), e.retryAfterSeconds !== undefined ? { "retry-after": String(e.retryAfterSeconds) } : {});
      }
    },

    async metrics(req, res) {
      const mode = engine.config.server.metrics;
      if (mode === "off" || !observability) return send(res, 404, openaiErrorBody(new TollgateError("not_found", "metrics are off (server.metrics)")));
      if (mode === "admin" && !authorised(req)) return send(res, 401, openaiErrorBody(new TollgateError("unauthorized", "admin key required")), { "www-authenticate": 'Bearer realm="tollgate-metrics"' });
      const registry = observability.metrics.registry;
      // Records still waiting for their sinks count: a scrape right after an answer sees its request.
      observability.flush();
      const text = await registry.metrics();
      res.writeHead(200, { "content-type": registry.contentType, "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
      res.end(text);
    },
  };
}

function decodeParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new TollgateError("invalid_request", `malformed path segment ${JSON.stringify(raw)}`);
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
  res.end(text);
}

/** `budget: { daily, monthly, total }` in US dollars, as in the config file. */
function keyBudget(body: Record<string, unknown>): NewKey["budget"] {
  const raw = body.budget;
  if (raw === undefined) return undefined;
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new TollgateError("invalid_request", "budget: expected { daily, monthly, total } in US dollars", { param: "budget" });
  const out: NonNullable<NewKey["budget"]> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k !== "daily" && k !== "monthly" && k !== "total") throw new TollgateError("invalid_request", `budget.${k}: unknown; expected daily, monthly or total`, { param: `budget.${k}` });
    if (typeof v !== "number" || !(v >= 0)) throw new TollgateError("invalid_request", `budget.${k}: expected a non-negative number of US dollars`, { param: `budget.${k}` });
    out[k] = parseUsd(v);
  }
  return out;
}
