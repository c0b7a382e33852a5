import cluster from "node:cluster";

/**
 * Why this process looks like one of several replicas, or undefined. A heuristic, cheap and
 * documented (docs/stores.md): `TOLLGATE_REPLICAS` > 1 says so outright and `TOLLGATE_REPLICAS=1`
 * says it is alone; otherwise Kubernetes (`KUBERNETES_SERVICE_HOST`), a pm2-style cluster
 * (`NODE_APP_INSTANCE`) or a node:cluster worker suggest replicas.
 */
export function replicaHint(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const declared = env.TOLLGATE_REPLICAS?.trim();
  if (declared) return Number(declared) > 1 ? `TOLLGATE_REPLICAS=${declared}` : undefined;
  if (env.KUBERNETES_SERVICE_HOST) return "KUBERNETES_SERVICE_HOST is set";
  if (env.NODE_APP_INSTANCE !== undefined) return "NODE_APP_INSTANCE is set";
  if (cluster.isWorker) return "this is a node:cluster worker";
  return undefined;
}

/** A loud warning when a store that cannot share limits across machines runs in what looks like a fleet. */
export function sharedStoreWarning(store: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (store.startsWith("redis://") || store.startsWith("rediss://")) return undefined;
  const why = replicaHint(env);
  if (!why) return undefined;
  const scope = store === "memory:" ? "inside this one process" : "only among processes on this host that open the same file";
  const name = store === "memory:" ? "memory:" : "sqlite:";
  return [
    "",
    `!!! tollgate WARNING: store ${name} keeps limits and budgets ${scope},`,
    `!!! but this process looks like one of several replicas (${why}).`,
    "!!! Each replica enforces every limit on its own: N replicas admit N times each limit and spend N times each budget.",
    "!!! Use store: redis://HOST:PORT so that all replicas share one set of limits, or set TOLLGATE_REPLICAS=1 if this is the only one.",
    "",
    "",
  ].join("\n");
}
