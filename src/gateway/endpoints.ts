import type { EndpointName } from "../config/resolve.js";
import type { RequestFormat } from "../formats/format.js";
import { openaiChat } from "../formats/openai-chat.js";

/** The model-calling endpoints under a route's path, and the format each speaks. */
export const ENDPOINTS: Record<string, { name: EndpointName; format: RequestFormat }> = {
  "/v1/chat/completions": { name: "chat_completions", format: openaiChat },
};
