import { describe, expect, it } from "vitest";
import { TollgateError } from "../core/errors.js";
import { estimateInputTokens } from "../core/metering/tokens.js";
import { openaiEmbeddings as fmt } from "./openai-embeddings.js";

const refusal = (body: unknown) => {
  try {
    fmt.inspect(body);
  } catch (err) {
    expect(TollgateError.is(err)).toBe(true);
    return err as TollgateError;
  }
  throw new Error("expected a refusal");
};

describe("openai embeddings format", () => {
  it("counts every input of every shape, and produces no output", () => {
    const one = fmt.inspect({ model: "text-embedding-3-small", input: "hello world" });
    expect(one).toMatchObject({ embeddingInputs: 1, promptChars: 11, messages: 0, outputTokens: {}, producesOutput: false, stream: false });
    const many = fmt.inspect({ input: ["a", "bb", "ccc"] });
    expect(many.embeddingInputs).toBe(3);
    expect(many.prompt.messages.map((m) => m.text)).toEqual(["a", "bb", "ccc"]);
    const ids = fmt.inspect({ input: [1, 2, 3, 4] });
    expect(ids).toMatchObject({ embeddingInputs: 1, promptChars: 4 });
    expect(ids.prompt.tokenIds).toBe(4);
    const idArrays = fmt.inspect({ input: [[1, 2], [3], "text"] });
    expect(idArrays).toMatchObject({ embeddingInputs: 3, promptChars: 7 });
    // Token ids are priced as exactly as many tokens, on top of the framing every estimate carries.
    expect(estimateInputTokens(idArrays.prompt, "cl100k_base") - estimateInputTokens({ ...idArrays.prompt, tokenIds: 0 }, "cl100k_base")).toBe(3);
  });

  it("refuses what OpenAI would refuse, naming the field", () => {
    expect(refusal({}).param).toBe("input");
    expect(refusal({ input: "" }).param).toBe("input");
    expect(refusal({ input: [] }).param).toBe("input");
    expect(refusal({ input: ["ok", ""] }).param).toBe("input[1]");
    expect(refusal({ input: [[1, -2]] }).param).toBe("input[0][1]");
    expect(refusal({ input: [[]] }).param).toBe("input[0]");
    expect(refusal({ input: [{ text: "x" }] }).param).toBe("input[0]");
    expect(refusal({ input: "x", encoding_format: "hex" }).param).toBe("encoding_format");
    expect(refusal({ input: "x", dimensions: 0 }).param).toBe("dimensions");
  });

  it("refuses more than 2,048 inputs with param_not_allowed; a long token-id array is one input", () => {
    expect(fmt.inspect({ input: Array(2048).fill("x") }).embeddingInputs).toBe(2048);
    const over = refusal({ input: Array(4096).fill("x") });
    expect(over).toMatchObject({ code: "param_not_allowed", status: 400, param: "input" });
    expect(refusal({ input: Array(2049).fill([1]) }).code).toBe("param_not_allowed");
    expect(fmt.inspect({ input: Array(4096).fill(7) }).embeddingInputs).toBe(1);
  });

  it("passes encoding_format through and sets only the model", () => {
    const body = { model: "alias", input: "x", encoding_format: "base64", dimensions: 256 };
    expect(fmt.rewrite(body, { model: "text-embedding-3-small", maxOutputTokens: 0, reasoning: false }, fmt.inspect(body))).toEqual({ ...body, model: "text-embedding-3-small" });
  });

  it("reads usage as input only: zero output is known, not unknown", () => {
    expect(fmt.readResponse({ object: "list", data: [], usage: { prompt_tokens: 12, total_tokens: 12 } }).usage).toEqual({ inputTokens: 12, outputTokens: 0 });
    expect(fmt.readResponse({ object: "list", data: [] }).usage).toBeUndefined();
  });
});
