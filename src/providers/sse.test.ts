import { describe, expect, it } from "vitest";
import type { SseEvent } from "../core/format.js";
import { formatSse, parseSse, SseParser } from "./sse.js";

/** Feeds `text` cut at every given byte offset and returns the events. */
function parse(text: string | Buffer, cuts: number[] = [], raw = false): SseEvent[] {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const out: SseEvent[] = [];
  const p = new SseParser((e) => out.push(e), raw);
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

  it("reads a data line's value as the spec says: one leading space dropped, an empty or bare data line, a field that only starts with data", () => {
    const text = "data:\n\ndata: \n\ndata:  two\n\ndata\n\ndatax: no\ndata:a\ndata: b\n\n";
    const want = [{ data: "" }, { data: "" }, { data: " two" }, { data: "" }, { data: "a\nb" }];
    expect(parse(text)).toEqual(want);
    for (let cut = 1; cut < text.length; cut++) expect(parse(text, [cut])).toEqual(want);
  });

  it("skips comments, unknown fields and a leading BOM; drops an event the stream never finished", () => {
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(": hi\nid: 7\nretry: 10\ndata: x\n\ndata: cut off")]);
    expect(parse(bom)).toEqual([{ data: "x" }]);
    expect(parse(bom, [1, 2])).toEqual([{ data: "x" }]);
    expect(parse("event: ping\n\n")).toEqual([]);
  });

  it("keeps each event's bytes as they came, however the bytes are cut; a comment-only block is not kept", () => {
    const text = 'event: delta\r\ndata: {"t":"héllo 世界 🎉"}\r\n\r\n: keep-alive\n\ndata: line1\rid: 3\rdata: line2\r\r: ping\n\ndata:no-space\n\n';
    const kept = text.replace(": keep-alive\n\n", "").replace(": ping\n\n", "");
    const whole = Buffer.from(text);
    const n = whole.length;
    const cutsList = [[], ...Array.from({ length: n - 1 }, (_, i) => [i + 1]), Array.from({ length: n - 1 }, (_, i) => i + 1)];
    for (const cuts of cutsList) {
      const events = parse(text, cuts, true);
      expect(events.map(({ event, data }) => (event ? { event, data } : { data }))).toEqual(parse(text));
      const bytes = Buffer.concat(events.map((e) => e.raw!)).toString();
      // Exact, except that a read ending between CR and LF leaves that LF out (CR alone ends a line).
      const splitsCrLf = cuts.some((c) => whole[c - 1] === 13 && whole[c] === 10);
      if (splitsCrLf) expect(bytes.replace(/\r\n/g, "\r"), `cut at ${cuts.join(",")}`).toBe(kept.replace(/\r\n/g, "\r"));
      else expect(bytes, `cut at ${cuts.join(",")}`).toBe(kept);
      // Each event's bytes on their own are that event.
      for (const e of events) expect(parse(Buffer.from(e.raw!)).map((x) => x.data)).toEqual([e.data]);
    }
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("data: x\n\n")]);
    expect(Buffer.from(parse(bom, [1], true)[0]!.raw!).toString()).toBe("data: x\n\n");
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
