import { TollgateError } from "../core/errors.js";
import type { Attachment } from "../core/metering/tokens.js";
import { addDefinition, codePoints } from "./fields.js";
import type { Inspection, Reading, RequestFormat } from "../core/format.js";

/**
 * A Vercel AI SDK model call (LanguageModelV3 call options) read as a request format, so the AI SDK
 * middleware runs the same gates 4-6 as the gateway. The body is `{ modelId, stream, params }`.
 */
export interface AiSdkCall {
  modelId: string;
  stream: boolean;
  params: {
    prompt: { role: string; content: unknown }[];
    maxOutputTokens?: number;
    tools?: unknown[];
    [key: string]: unknown;
  };
}

export const aiSdkCall: RequestFormat = {
  endpoint: "chat_completions",
  api: "openai",
  upstreamPath: "",

  inspect(raw) {
    const call = raw as AiSdkCall;
    const prompt: Inspection["prompt"] = { messages: [], toolDefinitions: [], attachments: [] };
    let promptChars = 0;
    for (const m of call.params.prompt ?? []) {
      const text = messageText(m.content, prompt.attachments);
      promptChars += codePoints(text);
      prompt.messages.push({ role: m.role, text });
    }
    const tools = call.params.tools ?? [];
    for (const t of tools) promptChars += addDefinition(prompt, t);
    // A JSON output schema is rendered into the prompt like a tool.
    const format = call.params.responseFormat as { type?: string; schema?: unknown } | undefined;
    if (format?.type === "json" && format.schema !== undefined) promptChars += addDefinition(prompt, format.schema);
    const max = call.params.maxOutputTokens;
    if (max !== undefined && (!Number.isSafeInteger(max) || max < 1)) throw new TollgateError("invalid_request", "maxOutputTokens: expected a whole number of at least 1", { param: "maxOutputTokens" });
    return {
      model: call.modelId,
      stream: call.stream,
      prompt,
      promptChars,
      messages: prompt.messages.length,
      tools: tools.length,
      attachments: prompt.attachments,
      outputTokens: (max === undefined ? {} : { maxOutputTokens: max }) as Record<string, number>,
      choices: 1,
      sensitiveParams: [],
      storedState: [],
      clientWantsStreamUsage: false,
    };
  },

  rewrite(body, plan) {
    const call = body as unknown as AiSdkCall;
    // The model object is the app's; only the output cap can change here.
    return { ...call, params: { ...call.params, maxOutputTokens: plan.maxOutputTokens } };
  },

  readResponse(): Reading {
    return {};
  },
  readEvent(): Reading {
    return {};
  },
  endStream() {
    return [];
  },
  errorBody(err) {
    return { error: { message: err.message, code: err.code } };
  },
};

function messageText(content: unknown, attachments: Attachment[]): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  const texts: string[] = [];
  for (const part of content as Record<string, unknown>[]) {
    switch (part.type) {
      case "text":
      case "reasoning":
        if (typeof part.text === "string") texts.push(part.text);
        break;
      case "tool-call":
        texts.push(String(part.toolName ?? ""), JSON.stringify(part.input ?? null));
        break;
      case "tool-result":
        texts.push(JSON.stringify(part.output ?? null));
        break;
      case "file": {
        const data = part.data;
        const bytes = data instanceof Uint8Array ? data.byteLength : typeof data === "string" ? Math.floor((data.length * 3) / 4) : 0;
        const kind = String(part.mediaType ?? "").startsWith("image/") ? "image" : String(part.mediaType ?? "").startsWith("audio/") ? "audio" : "file";
        attachments.push({ kind, bytes });
        break;
      }
    }
  }
  return texts.join("\n");
}
