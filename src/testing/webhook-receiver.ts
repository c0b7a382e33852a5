import { once } from "node:events";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Webhook } from "standardwebhooks";

/** A delivery the receiver accepted: a verified webhook, or one CloudEvent out of a batch. */
export interface Received {
  id: string;
  type: string;
  body: Record<string, unknown>;
  /** Epoch ms it arrived. */
  at: number;
}

/**
 * A receiver for tollgate's alerts and usage export, for tests: POST /hooks takes Standard Webhooks
 * (verified with the secret by the standardwebhooks package itself; a bad signature is a 400 and
 * counted in `rejected`), POST /events takes application/cloudevents-batch+json. Every accepted
 * delivery is kept, duplicates included. `down()` closes the port as a dead receiver would;
 * `up()` opens the same port again.
 */
export class WebhookReceiver {
  readonly alerts: Received[] = [];
  readonly events: Received[] = [];
  rejected = 0;
  private readonly sockets = new Set<Socket>();
  private server: http.Server;
  private port = 0;

  private constructor(private readonly secret: string) {
    this.server = this.create();
  }

  static async start(secret: string): Promise<WebhookReceiver> {
    const r = new WebhookReceiver(secret);
    r.server.listen(0, "127.0.0.1");
    await once(r.server, "listening");
    r.port = (r.server.address() as AddressInfo).port;
    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Distinct ids received, by type. */
  ids(type?: string): string[] {
    return [...new Set([...this.alerts, ...this.events].filter((r) => type === undefined || r.type === type).map((r) => r.id))];
  }

  async down(): Promise<void> {
    const closed = once(this.server, "close");
    this.server.close();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  async up(): Promise<void> {
    this.server = this.create();
    this.server.listen(this.port, "127.0.0.1");
    await once(this.server, "listening");
  }

  close(): Promise<void> {
    return this.server.listening ? this.down() : Promise.resolve();
  }

  private create(): http.Server {
    const server = http.createServer((req, res) => void this.handle(req, res));
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.once("close", () => this.sockets.delete(s));
    });
    return server;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    const at = Date.now();
    if (req.url === "/hooks") {
      try {
        const payload = new Webhook(this.secret).verify(body, req.headers as Record<string, string>) as { type: string };
        this.alerts.push({ id: String(req.headers["webhook-id"]), type: payload.type, body: payload as Record<string, unknown>, at });
        res.writeHead(204).end();
      } catch {
        this.rejected++;
        res.writeHead(400).end();
      }
      return;
    }
    if (req.url === "/events" && req.headers["content-type"] === "application/cloudevents-batch+json") {
      for (const e of JSON.parse(body) as Record<string, unknown>[]) this.events.push({ id: String(e.id), type: String(e.type), body: e, at });
      res.writeHead(202).end();
      return;
    }
    res.writeHead(404).end();
  }
}
