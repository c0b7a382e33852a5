import type { IncomingMessage } from "node:http";

/** Most of an unread body tollgate will swallow so the client can read its refusal; past it, the connection is cut. */
const DISCARD_MAX_BYTES = 32 * 1024 * 1024;
const DISCARD_MAX_MS = 10_000;
/** How often bodies still arriving are looked at: the time budget is kept to within this. */
const SWEEP_MS = 1_000;

/**
 * A refusal sent before the body was read: HTTP clients only see the response if the server keeps
 * reading what they are still sending, so the rest is read and thrown away — never buffered —
 * within a byte and time budget, after which the connection is cut.
 *
 * Nearly every refusal comes here (node parses a body after the request event, even one that
 * came in the same packet), so the common case is cheap: a body whose declared length is within
 * the byte budget cannot overrun it (node frames it by that length), so it is only resumed; if it
 * is still arriving at the end of the turn, it goes on a list one shared timer sweeps for the time
 * budget. A chunked body, or one declared larger, is counted as it arrives.
 */
export class BodyDiscard {
  /** Refused this turn, body not yet in: looked at once the turn's reads are parsed. */
  private readonly fresh: IncomingMessage[] = [];
  private pending: { req: IncomingMessage; until: number }[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly maxBytes = DISCARD_MAX_BYTES,
    private readonly maxMs = DISCARD_MAX_MS,
    private readonly sweepMs = SWEEP_MS,
  ) {}

  /** Bodies still watched for the time budget (those still arriving). */
  get watching(): number {
    return this.fresh.length + this.pending.length;
  }

  discard(req: IncomingMessage): void {
    const declared = req.headers["content-length"];
    if (declared === undefined || !(Number(declared) <= this.maxBytes)) return this.counted(req);
    req.resume();
    // node parses the rest of a read only after the refusal's microtasks, so a body sent with its
    // headers is nearly always whole by the end of this turn. Only the rest are kept for the sweep:
    // under a flood, a second of refused requests held for it outlived the young generation, and
    // the garbage collector copied and promoted every one (a third of a refusal's CPU).
    if (this.fresh.push(req) === 1) setImmediate(this.settle);
  }

  private readonly settle = (): void => {
    const until = Date.now() + this.maxMs;
    for (const req of this.fresh) if (!req.complete && !req.destroyed) this.pending.push({ req, until });
    this.fresh.length = 0;
    if (this.pending.length) this.timer ??= setInterval(() => this.sweep(), this.sweepMs).unref();
  };

  private sweep(): void {
    const now = Date.now();
    this.pending = this.pending.filter(({ req, until }) => {
      if (req.complete || req.destroyed) return false;
      if (until > now) return true;
      req.socket.destroy();
      return false;
    });
    if (!this.pending.length) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private counted(req: IncomingMessage): void {
    let seen = 0;
    const cut = () => req.socket.destroy();
    const timer = setTimeout(cut, this.maxMs).unref();
    req.on("data", (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > this.maxBytes) cut();
    });
    req.once("end", () => clearTimeout(timer));
    req.once("close", () => clearTimeout(timer));
    req.resume();
  }
}
