import type { ServerResponse } from "node:http";
import type { UsageRecord } from "../core/usage-record.js";

/** Records kept for a tail that just connected. */
const BACKLOG = 200;
/** A comment line this often keeps proxies from closing an idle stream. */
const HEARTBEAT_MS = 15_000;
/** A subscriber that stopped reading is dropped rather than buffered without bound. */
const MAX_BUFFERED_BYTES = 1 << 20;

/**
 * The live tail of this process's usage records, as Server-Sent Events (`GET /admin/tail`).
 * Other gateway processes sharing the store have tails of their own; `/admin/records` reads the
 * store and sees them all.
 */
export class Tail {
  private readonly backlog: UsageRecord[] = [];
  private readonly subscribers = new Set<ServerResponse>();
  private closed = false;

  push(record: UsageRecord): void {
    this.backlog.push(record);
    if (this.backlog.length > BACKLOG) this.backlog.shift();
    if (!this.subscribers.size) return;
    const frame = sseFrame(record);
    for (const res of this.subscribers) {
      if (res.writableLength > MAX_BUFFERED_BYTES) res.destroy();
      else res.write(frame);
    }
  }

  /** The most recent records, oldest first. */
  recent(limit = BACKLOG): UsageRecord[] {
    return this.backlog.slice(-limit);
  }

  /** Streams records to `res` until the client leaves or the tail closes. */
  subscribe(res: ServerResponse, backlog: number): void {
    if (this.closed) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive", "x-accel-buffering": "no" });
    res.write(": tollgate usage tail\n\n");
    for (const r of this.recent(backlog)) res.write(sseFrame(r));
    this.subscribers.add(res);
    const heartbeat = setInterval(() => res.write(": ping\n\n"), HEARTBEAT_MS);
    res.once("close", () => {
      clearInterval(heartbeat);
      this.subscribers.delete(res);
    });
  }

  /** Ends every stream, so a draining gateway is not held open by dashboards. */
  close(): void {
    this.closed = true;
    for (const res of this.subscribers) res.end();
    this.subscribers.clear();
  }
}

function sseFrame(record: UsageRecord): string {
  return `event: usage\ndata: ${JSON.stringify(record)}\n\n`;
}
