import type { TollgateError } from "../core/errors.js";

const OPENAI_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  402: "insufficient_quota",
  403: "permission_error",
  404: "invalid_request_error",
  413: "invalid_request_error",
  429: "rate_limit_error",
  502: "api_error",
  503: "api_error",
  504: "api_error",
};

const ANTHROPIC_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  402: "billing_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  502: "api_error",
  503: "overloaded_error",
  504: "timeout_error",
};

/** OpenAI's error shape: {"error":{"message","type","code","param"}}. */
export function openaiErrorBody(err: TollgateError) {
  return { error: { message: err.message, type: OPENAI_TYPES[err.status] ?? "api_error", code: err.code, param: err.param ?? null, ...challengeOf(err) } };
}

/** Anthropic's error shape, with tollgate's code beside Anthropic's own type. */
export function anthropicErrorBody(err: TollgateError) {
  return { type: "error", error: { type: ANTHROPIC_TYPES[err.status] ?? "api_error", message: err.message, code: err.code, ...challengeOf(err) } };
}

/** challenge_required carries the challenge to solve beside the code, where the SDKs expose the error object. */
export function challengeOf(err: TollgateError): { challenge?: object } {
  return err.challenge ? { challenge: err.challenge } : {};
}
