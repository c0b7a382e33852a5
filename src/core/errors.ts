import { StoreUnavailableError } from "./store.js";

/**
 * The one error catalogue. Every refusal tollgate makes is a TollgateError with a
 * stable `code` and its HTTP `status`; the gateway and the adapters only translate it into the
 * caller's API format.
 */
export const ERROR_CODES = {
  unauthorized: 401,
  forbidden: 403,
  blocked: 403,
  model_not_allowed: 403,
  challenge_required: 403,
  rate_limited: 429,
  run_limit_exceeded: 429,
  budget_exceeded: 402,
  invalid_request: 400,
  not_found: 404,
  input_too_large: 413,
  param_not_allowed: 400,
  output_tokens_exceeded: 400,
  upstream_error: 502,
  upstream_timeout: 504,
  store_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

const MARK = Symbol.for("tollgate.error");

export interface TollgateErrorOptions {
  /** The request field at fault, for OpenAI's `param`. */
  param?: string;
  /** Seconds the caller should wait (429, 402): sent as Retry-After. */
  retryAfterSeconds?: number;
  /** Which limit, budget or cap refused, for logs and the usage record. */
  limit?: string;
  /** A fresh proof-of-work challenge the caller can solve (challenge_required), sent in the error body. */
  challenge?: object;
  cause?: unknown;
}

/**
 * Whether Error.stackTraceLimit can be lowered around a refusal's construction (it cannot in a
 * frozen realm, e.g. under SES lockdown; then refusals keep their stacks).
 */
const STACKLESS = Object.getOwnPropertyDescriptor(Error, "stackTraceLimit")?.writable === true;

/**
 * A refusal is an expected outcome of a request, not a bug, and a flood of them is what tollgate
 * is for: capturing a stack trace for each was the largest single cost of a refusal. So a
 * TollgateError carries no stack frames (`stack` is just its name and message); what caused it,
 * when something did (`cause`), keeps its own. Errors that are bugs are never TollgateErrors and
 * keep their stacks.
 */
export class TollgateError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly param?: string;
  readonly retryAfterSeconds?: number;
  readonly limit?: string;
  readonly challenge?: object;
  readonly [MARK] = true;

  constructor(code: ErrorCode, message: string, options: TollgateErrorOptions = {}) {
    if (STACKLESS) {
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 0;
      super(message, options.cause === undefined ? undefined : { cause: options.cause });
      Error.stackTraceLimit = limit;
    } else {
      super(message, options.cause === undefined ? undefined : { cause: options.cause });
    }
    this.name = "TollgateError";
    this.code = code;
    this.status = ERROR_CODES[code];
    this.param = options.param;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.limit = options.limit;
    this.challenge = options.challenge;
  }

  /** The name Fastify (and others) read an error's HTTP status from. */
  get statusCode(): number {
    return this.status;
  }

  /** True for TollgateErrors from any copy of this package. */
  static is(value: unknown): value is TollgateError {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[MARK] === true;
  }
}

/** Store failures are 503 with a Retry-After: a store usually answers again within seconds. */
const STORE_RETRY_AFTER_S = 1;

/**
 * An error from a store call as the caller sees it: a refusal passes through, the store failing
 * (StoreUnavailableError, which every store throws for that and only that) is 503
 * `store_unavailable` (SPEC §7.6). Anything else is a bug, not a refusal: it is rethrown, to be
 * logged and answered 500.
 */
export function storeFailure(err: unknown): TollgateError {
  if (TollgateError.is(err)) return err;
  if (err instanceof StoreUnavailableError) {
    return new TollgateError("store_unavailable", "the store is unavailable", { retryAfterSeconds: STORE_RETRY_AFTER_S, cause: err });
  }
  throw err;
}

/**
 * The message to show an end user for an error the AI SDK reports: tollgate's own for a refusal,
 * else the AI SDK's generic one. `result.toUIMessageStreamResponse({ onError: errorMessage })`.
 */
export function errorMessage(error: unknown): string {
  return findRefusal(error)?.message ?? "An error occurred.";
}

/** The TollgateError behind an error, also when a library (the AI SDK, a retry wrapper) wrapped it as a cause. */
export function findRefusal(error: unknown): TollgateError | undefined {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (TollgateError.is(e)) return e;
  }
  return undefined;
}
