import { TollgateError } from "../core/errors.js";
import { openaiErrorBody } from "./errors.js";
import { answerIsError, asObject, codePoints, invalid, optCount, optString, UPSTREAM_ERROR, usageCount } from "./fields.js";
import type { Inspection, RequestFormat } from "../core/format.js";

/**
 * OpenAI Embeddings: POST /v1/embeddings. `input` is a string, an array of strings, an array of
 * token ids or an array of such arrays; every input is counted and priced as input, nothing as
 * output. Token ids count as one character each toward `max_prompt_chars`: a text of N
 * characters can be N tokens, so N ids are held to the same cap. `encoding_format` (the openai
 * SDK asks for base64) passes through untouched.
 */
export const openaiEmbeddings: RequestFormat = {
  endpoint: "embeddings",
  api: "openai",
  upstreamPath: "/embeddings",

  inspect(raw) {
    const body = asObject(raw, "body");
    const inputs = readInputs(body.input);
    const prompt: Inspection["prompt"] = { messages: [], toolDefinitions: [], attachments: [], tokenIds: 0 };
    let promptChars = 0;
    for (const input of inputs) {
      if (typeof input === "string") {
        prompt.messages.push({ role: "input", text: input });
        promptChars += codePoints(input);
      } else {
        prompt.tokenIds! += input.length;
        promptChars += input.length;
      }
    }
    const format = optString(body, "encoding_format");
    if (format !== undefined && format !== "float" && format !== "base64") throw invalid("encoding_format", "expected float or base64");
    optCount(body, "dimensions", 1);
    return {
      model: optString(body, "model"),
      stream: false,
      prompt,
      promptChars,
      // Inputs have their own cap (max_embedding_inputs); they are not a conversation.
      messages: 0,
      tools: 0,
      attachments: [],
      outputTokens: {},
      choices: 1,
      sensitiveParams: [],
      storedState: [],
      embeddingInputs: inputs.length,
      clientWantsStreamUsage: false,
      producesOutput: false,
    };
  },

  rewrite(body, plan, inspection) {
    return { ...body, ...this.upstreamFields!(body, plan, inspection) };
  },

  upstreamFields(_body, plan) {
    return { model: plan.model };
  },

  readResponse(raw) {
    if (answerIsError(raw)) return { error: UPSTREAM_ERROR };
    const body = raw as { id?: string; model?: string; usage?: { prompt_tokens?: unknown } };
    const inputTokens = usageCount(body.usage?.prompt_tokens);
    // An embedding generates nothing: zero output is known, not unknown.
    return { usage: inputTokens === undefined ? undefined : { inputTokens, outputTokens: 0 }, id: body.id, model: body.model };
  },

  readEvent() {
    return {};
  },

  endStream() {
    return [];
  },

  errorBody: openaiErrorBody,
};

/** Inputs per embeddings call (OpenAI's limit, SPEC §5.2). */
export const MAX_INPUTS = 2048;

/** The inputs of one call: strings or token-id arrays, each non-empty as OpenAI requires. */
function readInputs(input: unknown): (string | number[])[] {
  if (typeof input === "string") {
    if (!input) throw invalid("input", "expected a non-empty string");
    return [input];
  }
  if (!Array.isArray(input) || input.length === 0) throw invalid("input", "expected a string, an array of strings or an array of token ids");
  if (input.every((v) => typeof v === "number")) return [tokenIds(input, "input")];
  // OpenAI's own limit: a longer batch is refused upstream after a reservation, or, by a lenient
  // backend, served as one request with thousands of inputs.
  if (input.length > MAX_INPUTS) {
    throw new TollgateError("param_not_allowed", `input has ${input.length} items; an embeddings call takes at most ${MAX_INPUTS}`, { param: "input" });
  }
  return input.map((v, i) => {
    if (typeof v === "string") {
      if (!v) throw invalid(`input[${i}]`, "expected a non-empty string");
      return v;
    }
    if (Array.isArray(v)) return tokenIds(v, `input[${i}]`);
    throw invalid(`input[${i}]`, "expected a string or an array of token ids");
  });
}

function tokenIds(ids: unknown[], param: string): number[] {
  if (ids.length === 0) throw invalid(param, "expected a non-empty array of token ids");
  ids.forEach((id, i) => {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) throw invalid(`${param}[${i}]`, "expected a token id (a whole number of at least 0)");
  });
  return ids as number[];
}
