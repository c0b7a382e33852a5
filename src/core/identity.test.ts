import { describe, expect, it } from "vitest";
import { resolveConfig } from "../config/resolve.js";
import { configSchema } from "../config/schema.js";
import { MemoryStore } from "../stores/memory.js";
import { Identifier, readCredential, UNKNOWN_KEY_TTL_MS } from "./identity.js";
import { createKey } from "./keys.js";

const config = resolveConfig(
  configSchema.parse({
    providers: { sim: { type: "simulated" } },
    models: { "gpt-4o-mini": { provider: "sim" } },
    plans: { free: { models: ["gpt-4o-mini"] } },
    routes: { chat: { path: "/chat", plans: ["free"] } },
  }),
);
const route = config.routes[0]!;

/** A memory store that counts how often gate 1 asks it for a key. */
function countingStore() {
  const store = new MemoryStore();
  const calls = { findKey: 0 };
  const findKey = store.findKey.bind(store);
  store.findKey = async (hash) => {
    calls.findKey++;
    return findKey(hash);
  };
  return { store, calls };
}

const refusal = (p: Promise<unknown>) => p.then(() => "allowed", (err: Error & { code?: string }) => `${err.code}: ${err.message}`);

describe("key lookup", () => {
  it("asks the store once for a flood of one unknown key, and again once the answer expires", async () => {
    const { store, calls } = countingStore();
    const id = new Identifier(config, store);
    for (let i = 0; i < 50; i++) expect(await refusal(id.identify({ token: "tg_not_a_real_key_123" }, route, "203.0.113.1"))).toBe("unauthorized: invalid API key");
    expect(calls.findKey).toBe(1);
    const realNow = Date.now;
    Date.now = () => realNow() + UNKNOWN_KEY_TTL_MS + 1;
    try {
      await refusal(id.identify({ token: "tg_not_a_real_key_123" }, route, "203.0.113.1"));
    } finally {
      Date.now = realNow;
    }
    expect(calls.findKey).toBe(2);
  });

  it("applies a revocation made in the store (as the CLI does, from another process) to the very next request", async () => {
    const { store, calls } = countingStore();
    const id = new Identifier(config, store);
    const { id: keyId, key } = await createKey(store, config, { user: "erin", plan: "free" });
    expect((await id.identify({ token: key }, route, "203.0.113.1")).user).toBe("erin");
    expect((await id.identify({ token: key }, route, "203.0.113.1")).user).toBe("erin");
    expect(await store.revokeKey(keyId)).toBe(true);
    expect(await refusal(id.identify({ token: key }, route, "203.0.113.1"))).toBe("unauthorized: this API key was revoked");
    const asked = calls.findKey;
    // A revoked key never comes back: hammering it no longer reaches the store.
    for (let i = 0; i < 20; i++) expect(await refusal(id.identify({ token: key }, route, "203.0.113.1"))).toBe("unauthorized: this API key was revoked");
    expect(calls.findKey).toBe(asked);
  });

  it("forgets the oldest remembered refusals rather than growing without bound", async () => {
    const { store, calls } = countingStore();
    const id = new Identifier(config, store);
    for (let i = 0; i < 10_001; i++) await refusal(id.identify({ token: `tg_random_guess_${i}` }, route, "203.0.113.1"));
    expect(calls.findKey).toBe(10_001);
    await refusal(id.identify({ token: "tg_random_guess_0" }, route, "203.0.113.1"));
    expect(calls.findKey).toBe(10_002);
    await refusal(id.identify({ token: "tg_random_guess_10000" }, route, "203.0.113.1"));
    expect(calls.findKey).toBe(10_002);
  });
});

describe("readCredential", () => {
  it("reads a Bearer token, else x-api-key", () => {
    expect(readCredential("Bearer tg_abc", undefined)).toEqual({ token: "tg_abc" });
    expect(readCredential("bearer   tg_abc  ", "tg_other")).toEqual({ token: "tg_abc" });
    expect(readCredential(undefined, " tg_key ")).toEqual({ token: "tg_key" });
  });

  it("reports no credentials as none: the caller is anonymous", () => {
    expect(readCredential(undefined, undefined)).toEqual({});
    expect(readCredential("", "  ")).toEqual({});
  });

  it("reports credentials present but unusable, without repeating them", () => {
    const basic = readCredential("Basic dXNlcjpzZWNyZXQ=", undefined);
    expect(basic.token).toBeUndefined();
    expect(basic.unusable).toMatch(/Bearer/);
    expect(basic.unusable).not.toContain("dXNlcjpzZWNyZXQ=");
    expect(readCredential("Bearer ", undefined).unusable).toMatch(/empty Bearer/);
    expect(readCredential("Bearer", undefined).unusable).toMatch(/empty Bearer/);
    expect(readCredential("tg_abc", undefined).unusable).toBeDefined();
  });

  it("uses a usable x-api-key beside an Authorization meant for something else", () => {
    expect(readCredential("Basic dXNlcjpwYXNz", "tg_key")).toEqual({ token: "tg_key" });
    expect(readCredential("Bearer ", "tg_key")).toEqual({ token: "tg_key" });
  });
});

describe("gate 1 without waiting", () => {
  it("a config key, and an unknown key once remembered, are answered without a promise; the first lookup of an unknown key waits for the store", async () => {
    const withKey = resolveConfig(configSchema.parse({ providers: { sim: { type: "simulated" } }, models: { "gpt-4o-mini": { provider: "sim" } }, plans: { free: { models: ["gpt-4o-mini"] } }, keys: [{ key: "tg_sync_ann", user: "ann", plan: "free" }], routes: { chat: { path: "/chat", plans: ["free"] } } }));
    const { store, calls } = countingStore();
    const id = new Identifier(withKey, store);
    const chat = withKey.routes[0]!;
    expect(id.identifyNow({ token: "tg_sync_ann" }, chat, "203.0.113.1")).toMatchObject({ kind: "key", user: "ann", plan: "free" });
    const first = id.identifyNow({ token: "tg_sync_nobody" }, chat, "203.0.113.1");
    expect(first).toBeInstanceOf(Promise);
    expect(await refusal(first as Promise<unknown>)).toBe("unauthorized: invalid API key");
    expect(() => id.identifyNow({ token: "tg_sync_nobody" }, chat, "203.0.113.1")).toThrow("invalid API key");
    expect(calls.findKey).toBe(1);
  });

  it("knownRefusal answers only what needs no identity and no store: a remembered bad key, a missing or unusable credential", async () => {
    const withKey = resolveConfig(configSchema.parse({ providers: { sim: { type: "simulated" } }, models: { "gpt-4o-mini": { provider: "sim" } }, plans: { free: { models: ["gpt-4o-mini"] } }, keys: [{ key: "tg_known_ann", user: "ann", plan: "free" }], routes: { chat: { path: "/chat", plans: ["free"] } } }));
    const { store, calls } = countingStore();
    const id = new Identifier(withKey, store);
    const chat = withKey.routes[0]!;
    const { id: keyId, key: revoked } = await createKey(store, withKey, { user: "erin", plan: "free" });
    await store.revokeKey(keyId);
    const { key: live } = await createKey(store, withKey, { user: "fay", plan: "free" });
    const known = (token: string) => id.knownRefusal({ token }, chat)?.message;
    // Not yet seen: only gate 1 (with its store lookup) can tell.
    expect(known("tg_known_nobody")).toBeUndefined();
    expect(known(revoked)).toBeUndefined();
    expect(calls.findKey).toBe(0);
    await refusal(id.identify({ token: "tg_known_nobody" }, chat, "203.0.113.1"));
    await refusal(id.identify({ token: revoked }, chat, "203.0.113.1"));
    expect(known("tg_known_nobody")).toBe("invalid API key");
    expect(known(revoked)).toBe("this API key was revoked");
    // Keys that may be served are never answered here, and a live store key is never remembered.
    expect(known("tg_known_ann")).toBeUndefined();
    expect((await id.identify({ token: live }, chat, "203.0.113.1")).user).toBe("fay");
    expect(known(live)).toBeUndefined();
    expect(id.knownRefusal({}, chat)?.message).toBe("this route needs an API key");
    expect(id.knownRefusal({ unusable: "the Authorization header carries an empty Bearer token" }, chat)?.code).toBe("unauthorized");
    expect(calls.findKey).toBe(3);
  });

  it("reads the common Bearer spelling and the others the same way", () => {
    expect(readCredential("Bearer tg_abc", undefined)).toEqual({ token: "tg_abc" });
    expect(readCredential("Bearer   tg_abc  ", undefined)).toEqual({ token: "tg_abc" });
    expect(readCredential("bearer\ttg_abc", undefined)).toEqual({ token: "tg_abc" });
    expect(readCredential("Bearer ", "tg_api")).toEqual({ token: "tg_api" });
    expect(readCredential("Bearer  ", undefined)).toMatchObject({ unusable: expect.stringContaining("empty Bearer") });
    expect(readCredential("Basic dXNlcg==", undefined)).toMatchObject({ unusable: expect.stringContaining("Bearer KEY") });
  });
});

