// Section 4: time from a client disconnect to the upstream request being aborted.
//
// The mock upstream runs in this process, so the client's destroy time and the mock's record of
// its socket closing (RecordedRequest.closedAt) are both performance.now() on one clock.
import http from "node:http";
import { MockUpstream } from "../dist/testing/mock-upstream.js";
import { chatBody, gatewayConfig, writeConfig } from "./configs.js";
import { quantile, startBareProxy, startTollgate } from "./lib.js";

export const RUNS = 50;
export const NAIVE_RUNS = 6;
/** The client reads the stream this long before it goes away. */
export const HOLD_MS = 100;
/** An abort slower than this is counted as "not propagated". */
export const GIVE_UP_MS = 1_000;
/** SPEC §7.2: the provider request is aborted within 100 ms of the client leaving. */
export const SPEC_MS = 100;
export const SLOW_STREAM = { neverEnd: true, tokenIntervalMs: 20 };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One streamed request that the client abandons after HOLD_MS; resolves with the abort latency. */
async function disconnectOnce(mock, url) {
  const seen = mock.requests.length;
  const payload = JSON.stringify(chatBody({ stream: true }));
  const started = performance.now();
  const req = http.request(url, {
    method: "POST",
    agent: false,
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), authorization: "Bearer tg_bench_key" },
  });
  req.on("error", () => {}); // the destroy below is the point
  const status = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no streamed data from ${url} within 5 s`)), 5_000);
    req.once("response", (res) => {
      res.on("error", () => {});
      res.once("data", () => {
        clearTimeout(timer);
        resolve(res.statusCode);
      });
    });
    req.end(payload);
  });
  if (status !== 200) throw new Error(`${url}: status ${status}`);
  await mock.waitForRequests(seen + 1);
  const rec = mock.requests[seen];
  await sleep(Math.max(0, started + HOLD_MS - performance.now()));
  const destroyedAt = performance.now();
  const chunksAtDestroy = rec.chunksSent;
  req.destroy();
  try {
    const closedAt = await mock.waitForClose(rec, GIVE_UP_MS);
    return { ms: closedAt - destroyedAt, rec, destroyedAt, chunksAtDestroy };
  } catch {
    return { ms: undefined, rec, destroyedAt, chunksAtDestroy };
  }
}

async function series(mock, label, url, runs, warmup = 3) {
  for (let i = 0; i < warmup; i++) await disconnectOnce(mock, url); // warm-up (JIT, lazy loads)
  const results = [];
  for (let i = 0; i < runs; i++) results.push(await disconnectOnce(mock, url));
  const ms = results.filter((r) => r.ms !== undefined).map((r) => r.ms).sort((a, b) => a - b);
  return {
    label,
    runs,
    aborted: ms.length,
    medianMs: quantile(ms, 0.5),
    p99Ms: quantile(ms, 0.99),
    maxMs: ms.length ? ms[ms.length - 1] : undefined,
    withinSpec: ms.filter((m) => m <= SPEC_MS).length,
    orphans: results.filter((r) => r.ms === undefined),
  };
}

export async function cancellation() {
  const mock = await MockUpstream.start({ behavior: SLOW_STREAM });
  const tg = await startTollgate(writeConfig("cancel", gatewayConfig({ upstreamUrl: mock.url })));
  const careful = await startBareProxy(mock.url, "abort-aware");
  const naive = await startBareProxy(mock.url, "naive");
  const CHAT = "/v1/chat/completions";
  try {
    const rows = [];
    rows.push(await series(mock, "client -> mock directly (floor)", `${mock.url}${CHAT}`, RUNS));
    rows.push(await series(mock, "tollgate", `${tg.url}/chat${CHAT}`, RUNS));
    rows.push(await series(mock, "bare proxy, abort-aware (pipeline + signal)", `${careful.url}${CHAT}`, RUNS));
    const naiveRow = await series(mock, "bare proxy, naive (body.pipe(res))", `${naive.url}${CHAT}`, NAIVE_RUNS, 0);
    rows.push(naiveRow);

    // What the naive proxy's abandoned upstream streams did: still generating until the proxy died.
    const orphans = naiveRow.orphans.filter((o) => o.rec.closedAt === undefined);
    const stoppedAt = performance.now();
    const generated = orphans.map((o) => o.rec.chunksSent - o.chunksAtDestroy);
    const ageS = orphans.map((o) => (stoppedAt - o.destroyedAt) / 1000);
    await naive.stop();
    naiveRow.orphanReport = {
      stillOpenAtEnd: orphans.length,
      tokensAfterClientLeft: generated,
      secondsSinceClientLeft: ageS.map((s) => Math.round(s * 10) / 10),
    };
    return rows.map(({ orphans: _o, ...r }) => r);
  } finally {
    await Promise.all([tg.stop(), careful.stop(), naive.stop()]);
    await mock.close();
  }
}
