import type { Counter, ReserveResult } from "../core/store.js";
import { MemoryStore } from "../stores/memory.js";

/**
 * A memory store that counts the counter operations requests cost it (reserve, peek, release):
 * for tests that check a path answers without asking the store.
 */
export class CountingStore extends MemoryStore {
  ops = 0;
  override reserve(id: string, counters: Counter[], leaseMs: number): Promise<ReserveResult> {
    this.ops++;
    return super.reserve(id, counters, leaseMs);
  }
  override peek(counters: Pick<Counter, "key" | "windowMs">[]): Promise<number[]> {
    this.ops++;
    return super.peek(counters);
  }
  override release(id: string): Promise<void> {
    this.ops++;
    return super.release(id);
  }
}
