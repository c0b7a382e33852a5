import { Pool } from "undici";
import type { EndpointName, ProviderConfig } from "../config/resolve.js";
import { upstreamBody } from "../core/json-source.js";
import type { Provider, UpstreamCall, UpstreamResult } from "../core/provider.js";
import { UpstreamHandler, upstreamFailure } from "./upstream-handler.js";

/** How one provider family is spoken to: which endpoints it has and how it authenticates. */
interface Profile {
  endpoints: Partial<Record<EndpointName, true>>;
  headers(cfg: ProviderConfig): Record<string, string>;
}

const PROFILES: Record<"openai" | "anthropic", Profile> = {
  openai: {
    endpoints: { chat_completions: true, responses: true, embeddings: true },
    headers: (cfg): Record<string, string> => (cfg.apiKey ? { authorization: `Bearer ${cfg.apiKey}` } : {}),
  },
  anthropic: {
    endpoints: { messages: true },
    headers: (cfg) => ({ ...(cfg.apiKey ? { "x-api-key": cfg.apiKey } : {}), "anthropic-version": cfg.anthropicVersion }),
  },
};

/**
 * An HTTP provider over one undici keep-alive Pool for its origin, so no call resolves an origin
 * or builds headers: both header sets are built once here. The URL is fixed by config: nothing in
 * a client's request picks the host (SPEC §7.5).
 */
export class HttpProvider implements Provider {
  readonly name: string;
  private readonly pool: Pool;
  private readonly profile: Profile;
  /** The base URL's path (e.g. `/v1`), which each format's upstream path extends. */
  private readonly basePath: string;
  /** Flat [name, value, …] lists: undici takes them without walking an object's keys per call. */
  private readonly jsonHeaders: string[];
  private readonly streamHeaders: string[];
  /** Each format's full upstream path, joined once. */
  private readonly paths = new Map<string, string>();

  constructor(cfg: ProviderConfig & { type: "openai" | "anthropic" }) {
    this.name = cfg.name;
    this.profile = PROFILES[cfg.type];
    // Config validation requires base_url for every HTTP provider type.
    const url = new URL(cfg.baseUrl!);
    this.basePath = url.pathname.replace(/\/+$/, "");
    this.pool = new Pool(url.origin, { keepAliveTimeout: 30_000, connections: 256, pipelining: 1 });
    const base = { "content-type": "application/json", "user-agent": "tollgate", ...cfg.headers, ...this.profile.headers(cfg) };
    this.jsonHeaders = Object.entries({ ...base, accept: "application/json" }).flat();
    this.streamHeaders = Object.entries({ ...base, accept: "text/event-stream" }).flat();
  }

  supports(endpoint: EndpointName): boolean {
    return this.profile.endpoints[endpoint] === true;
  }

  // Not `async`: the handler's own promise is returned as it is, without a wrapping promise and
  // the two microtask turns of resolving one promise with another.
  call(c: UpstreamCall): Promise<UpstreamResult> {
    if (c.signal.aborted) return Promise.reject(upstreamFailure(undefined, c.signal));
    let body: string | Buffer | undefined;
    try {
      body = c.patch ? upstreamBody(c.patch.source, c.patch.fields, c.body) : JSON.stringify(c.body);
    } catch (err) {
      return Promise.reject(err);
    }
    const handler = new UpstreamHandler(this.name, c.stream, c.signal);
    let path = this.paths.get(c.format.upstreamPath);
    if (path === undefined) this.paths.set(c.format.upstreamPath, (path = this.basePath + c.format.upstreamPath));
    this.pool.dispatch(
      {
        method: "POST",
        path,
        headers: c.stream ? this.streamHeaders : this.jsonHeaders,
        body,
        headersTimeout: c.firstByteTimeoutMs,
        bodyTimeout: c.idleTimeoutMs,
      },
      handler,
    );
    return handler.promise;
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
