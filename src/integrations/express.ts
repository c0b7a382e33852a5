import type { IncomingMessage, ServerResponse } from "node:http";
import { TollgateError } from "../core/errors.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { refusalBody, refusalHeaders, type Tollgate } from "../library/tollgate.js";
import { admitFromNode } from "./node-request.js";

type Next = (err?: unknown) => void;
type Req = IncomingMessage & { tollgate?: Gate };

/** Express middleware: gates 1-3, then `req.tollgate` is the request's Gate. */
export function expressMiddleware(tg: Tollgate, opts: { route: string }) {
  return async function tollgate(req: Req, res: ServerResponse, next: Next): Promise<void> {
    let gate: Gate;
    try {
      gate = await tg.admit(admitFromNode(req, res, opts.route, tg.config.server.trustProxy));
    } catch (err) {
      if (TollgateError.is(err)) return sendRefusal(res, err);
      return next(err);
    }
    req.tollgate = gate;
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
    sendRefusal(res, refusal);
  };
}

function sendRefusal(res: ServerResponse, err: TollgateError): void {
  const body = JSON.stringify(refusalBody(err));
  res.writeHead(err.status, { ...refusalHeaders(err), "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}
