import { describe, expect, it } from "vitest";
import { abortSignalOf, Cancel } from "./cancel.js";

describe("Cancel", () => {
  it("runs each listener once, in order, with the reason readable, like an AbortSignal", () => {
    for (const make of [() => new Cancel(), () => new AbortController()]) {
      const c = make();
      const signal = c instanceof Cancel ? c : c.signal;
      const seen: string[] = [];
      const a = () => seen.push(`a:${(signal.reason as { why: string }).why}`);
      const b = () => seen.push("b");
      const gone = () => seen.push("removed");
      signal.addEventListener("abort", a);
      signal.addEventListener("abort", gone);
      signal.addEventListener("abort", b);
      signal.removeEventListener("abort", gone);
      expect(() => signal.throwIfAborted()).not.toThrow();
      c.abort({ why: "client" });
      c.abort({ why: "again" });
      expect(seen).toEqual(["a:client", "b"]);
      expect(signal.aborted).toBe(true);
      expect(() => signal.throwIfAborted()).toThrow(expect.objectContaining({ why: "client" }));
      signal.addEventListener("abort", a);
      expect(seen).toHaveLength(2);
    }
  });

  it("hands a real AbortSignal that follows it, before or after the abort", () => {
    const before = new Cancel();
    const signal = abortSignalOf(before);
    expect(signal).toBeInstanceOf(AbortSignal);
    before.abort({ tollgate: "timeout" });
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toEqual({ tollgate: "timeout" });
    const after = new Cancel();
    after.abort({ tollgate: "client_disconnect" });
    expect(abortSignalOf(after).reason).toEqual({ tollgate: "client_disconnect" });
    const plain = new AbortController().signal;
    expect(abortSignalOf(plain)).toBe(plain);
  });

  it("forgets a single listener removed before the abort", () => {
    const c = new Cancel();
    let runs = 0;
    const f = () => runs++;
    c.addEventListener("abort", f);
    c.removeEventListener("abort", f);
    c.abort("x");
    expect(runs).toBe(0);
  });
});
