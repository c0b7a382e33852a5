import { Agent, errors as undiciErrors, request } from "undici";
import type { EndpointName, ProviderConfig } from "../config/resolve.js";
import { TollgateError } from "../core/errors.js";
import type { Provider, UpstreamCall, UpstreamResult } from "./provider.js";
import { parseSse } from "./sse.js";

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
 * An HTTP provider over undici with a keep-alive pool per provider. The URL is fixed by config:
 * nothing in a client's request picks the host (SPEC §7.5).
 */
export class HttpProvider implements Provider {
  readonly name: string;
  private readonly agent: Agent;
  private readonly profile: Profile;
  private readonly baseHeaders: Record<string, string>;

  constructor(private readonly cfg: ProviderConfig & { type: "openai" | "anthropic" }) {
    this.name = cfg.name;
    this.profile = PROFILES[cfg.type];
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: 256, pipelining: 1 });
    this.baseHeaders = { "content-type": "application/json", "user-agent": "tollgate", ...cfg.headers, ...this.profile.headers(cfg) };
  }

  supports(endpoint: EndpointName): boolean {
    return this.profile.endpoints[endpoint] === true;
  }

  async call(c: UpstreamCall): Promise<UpstreamResult> {
    const url = this.cfg.baseUrl + c.format.upstreamPath;
    let res;
    try {
      res = await request(url, {
        method: "POST",
        dispatcher: this.agent,
        headers: { ...this.baseHeaders, accept: c.stream ? "text/event-stream" : "application/json" },
        body: JSON.stringify(c.body),
        signal: c.signal,
        headersTimeout: c.firstByteTimeoutMs,
        bodyTimeout: c.idleTimeoutMs,
      });
    } catch (err) {
      throw upstreamFailure(err, c.signal);
    }
    if (res.statusCode >= 400) {
      // Drain without echoing: a provider's error body can name its URL, the org or the key.
      await res.body.dump().catch(() => {});
      throw new TollgateError("upstream_error", `the provider ${this.name} answered HTTP ${res.statusCode}`);
    }
    const type = String(res.headers["content-type"] ?? "");
    if (c.stream && type.includes("text/event-stream")) {
      const body = res.body;
      const signal = c.signal;
      return {
        kind: "stream",
        events: (async function* () {
          try {
            yield* parseSse(body);
          } catch (err) {
            throw upstreamFailure(err, signal);
          } finally {
            body.destroy();
          }
        })(),
      };
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      throw upstreamFailure(err, c.signal);
    }
    try {
      return { kind: "json", body: JSON.parse(text) };
    } catch {
      throw new TollgateError("upstream_error", `the provider ${this.name} sent a response that is not JSON`);
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

function upstreamFailure(err: unknown, signal: AbortSignal): Error {
  if (signal.aborted) return signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason));
  if (TollgateError.is(err)) return err;
  if (err instanceof undiciErrors.HeadersTimeoutError) return new TollgateError("upstream_timeout", "the provider did not answer within first_byte_timeout");
  if (err instanceof undiciErrors.BodyTimeoutError) return new TollgateError("upstream_timeout", "the provider went silent for longer than idle_timeout");
  // undici's messages carry the host and port; say only what kind of failure it was.
  const code = (err as { code?: string }).code;
  return new TollgateError("upstream_error", `the provider could not be reached${code ? ` (${code})` : ""}`);
}
