// The baseline any proxy pays: a node:http server that streams each request to the upstream with
// undici (keep-alive pool, as tollgate uses) and streams the response back, with no policy at all.
//
// Usage: node bench/bare-proxy.js UPSTREAM_URL [abort-aware|buffered|naive]
//   abort-aware  streams the request body up and stream.pipeline()s the response back, with an
//                AbortSignal on the client's 'close': a client that leaves destroys the upstream
//                response (what a careful proxy does). The baseline of section 1.
//   buffered     the same, but a JSON request and a JSON response are read whole and sent in one
//                write with a content-length, as tollgate must (it parses both); SSE still streams.
//   naive        upstreamBody.pipe(res): the textbook one-liner, which never tells upstream.
import { createServer } from "node:http";
import { pipeline } from "node:stream";
import { Agent, request } from "undici";

const [upstream, mode = "abort-aware"] = process.argv.slice(2);
if (!upstream || !["abort-aware", "buffered", "naive"].includes(mode)) {
  process.stderr.write("usage: node bench/bare-proxy.js UPSTREAM_URL [abort-aware|buffered|naive]\n");
  process.exit(2);
}
const agent = new Agent({ keepAliveTimeout: 30_000, connections: 256 });
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"]);

const server = createServer(async (req, res) => {
  const abort = mode === "naive" ? undefined : new AbortController();
  if (abort) res.on("close", () => res.writableFinished || abort.abort());
  try {
    const headers = { "content-type": req.headers["content-type"] ?? "application/json", authorization: "Bearer sk-bench-upstream" };
    let body = req;
    if (mode === "buffered") {
      const parts = [];
      for await (const part of req) parts.push(part);
      body = Buffer.concat(parts);
    } else if (req.headers["content-length"]) {
      headers["content-length"] = req.headers["content-length"];
    }
    const up = await request(upstream + req.url, { method: req.method, headers, body, dispatcher: agent, signal: abort?.signal });
    const out = {};
    for (const [k, v] of Object.entries(up.headers)) if (!HOP_BY_HOP.has(k)) out[k] = v;
    if (mode === "buffered" && !String(up.headers["content-type"]).includes("text/event-stream")) {
      const whole = Buffer.from(await up.body.arrayBuffer());
      out["content-length"] = String(whole.length);
      res.writeHead(up.statusCode, out);
      res.end(whole);
      return;
    }
    res.writeHead(up.statusCode, out);
    if (abort) pipeline(up.body, res, () => {});
    else up.body.pipe(res);
  } catch {
    if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" });
    res.end('{"error":{"message":"bad gateway"}}');
  }
});
server.keepAliveTimeout = 5_000;
server.listen(0, "127.0.0.1", () => process.stdout.write(`bare proxy listening on http://127.0.0.1:${server.address().port}\n`));
process.on("SIGTERM", () => process.exit(0));
