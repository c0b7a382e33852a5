import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

// Windows are built once per caller and shared by its requests: these check that no caller ever
// gets another's counters from that cache, and that the RateLimit headers read as they always did.
const config = {
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] }, pro: { models: ["m"] }, anonymous: { models: ["m"] } },
  keys: [
    { key: "tg_win_ann", user: "ann", plan: "free" },
    { key: "tg_win_bo", user: "bo", plan: "free" },
    { key: "tg_win_pro", user: "ann", plan: "pro" },
    // A user whose name is an IP address: never the anonymous callers of that address.
    { key: "tg_win_ip", user: "10.0.0.9", plan: "free" },
  ],
  routes: {
    chat: {
      path: "/chat",
      plans: ["free", "pro", "anonymous"],
      default_model: "m",
      limits: [
        { per: "user", requests: 2, window: "1m" },
        { per: "ip", requests: 5, window: "1m" },
        { per: "user", requests: 1, window: "1h", plans: ["pro"] },
        { per: "user", concurrent: 4 },
      ],
    },
  },
};
const hello = { messages: [{ role: "user", content: "hello" }] };

describe("request windows, cached per caller", () => {
  it("each caller counts in its own windows, a plan's own limits apply only to it, and the headers name every request window", async () => {
    const t = testEngine(config);
    const first = await t.send({ key: "tg_win_ann", ip: "10.0.0.1", body: hello });
    expect(first.headers["ratelimit-policy"]).toBe('"chat.0";q=2;w=60, "chat.1";q=5;w=60');
    expect(first.headers["ratelimit"]).toBe('"chat.0";r=1;t=60, "chat.1";r=4;t=60');
    expect((await t.send({ key: "tg_win_ann", ip: "10.0.0.1", body: hello })).headers["ratelimit"]).toBe('"chat.0";r=0;t=60, "chat.1";r=3;t=60');
    expect((await t.send({ key: "tg_win_ann", ip: "10.0.0.1", body: hello })).refusal?.code).toBe("rate_limited");
    // Same plan, same IP, another user: its own user window, the shared IP window.
    expect((await t.send({ key: "tg_win_bo", ip: "10.0.0.1", body: hello })).headers["ratelimit"]).toBe('"chat.0";r=1;t=60, "chat.1";r=2;t=60');
    // Same user name on another plan: the user window is shared (it counts by user), the pro-only limit applies.
    const pro = await t.send({ key: "tg_win_pro", ip: "10.0.0.2", body: hello });
    expect(pro.refusal?.code).toBe("rate_limited");
    expect(pro.headers["ratelimit-policy"]).toBe('"chat.0";q=2;w=60, "chat.1";q=5;w=60, "chat.2";q=1;w=3600');
  });

  it("an anonymous caller's windows are its IP group's, never those of a user named like that address", async () => {
    const t = testEngine(config);
    for (let i = 0; i < 2; i++) expect((await t.send({ key: "tg_win_ip", ip: "10.0.0.7", body: hello })).refusal).toBeUndefined();
    expect((await t.send({ key: "tg_win_ip", ip: "10.0.0.7", body: hello })).refusal?.code).toBe("rate_limited");
    const anonymous = await t.send({ ip: "10.0.0.9", body: hello });
    expect(anonymous.refusal).toBeUndefined();
    expect(anonymous.headers["ratelimit"]).toBe('"chat.0";r=1;t=60, "chat.1";r=4;t=60');
  });
});
