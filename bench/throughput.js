// Sections 1 and 2: what tollgate costs per request next to the mock upstream and a bare proxy,
// and what its budgets and layered limits add, on the memory, SQLite and Redis stores.
import { assertAllOk, compare, rssMb, startBareProxy, startMock, startTollgate, timedRequest } from "./lib.js";
import { chatBody, gatewayConfig, sqlitePath, writeConfig } from "./configs.js";

const CHAT = "/v1/chat/completions";
/** Every throughput run: 20 output tokens, as fast as the mock can send them. */
export const MOCK_BEHAVIOR = { outputTokens: 20, tokenIntervalMs: 0 };

/** Section 1: mock directly vs bare proxy vs tollgate, non-streaming and streaming. */
export async function proxyOverhead(mock) {
  const [bare, buffered, tg] = await Promise.all([
    startBareProxy(mock.url),
    startBareProxy(mock.url, "buffered"),
    startTollgate(writeConfig("plain", gatewayConfig({ upstreamUrl: mock.url })), { profileName: "plain" }),
  ]);
  try {
    // The first request of a fresh gateway pays for anything loaded lazily (e.g. BPE tables).
    const first = await timedRequest(`${tg.url}/chat${CHAT}`, chatBody());
    const second = await timedRequest(`${tg.url}/chat${CHAT}`, chatBody());
    const modes = {};
    for (const stream of [false, true]) {
      const body = chatBody({ stream });
      const client = process.pid;
      const rows = await compare([
        { label: "mock directly", url: `${mock.url}${CHAT}`, body, procs: { mock: mock.pid, client } },
        { label: "bare proxy", url: `${bare.url}${CHAT}`, body, procs: { proxy: bare.pid, mock: mock.pid, client } },
        // SSE streams through the buffered proxy exactly as through the piping one: only non-stream differs.
        ...(stream ? [] : [{ label: "bare proxy, buffered", url: `${buffered.url}${CHAT}`, body, procs: { proxy: buffered.pid, mock: mock.pid, client } }]),
        { label: "tollgate", url: `${tg.url}/chat${CHAT}`, body, procs: { proxy: tg.pid, mock: mock.pid, client } },
      ]);
      for (const r of rows) assertAllOk(`${r.label} (${stream ? "stream" : "non-stream"})`, r);
      modes[stream ? "streaming" : "non_streaming"] = rows;
    }
    return { coldFirstRequestMs: first.ms, secondRequestMs: second.ms, firstStatus: first.status, modes, tollgateRssMb: rssMb(tg.pid) };
  } finally {
    await Promise.all([bare.stop(), buffered.stop(), tg.stop()]);
  }
}

export const FEATURE_SETS = [
  { key: "none", label: "no budget, no limits", opts: {} },
  { key: "budgets", label: "budgets on (daily+monthly+route usd)", opts: { budgets: true } },
  { key: "limits", label: "five layered limits", opts: { limits: true } },
];

function storeUrl(storeKind, f, i, redis) {
  if (storeKind === "memory") return "memory:";
  if (storeKind === "sqlite") return `sqlite:${sqlitePath(`features-${f.key}`)}`;
  // One redis-server for the three gateways running side by side, a database each (as separate namespaces would be).
  if (storeKind === "redis") return redis.url(i);
  throw new Error(`unknown store ${storeKind}`);
}

/**
 * Section 2: budgets on/off and five limits vs none, side by side, on one store kind.
 * For "redis", `redis` is the bench's redis-server (bench/redis.js); it is emptied first.
 */
export async function features(mock, storeKind, { redis } = {}) {
  if (storeKind === "redis") await redis.flushAll();
  const starting = FEATURE_SETS.map((f, i) => {
    const store = storeUrl(storeKind, f, i, redis);
    const config = gatewayConfig({ upstreamUrl: mock.url, store, ...f.opts });
    return startTollgate(writeConfig(`${storeKind}-${f.key}`, config), { profileName: `${storeKind}-${f.key}` });
  });
  const started = await Promise.allSettled(starting);
  const gateways = started.filter((s) => s.status === "fulfilled").map((s) => s.value);
  try {
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    const rssAtStart = gateways.map((g) => rssMb(g.pid));
    const body = chatBody();
    const rows = await compare(
      FEATURE_SETS.map((f, i) => ({
        label: f.label,
        url: `${gateways[i].url}/chat${CHAT}`,
        body,
        procs: { proxy: gateways[i].pid, mock: mock.pid, ...(redis?.pid ? { redis: redis.pid } : {}) },
      })),
    );
    rows.forEach((r, i) => {
      assertAllOk(`${storeKind} ${r.label}`, r);
      r.key = FEATURE_SETS[i].key;
      r.rssMbAtStart = rssAtStart[i];
      r.rssMb = rssMb(gateways[i].pid);
    });
    return rows;
  } finally {
    await Promise.all(gateways.map((g) => g.stop()));
  }
}

export { startMock };
