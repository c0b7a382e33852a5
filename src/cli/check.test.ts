import { expect, it } from "vitest";
import { parseConfig } from "../config/load.js";
import { resolveConfig } from "../config/resolve.js";
import { describeConfig } from "./check.js";

it("tollgate check shows a route's proof-of-work challenge, and never its secret", () => {
  const secret = "check-challenge-secret-0123456789abcdef";
  const config = resolveConfig(
    parseConfig({
      store: "memory:",
      providers: { sim: { type: "simulated" } },
      models: { m: { provider: "sim", price: { input: 1, output: 1 } } },
      plans: { anonymous: { models: ["m"] } },
      routes: { chat: { path: "/chat", plans: ["anonymous"], challenge: { for: "anonymous", difficulty: { base: 500, max: 9000 }, ttl: "2m", secret } } },
    }),
  );
  const text = describeConfig(config, "t.yaml");
  expect(text).toContain("challenge for anonymous: difficulty 500-9000  ttl 2m  secret ****");
  expect(text).not.toContain(secret);
});
