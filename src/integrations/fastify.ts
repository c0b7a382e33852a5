import type { IncomingMessage, ServerResponse } from "node:http";
import { TollgateError } from "../core/errors.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { refusalBody, refusalHeaders, type Identify, type Tollgate } from "../library/tollgate.js";
import { admitFromNode, holdResponse } from "./node-request.js";

/** The few parts of Fastify the plugin uses, so Fastify stays the app's dependency, not ours. */
export interface FastifyLike {
  decorateRequest(name: string, value: unknown): unknown;
  addHook(name: "onRequest", fn: (req: FastifyReq, reply: FastifyReply) => Promise<unknown>): unknown;
  addHook(name: "onResponse", fn: (req: FastifyReq, reply: FastifyReply) => Promise<void>): unknown;
  addHook(name: "onError", fn: (req: FastifyReq, reply: FastifyReply, err: unknown) => Promise<void>): unknown;
  setErrorHandler(fn: (err: unknown, req: FastifyReq, reply: FastifyReply) => unknown): unknown;
}
export interface FastifyReq {
  raw: IncomingMessage;
  tollgate?: Gate | null;
}
export interface FastifyReply {
  raw: ServerResponse;
  code(status: number): FastifyReply;
  headers(h: Record<string, string>): FastifyReply;
  send(body: unknown): FastifyReply;
}

/**
 * A Fastify plugin: `app.register(tg.fastify, { route: "agent" })`. Every route in the scope it is
 * registered in passes gates 1-3; `request.tollgate` is the Gate. A TollgateError thrown in a
 * handler becomes its refusal.
 */
export function fastifyPlugin(tg: Tollgate) {
  const plugin = async function tollgatePlugin(app: FastifyLike, opts: { route: string; identify?: Identify<FastifyReq> }): Promise<void> {
    app.decorateRequest("tollgate", null);
    app.addHook("onRequest", async (req, reply) => {
      let gate: Gate;
      try {
        const identify = opts.identify;
        gate = await tg.admit({ ...admitFromNode(req.raw, reply.raw, opts.route, tg.config.server.trustProxy), identify: identify && (() => identify(req)) });
      } catch (err) {
        if (!TollgateError.is(err)) throw err;
        return reply.code(err.status).headers(refusalHeaders(err)).send(refusalBody(err));
      }
      req.tollgate = gate;
      holdResponse(reply.raw, gate, (refusal) => {
        void gate.end(refusal);
        const body = JSON.stringify(refusalBody(refusal));
        reply.raw.writeHead(refusal.status, { ...refusalHeaders(refusal, gate), "content-type": "application/json", "content-length": Buffer.byteLength(body) });
        reply.raw.end(body);
      });
    });
    app.addHook("onError", async (req, _reply, err) => {
      const refusal = refusalOf(err, req.tollgate ?? undefined);
      if (refusal) await req.tollgate?.end(refusal);
    });
    // A refusal thrown in a handler answers in the same shape as one at admission; anything else
    // goes on to the parent error handler.
    app.setErrorHandler((err, req, reply) => {
      const refusal = refusalOf(err, req.tollgate ?? undefined);
      if (!refusal) return reply.send(err);
      return reply.code(refusal.status).headers(refusalHeaders(refusal, req.tollgate ?? undefined)).send(refusalBody(refusal));
    });
    app.addHook("onResponse", async (req) => {
      await req.tollgate?.end();
    });
  };
  // Like fastify-plugin: the hooks apply to the scope that registered the plugin, not a child scope.
  (plugin as unknown as Record<symbol, unknown>)[Symbol.for("skip-override")] = true;
  return plugin;
}
