import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { ADMISSION, PREPARATION } from "./engine.js";

it("the gate lists are the order docs/lifecycle.md draws", () => {
  const doc = readFileSync(new URL("../../docs/lifecycle.md", import.meta.url), "utf8");
  // The numbered gates of the diagram: " 1 identify ───", " 2b challenge ───", " 5 model policy ───".
  const drawn = [...doc.matchAll(/^ (\d[a-z]?) ([a-z ]+?) ─/gm)].map((m) => m[2]!.replace(/ (\w)/g, (_, c: string) => c.toUpperCase()));
  const gates = [...ADMISSION, ...PREPARATION].map((gate) => gate.name);
  expect(drawn.slice(0, gates.length)).toEqual(gates);
  expect(drawn.slice(gates.length)).toEqual(["provider", "settle"]);
});
