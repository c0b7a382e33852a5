import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * Pooled limits: `per: plan` (every caller of a plan shares one counter, optionally only the
 * plans a limit names) and `per: network` (an IPv4 /24 or IPv6 /48). A flood from many anonymous
 * addresses exhausts the anonymous pool without touching paying users.
 */
const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    server: { trust_proxy: 1 },
    providers: { up: openaiUpstream(mock) },
    models: { "gpt-4o-mini": { provider: "up" } },
    plans: { anonymous: { models: ["gpt-4o-mini"] }, pro: { models: ["gpt-4o-mini"] } },
    keys: [{ key: "tg_pro", user: "payer", plan: "pro" }],
    routes: {
      pool: {
        path: "/pool",
        plans: ["anonymous", "pro"],
        default_model: "gpt-4o-mini",
        limits: [{ per: "plan", plans: ["anonymous"], requests: 5, window: "1m" }],
      },
      net: {
        path: "/net",
        plans: ["anonymous", "pro"],
        default_model: "gpt-4o-mini",
        limits: [{ per: "network", requests: 3, window: "1m" }],
      },
    },
  }),
  upstream: { reset: false },
});

function client(route: string, ip: string, apiKey = "") {
  // No key: anonymous (the SDK needs a non-empty apiKey, so the header is dropped for anonymous calls).
  return new OpenAI({
    baseURL: `${gw.url}/${route}/v1`,
    apiKey: apiKey || "unused",
    maxRetries: 0,
    defaultHeaders: { "x-forwarded-for": ip, ...(apiKey ? {} : { authorization: null as unknown as string }) },
  });
}
const ask = (c: OpenAI) =>
  c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).then(
    () => 200,
    (e: { status?: number; error?: { code?: string } }) => `${e.status} ${e.error?.code}`,
  );

describe("per: plan", () => {
  it("twelve anonymous addresses share one pool of 5; a paying user is untouched", async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => ask(client("pool", `198.51.${i}.7`))));
    expect(results.filter((r) => r === 200)).toHaveLength(5);
    expect(results.filter((r) => r === "429 rate_limited")).toHaveLength(7);
    const paying = await Promise.all(Array.from({ length: 10 }, () => ask(client("pool", "198.51.0.7", "tg_pro"))));
    expect(paying.every((r) => r === 200)).toBe(true);
    const refusal = gw.records.find((r) => r.route === "pool" && r.code === "rate_limited");
    expect(refusal?.plan).toBe("anonymous");
  });
});

describe("per: network", () => {
  it("counts an IPv4 /24 as one caller, and a different /24 apart", async () => {
    const same = await Promise.all(["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"].map((ip) => ask(client("net", ip))));
    expect(same.filter((r) => r === 200)).toHaveLength(3);
    expect(same.filter((r) => r === "429 rate_limited")).toHaveLength(1);
    expect(await ask(client("net", "203.0.114.1"))).toBe(200);
  });

  it("counts an IPv6 /48 as one caller, whatever the /64", async () => {
    const ips = ["2001:db8:77:1::1", "2001:db8:77:2::1", "2001:db8:77:3::1", "2001:db8:77:4::1"];
    const same = await Promise.all(ips.map((ip) => ask(client("net", ip))));
    expect(same.filter((r) => r === 200)).toHaveLength(3);
    expect(await ask(client("net", "2001:db8:78:1::1"))).toBe(200);
  });
});
