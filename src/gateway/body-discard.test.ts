import { createServer, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { BodyDiscard } from "./body-discard.js";

/** A server that refuses every request at once, before its body is read, as the gateway does. */
async function refusingServer(discards: BodyDiscard): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (!req.complete) discards.discard(req);
    res.writeHead(401, { "content-type": "application/json", "content-length": 2 });
    res.end("{}");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Sends raw bytes; resolves what came back and when the connection closed (ms after sending). */
function raw(port: number, bytes: string): { socket: Socket; closed: Promise<{ text: string; afterMs: number }> } {
  const socket = connect(port, "127.0.0.1");
  const started = performance.now();
  let text = "";
  socket.on("data", (d) => (text += d));
  socket.write(bytes);
  const closed = new Promise<{ text: string; afterMs: number }>((resolve) => socket.on("close", () => resolve({ text, afterMs: performance.now() - started })));
  socket.on("error", () => {});
  return { socket, closed };
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.closeAllConnections(), s.close();
});

describe("the body of a refused request", () => {
  it("a declared body that stalls: the refusal is answered, then the connection is cut at the time budget", async () => {
    const { server, port } = await refusingServer(new BodyDiscard(1024, 300, 50));
    servers.push(server);
    const { closed } = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    const { text, afterMs } = await closed;
    expect(text).toMatch(/^HTTP\/1\.1 401/);
    expect(afterMs).toBeGreaterThanOrEqual(250);
    expect(afterMs).toBeLessThan(2_000);
  });

  it("a declared body that arrives whole: the connection stays open for the next request", async () => {
    const { server, port } = await refusingServer(new BodyDiscard(1024, 300, 50));
    servers.push(server);
    const body = "x".repeat(500);
    const { socket, closed } = raw(port, `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}`);
    await new Promise((r) => setTimeout(r, 700));
    expect(socket.destroyed).toBe(false);
    socket.end();
    const { text } = await closed;
    expect(text.match(/HTTP\/1\.1 401/g)).toHaveLength(2);
  });

  it("bodies that arrive whole with their headers are not held once the turn is over", async () => {
    // Under a flood of refusals every refused request used to be held until the next sweep (up to
    // a second): thousands of live requests the garbage collector copied and promoted.
    const discards = new BodyDiscard(1024, 60_000, 60_000);
    const { server, port } = await refusingServer(discards);
    servers.push(server);
    const body = '{"model":"m"}';
    const socket = connect(port, "127.0.0.1");
    let text = "";
    const all = new Promise<void>((resolve) => socket.on("data", (d) => (text += d).split("HTTP/1.1 401").length > 20 && resolve()));
    socket.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`.repeat(20));
    await all;
    await new Promise((r) => setImmediate(r));
    expect(discards.watching).toBe(0);
    socket.destroy();
  });

  it("a chunked body past the byte budget is cut, without waiting for the time budget", async () => {
    const { server, port } = await refusingServer(new BodyDiscard(1024, 60_000, 50));
    servers.push(server);
    const { socket, closed } = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    const chunk = "x".repeat(600);
    for (let i = 0; i < 4 && !socket.destroyed; i++) {
      socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const { text, afterMs } = await closed;
    expect(text).toMatch(/^HTTP\/1\.1 401/);
    expect(afterMs).toBeLessThan(5_000);
  });
});
