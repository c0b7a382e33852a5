import { Command } from "ioredis";
import { describe, expect, it } from "vitest";
import { encodeScriptCall } from "./resp.js";

/** What ioredis itself writes for the same call: the reference the store's own encoding must match byte for byte. */
function ioredisBytes(name: string, script: string, keys: string[], args: string[]): Buffer {
  const command = new Command(name, [script, String(keys.length), ...keys, ...args]);
  return Buffer.from(command.toWritable({}) as string, "utf8");
}

describe("encodeScriptCall", () => {
  it("writes the bytes ioredis would, for every kind of argument", () => {
    const long = "x".repeat(64) + "é";
    const record = JSON.stringify({ user: "zoë 🚀", note: "line\r\nbreak", n: 1.5e-7 });
    const keys = ["tg:{tollgate}:c:limit:main:user:ü:requests:60000", "", "k".repeat(65), "a\r\nb"];
    const args = ["60000", "", "r", "0", "9", "10", "1765137660000", "-1", long, record, "ascii only but longer than sixty-four characters, so Buffer writes it", "\u0000\u007f\u0080"];
    const got = encodeScriptCall("evalsha", "f".repeat(40), keys, args);
    expect(got.equals(ioredisBytes("evalsha", "f".repeat(40), keys, args))).toBe(true);
  });

  it("counts past nine arguments and lengths past nine bytes, and keeps one call's bytes when the next is encoded", () => {
    const args = Array.from({ length: 1234 }, (_, i) => "v".repeat(i % 130));
    const first = encodeScriptCall("eval", "return 1", ["a"], args);
    const copy = Buffer.from(first);
    const second = encodeScriptCall("eval", "return 2", ["b"], ["different"]);
    expect(first.equals(copy)).toBe(true);
    expect(first.equals(ioredisBytes("eval", "return 1", ["a"], args))).toBe(true);
    expect(second.equals(ioredisBytes("eval", "return 2", ["b"], ["different"]))).toBe(true);
  });

  it("grows past its scratch buffer for a call larger than 64 KB", () => {
    const big = ["é".repeat(40_000), "y".repeat(70_000)];
    expect(encodeScriptCall("evalsha", "s", [], big).equals(ioredisBytes("evalsha", "s", [], big))).toBe(true);
  });
});
