import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import { createKey, keyInfo } from "../core/keys.js";
import { openaiErrorBody } from "../formats/errors.js";
import { asObject, optArray, optBool, optString } from "../formats/fields.js";
import { parseJson, readBody } from "./body.js";

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * /admin/*: operator endpoints behind `admin_key`. Absent key = the whole surface does not exist.
 * The bearer is compared as SHA-256 digests with timingSafeEqual, so neither length nor content
 * leaks through timing.
 */
export function createAdmin(engine: Engine) {
  const expected = engine.config.adminKey ? digest(engine.config.adminKey) : undefined;

  function authorised(req: IncomingMessage): boolean {
    if (!expected) return false;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
    return !!m && timingSafeEqual(digest(m[1]!.trim()), expected);
  }

  return async function admin(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (!expected) return send(res, 404, openaiErrorBody(new TollgateError("not_found", "the admin API is disabled (no admin_key)")));
    if (!authorised(req)) return send(res, 401, openaiErrorBody(new TollgateError("unauthorized", "admin key required")));
    try {
      const store = engine.store;
      if (path === "/admin/keys" && req.method === "GET") {
        return send(res, 200, { data: (await store.listKeys()).map(keyInfo) });
      }
      if (path === "/admin/keys" && req.method === "POST") {
        const body = asObject(parseJson(await readBody(req, 65_536, 10_000)), "body");
        const expires = optString(body, "expires");
        const expiresAt = expires === undefined ? undefined : Date.parse(expires);
        if (expiresAt !== undefined && Number.isNaN(expiresAt)) throw new TollgateError("invalid_request", "expires: expected an ISO-8601 time", { param: "expires" });
        const created = await createKey(store, engine.config, {
          user: optString(body, "user"),
          plan: optString(body, "plan") ?? "",
          routes: optArray(body, "routes") as string[] | undefined,
          grants: optArray(body, "grants") as string[] | undefined,
          service: optBool(body, "service"),
          verified: optBool(body, "verified"),
          expiresAt,
        });
        return send(res, 201, { ...created.info, key: created.key });
      }
      const revoke = /^\/admin\/keys\/([^/]+)$/.exec(path);
      if (revoke && req.method === "DELETE") {
        if (!(await store.revokeKey(decodeURIComponent(revoke[1]!)))) throw new TollgateError("not_found", `no key with id ${revoke[1]}`);
        return send(res, 200, { id: revoke[1], revoked: true });
      }
      throw new TollgateError("not_found", `no admin endpoint ${req.method} ${path}`);
    } catch (err) {
      const e = TollgateError.is(err) ? err : new TollgateError("store_unavailable", "the store is unavailable");
      return send(res, e.status, openaiErrorBody(e));
    }
  };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
  res.end(text);
}
