import { describe, expect, it } from "vitest";
import { MemoryStore } from "../stores/memory.js";
import { testEngine } from "../testing/test-engine.js";
import { TollgateError } from "./errors.js";

const config = {
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] } },
  keys: [{ key: "tg_errors_ann", user: "ann", plan: "free" }],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m" } },
};
const hello = { messages: [{ role: "user", content: "hello" }] };

describe("refusals are built without a stack trace", () => {
  it("a TollgateError carries its code, status and message but no stack frames; its cause keeps its own", () => {
    const cause = new Error("socket hang up");
    const err = new TollgateError("upstream_error", "the provider call failed", { cause, param: "model", retryAfterSeconds: 3 });
    expect(err).toBeInstanceOf(Error);
    expect(TollgateError.is(err)).toBe(true);
    expect(err).toMatchObject({ code: "upstream_error", status: 502, message: "the provider call failed", param: "model", retryAfterSeconds: 3, cause });
    expect(err.stack).toBe("TollgateError: the provider call failed");
    expect(cause.stack).toMatch(/\n\s+at /);
    // The process-wide limit is put back: other errors keep their frames.
    expect(Error.stackTraceLimit).toBeGreaterThan(0);
    expect(new Error("a bug").stack).toMatch(/\n\s+at /);
  });

  it("a bad key's refusal from the engine has no stack; a bug in a store call reaches the caller unchanged, with its stack", async () => {
    const { refusal, record } = await testEngine(config).send({ key: "tg_errors_nobody", body: hello });
    expect(refusal).toMatchObject({ code: "unauthorized", status: 401, message: "invalid API key" });
    expect(refusal!.stack).toBe("TollgateError: invalid API key");
    expect(record).toMatchObject({ decision: "deny", code: "unauthorized" });

    const store = new MemoryStore();
    store.findKey = async () => {
      throw new TypeError("cannot read properties of undefined (reading 'plan')");
    };
    const t = testEngine(config, { store });
    const err = await t.send({ key: "tg_errors_unknown", body: hello }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).stack).toMatch(/\n\s+at /);
  });
});
