import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { ADMISSION, PREPARATION } from "./engine.js";

it("the gate lists are the order docs/lifecycle.md draws", () => {
  const doc = readFileSync(new URL("../../docs/lifecycle.md", import.meta.url), "utf8");
  // The numbered gates of the diagram: " 1 identify ───", " 5 model policy ───".
  const drawn = [...doc.matchAll(/^ (\d) ([a-z ]+?) ─/gm)].map((m) => m[2]!.replace(/ (\w)/g, (_, c: string) => c.toUpperCase()));
  expect(drawn.slice(0, 6)).toEqual([...ADMISSION, ...PREPARATION].map((gate) => gate.name));
  expect(drawn.slice(6)).toEqual(["provider", "settle"]);
});
