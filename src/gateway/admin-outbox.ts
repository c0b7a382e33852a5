import { TollgateError } from "../core/errors.js";
import type { OutboxItem, OutboxStore } from "../core/outbox.js";
import { configuredSinks } from "../outbox/delivery.js";
import { intParam, type AdminCall, type AdminRoute } from "./admin-params.js";

/**
 * The alerts and export outbox: what waits to be delivered or was given up on, and a retry for
 * either. Items show their payload (what the receiver gets) and never a webhook's URL or secret.
 */
export const OUTBOX_ROUTES: AdminRoute[] = [
  { method: "GET", path: /^\/admin\/outbox$/, handle: list },
  { method: "POST", path: /^\/admin\/outbox\/([^/]+)\/retry$/, handle: retry },
];

function outboxOf(call: AdminCall): OutboxStore {
  const outbox = call.engine.store.outbox;
  if (!outbox) throw new TollgateError("not_found", `this ${call.engine.store.kind} store has no outbox`);
  return outbox;
}

export function itemJson(i: OutboxItem) {
  let payload: unknown;
  try {
    payload = JSON.parse(i.payload);
  } catch {
    payload = i.payload;
  }
  return {
    id: i.id,
    sink: i.sink,
    kind: i.kind,
    state: i.state,
    attempts: i.attempts,
    created_at: new Date(i.createdAt).toISOString(),
    next_attempt_at: i.state === "pending" ? new Date(i.nextAt).toISOString() : null,
    last_error: i.lastError,
    payload,
  };
}

async function list(call: AdminCall) {
  const outbox = outboxOf(call);
  const state = call.query.get("state") ?? "pending";
  if (state !== "pending" && state !== "failed") throw new TollgateError("invalid_request", "state: expected pending or failed", { param: "state" });
  const limit = intParam(call.query, "limit", 50, 500);
  let page;
  try {
    page = await outbox.list({ state, limit, cursor: call.query.get("cursor") ?? undefined });
  } catch (err) {
    if (err instanceof RangeError) throw new TollgateError("invalid_request", `cursor: ${err.message}`, { param: "cursor" });
    throw err;
  }
  const counts = await outbox.counts();
  return { body: { state, total: page.total, data: page.items.map(itemJson), next_cursor: page.cursor ?? null, counts } };
}

/** Retries the message with this id in `?sink=` or, without it, in every configured sink that holds it. */
async function retry(call: AdminCall) {
  const outbox = outboxOf(call);
  const id = call.params[0]!;
  const sink = call.query.get("sink");
  const sinks = sink !== null ? [sink] : configuredSinks(call.engine.config).map((s) => s.name);
  const found = (await Promise.all(sinks.map((s) => outbox.retry(s, id)))).filter((i) => i !== undefined);
  if (!found.length) throw new TollgateError("not_found", `no outbox message with id ${JSON.stringify(id.slice(0, 200))}${sink !== null ? ` in sink ${JSON.stringify(sink.slice(0, 64))}` : ""}`);
  call.observability?.logs.ops.info({ admin: "outbox_retry", id, sinks: found.map((i) => i.sink) }, "an operator retried an outbox message");
  return { body: { data: found.map(itemJson) } };
}
