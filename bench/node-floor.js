#!/usr/bin/env node
// Copied from the shared side-by-side harness (../shared/bench/node-floor-proxy.mjs) so `npm run bench`
// measures against the same floor; only the undici import differs.
// The floor for a Node gateway: a bare pass-through reverse proxy. node:http server; bodies
// are streamed both ways and never parsed. Anything a real Node gateway costs beyond this is
// the gateway's own work.
//
// Environment:
//   PORT [18082]  HOST [127.0.0.1]  UPSTREAM [http://127.0.0.1:18080]
//   FLOOR_CLIENT [undici]  upstream client: "undici" (undici Pool.stream, tollgate's own undici)
//                          or "http" (node:http request + keep-alive Agent + stream.pipeline)
// A request for /v1/x is sent to UPSTREAM + /v1/x. If the client goes away before the
// response has ended, the upstream request is aborted (so the provider stops generating).

import http from 'node:http';
import { pipeline } from 'node:stream';
import { Pool } from 'undici';

const PORT = Number(process.env.PORT || 18082);
const HOST = process.env.HOST || '127.0.0.1';
const UP = new URL(process.env.UPSTREAM || 'http://127.0.0.1:18080');
const CLIENT = process.env.FLOOR_CLIENT || 'undici';

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate', 'host']);
const strip = (h) => {
  const o = {};
  for (const k in h) if (!HOP.has(k)) o[k] = h[k];
  return o;
};
const fail = (res, e) => {
  if (!res.headersSent) {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: `upstream error: ${e.message}`, type: 'proxy_error' } }));
  } else res.destroy();
};

let handler;
if (CLIENT === 'undici') {
  const pool = new Pool(UP.origin, { connections: 1024, pipelining: 1, keepAliveTimeout: 60_000 });
  handler = (req, res) => {
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) ac.abort(); // client disconnected: cancel upstream
    });
    pool.stream(
      { path: req.url, method: req.method, headers: strip(req.headers), body: req.method === 'GET' || req.method === 'HEAD' ? null : req, signal: ac.signal },
      ({ statusCode, headers }) => {
        res.writeHead(statusCode, strip(headers));
        return res;
      },
      (err) => {
        if (err) fail(res, err);
      },
    );
  };
} else {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 256, keepAliveMsecs: 30_000 });
  handler = (req, res) => {
    const headers = strip(req.headers);
    headers.host = UP.host;
    const up = http.request({ host: UP.hostname, port: UP.port || 80, method: req.method, path: req.url, headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode || 502, strip(upRes.headers));
      pipeline(upRes, res, () => {});
    });
    up.on('error', (e) => fail(res, e));
    res.on('close', () => {
      if (!res.writableFinished) up.destroy(); // client disconnected: cancel upstream
    });
    pipeline(req, up, () => {});
  };
}

const server = http.createServer(handler);
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.requestTimeout = 0;
server.listen(PORT, HOST, () => console.log(`node-floor-proxy (${CLIENT}) on http://${HOST}:${PORT} -> ${UP.origin}`));
const stop = () => {
  server.close();
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 200).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
