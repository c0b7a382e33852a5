import type { IncomingMessage, ServerResponse } from "node:http";
import { TollgateError } from "../core/errors.js";
import { offerHeaders } from "../core/gates/challenge.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";
import { refusalBody, refusalHeaders, Tollgate, type Identify } from "../library/tollgate.js";
import { admitFromNode, holdResponse } from "./node-request.js";

type Next = (err?: unknown) => void;
type Req = IncomingMessage & { tollgate?: Gate };

export interface ExpressOptions<R = Req> {
  /** A route name from the config; an unknown name throws here, when the middleware is made. */
  route: string;
  /** The app's own session: who is calling. `null` falls back to the request's credentials. */
  identify?: Identify<R>;
}

/** Express middleware: gates 1-3, then `req.tollgate` is the request's Gate. */
export function expressMiddleware<R extends IncomingMessage = Req>(tg: Tollgate, opts: ExpressOptions<R>) {
  tg.checkRoute(opts.route);
  return async function tollgate(req: R, res: ServerResponse, next: Next): Promise<void> {
    let gate: Gate;
    try {
      const identify = opts.identify;
      gate = await tg.admit({ ...admitFromNode(req, res, opts.route, tg.config.server.trustProxy), identify: identify && (() => identify(req)) });
    } catch (err) {
      if (TollgateError.is(err)) return sendRefusal(res, err);
      return next(err);
    }
    (req as Req).tollgate = gate;
    holdResponse(res, gate, (refusal) => {
      void gate.end(refusal);
      sendRefusal(res, refusal, gate);
    });
    res.once("close", () => void gate.end());
    next();
  };
}

/**
 * The page's proof-of-work challenge endpoint (`app.get("/api/challenge", tg.expressChallenge({ route: "chat" }))`):
 * a fresh challenge for this caller as altcha's widget reads it; the solution comes back in
 * x-tollgate-challenge on the route's requests, which the middleware's admission verifies.
 */
export function expressChallenge<R extends IncomingMessage = Req>(tg: Tollgate, opts: ExpressOptions<R>) {
  tg.checkRoute(opts.route);
  return async function tollgateChallenge(req: R, res: ServerResponse, next: Next): Promise<void> {
    try {
      const identify = opts.identify;
      const offer = await tg.challenge({ ...admitFromNode(req, res, opts.route, tg.config.server.trustProxy), identify: identify && (() => identify(req)) });
      const body = JSON.stringify(offer.challenge);
      res.writeHead(200, { ...offerHeaders(offer), "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    } catch (err) {
      if (TollgateError.is(err)) return sendRefusal(res, err);
      next(err);
    }
  };
}

/** Express error handler: a TollgateError thrown in a handler (a step past max_steps…) becomes its HTTP refusal. */
export function expressErrorHandler() {
  return function tollgateErrors(err: unknown, req: Req, res: ServerResponse, next: Next): void {
    const refusal = refusalOf(err, req.tollgate);
    if (!refusal) return next(err);
    void req.tollgate?.end(refusal);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendRefusal(res, refusal, req.tollgate);
  };
}

function sendRefusal(res: ServerResponse, err: TollgateError, gate?: Gate): void {
  const body = JSON.stringify(refusalBody(err));
  res.writeHead(err.status, { ...refusalHeaders(err, gate), "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

// Express's own extension point (what @types/express-serve-static-core merges into its Request):
// a global interface, so this declaration imports nothing from Express.
declare global {
  namespace Express {
    interface Request {
      /** The request's Gate, on routes behind tollgate's middleware. */
      tollgate: Gate;
    }
  }
}

declare module "../library/tollgate.js" {
  interface Tollgate {
    /** Express middleware (`expressMiddleware(tg, opts)`); pair it with `tg.expressErrors()` after your routes. */
    express<R extends IncomingMessage = IncomingMessage>(opts: ExpressOptions<R>): ReturnType<typeof expressMiddleware<R>>;
    /** Express error handler that turns a TollgateError from a handler into its refusal. */
    expressErrors(): ReturnType<typeof expressErrorHandler>;
    /** The page's proof-of-work challenge endpoint (`expressChallenge(tg, opts)`). */
    expressChallenge<R extends IncomingMessage = IncomingMessage>(opts: ExpressOptions<R>): ReturnType<typeof expressChallenge<R>>;
  }
}

installMethods(Tollgate.prototype, {
  express(this: Tollgate, opts: ExpressOptions<IncomingMessage>) {
    return expressMiddleware(this, opts);
  },
  expressErrors: () => expressErrorHandler(),
  expressChallenge(this: Tollgate, opts: ExpressOptions<IncomingMessage>) {
    return expressChallenge(this, opts);
  },
});
