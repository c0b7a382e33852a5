import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { expect, it } from "vitest";
import { emptyUsageRecord } from "../core/usage-record.js";
import { SqliteStore } from "./sqlite.js";
import type { CheckpointStats } from "./sqlite-checkpointer.js";

it("a reader holding an old snapshot makes the WAL's restart busy: the store's commits are released at once, and the WAL starts over once the reader is done", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tg-ckpt-"));
  const path = join(dir, "t.db");
  const store = SqliteStore.open(path, { walRestartPages: 100 });
  // Another process's long read (`tollgate usage` over a week, say): its snapshot keeps every page
  // committed after it in the WAL, and no checkpoint can copy them until it ends.
  const reader = new Database(path, { readonly: true });
  const at = new Date(Date.UTC(2025, 0, 1));
  let n = 0;
  const turn = () => Promise.all([0, 1].map(() => store.appendUsage({ ...emptyUsageRecord(`u${n++}`, at), route: "x".repeat(2_000) })));
  /** Writes turns until the checkpointer's counts satisfy `done`. */
  const writeUntil = async (done: (s: CheckpointStats) => boolean): Promise<CheckpointStats> => {
    const deadline = Date.now() + 40_000;
    for (let i = 1; ; i++) {
      await turn();
      if (i % 5 === 0) await sleep(1);
      if (i % 20 !== 0) continue;
      const stats = (await store.debugCheckpoints())!;
      if (done(stats)) return stats;
      if (Date.now() > deadline) throw new Error(`no such checkpoint counts in time: ${JSON.stringify(stats)}`);
    }
  };
  try {
    await turn();
    reader.exec("BEGIN");
    expect(reader.prepare("SELECT COUNT(*) FROM usage_records").pluck().get()).toBe(2);
    const held = await writeUntil((s) => s.busy >= 3);
    // Every try to restart met the reader, and each held the store's commits only for that one
    // attempt (well under a millisecond when the worker has a core): the store was told to go on
    // at once. Before, each try held them for the quiet loop's whole 50 ms.
    expect(held.busy).toBe(held.quiets);
    expect(held.quietMs / held.quiets).toBeLessThan(20);
    reader.exec("COMMIT");
    // Tried again later: once the reader is gone, the WAL starts over.
    const after = await writeUntil((s) => s.restarts > held.restarts);
    expect(after.restarts).toBeGreaterThan(held.restarts);
    expect(await store.queryUsage({ since: 0 })).toHaveLength(n);
  } finally {
    reader.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}, 90_000);
