#!/usr/bin/env node
// The least a metering gateway can do per request, as a yardstick between the floor (bytes piped,
// never read) and tollgate: read and parse the body, look the key's hash up, call the upstream
// collecting its bytes, read the answer's usage, write one usage line (batched per turn) and
// answer; a stream is relayed chunk by chunk and its usage read from the bytes. No limits, no
// budgets, no output cap, no tokenizer: what any gateway that records cost pays on top of the
// floor on this machine. Not a product: `npm run bench` runs it as the target `min`.
//
//   PORT [18083]  HOST [127.0.0.1]  UPSTREAM [MOCK_ORIGIN, or http://127.0.0.1:18080]  USAGE_LOG [/dev/null]
//   (`--port N` wins over PORT, so the shared harness can start it: bench/shared-targets.json)
import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import http from "node:http";
import { Pool } from "undici";

const portArg = process.argv.indexOf("--port");
const PORT = Number(portArg > 0 ? process.argv[portArg + 1] : process.env.PORT || 18083);
const HOST = process.env.HOST || "127.0.0.1";
const UP = new URL(process.env.UPSTREAM || process.env.MOCK_ORIGIN || "http://127.0.0.1:18080");
const pool = new Pool(UP.origin, { connections: 1024, pipelining: 1, keepAliveTimeout: 60_000 });
const keys = new Map([[createHash("sha256").update("sk-bench-mock").digest("hex"), { user: "bench-user", plan: "bench" }]]);
const upstreamHeaders = { "content-type": "application/json", authorization: "Bearer sk-upstream-bench" };
const log = createWriteStream(process.env.USAGE_LOG || "/dev/null");
let lines = "";
const flush = () => {
  log.write(lines);
  lines = "";
};
const record = (rec) => {
  if (!lines) setImmediate(flush);
  lines += JSON.stringify(rec) + "\n";
};
const INVALID_KEY = JSON.stringify({ error: { message: "invalid API key", type: "invalid_request_error", code: "invalid_api_key", param: null } });

http
  .createServer((req, res) => {
    const id = randomUUID();
    const startedAt = performance.now();
    const auth = req.headers.authorization ?? "";
    const key = keys.get(createHash("sha256").update(auth.slice(7)).digest("hex"));
    if (!key) {
      req.resume();
      record({ ts: new Date().toISOString(), request_id: id, decision: "deny", code: "invalid_api_key" });
      res.writeHead(401, { "content-type": "application/json", "content-length": INVALID_KEY.length, "x-tollgate-request-id": id });
      return res.end(INVALID_KEY);
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const body = JSON.parse(Buffer.concat(chunks).toString());
      const ac = new AbortController();
      res.on("close", () => {
        if (!res.writableFinished) ac.abort();
      });
      const done = (usage) =>
        record({
          ts: new Date().toISOString(),
          request_id: id,
          user: key.user,
          plan: key.plan,
          model: body.model,
          input_tokens: usage?.prompt_tokens ?? 0,
          output_tokens: usage?.completion_tokens ?? 0,
          cost_micros: (usage?.prompt_tokens ?? 0) * 0.15 + (usage?.completion_tokens ?? 0) * 0.6,
          decision: "allow",
          duration_ms: Math.round(performance.now() - startedAt),
        });
      try {
        const up = await pool.request({ path: req.url, method: "POST", headers: upstreamHeaders, body: JSON.stringify(body), signal: ac.signal });
        if (!body.stream) {
          const bytes = Buffer.from(await up.body.arrayBuffer());
          done(JSON.parse(bytes.toString()).usage);
          res.writeHead(up.statusCode, { "content-type": "application/json", "content-length": bytes.length, "x-tollgate-request-id": id });
          return res.end(bytes);
        }
        res.writeHead(up.statusCode, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-tollgate-request-id": id });
        let last = "";
        for await (const chunk of up.body) {
          res.write(chunk);
          last = chunk.toString();
        }
        res.end();
        const at = last.lastIndexOf('"usage":');
        done(at < 0 ? undefined : JSON.parse(last.slice(last.lastIndexOf("data: ", at) + 6, last.indexOf("\n", at))).usage);
      } catch {
        if (!res.headersSent) res.writeHead(502).end();
        else res.destroy();
      }
    });
  })
  .listen(PORT, HOST, () => console.log(`min-gateway on http://${HOST}:${PORT} -> ${UP.origin}`));
