import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
const readme = readFileSync(join(ROOT, "README.md"), "utf8");

describe("README", () => {
  it("opens with what tollgate is and the two commands", () => {
    const top = readme.slice(0, 2000);
    expect(top).toMatch(/^# tollgate/);
    expect(top).toContain("npm install && npm start");
    expect(top).toContain("npm test");
  });

  // Each adapter snippet names the example file it comes from; examples.e2e.test.ts runs those files.
  const snippets = [...readme.matchAll(/```js\n\/\/ (examples\/\S+)\n([\s\S]*?)```/g)];
  it("has a snippet per adapter", () => {
    expect(snippets.map((m) => m[1])).toEqual(expect.arrayContaining(["examples/express/server.mjs", "examples/fastify/server.mjs", "examples/hono/server.mjs", "examples/next/route.mjs"]));
  });
  for (const [, file, code] of snippets) {
    it(`shows ${file} exactly as the tested example`, () => {
      expect(code!.trim()).toBe(readFileSync(join(ROOT, file!), "utf8").trim());
    });
  }
});
