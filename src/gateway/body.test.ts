import { createServer, type IncomingMessage } from "node:http";
import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { MAX_JSON_DEPTH, parseJson, readBody } from "./body.js";

/**
 * What readBody makes of a raw HTTP request sent in `pieces` (each written after the server saw
 * the previous one), after `settle` ms: the whole body, or the refusal's code.
 */
async function readFrom(pieces: string[], maxBytes: number, settle = 0): Promise<string> {
  let got!: (r: string) => void;
  const result = new Promise<string>((r) => (got = r));
  const server = createServer((req: IncomingMessage, res) => {
    // A body that came with its headers is whole by the time the gateway reads it.
    setTimeout(() => {
      readBody(req, maxBytes, 2_000).then(
        (b) => got(b.toString()),
        (err: TollgateError) => got(`refused: ${err.code}`),
      );
      res.end();
    }, settle);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const socket = connect((server.address() as { port: number }).port, "127.0.0.1");
  for (const p of pieces) {
    socket.write(p);
    await new Promise((r) => setTimeout(r, 20));
  }
  try {
    return await result;
  } finally {
    socket.destroy();
    server.close();
  }
}

const refused = (text: string) => {
  try {
    parseJson(Buffer.from(text));
  } catch (err) {
    expect(TollgateError.is(err)).toBe(true);
    return err as TollgateError;
  }
  throw new Error("expected a refusal");
};

describe("parseJson", () => {
  it("parses ordinary bodies, including keys repeated in different objects", () => {
    expect(parseJson(Buffer.from('{"a":[{"x":1},{"x":2}],"b":"{\\"a\\":1,\\"a\\":2}"}'))).toEqual({ a: [{ x: 1 }, { x: 2 }], b: '{"a":1,"a":2}' });
  });
  it("refuses duplicate keys, also when one is escaped", () => {
    expect(refused('{"max_tokens":10,"max_tokens":100000}').message).toMatch(/repeats the key "max_tokens"/);
    expect(refused('{"model":"a","mod\\u0065l":"b"}').code).toBe("invalid_request");
    expect(refused('{"m":[{"a":1,"b":{"c":1,"c":2}}]}').param).toBe("c");
  });
  it("refuses numbers JSON cannot hold", () => {
    expect(refused('{"temperature":1e400}').param).toBe("temperature");
    expect(refused('{"x":[1,-1e999]}').param).toBe("x[1]");
    expect(refused('{"messages":[{"content":"a"},{"content":[{"n":1},{"n":1e999}]}]}').param).toBe("messages[1].content[1].n");
    expect(refused('[{"a":{"b":[1e999]}}]').param).toBe("body[0].a.b[0]");
  });
  it("refuses deep nesting before JSON.parse recurses", () => {
    expect(refused("[".repeat(100_000) + "]".repeat(100_000)).message).toMatch(/nests deeper/);
    expect(() => parseJson(Buffer.from("[".repeat(MAX_JSON_DEPTH) + "]".repeat(MAX_JSON_DEPTH)))).not.toThrow();
  });
  it("refuses a lone surrogate escape anywhere, and keeps a real pair", () => {
    for (const body of ['{"c":"a\\ud800b"}', '{"c":"\\udfff"}', '{"c":"\\ud800"}', '{"c":"\\ud800\\u0041"}', '{"c":"\\ude00\\ud83d"}', '{"k\\udc00":1}', '["\\uD800x"]']) {
      expect(refused(body).message, body).toMatch(/lone UTF-16 surrogate/);
    }
    expect(parseJson(Buffer.from('{"c":"\\ud83d\\ude00 \\\\ud800"}'))).toEqual({ c: "\u{1F600} \\ud800" });
    expect(parseJson(Buffer.from('{"c":"\\u00e9\\n"}'))).toEqual({ c: "é\n" });
  });
  it("refuses bytes that are not UTF-8 instead of replacing them", () => {
    const bad = Buffer.concat([Buffer.from('{"c":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('b"}')]);
    expect(() => parseJson(bad)).toThrow(/not valid UTF-8/);
    // A surrogate encoded as UTF-8 bytes (CESU-8) is not UTF-8 either.
    const cesu = Buffer.concat([Buffer.from('{"c":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]);
    expect(() => parseJson(cesu)).toThrow(/not valid UTF-8/);
    expect(parseJson(Buffer.from('{"c":"héllo 😀"}'))).toEqual({ c: "héllo 😀" });
  });
  it("refuses malformed JSON", () => {
    expect(refused('{"a":').message).toMatch(/not valid JSON/);
  });
});

describe("readBody", () => {
  const head = (len: number) => `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${len}\r\n\r\n`;
  const chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  it("reads a body that came with its headers, and one that came in pieces, the same", async () => {
    const body = '{"model":"m","messages":[{"role":"user","content":"héllo"}]}';
    const len = Buffer.byteLength(body);
    expect(await readFrom([head(len) + body], 1_000, 30)).toBe(body);
    expect(await readFrom([head(len) + body.slice(0, 10), body.slice(10)], 1_000)).toBe(body);
    expect(await readFrom([chunked + "5\r\nab\"cd\r\n3\r\nefg\r\n0\r\n\r\n"], 1_000, 30)).toBe('ab"cdefg');
    expect(await readFrom([head(0)], 1_000, 30)).toBe("");
  });
  it("takes a Content-Length body that is all buffered at once, before node marks the request complete", async () => {
    const body = '{"model":"m","messages":[{"role":"user","content":"héllo"}]}';
    let seen!: (r: { complete: boolean; listeners: number; flowing: boolean | null; text: string }) => void;
    const result = new Promise<{ complete: boolean; listeners: number; flowing: boolean | null; text: string }>((r) => (seen = r));
    const server = createServer(async (req, res) => {
      // The gateway reads the body after the first gates, a few promise jobs after the headers.
      await null;
      const complete = req.complete;
      const reading = readBody(req, 1_000, 2_000);
      const listeners = req.listenerCount("data") + req.listenerCount("end");
      const flowing = req.readableFlowing;
      seen({ complete, listeners, flowing, text: (await reading).toString() });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const socket = connect((server.address() as { port: number }).port, "127.0.0.1");
    socket.write(head(Buffer.byteLength(body)) + body);
    try {
      const r = await result;
      // node sets `complete` a turn later; the bytes were all there.
      expect(r.complete).toBe(false);
      expect(r).toMatchObject({ listeners: 0, flowing: null, text: body });
    } finally {
      socket.destroy();
      server.close();
    }
  });
  it("refuses a chunked body over the cap however it arrived", async () => {
    const big = "a".repeat(100);
    const pieces = [chunked + `64\r\n${big}\r\n0\r\n\r\n`];
    expect(await readFrom(pieces, 50, 30)).toBe("refused: input_too_large");
    expect(await readFrom([chunked, `64\r\n${big}\r\n0\r\n\r\n`], 50)).toBe("refused: input_too_large");
  });
});
