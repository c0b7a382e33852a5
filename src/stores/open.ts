import type { Store } from "./store.js";
import { MemoryStore } from "./memory.js";

/** Opens the store a config names: `memory:`, `sqlite:PATH` or `redis://…`. */
export async function openStore(url: string): Promise<Store> {
  if (url === "memory:") return new MemoryStore();
  if (url.startsWith("sqlite:")) {
    const { SqliteStore } = await import("./sqlite.js");
    return SqliteStore.open(url.slice("sqlite:".length));
  }
  throw new Error(`store ${url.split(":")[0]}: is not supported yet`);
}
