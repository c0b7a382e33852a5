/** One in-flight response of the mock upstream: pacing, backpressure and close bookkeeping. */
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { mockChunk, type MockBehavior, type RecordedRequest } from "./mock-plan.js";

export class Exchange {
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

  /** Resolves true once `p` settles, or false as soon as the connection is gone. */
  until(p: Promise<unknown>): Promise<boolean> {
    if (this.gone) return Promise.resolve(false);
    return new Promise((resolve) => {
      let waiting = true;
      const done = (alive: boolean) => {
        if (!waiting) return;
        waiting = false;
        this.cancelWait = undefined;
        resolve(alive);
      };
      this.cancelWait = () => done(false);
      const settled = () => done(!this.gone);
      p.then(settled, settled);
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
   * must stop (client gone, `failAfterChunks` reached and the connection broken, or
   * `stallAfterChunks` reached and the client gave up on the silence).
   */
  async token(data: string): Promise<boolean> {
    if (!this.checkFail()) return false;
    if (this.rec.chunksSent >= (this.b.stallAfterChunks ?? Infinity)) return this.stall();
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

  /** Silence with the connection open, until the client gives up (`stallAfterChunks`). */
  async stall(): Promise<false> {
    while (await this.sleep(2 ** 31 - 1));
    return false;
  }

  /** Sends status, headers and the first half of `body`, then goes silent. */
  async stallMidBody(body: string): Promise<void> {
    this.res.writeHead(200, { "content-type": "application/json", ...this.idHeader() });
    if (await this.write(body.slice(0, body.length >> 1))) await this.stall();
  }

  /** Writes a last event and ends the stream (an error event instead of the rest of the reply). */
  async endWith(data: string): Promise<void> {
    if (await this.write(data)) this.finish();
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

export const sse = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`;
export const namedSse = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
