import { describe, expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { openaiChat } from "../formats/openai-chat.js";
import { createProviders } from "../providers/registry.js";
import { MemoryStore } from "../stores/memory.js";
import type { Counter } from "./store.js";
import { Engine } from "./engine.js";
import { RECENT_TOTAL_MS, RecentTotals } from "./recent-totals.js";
import { TollgateError } from "./errors.js";

/** A memory store that counts the peeks it answers: the store trips of the pre-body check. */
class CountingStore extends MemoryStore {
  peeks = 0;
  override async peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    this.peeks++;
    return super.peek(counters);
  }
}

function engineOn(store: MemoryStore, requests: number) {
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { sim: { type: "simulated", tokens_per_second: 100_000 } },
      models: { m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 2 } } },
      plans: { free: { models: ["m"], budget: { daily: 1 } } },
      keys: [{ key: "tg_recent_user", user: "u", plan: "free" }],
      routes: { chat: { path: "/chat", plans: ["free"], default_model: "m", limits: [{ per: "user", requests, window: "1m" }], input: { max_output_tokens: 64 } } },
    }),
  );
  return new Engine({ config, store, providers: createProviders(config) });
}

/** One request as the gateway runs it: admitted before its body is read, then prepared, called, finished. */
async function request(engine: Engine): Promise<string> {
  const ex = engine.open({ route: "chat", endpoint: "chat_completions", ip: "203.0.113.9", credentials: { token: "tg_recent_user" } });
  try {
    await engine.admit(ex, { bodyPending: true });
    await engine.prepare(ex, openaiChat, { model: "m", messages: [{ role: "user", content: "hello" }] });
    const { meter } = await engine.call(ex, new AbortController().signal);
    await engine.finish(ex, { ended: "complete", meter });
    return "served";
  } catch (err) {
    if (TollgateError.is(err)) return err.code;
    throw err;
  }
}

describe("the pre-body quota check", () => {
  it("skips the store while this process's recent totals leave room, and asks it when they do not", async () => {
    const store = new CountingStore();
    const engine = engineOn(store, 6);
    // The first request loads the tokenizer, which may take longer than RECENT_TOTAL_MS on a busy machine.
    expect(await request(engine)).toBe("served");
    expect(await request(engine)).toBe("served");
    const peeks = store.peeks;
    // The reservations told this process the totals: 2, 3, 4 of 6 requests, spend far from the budget.
    expect(await request(engine)).toBe("served");
    expect(await request(engine)).toBe("served");
    expect(await request(engine)).toBe("served");
    // 5 of 6 seen: one more fits, so still no store trip; then 6 of 6: the check asks the store, which refuses.
    expect(await request(engine)).toBe("served");
    expect(store.peeks).toBe(peeks);
    expect(await request(engine)).toBe("rate_limited");
    expect(store.peeks).toBe(peeks + 1);
  });

  it("asks the store again once what it saw is older than RECENT_TOTAL_MS", () => {
    let now = 0;
    const recent = new RecentTotals(() => now);
    const keys = [{ key: "a" }, { key: "b" }];
    recent.note(keys, [3, 4]);
    expect(recent.totals(keys)).toEqual([3, 4]);
    expect(recent.totals([{ key: "a" }, { key: "unknown" }])).toBeUndefined();
    now += RECENT_TOTAL_MS + 1;
    expect(recent.totals(keys)).toBeUndefined();
    recent.note([{ key: "a" }], [5]);
    recent.forget("a");
    expect(recent.totals([{ key: "a" }])).toBeUndefined();
  });
});
