/** The mock upstream's OpenAI Chat Completions replies, whole and streamed. */
import { sse, type Exchange } from "./mock-exchange.js";
import { callId, CREATED, reportedTotal, type MockBehavior, type Plan } from "./mock-plan.js";

function chatUsage(p: Plan) {
  return {
    prompt_tokens: p.reportedInput,
    completion_tokens: p.reportedOutput,
    total_tokens: reportedTotal(p),
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: p.reasoningTokens,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

const chatFinish = (p: Plan) => (p.toolCalls.length ? "tool_calls" : p.truncated ? "length" : "stop");

export function chatCompletion(p: Plan, b: MockBehavior) {
  const content = p.text.length || !p.toolCalls.length ? p.text.join("") : null;
  const message: Record<string, unknown> = { role: "assistant", content, refusal: null, annotations: [] };
  if (p.toolCalls.length) {
    message.tool_calls = p.toolCalls.map((c, i) => ({
      id: callId(p, i),
      type: "function",
      function: { name: c.name, arguments: c.arguments },
    }));
  }
  return {
    id: `chatcmpl-mock-${p.n}`,
    object: "chat.completion",
    created: CREATED,
    model: p.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: chatFinish(p) }],
    ...(b.omitUsage ? {} : { usage: chatUsage(p) }),
    service_tier: "default",
    system_fingerprint: "fp_mock",
  };
}

export async function streamChat(ex: Exchange, p: Plan, body: any): Promise<void> {
  const includeUsage = body?.stream_options?.include_usage === true && !ex.b.omitUsage;
  const frame = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    sse({
      id: `chatcmpl-mock-${p.n}`,
      object: "chat.completion.chunk",
      created: CREATED,
      model: p.model,
      service_tier: "default",
      system_fingerprint: "fp_mock",
      choices,
      // OpenAI sends usage: null on every chunk once usage was requested.
      ...(includeUsage ? { usage: null } : {}),
      ...extra,
    });
  const delta = (d: Record<string, unknown>, finish: string | null = null) =>
    frame([{ index: 0, delta: d, logprobs: null, finish_reason: finish }]);

  const textOnly = p.text.length > 0 || p.toolCalls.length === 0;
  if (!(await ex.write(delta({ role: "assistant", content: textOnly ? "" : null, refusal: null })))) return;
  for (const t of p.text) if (!(await ex.token(delta({ content: t })))) return;
  if (ex.b.errorIn200 !== undefined) return ex.endWith(chatErrorEvent(ex.b.errorIn200));
  if (ex.b.neverEnd) return ex.forever(p.text.length, (t) => delta({ content: t }));
  for (const [i, c] of p.toolCalls.entries()) {
    const head = { index: i, id: callId(p, i), type: "function", function: { name: c.name, arguments: "" } };
    if (!(await ex.write(delta({ tool_calls: [head] })))) return;
    for (const a of c.chunks) {
      if (!(await ex.token(delta({ tool_calls: [{ index: i, function: { arguments: a } }] })))) return;
    }
  }
  if (!ex.checkFail()) return;
  if (!(await ex.write(delta({}, chatFinish(p))))) return;
  if (includeUsage && !(await ex.write(frame([], { usage: chatUsage(p) })))) return;
  if (!(await ex.write("data: [DONE]\n\n"))) return;
  ex.finish();
}

/** What an OpenAI-compatible backend that fails mid-stream sends: a chunk that is only an error. */
export function chatErrorEvent(message: string): string {
  return sse({ error: { message, type: "invalid_request_error", param: null, code: "invalid_api_key" } });
}
