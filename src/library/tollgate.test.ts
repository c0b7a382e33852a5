import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTollgate, type Tollgate } from "./tollgate.js";

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
