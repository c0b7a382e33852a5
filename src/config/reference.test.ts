import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { configReference, undescribedKeys } from "./reference.js";

describe("docs/config.md", () => {
  it("is the reference the schema renders (run `npm run docs:config` after changing the schema)", () => {
    const file = readFileSync(join(import.meta.dirname, "../../docs/config.md"), "utf8");
    expect(file).toBe(configReference());
  });

  it("describes every key", () => {
    expect(undescribedKeys()).toEqual([]);
  });
});
