#!/usr/bin/env node
// Copied unchanged from the shared side-by-side harness (../shared/bench/mock-upstream.mjs), so
// `npm run bench` and that harness drive tollgate with the same upstream.
// Fast OpenAI-compatible mock provider (plain node:http, no dependencies).
//
//   POST /v1/chat/completions   non-streaming, or SSE when {"stream": true}
//   GET  /v1/models             tiny model list (for gateways' health checks)
//   GET  /__stats               counters + the last RECENT_MAX request records
//   POST /__stats/reset         zero the counters and records
//   GET  /__config              current generation settings
//   POST /__config              change settings at run time: {"tokens","token_ms","latency_ms"}
//
// Environment (defaults in brackets):
//   PORT [18080]  HOST [127.0.0.1]
//   TOKENS [50]       completion tokens per response (streaming: one SSE chunk per token)
//   TOKEN_MS [0]      spacing between streamed tokens in ms (0 = write them back to back);
//                     a non-streaming response also waits TOKENS*TOKEN_MS before answering
//   LATENCY_MS [0]    fixed delay before the response headers (time to first byte)
//   RECENT_MAX [500]  how many per-request records /__stats keeps
//
// Every chat request gets a record in /__stats "recent": id, stream, model, user (from the body),
// planned_tokens, tokens_generated (actually written), first_token_after_ms, aborted (the peer
// closed the socket before the response ended), aborted_after_ms / completed_after_ms (since the
// request arrived), received_at / ended_at (unix ms, to line up with a client's own clock).
// Generation stops as soon as the peer goes away, as a real provider's would; so
// tokens_generated < planned_tokens means the gateway in front propagated a client disconnect.

import http from 'node:http';

const num = (v, d) => (v === undefined || v === null || v === '' || Number.isNaN(Number(v)) ? d : Number(v));
const PORT = num(process.env.PORT, 18080);
const HOST = process.env.HOST || '127.0.0.1';
const RECENT_MAX = num(process.env.RECENT_MAX, 500);

const config = {
  tokens: num(process.env.TOKENS, 50),
  token_ms: num(process.env.TOKEN_MS, 0),
  latency_ms: num(process.env.LATENCY_MS, 0),
};

let seq = 0;
let stats;
function resetStats() {
  stats = {
    since: new Date().toISOString(),
    totals: {
      requests: 0, // every HTTP request, admin ones excluded
      chat: 0,
      non_stream: 0,
      stream: 0,
      completed: 0, // response fully written
      aborted: 0, // peer closed before the response ended
      tokens_generated: 0,
      tokens_planned: 0,
      bad_requests: 0,
    },
    recent: [], // ring of per-request records, newest last
  };
}
resetStats();

const nowMs = () => Number(process.hrtime.bigint() / 1000n) / 1000;
const round = (x) => Math.round(x * 10) / 10;
const unixMs = () => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;

function promptTokens(body) {
  let n = 0;
  const msgs = Array.isArray(body.messages) ? body.messages : [];
  for (const m of msgs) {
    const c = typeof m?.content === 'string' ? m.content : JSON.stringify(m?.content ?? '');
    n += 4 + Math.ceil(c.length / 4);
  }
  return n + 3;
}

function sendJson(res, status, obj) {
  const s = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function readBody(req, cb) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => cb(Buffer.concat(chunks).toString('utf8')));
  req.on('error', () => {});
}

function record(rec) {
  stats.recent.push(rec);
  if (stats.recent.length > RECENT_MAX) stats.recent.splice(0, stats.recent.length - RECENT_MAX);
}

function finish(rec, t0, aborted) {
  if (rec.ended) return;
  rec.ended = true;
  rec.ended_at = unixMs();
  const ms = round(nowMs() - t0);
  if (aborted) {
    rec.aborted = true;
    rec.aborted_after_ms = ms;
    stats.totals.aborted++;
  } else {
    rec.completed_after_ms = ms;
    stats.totals.completed++;
  }
  stats.totals.tokens_generated += rec.tokens_generated;
}

function chat(req, res, t0, raw) {
  let body;
  try {
    body = JSON.parse(raw || '{}');
  } catch {
    stats.totals.bad_requests++;
    return sendJson(res, 400, { error: { message: 'invalid JSON body', type: 'invalid_request_error' } });
  }
  const stream = body.stream === true;
  const includeUsage = stream && body.stream_options?.include_usage === true;
  const model = typeof body.model === 'string' ? body.model : 'mock-model';
  const planned = config.tokens;
  const tokenMs = config.token_ms;
  const latency = config.latency_ms;
  const id = `chatcmpl-mock-${++seq}`;
  const created = Math.floor(Date.now() / 1000);
  const pt = promptTokens(body);

  stats.totals.chat++;
  stats.totals[stream ? 'stream' : 'non_stream']++;
  stats.totals.tokens_planned += planned;
  const rec = {
    id,
    stream,
    model,
    planned_tokens: planned,
    token_ms: tokenMs,
    tokens_generated: 0,
    aborted: false,
    aborted_after_ms: null,
    completed_after_ms: null,
    first_token_after_ms: null,
    user: typeof body.user === 'string' ? body.user : null,
    received_at: round(unixMs() - (nowMs() - t0)), // unix ms when the request line arrived
    ended: false,
    ended_at: null, // unix ms when the response ended or the peer went away
  };
  record(rec);

  let gone = false;
  const timers = new Set();
  const later = (fn, ms) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  res.on('close', () => {
    if (!res.writableFinished) {
      gone = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      finish(rec, t0, true);
    }
  });

  const usage = (ct) => ({ prompt_tokens: pt, completion_tokens: ct, total_tokens: pt + ct });

  if (!stream) {
    const respond = () => {
      if (gone) return;
      rec.tokens_generated = planned;
      rec.first_token_after_ms = round(nowMs() - t0);
      const content = planned > 0 ? 'ok' + ' tok'.repeat(planned - 1) : '';
      sendJson(res, 200, {
        id,
        object: 'chat.completion',
        created,
        model,
        system_fingerprint: 'fp_mock',
        choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: 'stop' }],
        usage: usage(planned),
      });
      finish(rec, t0, false);
    };
    const wait = latency + planned * tokenMs;
    if (wait > 0) later(respond, wait);
    else respond();
    return;
  }

  // Streaming: role chunk, one content chunk per token, a finish chunk, optional usage chunk, [DONE].
  const head = `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},"system_fingerprint":"fp_mock","choices":[`;
  const tokChunk = `${head}{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}\n\n`;
  const start = () => {
    if (gone) return;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-accel-buffering': 'no',
    });
    res.write(`${head}{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}\n\n`);
    const end = () => {
      if (gone) return;
      let tail = `${head}{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n`;
      if (includeUsage) tail += `${head}],"usage":${JSON.stringify(usage(rec.tokens_generated))}}\n\n`;
      tail += 'data: [DONE]\n\n';
      res.end(tail);
      finish(rec, t0, false);
    };
    const emit = () => {
      rec.tokens_generated++;
      if (rec.first_token_after_ms === null) rec.first_token_after_ms = round(nowMs() - t0);
      res.write(tokChunk);
    };
    if (tokenMs <= 0) {
      for (let i = 0; i < planned && !gone; i++) emit();
      end();
      return;
    }
    // Paced: token i is due at tStart + (i+1)*tokenMs (no drift accumulation).
    const tStart = nowMs();
    let i = 0;
    const tick = () => {
      if (gone) return;
      emit();
      i++;
      if (i >= planned) return end();
      later(tick, Math.max(0, tStart + (i + 1) * tokenMs - nowMs()));
    };
    later(tick, tokenMs);
  };
  if (latency > 0) later(start, latency);
  else start();
}

const server = http.createServer((req, res) => {
  const t0 = nowMs();
  const url = req.url || '/';
  const path = url.split('?')[0];
  if (path === '/__stats' && req.method === 'GET') {
    const q = new URL(url, 'http://x').searchParams;
    const n = num(q.get('recent'), RECENT_MAX);
    return sendJson(res, 200, { config, since: stats.since, totals: stats.totals, recent: n > 0 ? stats.recent.slice(-n) : [] });
  }
  if (path === '/__stats/reset' && req.method === 'POST') {
    resetStats();
    return sendJson(res, 200, { ok: true });
  }
  if (path === '/__config') {
    if (req.method === 'GET') return sendJson(res, 200, config);
    return readBody(req, (raw) => {
      try {
        const c = JSON.parse(raw || '{}');
        for (const k of ['tokens', 'token_ms', 'latency_ms']) if (c[k] !== undefined) config[k] = Number(c[k]);
        sendJson(res, 200, config);
      } catch {
        sendJson(res, 400, { error: 'bad json' });
      }
    });
  }
  stats.totals.requests++;
  if (req.method === 'POST' && /\/chat\/completions$/.test(path)) {
    return readBody(req, (raw) => chat(req, res, t0, raw));
  }
  if (req.method === 'GET' && /\/models$/.test(path)) {
    return sendJson(res, 200, { object: 'list', data: [{ id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' }] });
  }
  readBody(req, () => sendJson(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'invalid_request_error' } }));
});
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.requestTimeout = 0;
server.listen(PORT, HOST, () => {
  console.log(`mock-upstream listening on http://${HOST}:${PORT} config=${JSON.stringify(config)}`);
});
const stop = () => {
  server.close();
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 200).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
