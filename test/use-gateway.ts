import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { MockUpstream } from "../src/testing/mock-upstream.js";
import { RedisServer, type RedisServerOptions } from "../src/testing/redis-server.js";
import { GatewayProcess } from "./gateway-process.js";

// The e2e tests' shared setup: a mock upstream and a real `tollgate serve` per file (or per test),
// started in beforeAll and stopped in afterAll, so each file states only its config and its tests.

/**
 * A handle on something a hook starts: the tests use it as the thing itself. Using it outside a
 * test (before beforeAll ran) is a clear error rather than a `cannot read properties of undefined`.
 */
function handle<T extends object>(get: () => T | undefined, what: string): T {
  return new Proxy({} as T, {
    get(_, key) {
      const target = get();
      if (!target) throw new Error(`${what} is not started: use it inside a test or a hook`);
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
    set(_, key, value) {
      return Reflect.set(get()!, key, value);
    },
  });
}

/** An OpenAI-compatible provider entry pointing at the mock upstream. */
export const openaiUpstream = (mock: MockUpstream, apiKey = "sk-up") => ({ type: "openai", base_url: `${mock.url}/v1`, api_key: apiKey });

export interface UpstreamOptions {
  /** How the mock answers (an object, or a function of the request); kept for the file unless reset. */
  behavior?: Parameters<MockUpstream["setBehavior"]>[0];
  /** Clear the mock's requests and behavior before each test (default true). */
  reset?: boolean;
}

/** A mock upstream for the file: started before its tests, closed after them. */
export function useUpstream(opts: UpstreamOptions = {}): MockUpstream {
  let mock: MockUpstream | undefined;
  beforeAll(async () => {
    mock = await MockUpstream.start();
    if (opts.behavior) mock.setBehavior(opts.behavior);
  });
  afterAll(() => mock?.close());
  if (opts.reset ?? true) beforeEach(() => mock?.reset());
  return handle(() => mock, "the mock upstream");
}

export interface GatewayOptions {
  /** The config (an object or YAML); a function is given the file's mock upstream. */
  config: object | string | ((mock: MockUpstream) => object | string);
  env?: NodeJS.ProcessEnv;
  /** Options for the file's mock upstream; `false`: the gateway needs none (a simulated provider). */
  upstream?: UpstreamOptions | false;
}

export interface UsedGateway {
  gw: GatewayProcess;
  mock: MockUpstream;
}

/**
 * One `tollgate serve` for the file (or the describe block it is called in), with its own mock
 * upstream unless `upstream: false`.
 */
export function useGateway(opts: GatewayOptions): UsedGateway {
  const mock = opts.upstream === false ? undefined : useUpstream(opts.upstream);
  let gw: GatewayProcess | undefined;
  beforeAll(async () => {
    const config = typeof opts.config === "function" ? opts.config(mock!) : opts.config;
    gw = await GatewayProcess.start(config, opts.env);
  }, 60_000);
  afterAll(async () => {
    await gw?.stop();
  });
  return { gw: handle(() => gw, "the gateway"), mock: mock ?? handle<MockUpstream>(() => undefined, "a mock upstream (upstream: false)") };
}

/** A redis-server of its own for the file (or the describe block): started before, removed after. */
export function useRedis(opts: RedisServerOptions = {}): RedisServer {
  let redis: RedisServer | undefined;
  beforeAll(async () => {
    redis = await RedisServer.start(opts);
  }, 30_000);
  afterAll(() => redis?.dispose());
  return handle(() => redis, "the redis-server");
}

/** Gateways the tests start themselves (several at once, a restart, one per store). */
export interface Gateways extends Array<GatewayProcess> {
  /** Starts a gateway that is stopped with the others. */
  start(config: object | string, env?: NodeJS.ProcessEnv, wrap?: string[]): Promise<GatewayProcess>;
}

/**
 * Gateways stopped after each test or after the file (`after`), with `signal` (a SIGKILL spares
 * the next test a drain).
 */
export function useGateways(opts: { after: "each" | "all"; signal?: NodeJS.Signals } = { after: "each" }): Gateways {
  const list = [] as unknown as Gateways;
  // Starts still under way when a test ends (a sibling of one that failed, say) are waited for, then stopped.
  const starting = new Set<Promise<GatewayProcess>>();
  list.start = async (config, env, wrap) => {
    const start = GatewayProcess.start(config, env, wrap);
    starting.add(start);
    try {
      const gw = await start;
      list.push(gw);
      return gw;
    } finally {
      starting.delete(start);
    }
  };
  const stopAll = async () => {
    await Promise.allSettled([...starting]);
    await Promise.all(list.splice(0).map((g) => g.stop(opts.signal)));
  };
  if (opts.after === "each") afterEach(stopAll);
  else afterAll(stopAll);
  return list;
}
