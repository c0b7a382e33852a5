import { createHash } from "node:crypto";
import { ALERT_TYPES } from "../core/alerts.js";
import type { ResolvedDelivery, ResolvedOutboxPolicy, ResolvedWebhook } from "../core/config-types.js";
import type { Resolution } from "./resolution.js";

/** `alerts:`, `export:` and `outbox:`: sink names checked, durations in ms, defaults filled. */
export function resolveDelivery(res: Resolution): ResolvedDelivery {
  const raw = res.raw;
  const ms = (v: string | undefined, fallback: string) => res.ms(v ?? fallback);
  const names = new Set<string>(["cloudevents"]);
  const webhooks = (raw.alerts?.webhooks ?? []).map((w, i): ResolvedWebhook => {
    // The URL's hash, not its position: reordering the list must not send pending alerts elsewhere.
    const name = w.name ?? `webhook-${createHash("sha256").update(w.url).digest("hex").slice(0, 8)}`;
    if (names.has(name)) res.issue(`alerts.webhooks[${i}].name`, `"${name}" is taken by another webhook (or the export); give each a name of its own`);
    names.add(name);
    // Receivers decode the same base64: one that does not round-trip would sign with other bytes than theirs.
    const key = w.secret.slice("whsec_".length);
    if (Buffer.from(key, "base64").toString("base64") !== key) res.issue(`alerts.webhooks[${i}].secret`, "the part after whsec_ is not valid base64 (its length must be a multiple of 4, padded with =)");
    return { name, url: w.url, secret: w.secret, events: new Set(w.events ?? ALERT_TYPES) };
  });
  const ce = raw.export?.cloudevents;
  const o = raw.outbox ?? {};
  const outbox: ResolvedOutboxPolicy = {
    retryMinMs: ms(o.retry_min, "1s"),
    retryMaxMs: ms(o.retry_max, "5m"),
    maxAttempts: o.max_attempts ?? 50,
    maxAgeMs: ms(o.max_age, "3d"),
    timeoutMs: ms(o.timeout, "10s"),
    pollMs: ms(o.poll, "1s"),
  };
  if (outbox.retryMaxMs < outbox.retryMinMs) res.issue("outbox.retry_max", "must not be below retry_min");
  return {
    alerts: { webhooks, abuseEveryMs: ms(raw.alerts?.abuse_every, "1h") },
    export: {
      cloudevents: ce && { name: "cloudevents", url: ce.url, batchSize: ce.batch_size ?? 100, source: ce.source ?? "tollgate", type: ce.type ?? "tollgate.usage", headers: ce.headers ?? {} },
    },
    outbox,
  };
}
