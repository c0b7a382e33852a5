import { describe, expect, it } from "vitest";
import { ConfigError } from "./errors.js";
import { parseConfig } from "./load.js";
import { resolveConfig } from "./resolve.js";

const SECRET = `whsec_${Buffer.from("a signing key of 24 bytes").toString("base64")}`;
const doc = (over: Record<string, unknown>) => ({
  store: "memory:",
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] } },
  routes: { chat: { path: "/chat", plans: ["free"] } },
  ...over,
});

function issues(over: Record<string, unknown>): string[] {
  try {
    resolveConfig(parseConfig(doc(over), { HOOK_SECRET: "whsec_not!base64-at-all" }));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error("expected a config error");
}

describe("alerts, export and outbox config", () => {
  it("fills the defaults: every alert type, a name from the URL's hash, the delivery policy in ms", () => {
    const c = resolveConfig(parseConfig(doc({ alerts: { webhooks: [{ url: "https://ops.example.com/h", secret: SECRET }] }, export: { cloudevents: { url: "https://openmeter.example/api/v1/events" } } })));
    expect(c.alerts.webhooks[0]).toMatchObject({ name: expect.stringMatching(/^webhook-[0-9a-f]{8}$/), url: "https://ops.example.com/h" });
    expect([...c.alerts.webhooks[0]!.events]).toEqual(["budget.soft", "budget.exhausted", "budget.burn_rate", "abuse.downgrade", "abuse.block"]);
    expect(c.alerts.abuseEveryMs).toBe(3_600_000);
    expect(c.export.cloudevents).toEqual({ name: "cloudevents", url: "https://openmeter.example/api/v1/events", batchSize: 100, source: "tollgate", type: "tollgate.usage", headers: {} });
    expect(c.outbox).toEqual({ retryMinMs: 1_000, retryMaxMs: 300_000, maxAttempts: 50, maxAgeMs: 3 * 86_400_000, timeoutMs: 10_000, pollMs: 1_000 });
  });

  it("refuses a secret that is not a Standard Webhooks secret, without repeating it", () => {
    const found = issues({ alerts: { webhooks: [{ url: "https://ops.example.com/h", secret: "env:HOOK_SECRET" }] } });
    expect(found).toEqual(["alerts.webhooks[0].secret: expected a Standard Webhooks secret: whsec_ followed by base64 (at least 12 bytes)"]);
    expect(found.join()).not.toContain("not!base64");
    const padded = issues({ alerts: { webhooks: [{ url: "https://ops.example.com/h", secret: "whsec_AAAAAAAAAAAAAAAAA" }] } });
    expect(padded).toEqual(["alerts.webhooks[0].secret: the part after whsec_ is not valid base64 (its length must be a multiple of 4, padded with =)"]);
  });

  it("refuses two webhooks under one name, an unknown event type, and retry_max below retry_min", () => {
    expect(
      issues({
        alerts: { webhooks: [{ name: "ops", url: "https://a.example/h", secret: SECRET }, { name: "ops", url: "https://b.example/h", secret: SECRET, events: ["budget.soft"] }] },
        outbox: { retry_min: "1m", retry_max: "10s" },
      }),
    ).toEqual(['alerts.webhooks[1].name: "ops" is taken by another webhook (or the export); give each a name of its own', "outbox.retry_max: must not be below retry_min"]);
    expect(issues({ alerts: { webhooks: [{ url: "https://a.example/h", secret: SECRET, events: ["budget.spent"] }] } })[0]).toMatch(/^alerts\.webhooks\[0\]\.events\[0\]: /);
  });
});
