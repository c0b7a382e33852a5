import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { MAX_JSON_DEPTH, parseJson } from "./body.js";

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
