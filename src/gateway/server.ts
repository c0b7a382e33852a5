import { randomUUID } from "node:crypto";
import { createServer, ServerResponse, type IncomingHttpHeaders, type IncomingMessage, type Server } from "node:http";
import type { ResolvedRoute } from "../config/resolve.js";
import { toTollgateError, type EarlyRefusal, type Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import { offerHeaders } from "../core/gates/challenge.js";
import type { CallerContext, Exchange } from "../core/exchange.js";
import { Cancel } from "../core/cancel.js";
import { clientIp } from "../core/client-ip.js";
import { readCredential, type Credentials } from "../core/identity.js";
import type { Meter } from "../core/metering/meter.js";
import { anthropicErrorBody, openaiErrorBody } from "../formats/errors.js";
import type { RequestFormat } from "../core/format.js";
import type { JsonSource } from "../core/json-source.js";
import type { UpstreamResult } from "../core/provider.js";
import { StoreUnavailableError } from "../core/store.js";
import type { Observability } from "../observability/index.js";
import { createAdmin } from "./admin.js";
import { parseJson, readBody, wholeBody } from "./body.js";
import { BodyDiscard } from "./body-discard.js";
import { createDashboard } from "./dashboard.js";
import { ENDPOINTS } from "./endpoints.js";
import { relayStream } from "./stream-relay.js";

export interface Gateway {
  server: Server;
  /** Stops accepting, waits for in-flight requests (up to `graceMs`), then closes. */
  drain(graceMs?: number): Promise<void>;
}

export interface GatewayOptions {
  /** Metrics, traces and the live tail; the same object whose onRecord the engine was given. */
  observability?: Observability;
}

/** The OpenAI/Anthropic-compatible HTTP gateway: a thin shell that feeds requests through the engine. */
export function createGateway(engine: Engine, opts: GatewayOptions = {}): Gateway {
  const cfg = engine.config;
  const routes = [...cfg.routes].sort((a, b) => b.path.length - a.path.length);
  const obs = opts.observability;
  const admin = createAdmin(engine, obs);
  const dashboard = createDashboard(cfg);
  let inFlight = 0;
  let idle: (() => void) | undefined;

  /** One listener per response, made once: the in-flight count, and a model call's cancellation. */
  function closed(this: Response): void {
    if (--inFlight === 0) idle?.();
    if (this.abort && !this.writableFinished) this.abort.abort(CLIENT_DISCONNECT);
  }

  const server = createServer({ requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: cfg.server.keepAliveTimeoutMs, ServerResponse: Response }, (req, res) => {
    inFlight++;
    res.on("close", closed); // emitted once: no once-wrapper per response
    // An early refusal is answered within handle: no promise, nor a handler for it, per request.
    try {
      const pending = handle(req, res as Response);
      if (pending) pending.catch((err: unknown) => failed(res, err));
    } catch (err) {
      failed(res, err);
    }
  });

  function failed(res: ServerResponse, err: unknown): void {
    // The store failed after the gates (settling, the record): the store has said what failed.
    if (err instanceof StoreUnavailableError) return sendError(res, "openai", toTollgateError(err, undefined));
    // A bug, not a refusal: answer if we still can, never with internals.
    if (obs) obs.logs.ops.error({ err }, "internal error");
    else process.stderr.write(`tollgate: internal error: ${(err as Error)?.stack ?? err}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: { message: "internal error", type: "api_error", code: "internal_error", param: null } });
    else res.destroy();
  }

  // Bytes that are not HTTP (or a body that overruns its Content-Length into the next request)
  // still get an answer in the API's error format, then the connection closes.
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === "ECONNRESET") return socket.destroy();
    const timeout = err.code === "ERR_HTTP_REQUEST_TIMEOUT" || err.code === "ERR_HTTP_HEADERS_TIMEOUT";
    const refusal = new TollgateError("invalid_request", timeout ? "the request headers did not arrive in time" : "malformed HTTP request");
    const body = JSON.stringify(openaiErrorBody(refusal));
    socket.end(
      `HTTP/1.1 ${timeout ? 408 : 400} ${timeout ? "Request Timeout" : "Bad Request"}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Tollgate-Request-Id: ${randomUUID()}\r\nConnection: close\r\n\r\n${body}`,
    );
  });

  /** Undefined when the answer is written already (a refusal that needs nothing waited for). */
  function handle(req: IncomingMessage, res: Response): Promise<void> | void {
    const requestId = randomUUID();
    // sendJson writes it with the other headers in one writeHead; other writers get it set here.
    res.requestId = requestId;
    const raw = req.url ?? "/";
    const q = raw.indexOf("?");
    const url = q < 0 ? raw : raw.slice(0, q);
    if (url === "/healthz" && req.method === "GET") return health(res);
    if (url === "/metrics" && req.method === "GET") return admin.metrics(req, res.withRequestId());
    if (url === "/admin" || url.startsWith("/admin/")) return admin.handle(req, res.withRequestId(), url);
    if (url === "/dashboard" || url.startsWith("/dashboard/")) return dashboard(req, res.withRequestId(), url);
    const match = matchRoute(routes, url);
    if (!match) return sendError(res, "openai", new TollgateError("not_found", `no route serves ${url}`));
    const { route, rest } = match;
    const api = rest === "/v1/messages" || rest.startsWith("/v1/messages/") ? "anthropic" : "openai";
    if (rest === "/v1/models" && req.method === "GET") return listModels(req, res, route, requestId);
    if (rest === "/v1/me" && req.method === "GET") return quota(req, res, route, requestId);
    if (rest === "/v1/challenge" && req.method === "GET") return challenge(req, res, route, requestId);
    const endpoint = ENDPOINTS[rest];
    if (!endpoint || !route.endpoints.has(endpoint.name)) {
      return sendError(res, api, new TollgateError("not_found", `${url} is not an endpoint of this gateway`));
    }
    if (req.method !== "POST") return sendError(res, api, new TollgateError("invalid_request", `${rest} takes POST`));
    const headers = req.headers;
    const caller: CallerContext = {
      route: route.name,
      endpoint: endpoint.format.endpoint,
      ip: callerIp(req),
      credentials: credentials(headers),
      runId: first(headers["x-tollgate-run"]),
      challenge: first(headers["x-tollgate-challenge"]),
      requestId,
    };
    // A flood of one bad key is answered here, counted into its summary record, with nothing built.
    const early = engine.refuseEarly(caller);
    if (early) return sendError(res, endpoint.format.api, early.error, early);
    // A flood of 403s for a model the caller cannot have, or of 402s for a budget that cannot take
    // the call, is answered from the body, with nothing built.
    // The turn that brought the headers pushes the body that came with them after this handler:
    // one microtask later it is in.
    if (engine.bodyRefusalsFolding) return Promise.resolve().then(() => afterBody(req, res, route, endpoint.format, caller, readEarly(req, endpoint.format, caller)));
    return afterBody(req, res, route, endpoint.format, caller, undefined);
  }

  function afterBody(req: IncomingMessage, res: Response, route: ResolvedRoute, format: RequestFormat, caller: CallerContext, read: EarlyBody | undefined): Promise<void> | void {
    if (read?.refusal) return sendError(res, format.api, read.refusal.error, read.refusal);
    return obs ? obs.request(caller.requestId!, route.name, () => modelCall(req, res, route, format, caller, read)) : modelCall(req, res, route, format, caller, read);
  }

  /**
   * The body already in, and the 403 or 402 it may earn before an exchange (engine.refuseFromBytes:
   * the same bytes as the last refused body are not parsed again); parsed when it goes on.
   */
  function readEarly(req: IncomingMessage, format: RequestFormat, caller: CallerContext): EarlyBody | undefined {
    const bytes = wholeBody(req, cfg.server.maxBodyBytes);
    if (!bytes) return undefined;
    const read: EarlyBody = { source: { bytes, text: "", keys: [], end: -1 }, parsed: false };
    const refusal = engine.refuseFromBytes(caller, format, bytes, () => parseEarly(read));
    if (refusal) return { source: read.source, refusal, parsed: false };
    try {
      parseEarly(read);
    } catch {
      // Refused after gates 1-3, as if read there (read.error).
    }
    return read;
  }

  async function modelCall(req: IncomingMessage, res: Response, route: ResolvedRoute, format: RequestFormat, caller: CallerContext, read?: EarlyBody) {
    const ex = engine.open(caller);
    try {
      // Nothing is reserved until the body is in: a stalled body must not hold a limit's slot.
      await engine.admit(ex, { bodyPending: true });
      let body: unknown;
      let source: JsonSource;
      try {
        if (read) {
          if (read.error !== undefined) throw read.error;
          source = read.source;
          body = read.body;
        } else {
          const bytes = await readBody(req, cfg.server.maxBodyBytes, cfg.server.bodyTimeoutMs);
          // Kept beside the parsed body: the upstream body is these bytes with tollgate's fields patched in.
          source = { bytes, text: "", keys: [], end: -1 };
          body = parseJson(bytes, source);
        }
      } catch (err) {
        const refusal = toTollgateError(err, undefined);
        await engine.refuse(ex, refusal);
        throw refusal;
      }
      await engine.prepare(ex, format, body, source);
    } catch (err) {
      return sendError(res, format.api, refusal(err), ex);
    }

    // The response's one close listener (`closed`) aborts it when the client goes away. A Cancel,
    // not an AbortController: the call and the relay only read it and listen once or twice.
    const abort = (res.abort = new Cancel());
    const timer = setTimeout(abortOnTimeout, route.timeoutMs, abort);
    try {
      let call: { result: UpstreamResult; meter: Meter };
      try {
        call = await engine.call(ex, abort);
      } catch (err) {
        return sendError(res, format.api, toTollgateError(err, abort), ex);
      }
      if (call.result.kind === "json") {
        // Settled and recorded before the answer leaves: a served request is durable whatever
        // happens to the write (SPEC §6).
        await engine.finish(ex, { ended: "complete", meter: call.meter });
        // The provider's bytes go out unchanged: nothing between the call and here alters the body.
        sendJson(res, 200, call.result.raw ?? call.result.body, ex.headers);
      } else {
        const failed = await relayStream(res, call.result.events, { engine, ex, format, meter: call.meter, abort, stallMs: cfg.server.idleTimeoutMs, requestId: res.requestId });
        if (failed) sendError(res, format.api, failed, ex);
      }
    } finally {
      clearTimeout(timer);
      res.abort = undefined;
    }
  }

  /** GET {path}/v1/me: the caller's own budgets and limits, for any credential the route accepts. */
  async function quota(req: IncomingMessage, res: ServerResponse, route: ResolvedRoute, requestId: string) {
    const ex = engine.open({ route: route.name, endpoint: "models", ip: callerIp(req), credentials: credentials(req.headers), requestId });
    const api = req.headers["anthropic-version"] !== undefined ? "anthropic" : "openai";
    try {
      sendJson(res, 200, await engine.quotaFor(ex));
    } catch (err) {
      sendError(res, api, refusal(err));
    }
  }

  /**
   * GET {path}/v1/challenge: a fresh proof-of-work challenge for this caller, as altcha's widget
   * reads it (`challengeurl`); x-tollgate-challenge-required says whether the route asks this
   * caller for one now.
   */
  async function challenge(req: IncomingMessage, res: ServerResponse, route: ResolvedRoute, requestId: string) {
    const ex = engine.open({ route: route.name, endpoint: "models", ip: callerIp(req), credentials: credentials(req.headers), requestId });
    const api = req.headers["anthropic-version"] !== undefined ? "anthropic" : "openai";
    try {
      const offer = await engine.challengeFor(ex);
      sendJson(res, 200, offer.challenge, offerHeaders(offer));
    } catch (err) {
      sendError(res, api, refusal(err));
    }
  }

  /**
   * SPEC §5.2: 503 naming the failing part while the store cannot serve and on_store_error is
   * closed (every request would be refused); otherwise 200, with the store's state.
   */
  async function health(res: ServerResponse) {
    let store;
    try {
      store = (await engine.store.health?.()) ?? { ok: true, detail: engine.store.kind };
    } catch (err) {
      store = { ok: false, detail: `${engine.store.kind} store health check failed` };
      if (obs) obs.logs.ops.error({ err }, "store health check failed");
      else process.stderr.write(`tollgate: store health check failed: ${(err as Error)?.stack ?? err}\n`);
    }
    const down = !store.ok && cfg.onStoreError === "closed";
    sendJson(res, down ? 503 : 200, { status: down ? "unavailable" : "ok", store: { kind: engine.store.kind, ok: store.ok, detail: store.detail } }, down ? { "retry-after": "1" } : {});
  }

  async function listModels(req: IncomingMessage, res: ServerResponse, route: ResolvedRoute, requestId: string) {
    const ex = engine.open({ route: route.name, endpoint: "models", ip: callerIp(req), credentials: credential(req.headers), requestId });
    // Anthropic's SDK sends anthropic-version and expects Anthropic's list shape.
    const anthropic = req.headers["anthropic-version"] !== undefined;
    let models: string[];
    try {
      models = await engine.modelsFor(ex);
    } catch (err) {
      return sendError(res, anthropic ? "anthropic" : "openai", refusal(err));
    }
    if (anthropic) {
      const createdAt = new Date(0).toISOString();
      const data = models.map((id) => ({ type: "model", id, display_name: id, created_at: createdAt }));
      return sendJson(res, 200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null });
    }
    const created = Math.floor(Date.now() / 1000);
    sendJson(res, 200, { object: "list", data: models.map((id) => ({ id, object: "model", created, owned_by: "tollgate" })) });
  }

  function callerIp(req: IncomingMessage): string {
    return clientIp(req.socket.remoteAddress, first(req.headers["x-forwarded-for"]), cfg.server.trustProxy);
  }

  return {
    // node's typing cannot carry a ServerResponse subclass into Server's default type.
    server: server as unknown as Server,
    async drain(graceMs = 10_000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inFlight > 0) {
        await Promise.race([new Promise<void>((resolve) => (idle = resolve)), new Promise((r) => setTimeout(r, graceMs).unref())]);
      }
      server.closeAllConnections();
      await closed;
    },
  };
}

/** A body read before the exchange: parsed, or the error parsing it gave; and its early 403 or 402, if any. */
interface EarlyBody {
  source: JsonSource;
  parsed: boolean;
  body?: unknown;
  error?: unknown;
  refusal?: EarlyRefusal;
}

/** Parses an early body once: its body, or the error parsing it gave, thrown again on every call. */
function parseEarly(read: EarlyBody): unknown {
  if (!read.parsed) {
    read.parsed = true;
    try {
      read.body = parseJson(read.source.bytes, read.source);
    } catch (err) {
      read.error = err;
    }
  }
  if (read.error !== undefined) throw read.error;
  return read.body;
}

/** A refusal or a store failure, as the error to answer; anything else is a bug, rethrown to the 500 handler. */
function refusal(err: unknown): TollgateError {
  if (TollgateError.is(err) || err instanceof StoreUnavailableError) return toTollgateError(err, undefined);
  throw err;
}

function matchRoute(routes: ResolvedRoute[], url: string): { route: ResolvedRoute; rest: string } | undefined {
  for (const route of routes) {
    if (route.path === "" || url === route.path || url.startsWith(route.path + "/")) {
      return { route, rest: url.slice(route.path.length) || "/" };
    }
  }
  return undefined;
}

/**
 * A response that may be carrying a model call: `abort` cancels it when the client goes away. A
 * field from construction, so every response keeps one shape in node's HTTP internals.
 */
class Response extends ServerResponse {
  abort: Cancel | undefined = undefined;
  requestId = "";

  /** For a writer other than sendJson, which sets its headers one by one. */
  withRequestId(): this {
    this.setHeader("x-tollgate-request-id", this.requestId);
    return this;
  }
}

const CLIENT_DISCONNECT = { tollgate: "client_disconnect" };
const TIMEOUT = { tollgate: "timeout" };

function abortOnTimeout(abort: Cancel): void {
  abort.abort(TIMEOUT);
}

/** A header's value; of a repeated one, the first. */
function first(v: string | string[] | undefined): string | undefined {
  return typeof v === "object" ? v[0] : v;
}

/** What the caller presented; a service key's x-tollgate-* headers are honoured by gate 1 only for service keys. */
function credentials(headers: IncomingHttpHeaders): Credentials {
  const { token, unusable } = credential(headers);
  return { token, unusable, actAsUser: first(headers["x-tollgate-user"]), actAsPlan: first(headers["x-tollgate-plan"]), actAsOrg: first(headers["x-tollgate-org"]) };
}

function credential(headers: IncomingHttpHeaders): Pick<Credentials, "token" | "unusable"> {
  return readCredential(first(headers.authorization), first(headers["x-api-key"]));
}

/** One per process: bodies still arriving after their refusal share one sweep. */
const discards = new BodyDiscard();

/**
 * The whole answer in one writeHead with a flat [name, value, …] list and one end: the response
 * holds no header yet, so node formats the list directly, with no header object built, no name
 * lowercased and no value checked twice.
 */
function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const list = ["content-type", "application/json", "content-length", String(Buffer.byteLength(text)), "x-tollgate-request-id", (res as Response).requestId];
  if (headers) for (const name in headers) list.push(name, headers[name]!);
  res.writeHead(status, list);
  res.end(text);
}

function sendError(res: ServerResponse, api: "openai" | "anthropic", err: TollgateError, ex?: { readonly headers: Readonly<Record<string, string>> }): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (!res.req.complete) discards.discard(res.req);
  const headers: Record<string, string> = {};
  if (ex) {
    // A refusal passes on only the rate-limit headers of what the gates decided.
    const { ratelimit, "ratelimit-policy": policy } = ex.headers;
    if (ratelimit) headers.ratelimit = ratelimit;
    if (policy) headers["ratelimit-policy"] = policy;
  }
  if (err.retryAfterSeconds !== undefined) headers["retry-after"] = String(err.retryAfterSeconds);
  sendJson(res, err.status, Object.isFrozen(err) ? renderedOnce(err, api) : errorBody(err, api), headers);
}

function errorBody(err: TollgateError, api: "openai" | "anthropic"): object {
  return api === "anthropic" ? anthropicErrorBody(err) : openaiErrorBody(err);
}

/** A frozen refusal carries nothing of one request (a bad key's 401): its body is serialised once per API. */
const rendered = new WeakMap<TollgateError, { openai?: Buffer; anthropic?: Buffer }>();
function renderedOnce(err: TollgateError, api: "openai" | "anthropic"): Buffer {
  let bodies = rendered.get(err);
  if (!bodies) rendered.set(err, (bodies = {}));
  return (bodies[api] ??= Buffer.from(JSON.stringify(errorBody(err, api))));
}
