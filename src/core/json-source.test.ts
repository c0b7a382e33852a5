import { describe, expect, it } from "vitest";
import { parseJson } from "../gateway/body.js";
import { anthropicMessages } from "../formats/anthropic-messages.js";
import { openaiChat } from "../formats/openai-chat.js";
import { openaiResponses } from "../formats/openai-responses.js";
import { patchJson, type JsonSource } from "./json-source.js";

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
