import type { Context, MiddlewareHandler } from "hono";
import { refusalOf, type Gate } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";
import { Tollgate, type Identify } from "../library/tollgate.js";
import { TollgateError } from "../core/errors.js";
import { admitFromRequest, answer, refusalResponse } from "./fetch.js";

export interface HonoOptions {
  /** A route name from the config; an unknown name throws here, when the middleware is made. */
  route: string;
  /** The client's address, where the runtime has no socket to read it from. */
  ip?: (req: Request) => string;
  /** The app's own session, read from Hono's context. `null` falls back to the request's credentials. */
  identify?: Identify<Context<{ Variables: { tollgate: Gate } }>>;
}

/** Hono middleware: gates 1-3, then `c.get("tollgate")` is the request's Gate. */
export function honoMiddleware(tg: Tollgate, opts: HonoOptions) {
  tg.checkRoute(opts.route);
  const middleware: MiddlewareHandler<{ Variables: { tollgate: Gate } }> = async function tollgate(c, next) {
    // On @hono/node-server the socket is at c.env.incoming; elsewhere the forwarded address rules.
    const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined;
    const socketIp = env?.incoming?.socket?.remoteAddress;
    const ip = opts.ip ?? (socketIp ? () => socketIp : undefined);
    let gate: Gate;
    try {
      const identify = opts.identify;
      gate = await tg.admit(admitFromRequest(c.req.raw, opts.route, tg.config.server.trustProxy, ip, identify && (() => identify(c))));
    } catch (err) {
      if (TollgateError.is(err)) return refusalResponse(err);
      throw err;
    }
    c.set("tollgate", gate);
    await next();
    // Hono catches handler errors into c.error; a refusal becomes its HTTP answer.
    const refusal = refusalOf(c.error, gate);
    if (refusal) {
      c.res = refusalResponse(refusal, gate);
      await gate.end(refusal);
      return;
    }
    if (c.error) {
      await gate.end(c.error);
      return;
    }
    c.req.raw.signal.addEventListener("abort", () => void gate.end(), { once: true });
    c.res = await answer(c.res, gate);
  };
  return middleware;
}

declare module "hono" {
  interface ContextVariableMap {
    /** The request's Gate, behind tollgate's middleware. */
    tollgate: Gate;
  }
}

declare module "../library/tollgate.js" {
  interface Tollgate {
    /** Hono middleware (`honoMiddleware(tg, opts)`); the handler reads the Gate with `c.get("tollgate")`. */
    hono(opts: HonoOptions): ReturnType<typeof honoMiddleware>;
  }
}

installMethods(Tollgate.prototype, {
  hono(this: Tollgate, opts: HonoOptions) {
    return honoMiddleware(this, opts);
  },
});
