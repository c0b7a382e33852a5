import { afterAll, afterEach, beforeAll } from "vitest";
import { RedisServer } from "../testing/redis-server.js";
import { RedisStore, type RedisStoreOptions } from "./redis.js";

/**
 * Tests only: a redis-server for the test file (started before its tests, stopped after), and
 * stores on database `db`, each opened on an empty database. `store` opens one that is closed
 * after the test; `keep` closes one opened otherwise.
 */
export function redisTestStores(db: number) {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(() => server?.dispose());
  const fresh = async (opts: RedisStoreOptions = {}): Promise<RedisStore> => {
    const store = await RedisStore.open(server.url(db), { log: () => {}, ...opts });
    await store.redis.flushdb();
    return store;
  };
  /** Call inside a describe block: its stores are closed after each of its tests. */
  const closedAfterEach = () => {
    const opened: RedisStore[] = [];
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((s) => s.close()));
    });
    const keep = (s: RedisStore) => opened.push(s);
    const store = async (opts: RedisStoreOptions = {}) => {
      const s = await fresh(opts);
      keep(s);
      return s;
    };
    return { store, keep };
  };
  return { url: () => server.url(db), fresh, closedAfterEach };
}
