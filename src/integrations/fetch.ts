import { clientIp } from "../core/client-ip.js";
import { TollgateError } from "../core/errors.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";
import { refusalBody, refusalHeaders, Tollgate, type AdmitRequest } from "../library/tollgate.js";

export interface FetchOptions {
  /** A route name from the config; an unknown name throws here, when the handler is made. */
  route: string;
  /** The client's address; Web Requests carry no socket. Default: X-Forwarded-For under trust_proxy, else "0.0.0.0". */
  ip?: (req: Request) => string;
}

/** The app's handler behind `fetchHandler`: the Request and its admitted Gate. */
export type FetchRouteHandler = (req: Request, gate: Gate) => Response | Promise<Response>;

/** What gate 1 reads from a Web-standard Request. */
export function admitFromRequest(req: Request, route: string, trustProxy: number, ip?: (req: Request) => string): AdmitRequest {
  const auth = /^Bearer\s+(.+)$/i.exec(req.headers.get("authorization") ?? "");
  return {
    route,
    ip: ip ? ip(req) : clientIp("0.0.0.0", req.headers.get("x-forwarded-for") ?? undefined, trustProxy),
    token: auth?.[1]?.trim() ?? req.headers.get("x-api-key")?.trim() ?? undefined,
    actAsUser: req.headers.get("x-tollgate-user") ?? undefined,
    actAsPlan: req.headers.get("x-tollgate-plan") ?? undefined,
    runId: req.headers.get("x-tollgate-run") ?? undefined,
    signal: req.signal,
  };
}

export function refusalResponse(err: TollgateError): Response {
  return Response.json(refusalBody(err), { status: err.status, headers: refusalHeaders(err) });
}

/**
 * Wraps a Web-standard handler (Next.js route handlers, Bun, Deno): `export const POST = tg.fetch(handler, { route })`.
 * The usage record is written when the response body has been sent (or the client left).
 */
export function fetchHandler(tg: Tollgate, handler: FetchRouteHandler, opts: FetchOptions) {
  tg.checkRoute(opts.route);
  return async function tollgateFetch(req: Request): Promise<Response> {
    let gate: Gate;
    try {
      gate = await tg.admit(admitFromRequest(req, opts.route, tg.config.server.trustProxy, opts.ip));
    } catch (err) {
      if (TollgateError.is(err)) return refusalResponse(err);
      throw err;
    }
    let res: Response;
    try {
      res = await handler(req, gate);
    } catch (err) {
      const refusal = refusalOf(err, gate);
      await gate.end(refusal ?? err);
      if (refusal) return refusalResponse(refusal);
      throw err;
    }
    if (!res.body) {
      await gate.end();
      return res;
    }
    const body = res.body.pipeThrough(
      new TransformStream({
        flush: () => void gate.end(),
      }),
    );
    req.signal.addEventListener("abort", () => void gate.end(), { once: true });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

declare module "../library/tollgate.js" {
  interface Tollgate {
    /** Wraps a Web-standard handler (`fetchHandler(tg, handler, opts)`): Next.js route handlers, Bun, Deno. */
    fetch(handler: FetchRouteHandler, opts: FetchOptions): ReturnType<typeof fetchHandler>;
  }
}

installMethods(Tollgate.prototype, {
  fetch(this: Tollgate, handler: FetchRouteHandler, opts: FetchOptions) {
    return fetchHandler(this, handler, opts);
  },
});
