import type { EndpointName } from "../config/resolve.js";
import { anthropicMessages } from "../formats/anthropic-messages.js";
import type { RequestFormat } from "../core/format.js";
import { openaiChat } from "../formats/openai-chat.js";
import { openaiEmbeddings } from "../formats/openai-embeddings.js";
import { openaiResponses } from "../formats/openai-responses.js";

/** The model-calling endpoints under a route's path, and the format each speaks. */
export const ENDPOINTS: Record<string, { name: EndpointName; format: RequestFormat }> = {
  "/v1/chat/completions": { name: "chat_completions", format: openaiChat },
  "/v1/responses": { name: "responses", format: openaiResponses },
  "/v1/messages": { name: "messages", format: anthropicMessages },
  "/v1/embeddings": { name: "embeddings", format: openaiEmbeddings },
};
