import { describe, expect, it } from "vitest";
import type { SseEvent } from "../core/format.js";
import { formatSse, parseSse, SseParser } from "./sse.js";

/** Feeds `text` cut at every given byte offset and returns the events. */
function parse(text: string | Buffer, cuts: number[] = []): SseEvent[] {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const out: SseEvent[] = [];
  const p = new SseParser((e) => out.push(e));
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    p.feed(bytes.subarray(at, c));
    at = c;
  }
  return out;
}

describe("SseParser", () => {
  it("reads OpenAI-style data events and Anthropic-style named events", () => {
    expect(parse('data: {"a":1}\n\ndata: [DONE]\n\n')).toEqual([{ data: '{"a":1}' }, { data: "[DONE]" }]);
    expect(parse("event: message_start\ndata: {}\n\n")).toEqual([{ event: "message_start", data: "{}" }]);
  });

  it("gives the same events however the bytes are cut, with CRLF, lone CR and multi-byte text", () => {
    const text = 'event: delta\r\ndata: {"t":"héllo 世界 🎉"}\r\n\r\ndata: line1\rdata: line2\r\r: keep-alive\n\ndata:no-space\n\n';
    const whole = parse(text);
    expect(whole).toEqual([{ event: "delta", data: '{"t":"héllo 世界 🎉"}' }, { data: "line1\nline2" }, { data: "no-space" }]);
    const n = Buffer.byteLength(text);
    for (let cut = 1; cut < n; cut++) expect(parse(text, [cut])).toEqual(whole);
    expect(parse(text, Array.from({ length: n - 1 }, (_, i) => i + 1))).toEqual(whole);
  });

  it("skips comments, unknown fields and a leading BOM; drops an event the stream never finished", () => {
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(": hi\nid: 7\nretry: 10\ndata: x\n\ndata: cut off")]);
    expect(parse(bom)).toEqual([{ data: "x" }]);
    expect(parse(bom, [1, 2])).toEqual([{ data: "x" }]);
    expect(parse("event: ping\n\n")).toEqual([]);
  });

  it("round-trips what formatSse writes, multi-line data included", async () => {
    const events: SseEvent[] = [{ data: "a\nb" }, { event: "x", data: "" }];
    async function* body() {
      for (const e of events) yield formatSse(e);
    }
    const got: SseEvent[] = [];
    for await (const e of parseSse(body())) got.push(e);
    expect(got).toEqual(events);
  });
});
