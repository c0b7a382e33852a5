import { refusalOf, type Gate } from "../library/gate.js";
import type { Identify, Tollgate } from "../library/tollgate.js";
import { TollgateError } from "../core/errors.js";
import { admitFromRequest, answer, refusalResponse } from "./fetch.js";

/** The parts of Hono's Context the middleware uses. */
export interface HonoContext {
  req: { raw: Request };
  env?: { incoming?: { socket?: { remoteAddress?: string } } };
  set(key: "tollgate", value: Gate): void;
  error?: Error;
  res: Response;
}

/** Hono middleware: gates 1-3, then `c.get("tollgate")` is the request's Gate. */
export function honoMiddleware(tg: Tollgate, opts: { route: string; ip?: (req: Request) => string; identify?: Identify<HonoContext> }) {
  return async function tollgate(c: HonoContext, next: () => Promise<void>): Promise<Response | void> {
    // On @hono/node-server the socket is at c.env.incoming; elsewhere the forwarded address rules.
    const socketIp = c.env?.incoming?.socket?.remoteAddress;
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
}
