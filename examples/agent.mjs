// The work every example app does, whatever its framework: an agent loop and a summary of an upload,
// each metered and capped through the request's Gate.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, wrapLanguageModel } from "ai";
import "tollgate/ai-sdk"; // gate.aiSdk()
import { simulatedFetch } from "tollgate/testing";

const openai = createOpenAI({ apiKey: "unused", fetch: simulatedFetch() });

/** Up to `steps` rounds of think -> retrieve -> tool call. Tollgate stops it at the route's max_steps. */
export async function runAgent(gate, { question = "What should I read?", steps = 3 } = {}) {
  const model = wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: gate.aiSdk() });
  const notes = [];
  for (let i = 0; i < steps; i++) {
    const { text } = await generateText({ model, prompt: `${question}\n${notes.join("\n")}`, abortSignal: gate.signal, maxRetries: 0 });
    const k = gate.retrieval(10);
    await gate.toolCall("search");
    notes.push(`step ${i + 1}: ${text.slice(0, 40)}… (${k} documents)`);
  }
  return { notes, docs: gate.record.docs_retrieved };
}

/** Summarises one uploaded file; the gate refuses files over the size cap and past the per-hour count. */
export async function summarize(gate, file) {
  await gate.upload({ size: file.byteLength, name: "upload" });
  const model = wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: gate.aiSdk() });
  const { text } = await generateText({ model, prompt: `Summarise ${file.byteLength} bytes.`, abortSignal: gate.signal, maxRetries: 0 });
  return { summary: text };
}

export const CONFIG = new URL("./tollgate.yaml", import.meta.url).pathname;
