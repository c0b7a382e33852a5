import { MemoryStore } from "./memory.js";
import { describeStoreContract } from "./store-contract.js";

describeStoreContract("memory", async () => {
  let now = Date.UTC(2025, 0, 1);
  return { store: new MemoryStore(() => now), advance: (ms) => void (now += ms) };
});
