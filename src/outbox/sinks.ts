import { Webhook } from "standardwebhooks";
import type { ResolvedCloudEvents, ResolvedWebhook } from "../core/config-types.js";
import type { OutboxItem } from "../core/outbox.js";
import type { Sink } from "./deliverer.js";

/**
 * A webhook per Standard Webhooks: the stored payload as the body, webhook-id the message's id
 * (the same on every retry, for the receiver to deduplicate), webhook-timestamp this attempt's
 * time and webhook-signature its HMAC with the secret. One message per POST.
 */
export function webhookSink(hook: ResolvedWebhook): Sink {
  const signer = new Webhook(hook.secret);
  return {
    name: hook.name,
    batch: 1,
    parallel: 4,
    async send([item], signal) {
      const at = new Date();
      const headers = {
        "content-type": "application/json",
        "user-agent": "tollgate-webhooks",
        "webhook-id": item!.id,
        "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
        "webhook-signature": signer.sign(item!.id, at, item!.payload),
      };
      await post(hook.url, headers, item!.payload, signal);
    },
  };
}

/** Usage as CloudEvents batches (OpenMeter's POST /api/v1/events takes them as they are). */
export function cloudEventsSink(ce: ResolvedCloudEvents): Sink {
  return {
    name: ce.name,
    batch: ce.batchSize,
    parallel: 1,
    async send(items, signal) {
      const body = `[${items.map((i: OutboxItem) => i.payload).join(",")}]`;
      await post(ce.url, { ...ce.headers, "content-type": "application/cloudevents-batch+json", "user-agent": "tollgate-export" }, body, signal);
    },
  };
}

/**
 * POSTs and resolves on a 2xx. A failure's message names the status or the network error only:
 * never the URL (it may carry a token), a header or the receiver's body.
 */
async function post(url: string, headers: Record<string, string>, body: string, signal: AbortSignal): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url, { method: "POST", headers, body, signal, redirect: "manual" });
  } catch (err) {
    if (signal.aborted) throw new Error("no answer within the outbox timeout");
    const code = (err as { cause?: { code?: unknown } }).cause?.code;
    throw new Error(typeof code === "string" ? `connection failed (${code})` : "connection failed");
  }
  // Read and drop the body so the connection can be reused.
  await res.arrayBuffer().catch(() => {});
  if (res.status < 200 || res.status > 299) throw new Error(`HTTP ${res.status}`);
}
