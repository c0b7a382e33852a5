import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

const config = {
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] }, internal: { models: ["m"] } },
  keys: [
    { key: "tg_ident_ann", user: "ann", plan: "free" },
    { key: "tg_ident_ops", user: "ops", plan: "internal" },
  ],
  routes: { chat: { path: "/chat", plans: ["free"], default_model: "m" } },
};
const hello = { messages: [{ role: "user", content: "hello" }] };

describe("gate 1, identify", () => {
  it("a known key is served and its user, key and plan are on the record", async () => {
    const { record, refusal } = await testEngine(config).send({ key: "tg_ident_ann", body: hello });
    expect(refusal).toBeUndefined();
    expect(record).toMatchObject({ user: "ann", plan: "free", decision: "allow" });
    expect(record.key_id).toEqual(expect.any(String));
    expect(JSON.stringify(record)).not.toContain("tg_ident_ann");
  });

  it("no key on a route without an anonymous plan, and an unknown key, are 401 and recorded", async () => {
    const t = testEngine(config);
    expect((await t.send({ body: hello })).refusal).toMatchObject({ code: "unauthorized", status: 401 });
    const unknown = await t.send({ key: "tg_ident_nobody", body: hello });
    expect(unknown.refusal).toMatchObject({ code: "unauthorized", status: 401 });
    expect(unknown.record).toMatchObject({ decision: "deny", code: "unauthorized" });
    expect(t.records).toHaveLength(2);
  });

  it("a key whose plan the route does not take is 403", async () => {
    const { refusal } = await testEngine(config).send({ key: "tg_ident_ops", body: hello });
    expect(refusal).toMatchObject({ code: "forbidden", status: 403 });
  });
});
