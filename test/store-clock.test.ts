import { describe, expect, it } from "vitest";
import { createTollgate } from "../src/index.js";
import { MemoryStore } from "../src/stores/memory.js";

/** A store whose clock is far from this machine's, as a Redis server's can be from a replica's. */
class ClockedStore extends MemoryStore {
  clock(): number {
    return Date.UTC(2030, 5, 15, 23, 59, 30);
  }
}

describe("calendar periods follow the store's clock", () => {
  it("names the budget period by the store's day, not the replica's", async () => {
    const tg = await createTollgate({
      store: new ClockedStore(),
      config: {
        store: "memory:",
        server: { log: "none" },
        providers: { sim: { type: "simulated" } },
        models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
        plans: { free: { models: ["m"], budget: { daily: 0 } } },
        keys: [{ key: "tg_clock", user: "c", plan: "free" }],
        routes: { chat: { path: "/chat", plans: ["free"] } },
      },
    });
    const err = await tg.admit({ route: "chat", ip: "127.0.0.1", token: "tg_clock" }).catch((e) => e);
    expect(err.code).toBe("budget_exceeded");
    expect(err.message).toContain("resets at 2030-06-16T00:00:00.000Z");
    await tg.close();
  });
});
