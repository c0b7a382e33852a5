import { describe, expect, it, vi } from "vitest";
import * as cl100k from "gpt-tokenizer/encoding/cl100k_base";
import * as o200k from "gpt-tokenizer/encoding/o200k_base";
import { CL100K_TOKEN_SPLIT_REGEX, O200K_TOKEN_SPLIT_REGEX } from "gpt-tokenizer/encodingParams/constants";
import { countChatCompletionTokens } from "gpt-tokenizer/model/gpt-4o";
import {
  type Attachment,
  type PromptShape,
  type TokenizerName,
  boundingTokenizer,
  countTextTokens,
  createTokenCounter,
  estimateInputTokens,
  findStableCut,
  openAiImageTiles,
  tokenizerFor,
} from "./tokens.js";
import { COUNT_CACHE_MAX_ENTRIES, countCacheSize, encoding } from "./encodings.js";

const PLAIN = { disallowedSpecial: new Set<string>() };
const trueO200k = (s: string) => o200k.countTokens(s, PLAIN);
const trueCl100k = (s: string) => cl100k.countTokens(s, PLAIN);

function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

const SAMPLES: Record<string, string> = {
  english:
    "The quick brown fox jumps over the lazy dog. It's a test, isn't it? We'll see what they've done; I'd say it's fine. " +
    "Budgets, reservations and settlements: the gateway holds the worst case before each request.",
  code:
    "function foo(bar: number[]): number {\n  return bar.map((x) => x * 2).filter(Boolean).reduce((a, b) => a + b, 0);\n}\n\n" +
    "const y = foo([1, 2, 3]); // => 12\nif (y !== 12) throw new Error(`bad: ${y}`);\n\tdef f(x):\n\t\treturn {'k': [x, None]}\n",
  cjk: "日本語のテキストです。東京は晴れ、気温は二十度。中文文本测试，这是一个句子。한국어 텍스트입니다. 漢字とカタカナ（カタカナ）。",
  emoji: "👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽 thumbs 🧑🏿‍💻 coder 🇯🇵🇺🇸 ❤️‍🔥 🫶🏻 e\u0301 a\u0308 \u{1D400}\u{1D41A}",
  whitespace: "a          b\n\n\n\n   \t\t  c      \n" + " ".repeat(300) + "\n".repeat(40) + "\t".repeat(50) + "end   \r\n\r\n  ",
  mixed:
    "Price: $1,234.56 (≈ €1.100,00) — 50% off!! <|endoftext|> <|im_start|>user\nÜber straße naïve café résumé ΑΒΓ αβγ Привет мир " +
    "https://example.com/a/b?c=d&e=f#g 0xDEADBEEF 3.14159e-10 ```json\n{\"a\":[1,2,{\"b\":null}]}\n```",
  numbers: "1234567890123456789012345678901234567890 98765 4321 000000 1.2.3.4 127.0.0.1",
};

/** Random text from fragments of every sample, so boundaries between scripts are exercised too. */
function variedText(r: (n: number) => number, length: number): string {
  const pool = Object.values(SAMPLES);
  let out = "";
  while (out.length < length) {
    const src = pool[r(pool.length)]!;
    const start = r(src.length);
    out += src.slice(start, start + 1 + r(60));
  }
  return out;
}

/** The exact billed count of a chat in the gpt-4o format, per gpt-tokenizer's chat encoder. */
function chatO200k(messages: { role: string; text: string }[]): number {
  return o200k.encodeChat(
    messages.map((m) => ({ role: m.role, content: m.text })),
    "gpt-4o",
    PLAIN,
  ).length;
}
function chatCl100k(messages: { role: string; text: string }[]): number {
  // gpt-3.5's format ("\n" separators) is the longer of the two cl100k chat formats.
  return cl100k.encodeChat(
    messages.map((m) => ({ role: m.role, content: m.text })),
    "gpt-3.5-turbo",
    PLAIN,
  ).length;
}

const shape = (messages: { role: string; text: string }[], toolDefinitions: string[] = [], attachments: Attachment[] = []): PromptShape => ({
  messages,
  toolDefinitions,
  attachments,
});

describe("tokenizerFor", () => {
  it("maps OpenAI families (and gpt-oss) to their encodings and other families to a calibration", () => {
    const cases: [string, TokenizerName][] = [
      ["gpt-4o", "o200k_base"],
      ["gpt-4o-mini-2024-07-18", "o200k_base"],
      ["gpt-4.1-nano", "o200k_base"],
      ["gpt-5", "o200k_base"],
      ["gpt-5-mini", "o200k_base"],
      ["o1", "o200k_base"],
      ["o3-mini", "o200k_base"],
      ["o4-mini", "o200k_base"],
      ["chatgpt-4o-latest", "o200k_base"],
      ["openai/gpt-4o", "o200k_base"],
      ["GPT-4o", "o200k_base"],
      ["gpt-4", "cl100k_base"],
      ["gpt-4-turbo", "cl100k_base"],
      ["gpt-4-0613", "cl100k_base"],
      ["gpt-3.5-turbo", "cl100k_base"],
      ["text-embedding-3-small", "cl100k_base"],
      ["text-embedding-ada-002", "cl100k_base"],
      ["gpt-oss-120b", "o200k_base"],
      ["openai/gpt-oss-20b", "o200k_base"],
      ["claude-sonnet-4-20250514", "claude"],
      ["anthropic/claude-3-5-haiku", "claude"],
      ["gemini-2.5-pro", "gemini"],
      ["models/gemini-2.0-flash", "gemini"],
      ["gemma-3-27b-it", "gemini"],
      ["meta-llama/Llama-3.3-70B-Instruct", "llama"],
      ["my-azure-deployment", "llama"],
      ["", "llama"],
    ];
    for (const [model, expected] of cases) expect(tokenizerFor(model), model).toBe(expected);
  });

  it("bounds reservations with bytes wherever the count is a calibrated estimate", () => {
    expect(boundingTokenizer("o200k_base")).toBe("o200k_base");
    expect(boundingTokenizer("cl100k_base")).toBe("cl100k_base");
    for (const t of ["claude", "gemini", "llama"] as const) expect(boundingTokenizer(t)).toBe("bytes");
  });
});

describe("countTextTokens", () => {
  it("matches the tokenizer exactly and treats special-token text as plain text", () => {
    for (const [name, text] of Object.entries(SAMPLES)) {
      if (name === "whitespace") continue; // has a 300-space chunk: see the next test
      expect(countTextTokens(text, "o200k_base"), name).toBe(trueO200k(text));
      expect(countTextTokens(text, "cl100k_base"), name).toBe(trueCl100k(text));
      expect(countTextTokens(text, "bytes"), name).toBe(Buffer.byteLength(text));
    }
    const r = rng(1);
    for (let trial = 0; trial < 200; trial++) {
      const text = variedText(r, 50 + r(500)).replace(/ {20,}|\n{20,}|\t{20,}/g, " ");
      expect(countTextTokens(text, "o200k_base")).toBe(trueO200k(text));
      expect(countTextTokens(text, "cl100k_base")).toBe(trueCl100k(text));
    }
    expect(() => countTextTokens("<|endoftext|>", "o200k_base")).not.toThrow();
    expect(countTextTokens("", "o200k_base")).toBe(0);
  });

  it("counts chunks longer than LONG_CHUNK_CHARS as bytes: a bound, in linear time", () => {
    const ws = SAMPLES.whitespace!;
    expect(countTextTokens(ws, "o200k_base")).toBeGreaterThan(trueO200k(ws));
    expect(countTextTokens(ws, "cl100k_base")).toBeGreaterThan(trueCl100k(ws));
    for (const unit of ["語", "👍", "a", "!?", "Ab", "\u0301"]) {
      const small = unit.repeat(Math.ceil(3000 / unit.length));
      expect(countTextTokens(small, "o200k_base"), unit).toBeGreaterThanOrEqual(trueO200k(small));
      expect(countTextTokens(small, "cl100k_base"), unit).toBeGreaterThanOrEqual(trueCl100k(small));
      // gpt-tokenizer alone needs seconds for these; we must not.
      const huge = unit.repeat(Math.ceil(200_000 / unit.length));
      const t0 = performance.now();
      expect(countTextTokens(huge, "o200k_base")).toBeLessThanOrEqual(Buffer.byteLength(huge));
      expect(countTextTokens(`x ${huge}`, "cl100k_base")).toBeLessThanOrEqual(Buffer.byteLength(huge) + 2);
      expect(performance.now() - t0, unit).toBeLessThan(1000);
    }
  });

  it("gives the same answer from its cache", () => {
    const long = SAMPLES.english!.repeat(10);
    const first = countTextTokens(long, "o200k_base");
    expect(countTextTokens(`${long}`, "o200k_base")).toBe(first);
    expect(first).toBe(trueO200k(long));
  });

  it("counts a repeated short text once, and the cached count is the exact one", () => {
    // A system prompt of a few words, sent with every request: fresh strings each time, as JSON.parse gives.
    const prompt = ["You are a", "helpful assistant that", "answers in one sentence."].join(" ");
    const enc = encoding("o200k_base");
    const spy = vi.spyOn(enc, "count");
    try {
      const counts = [0, 1, 2].map(() => countTextTokens(JSON.parse(JSON.stringify(prompt)) as string, "o200k_base"));
      expect(counts).toEqual([trueO200k(prompt), trueO200k(prompt), trueO200k(prompt)]);
      expect(spy).toHaveBeenCalledTimes(1);
    } finally {
      spy.mockRestore();
    }
  });

  it("holds a bounded number of counts however many distinct texts it sees", () => {
    for (let i = 0; i < COUNT_CACHE_MAX_ENTRIES * 3; i++) {
      const text = `message number ${i} of many`;
      expect(countTextTokens(text, "cl100k_base")).toBe(trueCl100k(text));
    }
    expect(countCacheSize("cl100k_base")).toBeLessThanOrEqual(COUNT_CACHE_MAX_ENTRIES * 2);
    // A text still in use survives the turnover of generations.
    const kept = "the instructions every request carries";
    const enc = encoding("cl100k_base");
    const spy = vi.spyOn(enc, "count");
    try {
      for (let i = 0; i < COUNT_CACHE_MAX_ENTRIES * 3; i++) {
        countTextTokens(kept, "cl100k_base");
        countTextTokens(`another message ${i}`, "cl100k_base");
      }
      expect(spy.mock.calls.filter(([t]) => t === kept)).toHaveLength(1);
    } finally {
      spy.mockRestore();
    }
  });

  it("bytes bound both BPE encodings on every sample", () => {
    for (const text of Object.values(SAMPLES)) {
      expect(Buffer.byteLength(text)).toBeGreaterThanOrEqual(trueO200k(text));
      expect(Buffer.byteLength(text)).toBeGreaterThanOrEqual(trueCl100k(text));
    }
  });
});

describe("estimateInputTokens", () => {
  const roles = ["system", "developer", "user", "assistant", "tool"];

  it("is at least the billed count of each sample as a chat", () => {
    for (const [name, text] of Object.entries(SAMPLES)) {
      const msgs = [
        { role: "system", text: "You are a helpful assistant." },
        { role: "user", text },
      ];
      const est = estimateInputTokens(shape(msgs), "o200k_base");
      expect(est, name).toBeGreaterThanOrEqual(chatO200k(msgs));
      expect(estimateInputTokens(shape(msgs), "cl100k_base"), name).toBeGreaterThanOrEqual(chatCl100k(msgs));
      const bytes = estimateInputTokens(shape(msgs), "bytes");
      expect(bytes, name).toBeGreaterThanOrEqual(chatO200k(msgs));
      expect(bytes, name).toBeGreaterThanOrEqual(chatCl100k(msgs));
    }
  });

  it("bounds random conversations of varied text", () => {
    const r = rng(7);
    for (let trial = 0; trial < 150; trial++) {
      const msgs = Array.from({ length: 1 + r(8) }, () => ({ role: roles[r(roles.length)]!, text: variedText(r, r(400)) }));
      const o = chatO200k(msgs);
      const c = chatCl100k(msgs);
      expect(estimateInputTokens(shape(msgs), "o200k_base")).toBeGreaterThanOrEqual(o);
      expect(estimateInputTokens(shape(msgs), "cl100k_base")).toBeGreaterThanOrEqual(c);
      const bytes = estimateInputTokens(shape(msgs), "bytes");
      expect(bytes).toBeGreaterThanOrEqual(o);
      expect(bytes).toBeGreaterThanOrEqual(c);
    }
  });

  it("handles empty messages and an empty prompt", () => {
    expect(estimateInputTokens(shape([]), "o200k_base")).toBeGreaterThanOrEqual(3);
    const msgs = [{ role: "user", text: "" }];
    expect(estimateInputTokens(shape(msgs), "o200k_base")).toBeGreaterThanOrEqual(chatO200k(msgs));
  });

  it("bounds tool definitions as OpenAI renders them", () => {
    const fns = [
      { name: "f" },
      { name: "get_time", description: "Current time." },
      {
        name: "get_weather",
        description: "Get the weather for a city",
        parameters: {
          type: "object" as const,
          properties: {
            city: { type: "string" as const, description: "City name" },
            unit: { type: "string" as const, enum: ["c", "f"] },
            days: { type: "integer" as const, minimum: 1, maximum: 14 },
            hourly: { type: "boolean" as const },
            tags: { type: "array" as const, items: { type: "string" as const } },
            where: {
              type: "object" as const,
              properties: { lat: { type: "number" as const }, lon: { type: "number" as const }, label: { type: "string" as const, description: "Shown to the user" } },
              required: ["lat", "lon"],
            },
          },
          required: ["city"],
        },
      },
    ];
    const msgs = [
      { role: "system", text: "Use tools when helpful." },
      { role: "user", text: "What's the weather in Paris?" },
    ];
    for (let n = 1; n <= fns.length; n++) {
      const subset = fns.slice(0, n);
      const billed = countChatCompletionTokens!({
        messages: msgs.map((m) => ({ role: m.role, content: m.text })),
        functions: subset,
      });
      const defs = subset.map((f) => JSON.stringify({ type: "function", function: f }));
      expect(estimateInputTokens(shape(msgs, defs), "o200k_base")).toBeGreaterThanOrEqual(billed);
      // Even the bare `function` object, without the {"type":"function"} wrapper.
      expect(estimateInputTokens(shape(msgs, subset.map((f) => JSON.stringify(f))), "o200k_base")).toBeGreaterThanOrEqual(billed);
    }
  });

  it("adds Anthropic's hidden tool-use prompt for bytes models", () => {
    const msgs = [{ role: "user", text: "hi" }];
    const without = estimateInputTokens(shape(msgs), "bytes");
    const withTool = estimateInputTokens(shape(msgs, ['{"name":"f","input_schema":{"type":"object"}}']), "bytes");
    expect(withTool - without).toBeGreaterThanOrEqual(346);
  });
});

describe("images", () => {
  const image = (width?: number, height?: number, detail?: Attachment["detail"]): Attachment => ({ kind: "image", bytes: 0, width, height, detail });
  const imageCost = (a: Attachment, tokenizer: TokenizerName, model?: string) =>
    estimateInputTokens(shape([], [], [a]), tokenizer, model) - estimateInputTokens(shape([]), tokenizer, model);

  it("reproduces OpenAI's documented tile examples", () => {
    expect(openAiImageTiles(1024, 1024)).toBe(4); // 765 tokens
    expect(openAiImageTiles(2048, 4096)).toBe(6); // 1105 tokens
    expect(openAiImageTiles(2048, 768)).toBe(8); // the maximum
    expect(openAiImageTiles(512, 512)).toBe(1);
    expect(openAiImageTiles(513, 512)).toBe(2);
    expect(openAiImageTiles(4096, 1024)).toBe(4); // 2048x512 after fitting
    expect(openAiImageTiles(10_000, 10)).toBe(4);
  });

  it("never needs more than 8 tiles", () => {
    let max = 0;
    for (let w = 64; w <= 6000; w += 37) for (let h = 64; h <= 6000; h += 53) max = Math.max(max, openAiImageTiles(w, h));
    expect(max).toBe(8);
  });

  it("prices by model when the model is known", () => {
    expect(imageCost(image(1024, 1024), "o200k_base", "gpt-4o")).toBe(8 + 85 + 170 * 4);
    expect(imageCost(image(1024, 1024, "low"), "o200k_base", "gpt-4o")).toBe(8 + 85);
    expect(imageCost(image(), "o200k_base", "gpt-4o")).toBe(8 + 85 + 170 * 8); // 1445 without a size
    expect(imageCost(image(1024, 1024), "o200k_base", "gpt-4o-mini")).toBe(8 + 2833 + 5667 * 4);
    expect(imageCost(image(1024, 1024), "o200k_base", "gpt-5")).toBe(8 + 70 + 140 * 4);
    expect(imageCost(image(1024, 1024), "o200k_base", "o3")).toBe(8 + 75 + 150 * 4);
    // Patch models: 32 x 32 = 1024 patches at 1024px, capped at 1,536, times the multiplier.
    expect(imageCost(image(1024, 1024), "o200k_base", "gpt-4.1-mini")).toBe(8 + Math.ceil(1024 * 1.62));
    expect(imageCost(image(4096, 4096), "o200k_base", "gpt-4.1-nano")).toBe(8 + Math.ceil(1536 * 2.46));
    expect(imageCost(image(1092, 1092), "bytes", "claude-sonnet-4-20250514")).toBe(8 + Math.ceil(1590 * 1.05));
    expect(imageCost(image(200, 200), "bytes", "gemini-2.5-pro")).toBe(8 + 1120);
  });

  it("takes the most expensive rule when the model is unknown", () => {
    const unknown = imageCost(image(), "o200k_base");
    expect(unknown).toBe(8 + 2833 + 5667 * 8); // gpt-4o-mini's tiles dominate
    expect(imageCost(image(), "bytes")).toBeGreaterThanOrEqual(unknown);
    expect(imageCost(image(), "o200k_base", "gpt-5.9-future")).toBe(unknown);
    expect(imageCost(image(0, -5), "o200k_base", "gpt-4o")).toBe(8 + 1445); // bad sizes are ignored
  });

  it("bounds files and audio by their bytes", () => {
    const file = imageCost({ kind: "file", bytes: 50_000 }, "o200k_base");
    expect(file).toBeGreaterThanOrEqual(50_000);
    const audio = imageCost({ kind: "audio", bytes: 80_000 }, "o200k_base");
    expect(audio).toBeGreaterThanOrEqual(10_000);
  });
});

describe("createTokenCounter", () => {
  /** Splits at random UTF-16 positions, so surrogate pairs and ZWJ sequences get cut too. */
  function randomSplit(r: (n: number) => number, text: string, maxPiece: number): string[] {
    const parts: string[] = [];
    let i = 0;
    while (i < text.length) {
      const j = Math.min(text.length, i + 1 + r(maxPiece));
      parts.push(text.slice(i, j));
      i = j;
    }
    return parts;
  }

  it("is not fooled where per-delta counts undercount", () => {
    // 1 + 1 tokens apart, 4 together: summing deltas would undercount.
    expect(trueO200k("generate") + trueO200k("loop")).toBe(2);
    expect(trueO200k("generateloop")).toBe(4);
    const c = createTokenCounter("o200k_base");
    c.add("generate");
    expect(c.total).toBe(1);
    c.add("loop");
    expect(c.total).toBe(4);
  });

  for (const tokenizer of ["o200k_base", "cl100k_base"] as const) {
    const truth = tokenizer === "o200k_base" ? trueO200k : trueCl100k;

    it(`${tokenizer}: total equals the count of the concatenation, read after every delta`, () => {
      const r = rng(tokenizer === "o200k_base" ? 11 : 12);
      for (let trial = 0; trial < 15; trial++) {
        const text = variedText(r, 200 + r(1500));
        const counter = createTokenCounter(tokenizer);
        let sofar = "";
        for (const part of randomSplit(r, text, 12)) {
          counter.add(part);
          sofar += part;
          const total = counter.total;
          expect(total).toBeGreaterThanOrEqual(truth(sofar));
          expect(total).toBe(countTextTokens(sofar, tokenizer)); // exact where countTextTokens is
        }
      }
    });

    it(`${tokenizer}: total equals the count when read only at the end or now and then`, () => {
      const r = rng(99);
      for (let trial = 0; trial < 30; trial++) {
        const text = variedText(r, 500 + r(5000));
        const counter = createTokenCounter(tokenizer);
        for (const part of randomSplit(r, text, 40)) {
          counter.add(part);
          if (r(10) === 0) void counter.total;
        }
        expect(counter.total).toBeGreaterThanOrEqual(truth(text));
        expect(counter.total).toBe(countTextTokens(text, tokenizer));
      }
    });

    it(`${tokenizer}: stays a bound on long text with no stable cut`, () => {
      const r = rng(5);
      for (const unit of ["👍🏽", "🧑🏿‍💻", "1234567", "   \n", "!!??"]) {
        const text = unit.repeat(Math.ceil(3000 / unit.length)); // past TAIL_LIMIT
        const counter = createTokenCounter(tokenizer);
        for (const part of randomSplit(r, text, 9)) {
          counter.add(part);
          void counter.total;
        }
        expect(counter.total, unit).toBeGreaterThanOrEqual(truth(text));
        expect(counter.total, unit).toBeLessThanOrEqual(Buffer.byteLength(text));
      }
    });
  }

  for (const tokenizer of ["o200k_base", "cl100k_base", "claude", "gemini", "llama", "bytes"] as const) {
    it(`${tokenizer}: bound is never below total, whether or not total was read`, () => {
      const r = rng(21);
      for (let trial = 0; trial < 10; trial++) {
        const text = variedText(r, 300 + r(3000));
        const counter = createTokenCounter(tokenizer);
        const shadow = createTokenCounter(tokenizer);
        for (const part of randomSplit(r, text, 15)) {
          counter.add(part);
          shadow.add(part);
          // The bound of a counter that was never read must hold as well as one read each time.
          if (r(3) === 0) void counter.total;
          expect(counter.bound).toBeGreaterThanOrEqual(shadow.total);
          expect(counter.bound).toBeGreaterThanOrEqual(counter.total);
        }
      }
    });
  }

  it("re-counts only the last few words on each read, however long the stream", () => {
    const enc = encoding("o200k_base");
    let chunks = 0;
    const count = enc.count.bind(enc);
    const chunkTokens = enc.chunkTokens.bind(enc);
    const spies = [
      vi.spyOn(enc, "chunkTokens").mockImplementation((chunk: string) => (chunks++, chunkTokens(chunk))),
      vi.spyOn(enc, "count").mockImplementation((text: string) => ((chunks += [...text.matchAll(enc.split)].length), count(text))),
    ];
    try {
      const counter = createTokenCounter("o200k_base");
      const words = SAMPLES.english!.split(/(?= )/);
      let text = "";
      for (let i = 0; i < 2_000; i++) {
        const word = words[i % words.length]!;
        counter.add(word);
        text += word;
        void counter.total;
      }
      const total = counter.total;
      for (const spy of spies) spy.mockRestore();
      expect(total).toBe(countTextTokens(text, "o200k_base"));
      // A few chunks per word read (the tail since the last stable cut), never the whole stream.
      expect(chunks / 2_000).toBeLessThan(4);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });

  it("finds stable cuts in ordinary text", () => {
    const text = SAMPLES.english!.repeat(3);
    const cut = findStableCut(text, "o200k_base");
    expect(cut).toBeGreaterThan(text.length - 20);
    expect(trueO200k(text.slice(0, cut)) + trueO200k(text.slice(cut))).toBe(trueO200k(text));
    expect(findStableCut("👍".repeat(100), "o200k_base")).toBe(0);
  });

  it("bytes: exact UTF-8 length even when deltas split surrogate pairs", () => {
    const r = rng(3);
    for (let trial = 0; trial < 50; trial++) {
      const text = variedText(r, 1000);
      const counter = createTokenCounter("bytes");
      let sofar = "";
      for (const part of randomSplit(r, text, 5)) {
        counter.add(part);
        sofar += part;
        expect(counter.total).toBeGreaterThanOrEqual(Buffer.byteLength(sofar));
      }
      expect(counter.total).toBe(Buffer.byteLength(text));
      expect(counter.total).toBeGreaterThanOrEqual(trueO200k(text));
    }
  });

  it("pins the split regexes the stable-cut argument was made for", () => {
    // If gpt-tokenizer changes these, re-check findStableCut's reasoning before updating.
    expect(O200K_TOKEN_SPLIT_REGEX.source).toBe(
      String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE]))?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
    );
    expect(CL100K_TOKEN_SPLIT_REGEX.source).toBe(
      String.raw`'(?:[sS]|[dD]|[mM]|[tT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+$|\s*[\r\n]|\s+(?!\S)|\s`,
    );
  });
});
