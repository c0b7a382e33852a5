import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it, vi } from "vitest";
import { SqliteStore } from "./sqlite.js";

// A runtime without worker threads (a sandbox, a bundler that cannot ship the worker).
vi.mock("node:worker_threads", async (original) => ({
  ...(await original<typeof import("node:worker_threads")>()),
  Worker: class {
    constructor() {
      throw new Error("worker threads are not available here");
    }
  },
}));

it("a store whose checkpointer thread cannot start opens and works, checkpointing in its commits, and says so", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tg-noworker-"));
  const lines: string[] = [];
  const store = SqliteStore.open(join(dir, "t.db"), { log: (l) => lines.push(l) });
  try {
    const counter = { key: "k", amount: 1, max: 5, windowMs: 60_000 };
    expect(await store.reserve("r1", [counter], 60_000)).toMatchObject({ ok: true });
    await store.settle("r1", [1]);
    expect(await store.peek([counter])).toEqual([1]);
    expect(lines.join("\n")).toMatch(/no WAL checkpointer thread \(worker threads are not available here\); checkpoints run in the commits/);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
