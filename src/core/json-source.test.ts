import { describe, expect, it } from "vitest";
import { parseJson } from "../gateway/body.js";
import { anthropicMessages } from "../formats/anthropic-messages.js";
import { openaiChat } from "../formats/openai-chat.js";
import { openaiResponses } from "../formats/openai-responses.js";
import { patchJson, upstreamBody, type JsonSource } from "./json-source.js";

/** The caller's text parsed as the gateway parses it, with its source noted. */
function read(text: string): { body: Record<string, unknown>; source: JsonSource } {
  const bytes = Buffer.from(text);
  const source: JsonSource = { bytes, text: "", keys: [], end: -1 };
  return { body: parseJson(bytes, source) as Record<string, unknown>, source };
}

/** What the provider gets: the patched bytes must parse to `{ ...body, ...fields }`, keys in the same order. */
function expectPatched(text: string, fields: Record<string, unknown>): string {
  const { body, source } = read(text);
  const out = patchJson(source, fields);
  expect(out).toBeDefined();
  const sent = out!.toString();
  expect(JSON.stringify(JSON.parse(sent))).toBe(JSON.stringify({ ...body, ...fields }));
  return sent;
}

const ODD = [
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":256}',
  '  {\n\t"model" :  "x" ,\r\n "max_tokens"\n:\n1e2 , "messages" : [ ] }  \n',
  '{"mod\\u0065l":"gpt-4o","max_\\u0074okens":5,"messages":[]}',
  '{"messages":[{"role":"user","content":"é ünïcödé 日本語 😀 before the model key"}],"model":"m"}',
  '{"messages":[{"role":"user","content":"\\"model\\":\\"evil\\", \\"max_tokens\\": 999999}"}],"temperature":0.5}',
  '{"messages":[{"role":"user","content":[{"type":"text","text":"{\\"model\\":1}","model":"nested","max_tokens":7}]}],"model":"last"}',
  '{"tools":[{"type":"function","function":{"name":"f","parameters":{"model":{"type":"string"},"max_tokens":{}}}}],"messages":[],"model":null}',
  '{"model":"\\ud83d\\ude00 escaped pair","messages":[],"stream_options":{"include_usage":false,"x":"😀"}}',
  '{"a\\"b":"quote in a key","model":"m","z":{"}":"]","{":[","]}}',
  '{"model":"only"}',
  '{"max_tokens":1,"model":"m","max_completion_tokens":2}',
];

describe("patchJson", () => {
  it("sets, replaces and appends top-level fields of odd bodies without touching nested ones", () => {
    for (const text of ODD) {
      expectPatched(text, { model: "gpt-4o-mini-2024", max_tokens: 128 });
      expectPatched(text, { model: "ünïcode-model 😀", stream_options: { include_usage: true, x: "é" } });
      expectPatched(text, { max_completion_tokens: 64 });
      expectPatched(text, {});
    }
  });

  it("builds a long body (copied as bytes) as it builds a short one (encoded as text)", () => {
    // Past 2,048 characters the result is built from byte ranges; non-ASCII before a field moves its byte offset.
    const pad = `"pad":"${"é😀ab日".repeat(600)}",`;
    for (const text of ODD) {
      const long = text.replace("{", `{${pad}`);
      expect(long.length).toBeGreaterThan(2048);
      const short = expectPatched(text, { model: "gpt-4o-mini-2024", max_tokens: 128 });
      expect(expectPatched(long, { model: "gpt-4o-mini-2024", max_tokens: 128 })).toBe(short.replace("{", `{${pad}`));
      expectPatched(long, { model: "ünïcode-model 😀", stream_options: { include_usage: true, x: "é" } });
      expectPatched(long, {});
    }
  });

  it("writes the new value itself, not the caller's spelling of an equal one", () => {
    const sent = expectPatched('{"model":"gpt\\u002d4o","max_tokens":2.56e2,"messages":[]}', { model: "gpt-4o", max_tokens: 256 });
    expect(sent).toBe('{"model":"gpt-4o","max_tokens":256,"messages":[]}');
  });

  it("keeps everything else byte for byte", () => {
    const text = '{"messages":[{"role":"user","content":"a\\u00e9 \\/ é"}],  "temperature" : 1.0,"model":"x"}';
    expect(expectPatched(text, { model: "y", max_tokens: 3 })).toBe('{"messages":[{"role":"user","content":"a\\u00e9 \\/ é"}],  "temperature" : 1.0,"model":"y","max_tokens":3}');
  });

  it("adds to an empty object, and declines what is no object or would drop a key", () => {
    expect(expectPatched("{ }", { model: "m" })).toBe('{ "model":"m"}');
    expect(patchJson(read("[1,2]").source, { model: "m" })).toBeUndefined();
    expect(patchJson(read('{"model":"m"}').source, { model: undefined })).toBeUndefined();
  });

  it("matches random bodies", () => {
    const strings = ["model", "max_tokens", "é", "😀", '"', "\\", "}", ",", "{", "\n", "日本"];
    const pick = <T>(a: T[]): T => a[Math.floor(Math.random() * a.length)]!;
    const value = (depth: number): unknown => {
      const r = Math.random();
      if (depth > 2 || r < 0.3) return pick([1, -0.5, 1e21, true, null, pick(strings) + pick(strings)]);
      if (r < 0.6) return Array.from({ length: 3 }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: 3 }, (_, i) => [pick(strings) + i, value(depth + 1)]));
    };
    for (let n = 0; n < 2000; n++) {
      const body: Record<string, unknown> = {};
      for (let i = 0; i < 5; i++) body[pick(["model", "max_tokens", "messages", "é😀", "x" + i, 'q"' + i])] = value(0);
      if (n % 2) body[pick(["pad", "model"])] = pick(["é日x", "abc"]).repeat(800);
      const text = JSON.stringify(body, null, pick([0, 1, "\t"]));
      expectPatched(text, pick([{ model: "m" }, { model: "m", max_tokens: 9 }, { max_completion_tokens: 1, stream_options: { include_usage: true } }]));
    }
  });
});

describe("upstream fields of the formats", () => {
  const plan = { model: "upstream-model", maxOutputTokens: 100, reasoning: false };
  const cases = [
    { format: openaiChat, text: '{"model":"a","messages":[{"role":"user","content":"max_tokens model"}],"max_tokens":4096}' },
    { format: openaiChat, text: '{"messages":[{"role":"user","content":"hi"}],"model":"a","stream":true,"stream_options":{"include_usage":false}}' },
    { format: openaiChat, text: '{"model":"a","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":9,"max_tokens":8}' },
    { format: anthropicMessages, text: '{"model":"a","max_tokens":5000,"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":9000}}' },
    { format: openaiResponses, text: '{"model":"a","input":"max_output_tokens"}' },
  ];
  it("patch the client's bytes into what rewrite builds", () => {
    for (const { format, text } of cases) {
      const { body, source } = read(text);
      const inspection = format.inspect(body);
      const p = { ...plan, maxOutputTokens: format === anthropicMessages ? 2048 : 100 };
      const sent = patchJson(source, format.upstreamFields!(body, p, inspection))!.toString();
      expect(JSON.stringify(JSON.parse(sent))).toBe(JSON.stringify(format.rewrite(body, p, inspection)));
      expect(JSON.parse(sent).model).toBe("upstream-model");
    }
  });
});

describe("upstreamBody: the provider gets the re-serialised request (SPEC §7.7), never the caller's spelling", () => {
  /** What the provider receives for `text` with `fields` set, and what re-serialising would send. */
  function both(text: string, fields: Record<string, unknown>): { sent: string; serialised: string; patched: boolean } {
    const { body, source } = read(text);
    const rewritten = { ...body, ...fields };
    const out = upstreamBody(source, fields, rewritten);
    return { sent: out.toString(), serialised: JSON.stringify(rewritten), patched: Buffer.isBuffer(out) };
  }

  it("sends JSON.stringify's bytes for every odd spelling of a body", () => {
    for (const text of ODD) {
      for (const fields of [{ model: "m2", max_tokens: 128 }, { stream_options: { include_usage: true } }, {}]) {
        const { sent, serialised } = both(text, fields);
        expect(sent).toBe(serialised);
      }
    }
  });

  it("patches the caller's bytes only when they already are JSON.stringify's, as SDKs send them", () => {
    const sdk = JSON.stringify({ model: "a", messages: [{ role: "user", content: 'hi \\ "q" \n \u001f é 😀 </>' }], temperature: 0.5, n: 1, seed: -12, x: [1e21, 1e-7] });
    const fast = both(sdk, { model: "b" });
    expect(fast.patched).toBe(true);
    expect(fast.sent).toBe(fast.serialised);
    const odd = [
      ' {"model":"a"}',
      '{"model": "a"}',
      '{"model":"a"}\n',
      '{"model":"a","t":1.0}',
      '{"model":"a","t":1e2}',
      '{"model":"a","t":-0}',
      '{"model":"a","t":1E-7}',
      '{"model":"a","c":"\\/"}',
      '{"model":"a","c":"\\u0041"}',
      '{"model":"a","c":"\\u001F"}',
      '{"model":"a","c":"\\ud83d\\ude00"}',
      '{"model":"a","c":"\\u000a"}',
      '{"model":"a","x":{"b":1,"2":2}}',
      '{"10":1,"model":"a"}',
    ];
    for (const text of odd) {
      const { sent, serialised, patched } = both(text, { model: "b", max_tokens: 7 });
      expect(patched, text).toBe(false);
      expect(sent, text).toBe(serialised);
    }
  });

  it("matches JSON.stringify on random bodies in random spellings", () => {
    const strings = ["model", "max_tokens", "é", "😀", '"', "\\", "/", "\u001f", "\n", "日本", "0", "12"];
    // Integer-like keys are never patched (see the odd bodies above): none here, so the fast path is tried too.
    const keys = strings.slice(0, -2);
    const pick = <T>(a: T[]): T => a[Math.floor(Math.random() * a.length)]!;
    const value = (depth: number): unknown => {
      const r = Math.random();
      if (depth > 2 || r < 0.3) return pick([1, 0, -0.5, 1e21, 1e-7, 123456789012, true, null, pick(strings) + pick(strings)]);
      if (r < 0.6) return Array.from({ length: 3 }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: 3 }, (_, i) => [pick(keys) + i, value(depth + 1)]));
    };
    // Other spellings of the same value: escapes JSON.stringify does not write, and number forms.
    const respell = (json: string): string =>
      json
        .replace(/é/g, () => pick(["é", "\\u00e9", "\\u00E9"]))
        .replace(/\//g, () => pick(["/", "\\/"]))
        .replace(/:1([,}\]])/g, (_m, end: string) => `:${pick(["1", "1.0", "1e0", "10e-1"])}${end}`);
    let patched = 0;
    for (let n = 0; n < 2000; n++) {
      const body: Record<string, unknown> = {};
      for (let i = 0; i < 5; i++) body[pick(["model", "max_tokens", "messages", "é😀", "x" + i, 'q"' + i])] = value(0);
      if (n % 2) body[pick(["pad", "model"])] = pick(["é日x", "abc"]).repeat(800);
      let text = JSON.stringify(body, null, pick([0, 0, 1, "\t"]));
      if (Math.random() < 0.3) text = respell(text);
      const out = both(text, pick([{ model: "m" }, { model: "m", max_tokens: 9 }, { max_completion_tokens: 1, stream_options: { include_usage: true } }]));
      expect(out.sent).toBe(out.serialised);
      if (out.patched) patched++;
    }
    // The fast path is taken for a good share of them (compact, no integer-like keys, no respelling).
    expect(patched).toBeGreaterThan(400);
  });
});
