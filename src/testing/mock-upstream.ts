/**
 * A deterministic stand-in for OpenAI- and Anthropic-compatible providers, so tests can drive
 * the gateway (and the real SDKs) over real HTTP without network access or API keys.
 *
 * Endpoints: POST /v1/chat/completions, POST /v1/responses, POST /v1/messages,
 * POST /v1/embeddings, GET /v1/models. Anything else is a 404 JSON error.
 */
import http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { anthropicMessage, streamMessages } from "./mock-anthropic-messages.js";
import { Exchange } from "./mock-exchange.js";
import { chatCompletion, chatErrorEvent, streamChat } from "./mock-openai-chat.js";
import { responseObject, streamResponses } from "./mock-openai-responses.js";
import { CREATED, countTokens, makePlan, type BehaviorSource, type MockBehavior, type RecordedRequest } from "./mock-plan.js";

export { MOCK_WORDS, countPromptTokens, countTokens, mockChunk, mockText } from "./mock-plan.js";
export type { MockBehavior, RecordedRequest } from "./mock-plan.js";

const OPENAI_ERROR_TYPES: Record<number, [type: string, code: string | null]> = {
  400: ["invalid_request_error", null],
  401: ["invalid_request_error", "invalid_api_key"],
  403: ["permission_denied", null],
  404: ["invalid_request_error", "not_found"],
  429: ["rate_limit_exceeded", "rate_limit_exceeded"],
};
const ANTHROPIC_ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  529: "overloaded_error",
};

function errorBody(format: "openai" | "anthropic", status: number, message: string): unknown {
  if (format === "anthropic") {
    const type = ANTHROPIC_ERROR_TYPES[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");
    return { type: "error", error: { type, message } };
  }
  const [type, code] = OPENAI_ERROR_TYPES[status] ?? [status >= 500 ? "server_error" : "invalid_request_error", null];
  return { error: { message, type, param: null, code } };
}

/** Deterministic 8-float embedding of a string; values are float32-exact so base64 and float agree. */
function embed(input: string): number[] {
  let h = 0x811c9dc5;
  for (let i = 0; i < input.length; i++) h = Math.imul(h ^ input.charCodeAt(i), 0x01000193) >>> 0;
  const out: number[] = [];
  for (let i = 0; i < 8; i++) {
    // mulberry32 step
    h = (h + 0x6d2b79f5) >>> 0;
    let t = h;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out.push(Math.fround(r * 2 - 1));
  }
  return out;
}

const MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-haiku-4-5", "claude-sonnet-4-6"];

/** A local HTTP server that imitates OpenAI and Anthropic. Start with {@link MockUpstream.start}. */
export class MockUpstream {
  /** Base URL without a trailing slash and without /v1, e.g. "http://127.0.0.1:41234". */
  readonly url: string;
  /** Every request, in arrival order; entries are updated while their responses are in flight. */
  readonly requests: RecordedRequest[] = [];

  private behavior: BehaviorSource = {};
  private counter = 0;
  private readonly sockets = new Set<Socket>();
  private readonly waiters = new Set<() => void>();
  private closing?: Promise<void>;

  private constructor(private readonly server: http.Server, url: string) {
    this.url = url;
  }

  /** Starts listening; port 0 (the default) picks a free port, host defaults to 127.0.0.1. */
  static async start(opts: { port?: number; host?: string; behavior?: MockBehavior } = {}): Promise<MockUpstream> {
    const host = opts.host ?? "127.0.0.1";
    const server = http.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    const urlHost = host.includes(":") ? `[${host}]` : host;
    const mock = new MockUpstream(server, `http://${urlHost}:${port}`);
    if (opts.behavior) mock.behavior = opts.behavior;
    server.on("connection", (s) => {
      mock.sockets.add(s);
      s.on("close", () => mock.sockets.delete(s));
    });
    server.on("clientError", (_err, s) => s.destroy());
    server.on("request", (req, res) => {
      mock.handle(req, res).catch((err: unknown) => {
        // Usually the client vanished mid-body; otherwise surface the bug as a 500.
        try {
          if (!res.headersSent && !res.destroyed) {
            res.writeHead(500, { "content-type": "application/json" });
            res.end(JSON.stringify(errorBody("openai", 500, `mock upstream crashed: ${String(err)}`)));
          } else res.destroy();
        } catch {
          res.destroy();
        }
      });
    });
    return mock;
  }

  /** Sets how later requests are answered; a function decides per request (e.g. by path or body). */
  setBehavior(b: BehaviorSource): void {
    this.behavior = b;
  }

  /** Clears recorded requests (in place) and behavior, and restarts id numbering. */
  reset(): void {
    this.requests.length = 0;
    this.behavior = {};
    this.counter = 0;
  }

  /** Resolves once at least `n` requests have been recorded (with their bodies). */
  waitForRequests(n: number, timeoutMs = 2000): Promise<void> {
    return this.waitFor(
      () => this.requests.length >= n,
      timeoutMs,
      () => `waitForRequests(${n}): only ${this.requests.length} after ${timeoutMs} ms`,
    );
  }

  /** Resolves with `closedAt` (client closed first) or `finishedAt` (mock finished) of `req`. */
  async waitForClose(req: RecordedRequest, timeoutMs = 2000): Promise<number> {
    await this.waitFor(
      () => req.closedAt !== undefined || req.finishedAt !== undefined,
      timeoutMs,
      () => `waitForClose(${req.method} ${req.path}): still open after ${timeoutMs} ms`,
    );
    return (req.closedAt ?? req.finishedAt)!;
  }

  /** Stops the server and destroys open sockets, which also stops any stream in progress. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      for (const s of this.sockets) s.destroy();
    });
    return this.closing;
  }

  private waitFor(done: () => boolean, timeoutMs: number, message: () => string): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(message()));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rec: RecordedRequest = {
      method: req.method ?? "GET",
      path: req.url ?? "/",
      headers: { ...req.headers },
      rawBody: "",
      body: undefined,
      receivedAt: performance.now(),
      chunksSent: 0,
    };
    let ex: Exchange | undefined;
    let closedEarly = false;
    res.on("close", () => (ex ? ex.onClose() : (closedEarly = true)));

    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    rec.rawBody = Buffer.concat(parts).toString("utf8");
    try {
      rec.body = rec.rawBody ? JSON.parse(rec.rawBody) : undefined;
    } catch {
      rec.body = undefined;
    }
    this.requests.push(rec);
    const n = ++this.counter;
    const behavior = typeof this.behavior === "function" ? this.behavior(rec) : this.behavior;
    ex = new Exchange(n, res, rec, behavior ?? {}, () => this.notify());
    this.notify();
    if (closedEarly) return ex.onClose();

    const pathname = new URL(rec.path, "http://mock").pathname;
    const route = `${rec.method} ${pathname}`;
    const api =
      route === "POST /v1/chat/completions"
        ? "chat"
        : route === "POST /v1/responses"
          ? "responses"
          : route === "POST /v1/messages"
            ? "messages"
            : undefined;
    const format = api === "messages" || req.headers["anthropic-version"] ? "anthropic" : "openai";
    const b = ex.b;

    if (b.firstByteDelayMs && !(await ex.sleep(b.firstByteDelayMs))) return;
    if (b.holdUntil && !(await ex.until(b.holdUntil))) return;

    const known = api !== undefined || route === "POST /v1/embeddings" || route === "GET /v1/models";
    if (!known) {
      return ex.json(404, errorBody(format, 404, `mock upstream: no route for ${route}`));
    }
    if (b.status !== undefined && b.status !== 200) {
      if (b.errorBody !== undefined) return ex.sendRaw(b.status, b.errorBody);
      return ex.json(b.status, errorBody(format, b.status, `mock upstream error (status ${b.status})`));
    }
    if (route === "GET /v1/models") return this.models(ex, format);
    const stream = rec.body?.stream === true;
    if (b.errorIn200 !== undefined && !stream) return ex.json(200, errorBody(format, 401, b.errorIn200));
    if (route === "POST /v1/embeddings") return this.embeddings(ex, rec.body, n, b);

    const plan = makePlan(api!, rec.body, b, n);
    if (!stream) {
      if (b.neverEnd) {
        res.writeHead(200, { "content-type": "application/json", ...ex.idHeader() });
        res.flushHeaders();
        return; // hang until the client gives up
      }
      const generated = plan.text.length + plan.toolCalls.reduce((s, c) => s + c.chunks.length, 0);
      if (ex.interval > 0 && !(await ex.sleep(ex.interval * generated))) return;
      if (b.failAfterChunks !== undefined) return ex.breakConnection();
      if (b.malformedJson) return ex.sendRaw(200, '{"id": "mock", "object": {not json');
      const reply = api === "chat" ? chatCompletion(plan, b) : api === "responses" ? responseObject(plan, b, "final") : anthropicMessage(plan, b);
      if (b.stallAfterChunks !== undefined) return ex.stallMidBody(JSON.stringify(reply));
      return ex.json(200, reply);
    }

    ex.startSse();
    if (b.malformedSse) {
      const event = api === "responses" ? "event: response.created\n" : api === "messages" ? "event: message_start\n" : "";
      if (!(await ex.write(`${event}data: {not json\n\n`))) return;
      return ex.finish();
    }
    if (b.errorIn200 !== undefined && api === "chat" && plan.text.length === 0 && plan.toolCalls.length === 0) {
      // An OpenAI-compatible backend that fails before generating sends the error as its only
      // event; Anthropic and Responses open the message first (message_start, response.created).
      return ex.endWith(chatErrorEvent(b.errorIn200));
    }
    if (api === "chat") return streamChat(ex, plan, rec.body);
    if (api === "responses") return streamResponses(ex, plan);
    return streamMessages(ex, plan);
  }

  private models(ex: Exchange, format: "openai" | "anthropic"): void {
    if (format === "anthropic") {
      const data = MODELS.filter((m) => m.startsWith("claude")).map((id) => ({
        type: "model",
        id,
        display_name: id,
        created_at: new Date(CREATED * 1000).toISOString(),
      }));
      return ex.json(200, { data, has_more: false, first_id: data[0].id, last_id: data[data.length - 1].id });
    }
    ex.json(200, {
      object: "list",
      data: MODELS.map((id) => ({ id, object: "model", created: CREATED, owned_by: "mock" })),
    });
  }

  private embeddings(ex: Exchange, body: any, n: number, b: MockBehavior): void {
    const raw = body?.input;
    // Token-id arrays are accepted too; their length is their token count.
    const inputs: (string | number[])[] =
      typeof raw === "string" || (Array.isArray(raw) && raw.every((x) => typeof x === "number"))
        ? [raw]
        : Array.isArray(raw)
          ? raw
          : [];
    const base64 = body?.encoding_format === "base64";
    let tokens = 0;
    const data = inputs.map((input, index) => {
      tokens += typeof input === "string" ? countTokens(input) : input.length;
      const vector = embed(typeof input === "string" ? input : input.join(","));
      const embedding = base64 ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector;
      return { object: "embedding", index, embedding };
    });
    const reported = b.reportUsage && "input" in b.reportUsage ? b.reportUsage.input : tokens;
    ex.json(200, {
      object: "list",
      data,
      model: b.answerModel ?? (typeof body?.model === "string" ? body.model : "mock-embedding"),
      usage: { prompt_tokens: reported, total_tokens: reported },
      id: `emb-mock-${n}`,
    });
  }
}
