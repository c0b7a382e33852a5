import type { ResolvedConfig } from "../config/resolve.js";
import { createGateway } from "../gateway/server.js";
import { Observability } from "../observability/index.js";
import { encodingOf, preloadTokenizers } from "../core/metering/tokens.js";
import { startRuntime } from "../runtime.js";
import { sharedStoreWarning } from "../stores/replicas.js";

export interface ServeOptions {
  port?: number;
  host?: string;
  /** Printed after the URL line (the demo prints its keys and a curl). */
  banner?: (url: string) => string;
  /** Runs once the gateway listens (the demo starts its traffic here). */
  onListening?: (url: string) => void;
}

/** Runs the gateway until SIGTERM/SIGINT, then drains in-flight requests and exits 0. */
export async function serve(config: ResolvedConfig, opts: ServeOptions = {}): Promise<void> {
  const observability = new Observability(config);
  const warning = sharedStoreWarning(config.store);
  if (warning) process.stderr.write(warning);
  // Load the tokenizer tables the configured models need now, not on the first request (~0.5 s).
  preloadTokenizers([...new Set(Object.values(config.models).map((m) => encodingOf(m.tokenizer)))]);
  const runtime = await startRuntime(config, { onRecord: observability.onRecord, warn: (fields, message) => observability.logs.ops.warn(fields, message), instrumentStore: (s) => observability.instrumentStore(s), outboxObserver: observability.metrics.outboxObserver });
  const gateway = createGateway(runtime.engine, { observability });
  const host = opts.host ?? config.server.host;
  const port = opts.port ?? config.server.port;
  await new Promise<void>((resolve, reject) => {
    gateway.server.once("error", reject);
    gateway.server.listen(port, host, () => resolve());
  }).catch((err: NodeJS.ErrnoException) => {
    process.stderr.write(`tollgate: cannot listen on ${host}:${port}: ${err.code ?? err.message}\n`);
    process.exit(1);
  });
  const addr = gateway.server.address();
  const actualPort = typeof addr === "object" && addr ? addr.port : port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;
  process.stdout.write(`tollgate listening on ${url}\n`);
  if (opts.banner) process.stderr.write(opts.banner(url));
  opts.onListening?.(url);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    observability.close();
    await gateway.drain();
    await runtime.close();
    // The records written while draining reach the sinks before the exit.
    observability.flush();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
