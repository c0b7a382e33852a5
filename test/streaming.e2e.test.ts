import { readFileSync } from "node:fs";
import { request } from "node:http";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    server: { timeout: "2s", idle_timeout: "1s", first_byte_timeout: "1s" },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" }, o3: { provider: "up" } },
    plans: { free: { models: ["gpt-4o-mini", "o3"] } },
    keys: [{ key: "tg_stream", user: "sam", plan: "free" }],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "gpt-4o-mini", input: { max_output_tokens: 30 } } },
  }),
});

/** A raw streaming request, so the test controls exactly when the client goes away. */
function openStream(body: object = {}) {
  const url = new URL(`${gw.url}/chat/v1/chat/completions`);
  const payload = JSON.stringify({ messages: [{ role: "user", content: "stream" }], stream: true, ...body });
  const req = request(url, { method: "POST", headers: { authorization: "Bearer tg_stream", "content-type": "application/json", "content-length": Buffer.byteLength(payload) } });
  req.end(payload);
  return new Promise<{ res: import("node:http").IncomingMessage; destroy: () => number; requestId: string }>((resolve, reject) => {
    req.once("response", (res) =>
      resolve({
        res,
        requestId: String(res.headers["x-tollgate-request-id"]),
        destroy: () => {
          const at = performance.now();
          req.destroy();
          return at;
        },
      }),
    );
    req.once("error", reject);
  });
}

/** Reads the stream until it has carried `n` content deltas, then keeps draining it. */
function deltas(res: import("node:http").IncomingMessage, n: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    res.setEncoding("utf8").on("data", (d: string) => {
      seen += d.split('"content":"').length - 1;
      if (seen >= n) resolve();
    });
  });
}

const client = () => new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: "tg_stream", maxRetries: 0 });

describe("streaming: cancellation", () => {
  it("aborts upstream within 100 ms when the client disconnects, and charges the tokens sent", async () => {
    // Five disconnects; the median must be under 100 ms (a single one can be delayed by a
    // loaded CI machine; npm run bench measures the distribution).
    const latencies: number[] = [];
    let last: { requestId: string; upstream: (typeof mock.requests)[number] } | undefined;
    for (let i = 0; i < 5; i++) {
      mock.reset();
      mock.setBehavior({ outputTokens: 500, ignoreMaxTokens: true, tokenIntervalMs: 20 });
      const { res, destroy, requestId } = await openStream();
      // Cut once the client has had five tokens (they were metered before they were sent), so the
      // charge below does not depend on how fast a loaded machine streams.
      await deltas(res, 5);
      const gone = destroy();
      const upstream = mock.requests[0]!;
      const closedAt = await mock.waitForClose(upstream, 2_000);
      latencies.push(closedAt - gone);
      last = { requestId, upstream };
    }
    latencies.sort((a, b) => a - b);
    console.log(`client disconnect -> upstream abort: ${latencies.map((l) => l.toFixed(1)).join(", ")} ms`);
    expect(latencies[2]).toBeLessThan(100);
    const { requestId, upstream } = last!;
    const rec = await gw.recordFor(requestId);
    expect(rec).toMatchObject({ ended: "client_disconnect", usage_source: "counted" });
    expect(rec.output_tokens).toBeGreaterThan(3);
    expect(rec.output_tokens).toBeLessThanOrEqual(upstream.chunksSent);
    expect(rec.cost_usd).toBeGreaterThan(0);
  });

  it("never streams past the route's output cap, even from a provider that ignores max_tokens", async () => {
    mock.setBehavior({ outputTokens: 200, ignoreMaxTokens: true, tokenIntervalMs: 2 });
    const { data: stream, response } = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true }).withResponse();
    let chunks = 0;
    let finish: string | null | undefined;
    for await (const c of stream) {
      if (c.choices[0]?.delta?.content) chunks++;
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(chunks).toBeLessThanOrEqual(30);
    expect(chunks).toBeGreaterThanOrEqual(29);
    expect(finish).toBe("length");
    await mock.waitForClose(mock.requests[0]!, 2_000);
    expect(mock.requests[0]!.chunksSent).toBeLessThan(200);
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ ended: "output_cap" });
    expect(rec.output_tokens).toBeLessThanOrEqual(31);
  });

  it("ends a never-ending stream at the wall-clock cap and aborts upstream", async () => {
    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 100 });
    const started = performance.now();
    const { data: stream, response } = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true, max_tokens: 30 }).withResponse();
    const err = await (async () => {
      for await (const _ of stream);
    })().catch((e) => e);
    expect(performance.now() - started).toBeGreaterThan(1_800);
    expect(err?.message ?? "").toMatch(/wall-clock/);
    await mock.waitForClose(mock.requests[0]!, 5_000);
    expect(mock.requests[0]!.closedAt).toBeDefined();
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec.ended).toBe("timeout");
    // Cut at the 2 s cap, not at some later timer: the gateway's own duration, which a loaded
    // machine's scheduling of this test process (client, mock) does not stretch.
    expect(rec.duration_ms).toBeLessThan(3_000);
  });

  it("cuts a stalled upstream at idle_timeout, long before the total deadline", async () => {
    mock.setBehavior({ outputTokens: 5, tokenIntervalMs: 1_500 });
    const r = await fetch(`${gw.url}/chat/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: "Bearer tg_stream", "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "x" }], stream: true }),
    });
    // Before any output the caller gets a proper error, which names the timer that fired: the
    // silence, not the 2 s wall clock (a client-side stopwatch read 2.1 s on a loaded machine).
    expect(r.status).toBe(504);
    expect(JSON.parse(await r.text()).error).toMatchObject({ code: "upstream_timeout", message: expect.stringMatching(/went silent for longer than idle_timeout/) });
    const rec = await gw.recordFor(r.headers.get("x-tollgate-request-id"));
    expect(rec.ended).toBe("timeout");
    expect(rec.duration_ms).toBeLessThan(1_900);
  });

  it("aborts a non-streamed call at the wall-clock cap with 504, and when its client leaves", async () => {
    mock.setBehavior({ outputTokens: 20, tokenIntervalMs: 200 });
    const err = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(err.status).toBe(504);
    expect(err.code).toBe("upstream_timeout");
    await mock.waitForClose(mock.requests[0]!, 5_000);
    expect(mock.requests[0]!.closedAt).toBeDefined();

    // Five clients leave; as for streams, the median is held to 100 ms (one sample can be delayed
    // by a loaded machine; the first is also the first non-streamed abort in each process).
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      mock.reset();
      mock.setBehavior({ outputTokens: 20, tokenIntervalMs: 200 });
      const ac = new AbortController();
      const pending = client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }, { signal: ac.signal }).catch((e) => e);
      await mock.waitForRequests(1, 10_000);
      const gone = performance.now();
      ac.abort();
      await pending;
      const closedAt = await mock.waitForClose(mock.requests[0]!, 5_000);
      expect(mock.requests[0]!.closedAt).toBeDefined();
      latencies.push(closedAt - gone);
    }
    latencies.sort((a, b) => a - b);
    expect(latencies[2]).toBeLessThan(100);
  });

  it("charges the full reserved output of a reasoning model whose stream was cut", async () => {
    mock.setBehavior({ outputTokens: 500, ignoreMaxTokens: true, tokenIntervalMs: 20, omitUsage: true });
    const { res, destroy, requestId } = await openStream({ model: "o3" });
    res.resume();
    await new Promise((r) => setTimeout(r, 200));
    destroy();
    const rec = await gw.recordFor(requestId);
    expect(rec).toMatchObject({ ended: "client_disconnect", usage_source: "reserved", output_tokens: 30 });
  });
});

describe("streaming: failures and backpressure", () => {
  it("ends a stream that fails mid-way with an error the SDK raises, and charges what was sent", async () => {
    mock.setBehavior({ outputTokens: 20, failAfterChunks: 5, tokenIntervalMs: 5 });
    const { data: stream, response } = await client().chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true }).withResponse();
    let text = "";
    const err = await (async () => {
      for await (const c of stream) text += c.choices[0]?.delta?.content ?? "";
    })().catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(text.length).toBeGreaterThan(0);
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ ended: "upstream_error", usage_source: "counted" });
    expect(rec.output_tokens).toBeGreaterThanOrEqual(4);
    expect(rec.cost_usd).toBeGreaterThan(0);
  });

  it("does not buffer for a client that stops reading: upstream is held back, then the client is cut", async () => {
    // Two million tokens, no delay (~300 MB of SSE): far more than the socket buffers on the way
    // hold, so without backpressure the gateway would have to keep it in memory.
    mock.setBehavior({ ignoreMaxTokens: true, outputTokens: 2_000_000 });
    const big = await GatewayProcess.start({
      store: "memory:",
      server: { idle_timeout: "1s", timeout: "60s" },
      providers: { up: openaiUpstream(mock) },
      models: { "gpt-4o-mini": { provider: "up" } },
      plans: { free: { models: ["gpt-4o-mini"] } },
      keys: [{ key: "tg_stream", user: "sam", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], input: { max_output_tokens: 3_000_000 } } },
    });
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${big.child.pid}/status`, "utf8"))![1]) * 1024;
    try {
      // Warm up first: the tokenizer's tables load on the first request and are not a buffer.
      mock.setBehavior({ outputTokens: 5 });
      await fetch(`${big.url}/chat/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer tg_stream", "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "warm up" }], stream: true }),
      }).then((r) => r.text());
      mock.reset();
      mock.setBehavior({ ignoreMaxTokens: true, outputTokens: 2_000_000 });
      const before = rss();
      const url = new URL(`${big.url}/chat/v1/chat/completions`);
      const payload = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], stream: true });
      const req = request(url, { method: "POST", headers: { authorization: "Bearer tg_stream", "content-type": "application/json" } });
      req.end(payload);
      const res = await new Promise<import("node:http").IncomingMessage>((r) => req.once("response", r));
      res.pause(); // never read
      let peak = 0;
      const watch = setInterval(() => (peak = Math.max(peak, rss())), 50);
      // The stalled client is cut after idle_timeout once the buffers are full, and upstream is released.
      // Waits on the event, not a stopwatch: filling the socket buffers is CPU work in this
      // process (the mock) and the gateway's, which takes several times longer on a loaded machine.
      await mock.waitForClose(mock.requests[0]!, 30_000);
      clearInterval(watch);
      const sent = mock.requests[0]!.chunksSent;
      console.log(`slow reader: upstream sent ${sent} of 2000000 chunks; gateway RSS grew ${((peak - before) / 1e6).toFixed(1)} MB`);
      expect(sent).toBeLessThan(1_000_000);
      expect(peak - before).toBeLessThan(64 * 1024 * 1024);
      const rec = await big.recordFor(String(res.headers["x-tollgate-request-id"]));
      expect(rec.ended).toBe("client_disconnect");
      req.destroy();
    } finally {
      await big.stop();
    }
  }, 60_000);
});
