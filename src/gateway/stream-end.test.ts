import { request, type ClientRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { Engine } from "../core/engine.js";
import type { UsageRecord } from "../core/usage-record.js";
import type { SseEvent } from "../core/format.js";
import type { Provider } from "../core/provider.js";
import { MemoryStore } from "../stores/memory.js";
import { createGateway, type Gateway } from "./server.js";

/** A memory store that counts, per reservation, how many times it was settled or released. */
class CountingStore extends MemoryStore {
  ends = new Map<string, number>();
  appends: string[] = [];
  override async settle(id: string, actual: number[]): Promise<void> {
    this.ends.set(id, (this.ends.get(id) ?? 0) + 1);
    return super.settle(id, actual);
  }
  override async release(id: string): Promise<void> {
    this.ends.set(id, (this.ends.get(id) ?? 0) + 1);
    return super.release(id);
  }
  override async appendUsage(record: UsageRecord): Promise<void> {
    this.appends.push(record.request_id);
    return super.appendUsage(record);
  }
}

const CAP = 5;
/** The client being served; the provider hangs it up at the chunk the test names. */
let client: ClientRequest | undefined;
let hangUpAt = 0;
let waitForHangUp = false;

function chunk(delta: Record<string, unknown>, finish: string | null = null): SseEvent {
  return { data: JSON.stringify({ id: "c1", object: "chat.completion.chunk", created: 1, model: "gpt-4o-mini", choices: [{ index: 0, delta, finish_reason: finish }] }) };
}

/** A provider that ignores max_tokens, and hangs up the client at the moment chunk `hangUpAt` is read. */
const overrunning: Provider = {
  name: "overrun",
  supports: () => true,
  async call({ signal }) {
    const aborted = new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
    aborted.catch(() => {});
    async function* events(): AsyncGenerator<SseEvent> {
      yield chunk({ role: "assistant", content: "" });
      for (let i = 1; i <= 40; i++) {
        if (i === hangUpAt) {
          client?.destroy();
          // Either the gateway has seen the hang-up before this chunk, or the chunk is read in
          // the same turn of the event loop as the hang-up: both terminals race.
          if (waitForHangUp) await aborted;
        }
        signal.throwIfAborted();
        yield chunk({ content: " word" });
      }
      yield chunk({}, "stop");
      yield { data: "[DONE]" };
    }
    return { kind: "stream", events: events() };
  },
  close: async () => {},
};

let gateway: Gateway;
let url: string;
const store = new CountingStore();
const records: UsageRecord[] = [];
let finishes = new Map<string, number>();

beforeAll(async () => {
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { up: { type: "simulated" } },
      models: { m: { provider: "up", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
      plans: { free: { models: ["m"], budget: { daily: 100 } } },
      keys: [{ key: "tg_end_user", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", input: { max_output_tokens: CAP } } },
    }),
  );
  const engine = new Engine({ config, store, providers: { up: overrunning }, onRecord: (r) => records.push(r), warn: () => {} });
  const finish = engine.finish.bind(engine);
  engine.finish = (ex, outcome, error) => {
    finishes.set(ex.id, (finishes.get(ex.id) ?? 0) + 1);
    return finish(ex, outcome, error);
  };
  gateway = createGateway(engine);
  await new Promise<void>((r) => gateway.server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}/chat/v1/chat/completions`;
});

afterAll(async () => {
  await gateway.drain(100);
});

/** One streamed request; resolves with its request id and what the client read before the end. */
function stream(): Promise<{ id: string; body: string }> {
  return new Promise((resolve) => {
    let id = "";
    let body = "";
    client = request(url, { method: "POST", headers: { authorization: "Bearer tg_end_user", "content-type": "application/json" } }, (res) => {
      id = String(res.headers["x-tollgate-request-id"]);
      res.on("data", (c: Buffer) => (body += c));
      res.on("close", () => resolve({ id, body }));
    });
    client.on("error", () => resolve({ id, body }));
    client.end(JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true }));
  });
}

describe("gateway stream end: one terminal, settled exactly once", () => {
  // The client leaves at, and just after, the chunk that reaches the output cap; seen by the
  // gateway before that chunk is read, or in the same turn as it.
  const cases = [CAP, CAP + 1].flatMap((at) => [false, true].map((wait) => ({ at, wait, ended: wait ? "client_disconnect" : "output_cap" })));
  for (const { at, wait, ended } of cases) {
    it(`a client hanging up at chunk ${at}${wait ? ", seen first," : ""} as the cap is reached settles the call once, as ${ended}`, async () => {
      finishes = new Map();
      hangUpAt = at;
      waitForHangUp = wait;
      const before = records.length;
      // The client may be gone before it has read the status line: the request is the next record.
      await stream();
      await expect.poll(() => records.length).toBe(before + 1);
      // Anything that would settle or record a second time has had its turns by now.
      await new Promise((r) => setTimeout(r, 100));
      expect(records).toHaveLength(before + 1);
      const record = records[before]!;
      const id = record.request_id;
      expect(record.ended).toBe(ended);
      expect(record.output_tokens).toBeLessThanOrEqual(CAP + 1);
      expect(store.appends.filter((r) => r === id)).toHaveLength(1);
      expect(finishes.get(id)).toBe(1);
      // Every reservation the request took (quota, budget) was ended exactly once.
      expect([...store.ends.values()].every((n) => n === 1)).toBe(true);
      store.ends.clear();
    });
  }

  it("a stream cut at the cap ends with the format's finish, not a broken connection", async () => {
    hangUpAt = 0;
    const { id, body } = await stream();
    await expect.poll(() => records.find((r) => r.request_id === id)?.ended).toBe("output_cap");
    expect(body).toMatch(/"finish_reason":"length"/);
    expect(body.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(finishes.get(id)).toBe(1);
  });
});
