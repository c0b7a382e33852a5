import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { TollgateError } from "../core/errors.js";
import { offerHeaders } from "../core/gates/challenge.js";
import { refusalOf, type Gate } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";
import { refusalBody, refusalHeaders, Tollgate, type Identify } from "../library/tollgate.js";
import { admitFromNode, holdResponse } from "./node-request.js";

export interface FastifyOptions {
  /** A route name from the config; an unknown name fails the plugin's registration. */
  route: string;
  /** The app's own session: who is calling. `null` falls back to the request's credentials. */
  identify?: Identify<FastifyRequest>;
}

/**
 * A Fastify plugin: `app.register(tg.fastify, { route: "agent" })`. Every route in the scope it is
 * registered in passes gates 1-3; `request.tollgate` is the Gate. A TollgateError thrown in a
 * handler becomes its refusal.
 */
export function fastifyPlugin(tg: Tollgate): FastifyPluginAsync<FastifyOptions> {
  const plugin: FastifyPluginAsync<FastifyOptions> = async function tollgatePlugin(app, opts) {
    // Registration runs at startup (app.ready/listen), before any request.
    tg.checkRoute(opts.route);
    // Fastify wants a starting value; the onRequest hook sets the Gate before any handler in this
    // scope runs (or answers the refusal itself), so handlers always see a Gate.
    app.decorateRequest("tollgate", null as unknown as Gate);
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

/**
 * The page's proof-of-work challenge endpoint, a route handler:
 * `app.get("/api/challenge", tg.fastifyChallenge({ route: "chat" }))`, outside the scope where the
 * plugin admits requests. The solution comes back in x-tollgate-challenge, which the plugin's
 * admission verifies.
 */
export function fastifyChallenge(tg: Tollgate, opts: FastifyOptions) {
  tg.checkRoute(opts.route);
  return async function tollgateChallenge(req: FastifyRequest, reply: FastifyReply) {
    try {
      const identify = opts.identify;
      const offer = await tg.challenge({ ...admitFromNode(req.raw, reply.raw, opts.route, tg.config.server.trustProxy), identify: identify && (() => identify(req)) });
      return reply.headers(offerHeaders(offer)).send(offer.challenge);
    } catch (err) {
      if (!TollgateError.is(err)) throw err;
      return reply.code(err.status).headers(refusalHeaders(err)).send(refusalBody(err));
    }
  };
}

declare module "fastify" {
  interface FastifyRequest {
    /** The request's Gate, in the scope where tollgate's plugin is registered. */
    tollgate: Gate;
  }
}

declare module "../library/tollgate.js" {
  interface Tollgate {
    /** A Fastify plugin (`fastifyPlugin(tg)`): `app.register(tg.fastify, { route })`. */
    readonly fastify: ReturnType<typeof fastifyPlugin>;
    /** The page's proof-of-work challenge endpoint as a Fastify route handler (`fastifyChallenge(tg, opts)`). */
    fastifyChallenge(opts: FastifyOptions): ReturnType<typeof fastifyChallenge>;
  }
}

const plugins = new WeakMap<Tollgate, ReturnType<typeof fastifyPlugin>>();
installMethods(Tollgate.prototype, {
  // One plugin per instance: Fastify tells registrations apart by the function.
  fastify: {
    get(this: Tollgate) {
      let plugin = plugins.get(this);
      if (!plugin) plugins.set(this, (plugin = fastifyPlugin(this)));
      return plugin;
    },
  },
  fastifyChallenge(this: Tollgate, opts: FastifyOptions) {
    return fastifyChallenge(this, opts);
  },
});
