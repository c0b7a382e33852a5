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
import { decode, encode } from "gpt-tokenizer/encoding/o200k_base";

/** How the mock answers a request. Every field is optional; `{}` is a well-behaved provider. */
export interface MockBehavior {
  /** Reply with this HTTP status and an error body in the API's format (any value other than 200). */
  status?: number;
  /** Raw body to send with `status` instead of the default error body. */
  errorBody?: string;
  /** Completion text; streamed as chunks of one o200k token each. Default: words from {@link MOCK_WORDS}. */
  text?: string;
  /** Tokens to generate. Default: min(requested max tokens, 20), or all of `text` when given. */
  outputTokens?: number;
  /** Generate `outputTokens` even when the request asked for fewer (a misbehaving provider). */
  ignoreMaxTokens?: boolean;
  /** Delay before every streamed token; a non-stream reply waits tokens × interval before answering. */
  tokenIntervalMs?: number;
  /** Delay before sending status and headers. */
  firstByteDelayMs?: number;
  /** Stream forever (every `tokenIntervalMs`, 10 ms when unset); a non-stream reply sends headers and hangs. */
  neverEnd?: boolean;
  /** Stream: send an event whose data is not JSON (`data: {not json`), then end. */
  malformedSse?: boolean;
  /** Non-stream: reply 200 with an invalid JSON body. */
  malformedJson?: boolean;
  /** Stream: destroy the socket once N token chunks have been written. Non-stream: destroy it instead of replying. */
  failAfterChunks?: number;
  /**
   * Never report usage (also ignores `stream_options.include_usage`). Anthropic replies then lack
   * `usage` entirely, which the Anthropic SDK's stream helper cannot handle, as with a broken provider.
   */
  omitUsage?: boolean;
  /** Answer with tool calls (chat: tool_calls; Anthropic: tool_use blocks; Responses: function_call items). */
  toolCalls?: { name: string; arguments: string }[];
  /** Hidden reasoning tokens to report; added to completion/output tokens, as OpenAI does. */
  reasoningTokens?: number;
}

/** One request as the mock saw it, updated while the response is in flight. */
export interface RecordedRequest {
  method: string;
  /** The request target as received, including any query string. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  rawBody: string;
  /** `rawBody` parsed as JSON when it parses, else undefined. */
  body: any;
  /** performance.now() when the request arrived. */
  receivedAt: number;
  /** performance.now() when the *client* closed the connection before the mock finished (abort detection). */
  closedAt?: number;
  /**
   * performance.now() when the mock finished its response normally. Also set when the mock
   * deliberately broke the connection (`failAfterChunks`), since that is the scripted end.
   */
  finishedAt?: number;
  /** Token chunks written (text tokens and tool-call argument tokens). */
  chunksSent: number;
}

type BehaviorSource = MockBehavior | ((req: RecordedRequest) => MockBehavior);

/**
 * Words that are each exactly one o200k token both bare and with a leading space, so the default
 * completion "hello world the quick ..." is exactly one token per chunk and N tokens in total.
 */
export const MOCK_WORDS: readonly string[] = [
  "hello", "world", "the", "quick", "brown", "fox", "over", "lazy",
  "dog", "alpha", "beta", "gamma", "delta", "red", "blue", "green",
];

/** The i-th default token chunk: the first word is bare, later ones carry a leading space. */
export function mockChunk(i: number): string {
  const word = MOCK_WORDS[i % MOCK_WORDS.length];
  return i === 0 ? word : ` ${word}`;
}

/** The default completion text of `n` tokens, for asserting on what a client received. */
export function mockText(n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += mockChunk(i);
  return s;
}

/** o200k token count; special-token strings in user text count as plain text rather than throwing. */
export function countTokens(text: string): number {
  return text ? encode(text, { disallowedSpecial: new Set() }).length : 0;
}

/**
 * Prompt tokens the mock reports for a request body, so tests can predict usage exactly.
 *
 * Formula (OpenAI-like, the same for all three APIs so one conversation costs the same anywhere):
 *   3 (reply priming)
 *   + Σ over messages (4 + o200k tokens of the message's text)
 *   + o200k tokens of JSON.stringify(tools) when tools are given.
 * "Messages" are: chat `messages`; Responses `instructions` (one message) and `input` (a string is
 * one message, else one per item); Anthropic `system` (one message when present) and `messages`.
 * A message's text is its string content, the `text` of its parts, tool-call names and arguments
 * (tool_use: name + JSON of input), and tool results/outputs. Images and other media count 0.
 */
export function countPromptTokens(api: "chat" | "responses" | "messages", body: any): number {
  const messages: unknown[] = [];
  if (api === "chat") {
    if (Array.isArray(body?.messages)) messages.push(...body.messages);
  } else if (api === "responses") {
    if (typeof body?.instructions === "string") messages.push({ content: body.instructions });
    if (typeof body?.input === "string") messages.push({ content: body.input });
    else if (Array.isArray(body?.input)) messages.push(...body.input);
  } else {
    if (body?.system !== undefined) messages.push({ content: body.system });
    if (Array.isArray(body?.messages)) messages.push(...body.messages);
  }
  let total = 3;
  for (const m of messages) total += 4 + textsOf(m).reduce((n, t) => n + countTokens(t), 0);
  const tools = body?.tools ?? body?.functions;
  if (Array.isArray(tools) && tools.length > 0) total += countTokens(JSON.stringify(tools));
  return total;
}

/** Text of a message, content part or item, by the rules documented on {@link countPromptTokens}. */
function textsOf(v: unknown): string[] {
  if (typeof v === "string") return [v];
  if (Array.isArray(v)) return v.flatMap(textsOf);
  if (!v || typeof v !== "object") return [];
  const o = v as Record<string, any>;
  const out: string[] = [];
  if (typeof o.name === "string" && (o.type === "tool_use" || o.type === "function_call" || o.role !== undefined)) {
    out.push(o.name);
  }
  if (typeof o.text === "string") out.push(o.text);
  if (o.content !== undefined) out.push(...textsOf(o.content));
  if (o.type === "tool_use") out.push(JSON.stringify(o.input ?? {}));
  if (typeof o.arguments === "string") out.push(o.arguments);
  if (o.output !== undefined) out.push(...textsOf(o.output));
  if (Array.isArray(o.tool_calls)) {
    for (const c of o.tool_calls) out.push(String(c?.function?.name ?? ""), String(c?.function?.arguments ?? ""));
  }
  return out;
}

/** Split text into chunks of one token, merging tokens only where one alone is not valid UTF-8. */
function tokenChunks(text: string, maxTokens = Infinity): { chunks: string[]; tokens: number } {
  const ids = encode(text, { disallowedSpecial: new Set() }).slice(0, maxTokens);
  const chunks: string[] = [];
  let pending: number[] = [];
  let pos = 0;
  for (const id of ids) {
    pending.push(id);
    const piece = decode(pending);
    if (text.startsWith(piece, pos)) {
      chunks.push(piece);
      pos += piece.length;
      pending = [];
    }
  }
  if (pending.length) chunks.push(decode(pending));
  return { chunks, tokens: ids.length };
}

interface PlannedToolCall {
  name: string;
  arguments: string;
  chunks: string[];
}

/** Everything a reply needs, worked out once so all APIs report the same numbers. */
interface Plan {
  n: number; // per-server request number, for deterministic ids
  model: string;
  promptTokens: number;
  text: string[]; // one token per chunk
  toolCalls: PlannedToolCall[];
  reasoningTokens: number;
  /** Visible text tokens + tool-call tokens + reasoning tokens. */
  outputTokens: number;
  /** Generation was cut by the requested max tokens. */
  truncated: boolean;
}

function makePlan(api: "chat" | "responses" | "messages", body: any, b: MockBehavior, n: number): Plan {
  const requestedMax = [body?.max_tokens, body?.max_completion_tokens, body?.max_output_tokens].find(
    (v): v is number => typeof v === "number",
  );
  const limit = requestedMax !== undefined && !b.ignoreMaxTokens ? requestedMax : Infinity;
  const toolCalls = (b.toolCalls ?? []).map((c) => ({ name: c.name, arguments: c.arguments, ...tokenChunks(c.arguments) }));
  const toolTokens = toolCalls.reduce((s, c) => s + countTokens(c.name) + c.tokens, 0);
  // Tool calls replace the text unless the behavior asks for text explicitly.
  const wantsText = toolCalls.length === 0 || b.text !== undefined || b.outputTokens !== undefined;
  let text: string[] = [];
  let textTokens = 0;
  let truncated = false;
  if (wantsText && b.text !== undefined) {
    const available = countTokens(b.text);
    const wanted = Math.min(b.outputTokens ?? available, available);
    truncated = wanted > limit;
    ({ chunks: text, tokens: textTokens } = tokenChunks(b.text, Math.min(wanted, limit)));
  } else if (wantsText) {
    const wanted = b.outputTokens ?? 20;
    truncated = wanted > limit;
    const count = Math.min(wanted, limit);
    for (let i = 0; i < count; i++) text.push(mockChunk(i));
    textTokens = count;
  }
  const reasoningTokens = b.reasoningTokens ?? 0;
  return {
    n,
    model: typeof body?.model === "string" ? body.model : "mock-model",
    promptTokens: countPromptTokens(api, body),
    text,
    toolCalls: toolCalls.map(({ name, arguments: args, chunks }) => ({ name, arguments: args, chunks })),
    reasoningTokens,
    outputTokens: textTokens + toolTokens + reasoningTokens,
    truncated,
  };
}

/** Fixed so replies are byte-for-byte reproducible. */
const CREATED = 1_700_000_000;

/** One in-flight response: pacing, backpressure and close bookkeeping. */
class Exchange {
  /** The client went away, or the mock broke the connection on purpose. */
  gone = false;
  private cancelWait?: () => void;

  constructor(
    /** Per-server request number, for deterministic ids. */
    readonly n: number,
    readonly res: ServerResponse,
    readonly rec: RecordedRequest,
    readonly b: MockBehavior,
    private readonly settle: (rec: RecordedRequest) => void,
  ) {}

  /** Called from res 'close': when the mock had not finished, the client closed first. */
  onClose(): void {
    if (this.rec.finishedAt === undefined && this.rec.closedAt === undefined) {
      this.rec.closedAt = performance.now();
      this.settle(this.rec);
    }
    this.gone = true;
    this.cancelWait?.();
  }

  /** Resolves true after `ms`, or false as soon as the connection is gone (timers are cleared). */
  sleep(ms: number): Promise<boolean> {
    if (this.gone) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (alive: boolean) => {
        this.cancelWait = undefined;
        resolve(alive);
      };
      if (ms > 0) {
        const t = setTimeout(() => done(!this.gone), ms);
        this.cancelWait = () => {
          clearTimeout(t);
          done(false);
        };
      } else {
        // Yield anyway so a client disconnect is noticed between chunks.
        const t = setImmediate(() => done(!this.gone));
        this.cancelWait = () => {
          clearImmediate(t);
          done(false);
        };
      }
    });
  }

  /** Writes with backpressure, so a slow reader slows the stream as a real provider's would. */
  write(s: string): Promise<boolean> {
    if (this.gone) return Promise.resolve(false);
    if (this.res.write(s)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (alive: boolean) => {
        this.res.off("drain", onDrain);
        this.res.off("close", onGone);
        resolve(alive);
      };
      const onDrain = () => finish(true);
      const onGone = () => finish(false);
      this.res.once("drain", onDrain);
      this.res.once("close", onGone);
    });
  }

  finish(body?: string): void {
    if (this.gone) return;
    this.rec.finishedAt = performance.now();
    this.settle(this.rec);
    this.res.end(body);
  }

  /** Break the connection mid-response, as a crashing provider or proxy would. */
  breakConnection(): void {
    this.rec.finishedAt = performance.now();
    this.settle(this.rec);
    this.gone = true;
    this.res.destroy();
  }

  json(status: number, value: unknown): void {
    this.sendRaw(status, JSON.stringify(value));
  }

  sendRaw(status: number, body: string): void {
    if (this.gone) return;
    this.res.writeHead(status, { "content-type": "application/json", ...this.idHeader() });
    this.finish(body);
  }

  startSse(): void {
    this.res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      ...this.idHeader(),
    });
    this.res.flushHeaders();
  }

  idHeader(): Record<string, string> {
    // OpenAI names it x-request-id, Anthropic request-id.
    return { "x-request-id": `req_mock_${this.n}`, "request-id": `req_mock_${this.n}` };
  }

  get failAfter(): number {
    return this.b.failAfterChunks ?? Infinity;
  }

  /**
   * Emits one token chunk: waits the token interval, then writes. Returns false when the stream
   * must stop (client gone, or `failAfterChunks` reached and the connection was broken).
   */
  async token(data: string): Promise<boolean> {
    if (!this.checkFail()) return false;
    if (!(await this.sleep(this.interval))) return false;
    if (!(await this.write(data))) return false;
    this.rec.chunksSent++;
    return this.checkFail();
  }

  /** Breaks the connection when the chunk budget of `failAfterChunks` is spent. */
  checkFail(): boolean {
    if (this.gone) return false;
    if (this.rec.chunksSent >= this.failAfter) {
      this.breakConnection();
      return false;
    }
    return true;
  }

  get interval(): number {
    const ms = this.b.tokenIntervalMs ?? 0;
    return this.b.neverEnd && ms <= 0 ? 10 : ms;
  }

  /** Streams default words forever, continuing after `from`, until the client leaves. */
  async forever(from: number, frame: (chunk: string) => string): Promise<void> {
    for (let i = from; ; i++) if (!(await this.token(frame(mockChunk(i))))) return;
  }
}

const sse = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`;
const namedSse = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

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

    const known = api !== undefined || route === "POST /v1/embeddings" || route === "GET /v1/models";
    if (!known) {
      return ex.json(404, errorBody(format, 404, `mock upstream: no route for ${route}`));
    }
    if (b.status !== undefined && b.status !== 200) {
      if (b.errorBody !== undefined) return ex.sendRaw(b.status, b.errorBody);
      return ex.json(b.status, errorBody(format, b.status, `mock upstream error (status ${b.status})`));
    }
    if (route === "GET /v1/models") return this.models(ex, format);
    if (route === "POST /v1/embeddings") return this.embeddings(ex, rec.body, n);

    const plan = makePlan(api!, rec.body, b, n);
    const stream = rec.body?.stream === true;
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
      if (api === "chat") return ex.json(200, chatCompletion(plan, b));
      if (api === "responses") return ex.json(200, responseObject(plan, b, "final"));
      return ex.json(200, anthropicMessage(plan, b));
    }

    ex.startSse();
    if (b.malformedSse) {
      const event = api === "responses" ? "event: response.created\n" : api === "messages" ? "event: message_start\n" : "";
      if (!(await ex.write(`${event}data: {not json\n\n`))) return;
      return ex.finish();
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

  private embeddings(ex: Exchange, body: any, n: number): void {
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
    ex.json(200, {
      object: "list",
      data,
      model: typeof body?.model === "string" ? body.model : "mock-embedding",
      usage: { prompt_tokens: tokens, total_tokens: tokens },
      id: `emb-mock-${n}`,
    });
  }
}

// ---------- OpenAI Chat Completions ----------

function chatUsage(p: Plan) {
  return {
    prompt_tokens: p.promptTokens,
    completion_tokens: p.outputTokens,
    total_tokens: p.promptTokens + p.outputTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: p.reasoningTokens,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

const chatFinish = (p: Plan) => (p.toolCalls.length ? "tool_calls" : p.truncated ? "length" : "stop");
const callId = (p: Plan, i: number) => `call_mock_${p.n}_${i}`;

function chatCompletion(p: Plan, b: MockBehavior) {
  const content = p.text.length || !p.toolCalls.length ? p.text.join("") : null;
  const message: Record<string, unknown> = { role: "assistant", content, refusal: null, annotations: [] };
  if (p.toolCalls.length) {
    message.tool_calls = p.toolCalls.map((c, i) => ({
      id: callId(p, i),
      type: "function",
      function: { name: c.name, arguments: c.arguments },
    }));
  }
  return {
    id: `chatcmpl-mock-${p.n}`,
    object: "chat.completion",
    created: CREATED,
    model: p.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: chatFinish(p) }],
    ...(b.omitUsage ? {} : { usage: chatUsage(p) }),
    service_tier: "default",
    system_fingerprint: "fp_mock",
  };
}

async function streamChat(ex: Exchange, p: Plan, body: any): Promise<void> {
  const includeUsage = body?.stream_options?.include_usage === true && !ex.b.omitUsage;
  const frame = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    sse({
      id: `chatcmpl-mock-${p.n}`,
      object: "chat.completion.chunk",
      created: CREATED,
      model: p.model,
      service_tier: "default",
      system_fingerprint: "fp_mock",
      choices,
      // OpenAI sends usage: null on every chunk once usage was requested.
      ...(includeUsage ? { usage: null } : {}),
      ...extra,
    });
  const delta = (d: Record<string, unknown>, finish: string | null = null) =>
    frame([{ index: 0, delta: d, logprobs: null, finish_reason: finish }]);

  const textOnly = p.text.length > 0 || p.toolCalls.length === 0;
  if (!(await ex.write(delta({ role: "assistant", content: textOnly ? "" : null, refusal: null })))) return;
  for (const t of p.text) if (!(await ex.token(delta({ content: t })))) return;
  if (ex.b.neverEnd) return ex.forever(p.text.length, (t) => delta({ content: t }));
  for (const [i, c] of p.toolCalls.entries()) {
    const head = { index: i, id: callId(p, i), type: "function", function: { name: c.name, arguments: "" } };
    if (!(await ex.write(delta({ tool_calls: [head] })))) return;
    for (const a of c.chunks) {
      if (!(await ex.token(delta({ tool_calls: [{ index: i, function: { arguments: a } }] })))) return;
    }
  }
  if (!ex.checkFail()) return;
  if (!(await ex.write(delta({}, chatFinish(p))))) return;
  if (includeUsage && !(await ex.write(frame([], { usage: chatUsage(p) })))) return;
  if (!(await ex.write("data: [DONE]\n\n"))) return;
  ex.finish();
}

// ---------- OpenAI Responses ----------

function responseUsage(p: Plan) {
  return {
    input_tokens: p.promptTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: p.outputTokens,
    output_tokens_details: { reasoning_tokens: p.reasoningTokens },
    total_tokens: p.promptTokens + p.outputTokens,
  };
}

const msgItemId = (p: Plan) => `msg_mock_${p.n}`;
const fcItemId = (p: Plan, i: number) => `fc_mock_${p.n}_${i}`;
const hasMessageItem = (p: Plan) => p.text.length > 0 || p.toolCalls.length === 0;

function outputTextPart(text: string) {
  return { type: "output_text", annotations: [], logprobs: [], text };
}

function messageItem(p: Plan, status: string, content: unknown[]) {
  return { id: msgItemId(p), type: "message", status, role: "assistant", content };
}

function functionCallItem(p: Plan, i: number, status: string, args: string) {
  const c = p.toolCalls[i];
  return { id: fcItemId(p, i), type: "function_call", status, arguments: args, call_id: callId(p, i), name: c.name };
}

/**
 * A `response` object. "created" is the in-progress snapshot sent first when streaming;
 * "final" is completed, or incomplete (reason max_output_tokens) when truncated, as OpenAI does.
 */
function responseObject(p: Plan, b: MockBehavior, stage: "created" | "final") {
  const final = stage === "final";
  const status = !final ? "in_progress" : p.truncated ? "incomplete" : "completed";
  const output: unknown[] = [];
  if (final) {
    if (hasMessageItem(p)) {
      output.push(messageItem(p, p.truncated ? "incomplete" : "completed", [outputTextPart(p.text.join(""))]));
    }
    p.toolCalls.forEach((c, i) => output.push(functionCallItem(p, i, "completed", c.arguments)));
  }
  return {
    id: `resp_mock_${p.n}`,
    object: "response",
    created_at: CREATED,
    status,
    background: false,
    error: null,
    incomplete_details: final && p.truncated ? { reason: "max_output_tokens" } : null,
    instructions: null,
    max_output_tokens: null,
    model: p.model,
    output,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: 1,
    text: { format: { type: "text" } },
    tool_choice: "auto",
    tools: [],
    top_p: 1,
    truncation: "disabled",
    usage: final && !b.omitUsage ? responseUsage(p) : null,
    metadata: {},
  };
}

async function streamResponses(ex: Exchange, p: Plan): Promise<void> {
  let seq = 0;
  const send = (type: string, fields: Record<string, unknown>) =>
    namedSse(type, { type, sequence_number: seq++, ...fields });

  const created = responseObject(p, ex.b, "created");
  if (!(await ex.write(send("response.created", { response: created })))) return;
  if (!(await ex.write(send("response.in_progress", { response: created })))) return;

  let outputIndex = 0;
  if (hasMessageItem(p)) {
    const item_id = msgItemId(p);
    const at = { item_id, output_index: outputIndex, content_index: 0 };
    if (!(await ex.write(send("response.output_item.added", { output_index: outputIndex, item: messageItem(p, "in_progress", []) })))) return;
    if (!(await ex.write(send("response.content_part.added", { ...at, part: outputTextPart("") })))) return;
    const delta = (d: string) => send("response.output_text.delta", { ...at, delta: d, logprobs: [] });
    for (const t of p.text) if (!(await ex.token(delta(t)))) return;
    if (ex.b.neverEnd) return ex.forever(p.text.length, delta);
    if (!ex.checkFail()) return;
    const text = p.text.join("");
    const itemStatus = p.truncated ? "incomplete" : "completed";
    if (!(await ex.write(send("response.output_text.done", { ...at, text, logprobs: [] })))) return;
    if (!(await ex.write(send("response.content_part.done", { ...at, part: outputTextPart(text) })))) return;
    const done = messageItem(p, itemStatus, [outputTextPart(text)]);
    if (!(await ex.write(send("response.output_item.done", { output_index: outputIndex, item: done })))) return;
    outputIndex++;
  }
  for (const [i, c] of p.toolCalls.entries()) {
    const at = { item_id: fcItemId(p, i), output_index: outputIndex };
    const added = functionCallItem(p, i, "in_progress", "");
    if (!(await ex.write(send("response.output_item.added", { output_index: outputIndex, item: added })))) return;
    for (const a of c.chunks) {
      if (!(await ex.token(send("response.function_call_arguments.delta", { ...at, delta: a })))) return;
    }
    if (!ex.checkFail()) return;
    const argsDone = send("response.function_call_arguments.done", { ...at, name: c.name, arguments: c.arguments });
    if (!(await ex.write(argsDone))) return;
    const done = functionCallItem(p, i, "completed", c.arguments);
    if (!(await ex.write(send("response.output_item.done", { output_index: outputIndex, item: done })))) return;
    outputIndex++;
  }
  if (!ex.checkFail()) return;
  const final = responseObject(p, ex.b, "final");
  const type = p.truncated ? "response.incomplete" : "response.completed";
  if (!(await ex.write(send(type, { response: final })))) return;
  ex.finish();
}

// ---------- Anthropic Messages ----------

const anthropicStop = (p: Plan) => (p.toolCalls.length ? "tool_use" : p.truncated ? "max_tokens" : "end_turn");
const toolUseId = (p: Plan, i: number) => `toolu_mock_${p.n}_${i}`;

function parseInput(args: string): unknown {
  try {
    return JSON.parse(args);
  } catch {
    return {};
  }
}

function anthropicUsage(p: Plan, outputTokens: number) {
  return {
    input_tokens: p.promptTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    output_tokens: outputTokens,
    service_tier: "standard",
  };
}

function anthropicMessage(p: Plan, b: MockBehavior) {
  const content: unknown[] = [];
  if (hasMessageItem(p)) content.push({ type: "text", text: p.text.join("") });
  p.toolCalls.forEach((c, i) =>
    content.push({ type: "tool_use", id: toolUseId(p, i), name: c.name, input: parseInput(c.arguments) }),
  );
  return {
    id: `msg_mock_${p.n}`,
    type: "message",
    role: "assistant",
    model: p.model,
    content,
    stop_reason: anthropicStop(p),
    stop_sequence: null,
    ...(b.omitUsage ? {} : { usage: anthropicUsage(p, p.outputTokens) }),
  };
}

async function streamMessages(ex: Exchange, p: Plan): Promise<void> {
  const send = (type: string, fields: Record<string, unknown> = {}) => namedSse(type, { type, ...fields });
  const start = {
    id: `msg_mock_${p.n}`,
    type: "message",
    role: "assistant",
    model: p.model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
    ...(ex.b.omitUsage ? {} : { usage: anthropicUsage(p, 1) }),
  };
  if (!(await ex.write(send("message_start", { message: start })))) return;

  let index = 0;
  let pinged = false;
  // Anthropic sends one ping right after the first content_block_start.
  const ping = (): Promise<boolean> => {
    if (pinged) return Promise.resolve(true);
    pinged = true;
    return ex.write(send("ping"));
  };
  if (hasMessageItem(p)) {
    if (!(await ex.write(send("content_block_start", { index, content_block: { type: "text", text: "" } })))) return;
    if (!(await ping())) return;
    const delta = (t: string) => send("content_block_delta", { index, delta: { type: "text_delta", text: t } });
    for (const t of p.text) if (!(await ex.token(delta(t)))) return;
    if (ex.b.neverEnd) return ex.forever(p.text.length, delta);
    if (!ex.checkFail()) return;
    if (!(await ex.write(send("content_block_stop", { index })))) return;
    index++;
  }
  for (const [i, c] of p.toolCalls.entries()) {
    const block = { type: "tool_use", id: toolUseId(p, i), name: c.name, input: {} };
    if (!(await ex.write(send("content_block_start", { index, content_block: block })))) return;
    if (!(await ping())) return;
    for (const a of c.chunks) {
      const d = send("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: a } });
      if (!(await ex.token(d))) return;
    }
    if (!ex.checkFail()) return;
    if (!(await ex.write(send("content_block_stop", { index })))) return;
    index++;
  }
  if (!ex.checkFail()) return;
  const usage = ex.b.omitUsage ? {} : { usage: { output_tokens: p.outputTokens } };
  if (!(await ex.write(send("message_delta", { delta: { stop_reason: anthropicStop(p), stop_sequence: null }, ...usage })))) return;
  if (!(await ex.write(send("message_stop")))) return;
  ex.finish();
}
