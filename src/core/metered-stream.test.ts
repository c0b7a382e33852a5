import { describe, expect, it } from "vitest";
import { TollgateError } from "./errors.js";
import { meteredParts, meteredStream, type MeteredStreamHooks, type PartReader, type Terminal } from "./metered-stream.js";

/** A source whose parts arrive when the test says so, like a provider's stream. */
function source<T>() {
  const waiting: ((r: IteratorResult<T>) => void)[] = [];
  const failing: ((e: unknown) => void)[] = [];
  let returned = 0;
  // The stream pulls on its own schedule: a part is handed over once it has asked for one.
  const pulled = async () => {
    while (!waiting.length) await tick();
  };
  const it: AsyncIterator<T> = {
    next: () => new Promise<IteratorResult<T>>((resolve, reject) => (waiting.push(resolve), failing.push(reject))),
    async return() {
      returned++;
      return { done: true, value: undefined };
    },
  };
  return {
    it,
    push: async (value: T) => (await pulled(), failing.shift(), waiting.shift()!({ done: false, value })),
    done: async () => (await pulled(), failing.shift(), waiting.shift()!({ done: true, value: undefined })),
    fail: async (err: unknown) => (await pulled(), waiting.shift(), failing.shift()!(err)),
    get returned() {
      return returned;
    },
    get pending() {
      return waiting.length;
    },
  };
}

/** The part reader (the relay's) read a part at a time, as a ReadableStream reader would be. */
function partByPart(parts: PartReader<string>) {
  let held: string[] = [];
  return {
    async read(): Promise<IteratorResult<string, undefined>> {
      while (!held.length) {
        const next = await parts.read();
        if (next === undefined) return { done: true, value: undefined };
        expect(next.length).toBeGreaterThan(0);
        held = next;
      }
      return { done: false, value: held.shift()! };
    },
    cancel: () => parts.cancel(),
  };
}

type Kind = "ReadableStream" | "part reader";

function harness(hooks: Partial<MeteredStreamHooks<string>> = {}, kind: Kind = "ReadableStream") {
  const src = source<string>();
  const settles: Terminal[] = [];
  const stops: Terminal[] = [];
  const open = (s: AsyncIterator<string>, h: MeteredStreamHooks<string>) => (kind === "ReadableStream" ? meteredStream(s, h).getReader() : partByPart(meteredParts(s, h)));
  const reader = open(src.it, {
    read: (p) => (p === "CAP" ? { end: { ended: "output_cap" } } : p === "TOOL" ? { end: { ended: "refused", error: new TollgateError("run_limit_exceeded", "max_tool_calls") } } : { forward: [p] }),
    settle: async (t) => void settles.push(t),
    stop: (t) => void stops.push(t),
    tail: (t) => (t.error ? [`error:${t.error.code}`] : t.ended === "output_cap" ? ["finish:length"] : []),
    ...hooks,
  });
  return { src, settles, stops, reader };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe.each(["ReadableStream", "part reader"] as const)("meteredStream (%s): exactly one terminal event", (kind) => {
  it("settles a complete stream once, and a cancel after the end does nothing", async () => {
    const { src, settles, stops, reader } = harness({}, kind);
    const read = reader.read();
    await src.push("a");
    expect(await read).toEqual({ done: false, value: "a" });
    const last = reader.read();
    await src.done();
    expect(await last).toEqual({ done: true, value: undefined });
    await reader.cancel();
    expect(settles).toEqual([{ ended: "complete" }]);
    expect(stops).toEqual([]);
  });

  it("a client leaving while a read is pending settles once as client_disconnect, and the late part is dropped", async () => {
    const { src, settles, stops, reader } = harness({}, kind);
    void reader.read().catch(() => {});
    await tick();
    await reader.cancel();
    await src.push("late");
    await tick();
    expect(settles).toEqual([{ ended: "client_disconnect" }]);
    expect(stops).toHaveLength(1);
    expect(src.returned).toBe(1);
  });

  it("a refusal mid-stream ends it with an error part, never an exception, and settles once", async () => {
    const { src, settles, reader } = harness({}, kind);
    const first = reader.read();
    await src.push("TOOL");
    expect(await first).toEqual({ done: false, value: "error:run_limit_exceeded" });
    expect(await reader.read()).toEqual({ done: true, value: undefined });
    await reader.cancel();
    expect(settles.map((s) => [s.ended, s.error?.code])).toEqual([["refused", "run_limit_exceeded"]]);
  });

  it("the output cap stops the provider, closes with the cap's tail and settles once", async () => {
    const { src, settles, stops, reader } = harness({}, kind);
    const first = reader.read();
    await src.push("CAP");
    expect(await first).toEqual({ done: false, value: "finish:length" });
    expect(await reader.read()).toEqual({ done: true, value: undefined });
    expect(settles).toEqual([{ ended: "output_cap" }]);
    expect(stops).toEqual([{ ended: "output_cap" }]);
    expect(src.returned).toBe(1);
  });

  it("a batch that reaches the cap partway passes on the parts before it, then the cap's tail", async () => {
    const { src, settles, reader } = harness({
      read: (p) => {
        const parts = p.split(",");
        const cap = parts.indexOf("CAP");
        return cap < 0 ? { forward: parts } : { end: { ended: "output_cap" }, forward: parts.slice(0, cap) };
      },
    }, kind);
    const got: string[] = [];
    const reading = (async () => {
      for (let r = await reader.read(); !r.done; r = await reader.read()) got.push(r.value);
    })();
    await src.push("a,b");
    await src.push("c,CAP,d");
    await reading;
    expect(got).toEqual(["a", "b", "c", "finish:length"]);
    expect(settles).toEqual([{ ended: "output_cap" }]);
    expect(src.returned).toBe(1);
  });

  it("a provider failure after the request was aborted is named by the abort's reason", async () => {
    const abort = new AbortController();
    const { src, settles, reader } = harness({ signal: abort.signal }, kind);
    const first = reader.read();
    abort.abort({ tollgate: "timeout" });
    await src.fail(new Error("socket hang up"));
    expect(await first).toEqual({ done: true, value: undefined });
    expect(settles).toEqual([{ ended: "timeout" }]);
  });

  it("a provider failure ends as upstream_error with an error part", async () => {
    const { src, settles, reader } = harness({}, kind);
    const first = reader.read();
    await src.fail(new Error("socket hang up"));
    expect(await first).toEqual({ done: false, value: "error:upstream_error" });
    expect(settles.map((s) => s.ended)).toEqual(["upstream_error"]);
  });

  it("racing terminals (cancel, cap and end together) still settle exactly once", async () => {
    for (let i = 0; i < 20; i++) {
      const { src, settles, reader } = harness({}, kind);
      const read = reader.read().catch(() => undefined);
      await src.push("CAP");
      await Promise.all([reader.cancel(), read]);
      expect(settles).toHaveLength(1);
    }
  });

  it("parts that are metered but not passed on (a usage chunk the caller did not ask for) do not stall the stream", async () => {
    const { src, settles, reader } = harness({ read: (p) => ({ forward: p === "usage" ? [] : [p] }) }, kind);
    const read = reader.read();
    await src.push("usage");
    await src.push("a");
    const stalled = new Promise((r) => setTimeout(() => r("stalled"), 500));
    expect(await Promise.race([read, stalled])).toEqual({ done: false, value: "a" });
    const last = reader.read();
    await src.push("usage");
    await src.done();
    expect(await Promise.race([last, stalled])).toEqual({ done: true, value: undefined });
    expect(settles).toEqual([{ ended: "complete" }]);
  });

  it("a reader that gives up because the request's signal fired (a timeout while it waited to write) settles with that reason", async () => {
    const abort = new AbortController();
    const { src, settles, stops, reader } = harness({ signal: abort.signal }, kind);
    const first = reader.read();
    await src.push("a");
    await first;
    abort.abort({ tollgate: "timeout" });
    await reader.cancel();
    expect(settles).toEqual([{ ended: "timeout" }]);
    expect(stops).toHaveLength(1);
  });
});
