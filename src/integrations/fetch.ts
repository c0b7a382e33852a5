import { clientIp } from "../core/client-ip.js";
import { TollgateError } from "../core/errors.js";
import { offerHeaders } from "../core/gates/challenge.js";
import { readCredential } from "../core/identity.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";
import { refusalBody, refusalHeaders, Tollgate, type AdmitRequest, type Identify } from "../library/tollgate.js";

export interface FetchOptions {
  /** A route name from the config; an unknown name throws here, when the handler is made. */
  route: string;
  /** The client's address; Web Requests carry no socket. Default: X-Forwarded-For under trust_proxy, else "0.0.0.0". */
  ip?: (req: Request) => string;
  /** The app's own session: who is calling. `null` falls back to the request's credentials. */
  identify?: Identify<Request>;
}

/** The app's handler behind `fetchHandler`: the Request and its admitted Gate. */
export type FetchRouteHandler = (req: Request, gate: Gate) => Response | Promise<Response>;

/** What gate 1 reads from a Web-standard Request. */
export function admitFromRequest(req: Request, route: string, trustProxy: number, ip?: (req: Request) => string, identify?: Identify<Request>): AdmitRequest {
  const { token, unusable } = readCredential(req.headers.get("authorization") ?? undefined, req.headers.get("x-api-key") ?? undefined);
  return {
    route,
    ip: ip ? ip(req) : clientIp("0.0.0.0", req.headers.get("x-forwarded-for") ?? undefined, trustProxy),
    token,
    unusableCredential: unusable,
    actAsUser: req.headers.get("x-tollgate-user") ?? undefined,
    actAsPlan: req.headers.get("x-tollgate-plan") ?? undefined,
    runId: req.headers.get("x-tollgate-run") ?? undefined,
    challenge: req.headers.get("x-tollgate-challenge") ?? undefined,
    signal: req.signal,
    identify: identify && (() => identify(req)),
  };
}

export function refusalResponse(err: TollgateError, gate?: Gate): Response {
  return Response.json(refusalBody(err), { status: err.status, headers: refusalHeaders(err, gate) });
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
      gate = await tg.admit(admitFromRequest(req, opts.route, tg.config.server.trustProxy, opts.ip, opts.identify));
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
      if (refusal) return refusalResponse(refusal, gate);
      throw err;
    }
    req.signal.addEventListener("abort", () => void gate.end(), { once: true });
    return answer(res, gate);
  };
}

/**
 * The page's challenge endpoint (`export const GET = tg.fetchChallenge({ route: "chat" })`): a fresh
 * proof-of-work challenge for this caller as altcha's widget reads it; the solution comes back in
 * x-tollgate-challenge on the route's requests, which admission verifies.
 */
export function fetchChallenge(tg: Tollgate, opts: FetchOptions) {
  tg.checkRoute(opts.route);
  return async function tollgateChallenge(req: Request): Promise<Response> {
    try {
      const offer = await tg.challenge(admitFromRequest(req, opts.route, tg.config.server.trustProxy, opts.ip, opts.identify));
      return Response.json(offer.challenge, { headers: offerHeaders(offer) });
    } catch (err) {
      if (TollgateError.is(err)) return refusalResponse(err);
      throw err;
    }
  };
}

/**
 * The app's response as the client gets it: held until the first model call is admitted, so a
 * refusal known before the first token is answered with its own status, then passed through with
 * the gateway's headers; the record is written once the body has been sent.
 */
export async function answer(res: Response, gate: Gate): Promise<Response> {
  const held = await holdBody(res, gate);
  if (TollgateError.is(held)) {
    await gate.end(held);
    return refusalResponse(held, gate);
  }
  const headers = new Headers(res.headers);
  for (const [name, value] of Object.entries(gate.headers)) if (!headers.has(name)) headers.set(name, value);
  if (!held) {
    await gate.end();
    return new Response(null, { status: res.status, statusText: res.statusText, headers });
  }
  const body = held.pipeThrough(new TransformStream({ flush: () => void gate.end() }));
  return new Response(body, { status: res.status, statusText: res.statusText, headers });
}

/**
 * Reads the app's body while the first model call is decided, so a stream that only starts the
 * model once read still gets there; what was read is sent first. A refusal cancels the body.
 */
async function holdBody(res: Response, gate: Gate): Promise<ReadableStream<Uint8Array> | null | TollgateError> {
  const decided = gate.firstDecision();
  if (!decided || !res.body) return res.body;
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let done = false;
  let decidedYet = false;
  void decided.then(() => (decidedYet = true));
  const drained = (async () => {
    while (!decidedYet) {
      const r = await reader.read().catch(() => ({ done: true as const, value: undefined }));
      if (r.done) return void (done = true);
      chunks.push(r.value);
    }
  })();
  const refusal = await Promise.race([decided, drained.then(() => undefined)]);
  if (refusal) {
    await reader.cancel().catch(() => {});
    return refusal;
  }
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      // A read may still be in flight from while we waited: it comes first.
      await drained;
      if (chunks.length) for (const c of chunks.splice(0)) controller.enqueue(c);
      else if (!done) {
        const r = await reader.read();
        if (r.done) done = true;
        else controller.enqueue(r.value);
      }
      if (done && !chunks.length) controller.close();
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

declare module "../library/tollgate.js" {
  interface Tollgate {
    /** Wraps a Web-standard handler (`fetchHandler(tg, handler, opts)`): Next.js route handlers, Bun, Deno. */
    fetch(handler: FetchRouteHandler, opts: FetchOptions): ReturnType<typeof fetchHandler>;
    /** The page's proof-of-work challenge endpoint as a Web-standard handler (`fetchChallenge(tg, opts)`). */
    fetchChallenge(opts: FetchOptions): ReturnType<typeof fetchChallenge>;
  }
}

installMethods(Tollgate.prototype, {
  fetch(this: Tollgate, handler: FetchRouteHandler, opts: FetchOptions) {
    return fetchHandler(this, handler, opts);
  },
  fetchChallenge(this: Tollgate, opts: FetchOptions) {
    return fetchChallenge(this, opts);
  },
});
