import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTollgate, refusalHeaders, type Tollgate } from "./tollgate.js";
import { TollgateError } from "../core/errors.js";

// This file imports no adapter module, as an app that only uses `tollgate` would not.

let tg: Tollgate;
beforeAll(async () => {
  tg = await createTollgate({
    config: {
      store: "memory:",
      providers: { sim: { type: "simulated" } },
      models: { "gpt-4o-mini": { provider: "sim" } },
      plans: { free: { models: ["gpt-4o-mini"] } },
      routes: { chat: { path: "/chat", plans: ["free"] } },
    },
  });
});
afterAll(() => tg?.close());

describe("the core loads no adapter", () => {
  it("tg.express() and friends name the subpath to import until it is loaded", () => {
    const untyped = tg as unknown as Record<string, () => unknown>;
    expect(() => untyped.express!()).toThrow('tg.express is part of tollgate/express: add `import "tollgate/express"`');
    expect(() => untyped.hono!()).toThrow("tollgate/hono");
    expect(() => untyped.fetch!()).toThrow("tollgate/fetch");
    expect(() => untyped.fastify).toThrow("tollgate/fastify");
  });
});

describe("a refusal at admission", () => {
  it("is the app's own error, with its own request's headers, however many bad keys arrive at once", async () => {
    const refusals = await Promise.all([1, 2, 3].map((n) => tg.admit({ route: "chat", ip: "192.0.2.7", token: `tg_not_a_key_${n}` }).then(() => undefined, (err: unknown) => err)));
    for (const err of refusals) {
      expect(TollgateError.is(err) && err.code).toBe("unauthorized");
      // An app's handler may tag what it has seen; a shared frozen error would throw here.
      (err as { seenBy?: string }).seenBy = "app";
    }
    expect(new Set(refusals).size).toBe(3);
    const ids = refusals.map((err) => refusalHeaders(err as TollgateError)["x-tollgate-request-id"]);
    expect(ids.every((id) => typeof id === "string" && id.length > 0)).toBe(true);
    expect(new Set(ids).size).toBe(3);
  });
});
