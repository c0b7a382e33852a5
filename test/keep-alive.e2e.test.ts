import { connect, type Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { useGateways } from "./use-gateway.js";

const gateways = useGateways({ after: "all" });

const config = (server: object) => ({
  server,
  store: "memory:",
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 2 } } },
  plans: { free: { models: ["m"] } },
  keys: [{ key: "tg_keepalive_key", user: "u", plan: "free" }],
  routes: { chat: { path: "/", plans: ["free"] } },
});

/**
 * Sends one keep-alive request on a fresh socket, waits for the whole reply, and resolves how long
 * (ms) the connection then stayed open, or `undefined` if it was still open after `watchMs`.
 */
function idleLife(url: string, watchMs: number): Promise<number | undefined> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(port), hostname);
    let reply = "";
    let answeredAt = 0;
    socket.setEncoding("latin1");
    socket.on("error", reject);
    socket.on("data", (chunk: string) => {
      reply += chunk;
      if (!answeredAt && /\r\n\r\n/.test(reply)) {
        const length = Number(/content-length: (\d+)/i.exec(reply)?.[1] ?? 0);
        if (reply.length - reply.indexOf("\r\n\r\n") - 4 < length) return;
        answeredAt = performance.now();
        const watch = setTimeout(() => {
          socket.destroy();
          resolve(undefined);
        }, watchMs);
        socket.once("close", () => {
          clearTimeout(watch);
          resolve(performance.now() - answeredAt);
        });
      }
    });
    socket.write(`GET /healthz HTTP/1.1\r\nhost: ${hostname}\r\nconnection: keep-alive\r\n\r\n`);
  });
}

describe("server.keep_alive_timeout", () => {
  it("keeps an idle client connection past node's 5 s default, so a load balancer's 60 s pool does not race it", { timeout: 60_000 }, async () => {
    const gw = await gateways.start(config({}));
    // Node's own default would have closed it at 5 s.
    expect(await idleLife(gw.url, 6_000)).toBeUndefined();
  });

  it("closes an idle connection once the configured time has passed, and not before", { timeout: 60_000 }, async () => {
    const gw = await gateways.start(config({ keep_alive_timeout: "1s" }));
    const life = await idleLife(gw.url, 10_000);
    expect(life).toBeDefined();
    // The gateway's idle clock starts as it finishes the reply, a moment before this test sees it.
    expect(life!).toBeGreaterThan(800);
  });
});
