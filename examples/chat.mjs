// A streaming chat route with tools, as an app's /api/chat serves useChat: streamText through the
// request's Gate. Every model call is admitted, clamped, reserved and metered; a refusal before
// the first token is an HTTP error with its own status, one inside the stream an error part.
import { createOpenAI } from "@ai-sdk/openai";
import { convertToModelMessages, jsonSchema, stepCountIs, streamText, tool, wrapLanguageModel } from "ai";
import "tollgate/ai-sdk"; // gate.aiSdk()
import { simulatedFetch } from "tollgate/testing";

const openai = createOpenAI({ apiKey: "unused", fetch: simulatedFetch() });

/** The app's own login, standing in for a real session store: `session=<user>`; "trial-" users are on the trial plan. */
export function identifySession(cookie) {
  const user = /(?:^|;\s*)session=([\w-]+)/.exec(cookie ?? "")?.[1];
  return user ? { user, plan: user.startsWith("trial-") ? "trial" : "free" } : null;
}

/** The streamText result; the route answers with its UI message stream. */
export async function chat(gate, { messages = [{ role: "user", parts: [{ type: "text", text: "hello" }] }] } = {}) {
  return streamText({
    model: wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: gate.aiSdk() }),
    messages: await convertToModelMessages(messages),
    tools: {
      search: tool({
        inputSchema: jsonSchema({ type: "object", properties: { q: { type: "string" } } }),
        execute: async () => `found ${gate.retrieval(5)} documents`,
      }),
    },
    stopWhen: stepCountIs(5),
    abortSignal: gate.signal,
    maxRetries: 0,
  });
}
