/**
 * Which tokenizer counts a model's text. OpenAI's encodings are public, so OpenAI models (and
 * gpt-oss) are counted exactly; other families are counted with o200k_base and a per-family
 * calibration (calibration.ts). A config may name a model's tokenizer; otherwise it is inferred
 * from the upstream model id.
 */

/** The values `models.<name>.tokenizer` accepts, with what each means (shown by `tollgate schema`). */
export const TOKENIZERS = {
  o200k_base: "OpenAI's o200k_base, exact (GPT-4o, GPT-4.1, GPT-5, o-series, gpt-oss)",
  cl100k_base: "OpenAI's cl100k_base, exact (GPT-4, GPT-3.5, text-embedding-3)",
  claude: "Anthropic Claude: calibrated estimate",
  gemini: "Google Gemini and Gemma: calibrated estimate",
  llama: "Llama 3 and other open-weight models (Mistral, Qwen, DeepSeek, ...): calibrated estimate; the default for a model tollgate cannot place",
} as const;

export type Tokenizer = keyof typeof TOKENIZERS;
export const TOKENIZER_NAMES = Object.keys(TOKENIZERS) as [Tokenizer, ...Tokenizer[]];

/** An OpenAI encoding, which gpt-tokenizer implements exactly. */
export type Encoding = "o200k_base" | "cl100k_base";
/** A calibrated family: an estimate, never a bound. */
export type CalibratedTokenizer = Exclude<Tokenizer, Encoding>;

/**
 * What a count is for. Tokenizer names count a charge (the best estimate); "bytes" bounds a
 * reservation for a model without an exact tokenizer: byte-level BPE never emits more tokens than
 * the text has UTF-8 bytes, whatever its vocabulary.
 */
export type TokenizerName = Tokenizer | "bytes";

const O200K_MODELS = /^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)/;
const CL100K_MODELS = /^(gpt-4|gpt-3\.5-turbo|text-embedding-3|text-embedding-ada-002)/;

/** The tokenizer inferred from an upstream model id ("anthropic/claude-…" and "models/gemini-…" included). */
export function tokenizerFor(upstreamModel: string): Tokenizer {
  const id = upstreamModel.trim().toLowerCase();
  const bare = id.slice(id.lastIndexOf("/") + 1);
  if (O200K_MODELS.test(bare)) return "o200k_base";
  if (CL100K_MODELS.test(bare)) return "cl100k_base";
  if (id.includes("claude")) return "claude";
  if (id.includes("gemini") || id.includes("gemma")) return "gemini";
  return "llama";
}

export function isEncoding(t: TokenizerName): t is Encoding {
  return t === "o200k_base" || t === "cl100k_base";
}

/** The tokenizer whose count bounds what the model bills: the reservation's, never a charge's. */
export function boundingTokenizer(t: Tokenizer): Encoding | "bytes" {
  return isEncoding(t) ? t : "bytes";
}

/** The encoding a tokenizer's counts are made with (calibrated families scale o200k_base's). */
export function encodingOf(t: Tokenizer): Encoding {
  return isEncoding(t) ? t : "o200k_base";
}
