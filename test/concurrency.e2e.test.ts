import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { type MockBehavior, type RecordedRequest } from "../src/testing/mock-upstream.js";
import { GatewayProcess } from "./gateway-process.js";
import { openaiUpstream, useGateways, useRedis, useUpstream } from "./use-gateway.js";

/**
 * Concurrency caps (`{ per: user, concurrent: N }`): in-flight requests held as leases in the
 * store, given back when a request ends and, for a process that died, when the lease runs out.
 */
const mock = useUpstream();
const gateways = useGateways({ after: "all", signal: "SIGKILL" });

function config(store: string, timeout = "30s") {
  return {
    store,
    server: { timeout },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    keys: [
      { key: "tg_ann", user: "ann", plan: "free" },
      { key: "tg_bob", user: "bob", plan: "free" },
    ],
    routes: { chat: { path: "/chat", plans: ["free"], default_model: "gpt-4o-mini", limits: [{ per: "user", concurrent: 2 }] } },
  };
}

/** 200 once the whole answer (every chunk of a stream) has arrived, else the refusal. */
const ask = (url: string, key: string, stream = false) =>
  new OpenAI({ baseURL: `${url}/chat/v1`, apiKey: key, maxRetries: 0 }).chat.completions
    .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], stream })
    .then(async (r) => {
      if (Symbol.asyncIterator in r) for await (const _ of r);
      return 200;
    })
    .then(
      (ok) => ok,
      (e: { status?: number; error?: { code?: string; message?: string } }) => ({ status: e.status, code: e.error?.code, message: e.error?.message }),
    );

/** Most requests the mock was serving at one moment. */
function peakInFlight(requests: RecordedRequest[]): number {
  const edges = requests.flatMap((r) => [
    { t: r.receivedAt, d: 1 },
    { t: r.finishedAt ?? r.closedAt ?? Infinity, d: -1 },
  ]);
  edges.sort((a, b) => a.t - b.t || a.d - b.d);
  let now = 0;
  let peak = 0;
  for (const e of edges) peak = Math.max(peak, (now += e.d));
  return peak;
}

/**
 * Sends `send()`'s requests while the mock holds every reply, and lets them go once each request
 * was either answered (refused: the admitted ones are held) or reached the provider. Admitted
 * requests that ended before the last ones arrived would free their slots early (a loaded machine
 * can take longer to send 50 requests than the mock takes to answer two), so without the hold the
 * count of admissions would depend on the machine's speed, not on the cap.
 */
async function allAtOnce<T>(send: () => Promise<T>[], behavior: MockBehavior): Promise<T[]> {
  let release!: () => void;
  mock.setBehavior({ ...behavior, holdUntil: new Promise<void>((r) => (release = r)) });
  let answered = 0;
  const pending = send().map((p) => p.finally(() => answered++));
  try {
    await expect.poll(() => answered + mock.requests.length, { timeout: 30_000, interval: 20 }).toBeGreaterThanOrEqual(pending.length);
  } finally {
    release();
  }
  return Promise.all(pending);
}

describe.each([
  ["memory", () => "memory:"],
  ["sqlite", () => `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-conc-")), "t.db")}`],
])("a concurrency cap of 2 on %s", (_name, store) => {
  it("admits exactly 2 of 50 parallel requests at a time, another user is unaffected, and slots come back as requests end", async () => {
    const gw = await GatewayProcess.start(config(store()));
    gateways.push(gw);
    const results = await allAtOnce(() => [...Array.from({ length: 50 }, () => ask(gw.url, "tg_ann")), ask(gw.url, "tg_bob")], { outputTokens: 10, tokenIntervalMs: 40 });
    const ann = results.slice(0, 50);
    expect(ann.filter((r) => r === 200)).toHaveLength(2);
    const refused = ann.filter((r) => r !== 200) as { status: number; code: string; message: string }[];
    expect(refused).toHaveLength(48);
    expect(refused.every((r) => r.status === 429 && r.code === "rate_limited")).toBe(true);
    expect(refused[0]!.message).toMatch(/2 concurrent requests at once per user/);
    expect(results[50]).toBe(200);
    // Two of ann's and bob's one: never more at the provider.
    expect(peakInFlight(mock.requests)).toBeLessThanOrEqual(3);

    // Sequential requests are never refused: each one's slot is back when it ends.
    for (let i = 0; i < 5; i++) expect(await ask(gw.url, "tg_ann")).toBe(200);
    // Two streams at once are fine; their slots come back when the streams end.
    expect(await Promise.all([ask(gw.url, "tg_ann", true), ask(gw.url, "tg_ann", true)])).toEqual([200, 200]);
    expect(await ask(gw.url, "tg_ann")).toBe(200);
  }, 60_000);
});

describe("a process killed with requests in flight", () => {
  it("holds their slots until the leases run out, then gives them back", async () => {
    const db = `sqlite:${join(mkdtempSync(join(tmpdir(), "tg-conc-kill-")), "t.db")}`;
    // The process that takes over is up before the reservations are made: a leases' clock that
    // started before a restart on a loaded machine could run out before the first request to
    // check it, and the check would see the slots free for the wrong reason. It opens the file
    // after the other, as a restarted process would.
    const doomed = await GatewayProcess.start(config(db, "1s"));
    const survivor = await GatewayProcess.start(config(db, "1s"));
    gateways.push(survivor);
    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 50 });
    const hanging = [ask(doomed.url, "tg_ann", true), ask(doomed.url, "tg_ann", true)];
    await mock.waitForRequests(2, 10_000);
    // A 1 s wall clock: leases run 6 s from the reservations (taken before the provider saw them).
    const leasesEnd = Date.now() + 6_000;
    await doomed.stop("SIGKILL");
    await Promise.allSettled(hanging);
    mock.reset();
    mock.setBehavior({ outputTokens: 2 });
    const early = await ask(survivor.url, "tg_ann");
    expect(Date.now(), "the slots were checked before their leases could end").toBeLessThan(leasesEnd);
    expect(early).toMatchObject({ status: 429, code: "rate_limited" });
    // Another user is not held by ann's dead slots.
    expect(await ask(survivor.url, "tg_bob")).toBe(200);
    await new Promise((r) => setTimeout(r, Math.max(0, leasesEnd + 500 - Date.now())));
    expect(await ask(survivor.url, "tg_ann")).toBe(200);
  }, 60_000);
});

describe("a concurrency cap of 2 on Redis, two gateway processes sharing one redis-server", () => {
  const redis = useRedis();

  it("admits exactly 2 of 50 parallel requests spread over both processes, at no moment more than 2", async () => {
    const [one, two] = await GatewayProcess.startAll([config(redis.url(1)), config(redis.url(1))]);
    gateways.push(one!, two!);
    const results = await allAtOnce(() => Array.from({ length: 50 }, (_, i) => ask([one!, two!][i % 2]!.url, "tg_ann")), { outputTokens: 10, tokenIntervalMs: 40 });
    expect(results.filter((r) => r === 200)).toHaveLength(2);
    const refused = results.filter((r) => r !== 200) as { status: number; code: string }[];
    expect(refused.every((r) => r.status === 429 && r.code === "rate_limited")).toBe(true);
    expect(peakInFlight(mock.requests)).toBeLessThanOrEqual(2);

    // Waves of 10 at a time, again over both processes: never more than 2 at the provider.
    mock.reset();
    mock.setBehavior({ outputTokens: 5, tokenIntervalMs: 20 });
    let served = 0;
    for (let wave = 0; wave < 5; wave++) {
      const r = await Promise.all(Array.from({ length: 10 }, (_, i) => ask([one!, two!][i % 2]!.url, "tg_ann", i % 3 === 0)));
      served += r.filter((x) => x === 200).length;
    }
    expect(served).toBeGreaterThanOrEqual(5);
    expect(peakInFlight(mock.requests)).toBeLessThanOrEqual(2);
    // Sequential requests alternate processes and are never refused.
    for (let i = 0; i < 4; i++) expect(await ask([one!, two!][i % 2]!.url, "tg_ann")).toBe(200);
  }, 90_000);

  it("a process killed with SIGKILL holds its slots on the other process until the leases run out", async () => {
    const [doomed, survivor] = await GatewayProcess.startAll([config(redis.url(2), "1s"), config(redis.url(2), "1s")]);
    gateways.push(survivor!);
    mock.setBehavior({ neverEnd: true, tokenIntervalMs: 50 });
    const hanging = [ask(doomed!.url, "tg_ann", true), ask(doomed!.url, "tg_ann", true)];
    await mock.waitForRequests(2);
    await doomed!.stop("SIGKILL");
    const killedAt = Date.now();
    await Promise.allSettled(hanging);
    mock.reset();
    mock.setBehavior({ outputTokens: 2 });
    expect(await ask(survivor!.url, "tg_ann")).toMatchObject({ status: 429, code: "rate_limited" });
    // Another user is not held by ann's dead slots.
    expect(await ask(survivor!.url, "tg_bob")).toBe(200);
    // A 1 s wall clock: leases run 6 s from the reservation.
    await new Promise((r) => setTimeout(r, Math.max(0, killedAt + 6_500 - Date.now())));
    expect(await ask(survivor!.url, "tg_ann")).toBe(200);
  }, 60_000);
});
