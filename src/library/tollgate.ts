import { ConfigError } from "../config/errors.js";
import { loadConfigFile, parseConfig } from "../config/load.js";
import { resolveConfig, type ResolvedConfig } from "../config/resolve.js";
import type { ConfigInput } from "../config/schema.js";
import { normaliseIp } from "../core/client-ip.js";
import { toTollgateError, type Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import { challengeOf } from "../formats/errors.js";
import type { Exchange } from "../core/exchange.js";
import type { Challenge } from "../core/gates/challenge.js";
import type { AppIdentity } from "../core/identity.js";
import type { UsageRecord } from "../core/usage-record.js";
import { Observability } from "../observability/index.js";
import { startRuntime } from "../runtime.js";
import type { Store } from "../core/store.js";
import { Gate } from "./gate.js";
import { awaitSubpaths } from "./subpath-methods.js";

export interface TollgateOptions {
  /** A config file path (YAML or JSON), or an object of the config file's shape. */
  config: string | Record<string, unknown> | ConfigInput;
  /** Use this store instead of the one the config names. */
  store?: Store;
  /** Receives every usage record (the gateway prints them; a library user may ship them anywhere). */
  onRecord?: (record: UsageRecord) => void;
}

/** What an adapter knows about an incoming request, before any gate. */
export interface AdmitRequest {
  route: string;
  /** The caller's address, already resolved for trusted proxies. */
  ip: string;
  /** Bearer token or x-api-key, if any. */
  token?: string;
  /** Why the credential the request carries cannot be used (see `readCredential`): refused as unauthorized, never anonymous. */
  unusableCredential?: string;
  /** Honoured for service keys only (x-tollgate-user / x-tollgate-plan). */
  actAsUser?: string;
  actAsPlan?: string;
  /** x-tollgate-run. */
  runId?: string;
  /** x-tollgate-challenge: a solved proof-of-work challenge, on routes with `challenge` (checked at admission). */
  challenge?: string;
  /** Fires when the client goes away. */
  signal?: AbortSignal;
  /**
   * Who the app's own session says is calling; `null` (or no function) falls back to the
   * credentials above.
   */
  identify?: () => AppIdentity | null | undefined | Promise<AppIdentity | null | undefined>;
}

/** A challenge to hand the page, as altcha's widget reads it, and whether this caller must solve one now. */
export interface ChallengeOffer {
  challenge: Challenge;
  required: boolean;
}

/** An adapter's `identify`: the app's session, read from the framework's own request. */
export type Identify<Req> = (req: Req) => AppIdentity | null | undefined | Promise<AppIdentity | null | undefined>;

/** The library: the same engine, config, stores and usage records as the gateway, inside an app. */
export class Tollgate {
  private constructor(
    readonly engine: Engine,
    readonly config: ResolvedConfig,
    private readonly shutdown: () => Promise<void>,
  ) {}

  static async create(opts: TollgateOptions): Promise<Tollgate> {
    const raw = typeof opts.config === "string" ? loadConfigFile(opts.config) : parseConfig(opts.config);
    const config = resolveConfig(raw);
    // The same sinks as the gateway: the stdout record (server.log), Prometheus, spans.
    const observability = new Observability(config);
    const onRecord = (r: UsageRecord) => {
      observability.onRecord(r);
      opts.onRecord?.(r);
    };
    const runtime = await startRuntime(config, { onRecord, warn: (fields, message) => observability.logs.ops.warn(fields, message), store: opts.store, instrumentStore: (s) => observability.instrumentStore(s), outboxObserver: observability.metrics.outboxObserver });
    const tg = new Tollgate(runtime.engine, config, async () => {
      observability.close();
      await runtime.close();
      // The records written while closing (refusal summaries) reach the sinks before close resolves.
      observability.flush();
    });
    tg.observability = observability;
    return tg;
  }

  private observability?: Observability;

  /** Prometheus text for the app to serve at its own /metrics: the gateway's metrics, from this process. */
  async metrics(): Promise<{ contentType: string; body: string }> {
    const registry = this.observability!.metrics.registry;
    // Records still waiting for their sinks count: metrics read right after a call see it.
    this.observability!.flush();
    return { contentType: registry.contentType, body: await registry.metrics() };
  }

  /**
   * Gates 1-3 for one app request. Resolves with its Gate, or rejects with the refusal as a
   * TollgateError (already recorded).
   */
  async admit(req: AdmitRequest): Promise<Gate> {
    const ex = await this.openFor(req, "chat_completions");
    ex.record.endpoint = "app";
    try {
      await this.engine.admit(ex);
    } catch (err) {
      const refusal = ownCopy(toTollgateError(err, undefined));
      refusedHeaders.set(refusal, { "x-tollgate-request-id": ex.id, ...pick(ex.headers, "ratelimit", "ratelimit-policy") });
      throw refusal;
    }
    const gate = new Gate(this.engine.app(ex), req.signal);
    this.open.add(gate);
    void gate.ended.then(() => this.open.delete(gate));
    return gate;
  }

  /**
   * A fresh proof-of-work challenge for this caller on a route with `challenge`, for the page to
   * solve (the app serves it, e.g. with `tg.fetchChallenge()` or `tg.expressChallenge()`), and
   * whether the route asks this caller for one now. The solution comes back in the
   * x-tollgate-challenge header, which admission verifies. Nothing is reserved or recorded.
   */
  async challenge(req: AdmitRequest): Promise<ChallengeOffer> {
    return this.engine.challengeFor(await this.openFor(req, "models"));
  }

  /** The engine's exchange for an app request: the app's own session, else the request's credentials. */
  private async openFor(req: AdmitRequest, endpoint: "chat_completions" | "models"): Promise<Exchange> {
    this.checkRoute(req.route);
    const app = (await req.identify?.()) ?? undefined;
    return this.engine.open({
      route: req.route,
      endpoint,
      // An app's own `ip` function may pass any spelling; one caller is one address.
      ip: normaliseIp(req.ip),
      credentials: { token: req.token, unusable: req.unusableCredential, actAsUser: req.actAsUser, actAsPlan: req.actAsPlan, app },
      runId: req.runId,
      challenge: req.challenge,
      library: true,
    });
  }

  /**
   * Throws a ConfigError unless the config has a route of this name. The adapters call it when
   * they are created, so a misspelled route stops the app at startup, not at its first request.
   */
  checkRoute(route: string): void {
    if (this.config.routes.some((r) => r.name === route)) return;
    const names = this.config.routes.map((r) => r.name).join(", ") || "none";
    throw new ConfigError([{ path: `routes.${route}`, message: `no route named ${JSON.stringify(route)} in the config (its routes: ${names})` }]);
  }

  /** Requests admitted and not yet ended: close() lets them write their records first. */
  private readonly open = new Set<Gate>();

  async close(): Promise<void> {
    const pending = [...this.open].map((g) => g.end());
    await Promise.race([Promise.allSettled(pending), new Promise((r) => setTimeout(r, 5_000).unref())]);
    await this.shutdown();
  }
}

awaitSubpaths(Tollgate.prototype, "tg", {
  express: { subpath: "tollgate/express" },
  expressErrors: { subpath: "tollgate/express" },
  expressChallenge: { subpath: "tollgate/express" },
  fastify: { subpath: "tollgate/fastify", getter: true },
  fastifyChallenge: { subpath: "tollgate/fastify" },
  hono: { subpath: "tollgate/hono" },
  fetch: { subpath: "tollgate/fetch" },
  fetchChallenge: { subpath: "tollgate/fetch" },
});

/** `createTollgate({ config })`: the library (README "Library mode"; every config key in docs/config.md). */
export function createTollgate(opts: TollgateOptions): Promise<Tollgate> {
  return Tollgate.create(opts);
}

/** The error body an adapter sends for a refusal (OpenAI's shape, with tollgate's code). */
export function refusalBody(err: TollgateError) {
  return { error: { message: err.message, type: "tollgate_error", code: err.code, param: err.param ?? null, ...challengeOf(err) } };
}

/** Headers of a refusal at admission, as the gateway sends them (request id, rate limits). */
const refusedHeaders = new WeakMap<TollgateError, Record<string, string>>();

export function refusalHeaders(err: TollgateError, gate?: Gate): Record<string, string> {
  return {
    ...(gate ? { "x-tollgate-request-id": gate.requestId, ...pick(gate.exchange.headers, "ratelimit", "ratelimit-policy") } : refusedHeaders.get(err)),
    ...(err.retryAfterSeconds !== undefined ? { "retry-after": String(err.retryAfterSeconds) } : {}),
  };
}

/**
 * The engine answers a bad key with one frozen error shared by every such request (identity.ts).
 * The app gets its own: its headers are this request's, and the app's error handling (or a
 * library's, tagging errors it has seen) may set properties on it.
 */
function ownCopy(err: TollgateError): TollgateError {
  return Object.isFrozen(err) ? new TollgateError(err.code, err.message, { param: err.param, retryAfterSeconds: err.retryAfterSeconds, limit: err.limit }) : err;
}

function pick(headers: Record<string, string>, ...names: string[]): Record<string, string> {
  return Object.fromEntries(names.filter((n) => headers[n] !== undefined).map((n) => [n, headers[n]!]));
}
