import type { IncomingMessage, ServerResponse } from "node:http";
import { parseDuration } from "../core/duration.js";
import type { Engine } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import { GROUP_BYS, type GroupBy } from "../core/usage-report.js";
import { asObject } from "../formats/fields.js";
import type { Observability } from "../observability/index.js";
import { parseJson, readBody } from "./body.js";

/** What one admin endpoint gets: the request, its path parameters and query, and the engine. */
export interface AdminCall {
  req: IncomingMessage;
  res: ServerResponse;
  params: string[];
  query: URLSearchParams;
  engine: Engine;
  observability?: Observability;
  /** Subjects this process blocked, so GET /admin/blocks lists them before they make a request. */
  blockedHere: Set<string>;
}

/** A JSON answer; `undefined` when the endpoint wrote the response itself (a stream). */
export type AdminResult = { status?: number; body: unknown } | undefined;

export interface AdminRoute {
  method: "GET" | "POST" | "PUT" | "DELETE";
  /** Matched against the whole path; capture groups become `params` (URL-decoded). */
  path: RegExp;
  handle(call: AdminCall): Promise<AdminResult>;
}

const bad = (param: string, message: string) => new TollgateError("invalid_request", `${param}: ${message}`, { param });

/** A point in time: a duration back from now ("24h") or an ISO-8601 time. */
export function timeParam(query: URLSearchParams, name: string, fallback: string | undefined, now: number): number | undefined {
  const raw = query.get(name) ?? fallback;
  if (raw === undefined) return undefined;
  const back = parseDuration(raw);
  if (back !== undefined) return now - back;
  const at = Date.parse(raw);
  if (Number.isNaN(at)) throw bad(name, 'expected a duration back from now like "1h", "24h", "7d", or an ISO-8601 time');
  return at;
}

export function durationParam(raw: string | undefined, name: string): number | undefined {
  if (raw === undefined) return undefined;
  const ms = parseDuration(raw);
  if (ms === undefined || ms <= 0) throw bad(name, 'expected a duration like "30m", "1h", "1d"');
  return ms;
}

export function intParam(query: URLSearchParams, name: string, fallback: number, max: number): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw bad(name, "expected a whole number of at least 1");
  return Math.min(n, max);
}


export function groupParam(query: URLSearchParams, name: string, fallback: GroupBy): GroupBy {
  const raw = query.get(name) ?? fallback;
  if (!(GROUP_BYS as readonly string[]).includes(raw)) throw bad(name, `expected one of ${GROUP_BYS.join(", ")}`);
  return raw as GroupBy;
}

/** The request's JSON object body, small by construction: admin bodies are a few fields. */
export async function jsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return asObject(parseJson(await readBody(req, 65_536, 10_000)), "body");
}

export const usd = (micros: number) => micros / 1e6;
