import { describe, expect, it } from "vitest";
import { replicaHint, sharedStoreWarning } from "./replicas.js";

describe("shared store warning", () => {
  it("stays quiet for a single process, and for redis anywhere", () => {
    expect(replicaHint({})).toBeUndefined();
    expect(sharedStoreWarning("memory:", {})).toBeUndefined();
    expect(sharedStoreWarning("redis://r:6379", { KUBERNETES_SERVICE_HOST: "10.0.0.1" })).toBeUndefined();
    expect(sharedStoreWarning("rediss://r:6379", { TOLLGATE_REPLICAS: "4" })).toBeUndefined();
  });

  it("warns for memory: and sqlite: when the environment says replicas", () => {
    expect(sharedStoreWarning("memory:", { TOLLGATE_REPLICAS: "3" })).toMatch(/memory: keeps limits and budgets inside this one process[\s\S]*TOLLGATE_REPLICAS=3/);
    expect(sharedStoreWarning("sqlite:./t.db", { KUBERNETES_SERVICE_HOST: "10.0.0.1" })).toMatch(/sqlite: keeps limits .* same file[\s\S]*KUBERNETES_SERVICE_HOST/);
    expect(sharedStoreWarning("memory:", { NODE_APP_INSTANCE: "0" })).toMatch(/NODE_APP_INSTANCE/);
  });

  it("TOLLGATE_REPLICAS=1 says this is the only one, even in Kubernetes", () => {
    expect(sharedStoreWarning("memory:", { TOLLGATE_REPLICAS: "1", KUBERNETES_SERVICE_HOST: "10.0.0.1" })).toBeUndefined();
  });
});
