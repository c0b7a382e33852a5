import type { Store } from "../core/store.js";
import { MemoryStore } from "./memory.js";

export interface OpenStoreOptions {
  /** What a Redis store does when Redis is away (`on_store_error` in docs/config.md). Default closed. */
  onStoreError?: "closed" | "open";
  /** Where availability changes are announced. Default stderr. */
  log?: (line: string) => void;
}

/** Opens the store a config names: `memory:`, `sqlite:PATH` or `redis://…` / `rediss://…`. */
export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<Store> {
  if (url === "memory:" || url === "memory") return new MemoryStore();
  if (url.startsWith("sqlite:")) {
    const { SqliteStore } = await import("./sqlite.js").catch(sqliteMissing);
    return SqliteStore.open(url.slice("sqlite:".length));
  }
  if (url.startsWith("redis://") || url.startsWith("rediss://")) return openRedis(url, opts);
  throw new Error(`store ${url.split(":")[0]}: is not supported yet`);
}

/**
 * better-sqlite3 is an optional dependency (a native build that users of memory: or Redis should
 * not need), so a `sqlite:` store without it says how to get it rather than failing on an import.
 */
function sqliteMissing(err: unknown): never {
  const missing = (err as { code?: string }).code === "ERR_MODULE_NOT_FOUND" && /better-sqlite3/.test(String((err as Error).message));
  if (!missing) throw err;
  throw new Error("store sqlite: needs the better-sqlite3 package, an optional dependency of tollgate that is not installed here: run `npm install better-sqlite3` (or use a memory: or redis:// store)");
}

async function openRedis(url: string, opts: OpenStoreOptions): Promise<Store> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const { RedisStore } = await import("./redis.js");
  if (opts.onStoreError === "open") {
    const { FailoverStore } = await import("./failover.js");
    // Open mode starts without Redis if it must: local limits until it answers.
    const redis = await RedisStore.open(url, { log, waitForReady: false });
    await redis.ready(2_000).catch(() => {});
    return new FailoverStore(redis, log);
  }
  // Closed mode refuses to start without Redis: every request would be a 503 anyway.
  const redis = await RedisStore.open(url, { log });
  let up = true;
  redis.redis.on("ready", () => {
    if (up) return;
    up = true;
    log(`tollgate: store redis at ${redis.address} is back`);
  });
  redis.redis.on("close", () => {
    if (!up || redis.isClosed) return;
    up = false;
    log(`tollgate: store redis at ${redis.address} is unavailable; on_store_error is closed: requests are refused with 503 store_unavailable until it returns`);
  });
  return redis;
}
