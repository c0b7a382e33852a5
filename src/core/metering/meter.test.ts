import { describe, expect, it, vi } from "vitest";
import { openaiChat } from "../../formats/openai-chat.js";
import { encoding } from "./encodings.js";
import { Meter } from "./meter.js";
import { countTextTokens, type Tokenizer } from "./tokens.js";

const body = { model: "m", stream: true, messages: [{ role: "user", content: "hi" }] };
const chunk = (content: string) => ({ data: JSON.stringify({ id: "c1", model: "m", choices: [{ index: 0, delta: { content } }] }) });
const words = "The quick brown fox jumps over the lazy dog, and then it naps in the sun for a while. ".split(/(?= )/);

function meter(tokenizer: Tokenizer, cap: number): Meter {
  return new Meter(openaiChat, openaiChat.inspect(body), tokenizer, cap);
}

describe("Meter on a stream", () => {
  it("does not tokenise an event while the output cannot reach the cap, and counts exactly at the end", () => {
    const enc = encoding("o200k_base");
    const spies = [vi.spyOn(enc, "chunkTokens"), vi.spyOn(enc, "count")];
    try {
      const m = meter("o200k_base", 4096);
      let text = "";
      for (let i = 0; i < 50; i++) {
        const word = words[i % words.length]!;
        text += word;
        expect(m.event(chunk(word)).forward).toBe(true);
      }
      expect(m.output).toBe(true);
      expect(m.firstTokenAt).toBeDefined();
      expect(spies.reduce((n, s) => n + s.mock.calls.length, 0)).toBe(0);
      expect(m.counted).toBe(countTextTokens(text, "o200k_base"));
      expect(m.ending.outputTokens).toBe(m.counted);
    } finally {
      for (const s of spies) s.mockRestore();
    }
  });

  for (const tokenizer of ["o200k_base", "cl100k_base", "llama"] as const) {
    it(`${tokenizer}: withholds exactly the event that would pass the cap`, () => {
      for (const cap of [1, 7, 30, 61]) {
        const m = meter(tokenizer, cap);
        let forwarded = "";
        let i = 0;
        for (; i < 500; i++) {
          const word = words[i % words.length]!;
          if (!m.event(chunk(word)).forward) break;
          forwarded += word;
        }
        expect(m.capped, `cap ${cap}`).toBe(true);
        const next = forwarded + words[i % words.length]!;
        if (tokenizer === "llama") {
          // A calibrated estimate cuts once its lowest reading (4/5 of it) passes the cap.
          expect(Math.floor((countTextTokens(forwarded, tokenizer) * 4) / 5)).toBeLessThanOrEqual(cap);
          expect(Math.floor((countTextTokens(next, tokenizer) * 4) / 5)).toBeGreaterThan(cap);
        } else {
          expect(countTextTokens(forwarded, tokenizer)).toBeLessThanOrEqual(cap);
          expect(countTextTokens(next, tokenizer)).toBeGreaterThan(cap);
        }
        expect(m.counted).toBeLessThanOrEqual(cap);
      }
    });
  }
});
