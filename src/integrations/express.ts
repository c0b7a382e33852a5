import type { IncomingMessage, ServerResponse } from "node:http";
import { TollgateError } from "../core/errors.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { refusalBody, refusalHeaders, type Identify, type Tollgate } from "../library/tollgate.js";
import { admitFromNode, holdResponse } from "./node-request.js";

type Next = (err?: unknown) => void;
type Req = IncomingMessage & { tollgate?: Gate };

export interface ExpressOptions<R = Req> {
  route: string;
  /** The app's own session: who is calling. `null` falls back to the request's credentials. */
  identify?: Identify<R>;
}

/** Express middleware: gates 1-3, then `req.tollgate` is the request's Gate. */
export function expressMiddleware<R extends IncomingMessage = Req>(tg: Tollgate, opts: ExpressOptions<R>) {
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
