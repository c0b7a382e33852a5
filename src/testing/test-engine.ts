import { parseConfig } from "../config/load.js";
import { resolveConfig, type EndpointName, type ResolvedConfig } from "../config/resolve.js";
import type { EngineEvents } from "../core/alerts.js";
import { Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import type { Credentials } from "../core/identity.js";
import type { Ended, UsageRecord } from "../core/usage-record.js";
import { ENDPOINTS } from "../gateway/endpoints.js";
import type { Provider } from "../core/provider.js";
import { createProviders } from "../providers/registry.js";
import type { Store } from "../core/store.js";
import { MemoryStore } from "../stores/memory.js";

/**
 * A clock a test moves by hand. It drives the engine's `now` (calendar budgets, refusal reset
 * times) and the memory store's (rate windows, leases, suspicion decay). It does not drive key
 * expiry (identity reads `Date.now`), record timestamps or durations, nor the simulated
 * provider's token pacing, which sleeps for real.
 */
export interface FakeClock {
  now(): number;
  /** Moves the clock forward by `ms`. */
  advance(ms: number): void;
  /** Sets the clock to an instant ("2026-03-01T23:59:00Z" or epoch ms). */
  set(at: string | number): void;
}

export function fakeClock(start: string | number = "2026-01-15T12:00:00Z"): FakeClock {
  let t = typeof start === "string" ? Date.parse(start) : start;
  return {
    now: () => t,
    advance: (ms) => void (t += ms),
    set: (at) => void (t = typeof at === "string" ? Date.parse(at) : at),
  };
}

/** One request, as the caller would send it. */
export interface TestRequest {
  body: Record<string, unknown>;
  /** The API the body speaks (default chat_completions). */
  endpoint?: Exclude<EndpointName, "models">;
  /** Bearer token; none is an anonymous caller. */
  key?: string;
  credentials?: Omit<Credentials, "token">;
  ip?: string;
  /** Default: the config's first route. */
  route?: string;
  runId?: string;
  /** x-tollgate-challenge: a solved proof-of-work challenge (solveChallengeHeader). */
  challenge?: string;
  /** The client hangs up after reading this many stream events (0: before the call leaves). */
  disconnectAfter?: number;
}

export interface TestResult {
  /** The usage record the request wrote (a refused one too). */
  record: UsageRecord;
  /** The refusal, when a gate or the call said no. */
  refusal?: TollgateError;
  /** The response headers tollgate sets (x-tollgate-*, RateLimit). */
  headers: Record<string, string>;
}

export interface TestEngine {
  engine: Engine;
  config: ResolvedConfig;
  store: Store;
  clock: FakeClock;
  /** Every usage record, in the order written. */
  records: UsageRecord[];
  /** Operational warnings the engine logged. */
  warnings: string[];
  /** Runs one request through admit -> prepare -> call -> finish. */
  send(req: TestRequest): Promise<TestResult>;
}

/**
 * The engine in process, for fast tests of policy: a config of the config file's shape (parsed
 * and resolved as the library does), a memory store and a fake clock. Simulated providers that
 * do not set `tokens_per_second` stream as fast as timers allow. `providers` replaces the
 * configured ones by name (a provider that misbehaves on purpose); `store` replaces the memory
 * store (a Redis store with its own test clock, shared by two engines as by two processes).
 * `gateway`: admitted as the gateway admits (gate 3 only checks before the body, and reserves
 * with gate 6 once it is in), instead of as the library does.
 */
export function testEngine(
  config: Record<string, unknown>,
  opts: { clock?: FakeClock; providers?: Record<string, Provider>; store?: Store; events?: EngineEvents; gateway?: boolean } = {},
): TestEngine {
  const resolved = resolveConfig(parseConfig({ store: "memory:", ...config, providers: fastSimulated(config.providers) }));
  const clock = opts.clock ?? fakeClock();
  const store = opts.store ?? new MemoryStore(clock.now);
  const records: UsageRecord[] = [];
  const warnings: string[] = [];
  const engine = new Engine({
    config: resolved,
    store,
    providers: { ...createProviders(resolved), ...opts.providers },
    onRecord: (r) => records.push(r),
    warn: (_fields, message) => warnings.push(message),
    now: clock.now,
    events: opts.events,
  });
  const send = async (req: TestRequest): Promise<TestResult> => {
    const endpoint = req.endpoint ?? "chat_completions";
    const format = Object.values(ENDPOINTS).find((e) => e.name === endpoint)!.format;
    const ex = engine.open({
      route: req.route ?? resolved.routes[0]!.name,
      endpoint,
      ip: req.ip ?? "198.51.100.7",
      credentials: { ...req.credentials, token: req.key },
      runId: req.runId,
      challenge: req.challenge,
    });
    try {
      await engine.admit(ex, { bodyPending: opts.gateway });
      await engine.prepare(ex, format, req.body);
      const client = new AbortController();
      if (req.disconnectAfter === 0) client.abort();
      const { result, meter } = await engine.call(ex, client.signal);
      let ended: Ended = "complete";
      if (result.kind === "stream") {
        let read = 0;
        for await (const event of result.events) {
          meter.event(event);
          if (meter.capped) {
            ended = "output_cap";
            break;
          }
          if (++read === req.disconnectAfter) {
            client.abort();
            ended = "client_disconnect";
            break;
          }
        }
      }
      return { record: await engine.finish(ex, { ended, meter }), headers: ex.headers };
    } catch (err) {
      if (!TollgateError.is(err)) throw err;
      return { record: ex.record, refusal: err, headers: ex.headers };
    }
  };
  return { engine, config: resolved, store, clock, records, warnings, send };
}

const FAST_TOKENS_PER_SECOND = 1_000_000;

function fastSimulated(providers: unknown): unknown {
  if (typeof providers !== "object" || providers === null) return providers;
  return Object.fromEntries(
    Object.entries(providers).map(([name, p]) => {
      const sim = typeof p === "object" && p !== null && (p as Record<string, unknown>).type === "simulated" && !("tokens_per_second" in p);
      return [name, sim ? { ...p, tokens_per_second: FAST_TOKENS_PER_SECOND } : p];
    }),
  );
}
