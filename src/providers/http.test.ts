import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openaiChat } from "../formats/openai-chat.js";
import type { UpstreamCall } from "../core/provider.js";
import { HttpProvider } from "./http.js";
import { MAX_EVENT_BYTES } from "./sse.js";
import { MAX_ANSWER_BYTES } from "./upstream-handler.js";

/**
 * A hostile upstream that never stops sending must cost a bounded amount of memory: the answer is
 * refused as an upstream_error once it outgrows the cap, and the socket is closed (the server sees
 * its response cut short rather than writing forever).
 */
let server: Server;
let provider: HttpProvider;
const closed: string[] = [];
const MiB = 1024 * 1024;

function endless(res: ServerResponse, type: string, first: string, filler: Buffer, path: string): void {
  res.writeHead(200, { "content-type": type });
  res.write(first);
  let sent = 0;
  const pump = (): void => {
    // Far past either cap; a bounded server keeps the test from hanging if the cap is gone.
    while (sent < 4 * MAX_ANSWER_BYTES) {
      sent += filler.length;
      if (!res.write(filler)) return void res.once("drain", pump);
    }
    res.end();
  };
  res.on("close", () => closed.push(`${path}:${res.writableFinished ? "finished" : "cut"}`));
  pump();
}

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    const filler = Buffer.alloc(MiB, "a");
    if (req.headers.accept === "text/event-stream") endless(res, "text/event-stream", 'data: {"choices":[{"delta":{"content":"', filler, "stream");
    else endless(res, "application/json", '{"choices":[{"message":{"content":"', filler, "json");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  provider = new HttpProvider({ name: "hostile", type: "openai", baseUrl: `http://127.0.0.1:${port}/v1`, apiKey: "sk-secret-never-shown" } as ConstructorParameters<typeof HttpProvider>[0]);
});
afterAll(async () => {
  await provider?.close();
  server?.close();
});

function call(stream: boolean): UpstreamCall {
  return {
    format: openaiChat,
    body: { model: "m", messages: [{ role: "user", content: "hi" }], stream },
    plan: {} as UpstreamCall["plan"],
    stream,
    signal: new AbortController().signal,
    firstByteTimeoutMs: 5_000,
    idleTimeoutMs: 5_000,
  };
}

describe("a hostile upstream's endless answer", () => {
  it("non-streaming: refused as upstream_error past MAX_ANSWER_BYTES, the socket closed", async () => {
    const err = await provider.call(call(false)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "upstream_error" });
    expect(String((err as Error).message)).not.toContain("sk-secret");
    await expect.poll(() => closed).toContain("json:cut");
  });

  it("streaming: an event that never ends is refused past MAX_EVENT_BYTES, the socket closed", async () => {
    const res = await provider.call(call(true));
    expect(res.kind).toBe("stream");
    const events: unknown[] = [];
    const err = await (async () => {
      for await (const e of (res as { events: AsyncIterable<unknown> }).events) events.push(e);
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(events).toEqual([]);
    expect(err).toMatchObject({ code: "upstream_error" });
    expect(String((err as Error).message)).toContain(`${MAX_EVENT_BYTES >> 20} MiB`);
    await expect.poll(() => closed).toContain("stream:cut");
  });
});
