import type { IncomingMessage, ServerResponse } from "node:http";
import { clientIp } from "../core/client-ip.js";
import type { TollgateError } from "../core/errors.js";
import { readCredential } from "../core/identity.js";
import type { Gate } from "../library/gate.js";
import type { AdmitRequest } from "../library/tollgate.js";

/** What the Node-based adapters (Express, Fastify) read from a request: never trusted, only passed to gate 1. */
export function admitFromNode(req: IncomingMessage, res: ServerResponse, route: string, trustProxy: number): AdmitRequest {
  const header = (name: string) => {
    const v = req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const { token, unusable } = readCredential(header("authorization"), header("x-api-key"));
  const controller = new AbortController();
  // The response closing before it finished means the client went away.
  res.once("close", () => {
    if (!res.writableFinished) controller.abort();
  });
  return {
    route,
    ip: clientIp(req.socket.remoteAddress, header("x-forwarded-for"), trustProxy),
    token,
    unusableCredential: unusable,
    actAsUser: header("x-tollgate-user"),
    actAsPlan: header("x-tollgate-plan"),
    runId: header("x-tollgate-run"),
    challenge: header("x-tollgate-challenge"),
    signal: controller.signal,
  };
}

/**
 * Holds a Node response's status line until the gate says the response may start, so a refusal
 * known before the first token (budget, model, input, a step) is answered with its own status in
 * place of a 200 stream that breaks. Headers the gateway sends (request id, rate limits, model,
 * budget left) are added to whatever the app sends.
 */
export function holdResponse(res: ServerResponse, gate: Gate, refuse: (err: TollgateError) => void): void {
  const { writeHead, write, end } = res;
  const restore = () => Object.assign(res, { writeHead, write, end });
  const addHeaders = () => {
    if (res.headersSent) return;
    for (const [name, value] of Object.entries(gate.headers)) if (!res.hasHeader(name)) res.setHeader(name, value);
  };
  let queue: (() => void)[] | undefined;
  const start = (first: () => void): void => {
    const decided = gate.firstDecision();
    if (!decided) {
      restore();
      addHeaders();
      return first();
    }
    queue = [first];
    void decided.then((refusal) => {
      const held = queue!;
      queue = undefined;
      restore();
      if (!refusal) {
        addHeaders();
        for (const f of held) f();
        return;
      }
      refuse(refusal);
      // The app's stream goes on being read to its end; nothing of it reaches the client.
      Object.assign(res, { write: () => true, end: () => res, writeHead: () => res });
    });
  };
  const hold = <A extends unknown[], R>(original: (...args: A) => R, result: () => R) =>
    function held(this: ServerResponse, ...args: A): R {
      const run = () => void original.apply(res, args);
      if (queue) queue.push(run);
      else start(run);
      return result();
    };
  // The app's first write decides: until then nothing is held.
  res.writeHead = hold(writeHead as (...a: unknown[]) => ServerResponse, () => res) as typeof res.writeHead;
  res.write = hold(write as (...a: unknown[]) => boolean, () => true) as typeof res.write;
  res.end = hold(end as (...a: unknown[]) => ServerResponse, () => res) as typeof res.end;
}
