/** The mock upstream's OpenAI Responses replies, whole and streamed. */
import { namedSse, type Exchange } from "./mock-exchange.js";
import { callId, CREATED, hasMessageItem, reportedTotal, type MockBehavior, type Plan } from "./mock-plan.js";

function responseUsage(p: Plan) {
  return {
    input_tokens: p.reportedInput,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: p.reportedOutput,
    output_tokens_details: { reasoning_tokens: p.reasoningTokens },
    total_tokens: reportedTotal(p),
  };
}

const msgItemId = (p: Plan) => `msg_mock_${p.n}`;
const fcItemId = (p: Plan, i: number) => `fc_mock_${p.n}_${i}`;

function outputTextPart(text: string) {
  return { type: "output_text", annotations: [], logprobs: [], text };
}

function messageItem(p: Plan, status: string, content: unknown[]) {
  return { id: msgItemId(p), type: "message", status, role: "assistant", content };
}

function functionCallItem(p: Plan, i: number, status: string, args: string) {
  const c = p.toolCalls[i];
  return { id: fcItemId(p, i), type: "function_call", status, arguments: args, call_id: callId(p, i), name: c.name };
}

/**
 * A `response` object. "created" is the in-progress snapshot sent first when streaming;
 * "final" is completed, or incomplete (reason max_output_tokens) when truncated, as OpenAI does.
 */
export function responseObject(p: Plan, b: MockBehavior, stage: "created" | "final") {
  const final = stage === "final";
  const status = !final ? "in_progress" : p.truncated ? "incomplete" : "completed";
  const output: unknown[] = [];
  if (final) {
    if (hasMessageItem(p)) {
      output.push(messageItem(p, p.truncated ? "incomplete" : "completed", [outputTextPart(p.text.join(""))]));
    }
    p.toolCalls.forEach((c, i) => output.push(functionCallItem(p, i, "completed", c.arguments)));
  }
  return {
    id: `resp_mock_${p.n}`,
    object: "response",
    created_at: CREATED,
    status,
    background: false,
    error: null,
    incomplete_details: final && p.truncated ? { reason: "max_output_tokens" } : null,
    instructions: null,
    max_output_tokens: null,
    model: p.model,
    output,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: 1,
    text: { format: { type: "text" } },
    tool_choice: "auto",
    tools: [],
    top_p: 1,
    truncation: "disabled",
    usage: final && !b.omitUsage ? responseUsage(p) : null,
    metadata: {},
  };
}

export async function streamResponses(ex: Exchange, p: Plan): Promise<void> {
  let seq = 0;
  const send = (type: string, fields: Record<string, unknown>) =>
    namedSse(type, { type, sequence_number: seq++, ...fields });

  const created = responseObject(p, ex.b, "created");
  if (!(await ex.write(send("response.created", { response: created })))) return;
  if (!(await ex.write(send("response.in_progress", { response: created })))) return;

  let outputIndex = 0;
  if (hasMessageItem(p)) {
    const item_id = msgItemId(p);
    const at = { item_id, output_index: outputIndex, content_index: 0 };
    if (!(await ex.write(send("response.output_item.added", { output_index: outputIndex, item: messageItem(p, "in_progress", []) })))) return;
    if (!(await ex.write(send("response.content_part.added", { ...at, part: outputTextPart("") })))) return;
    const delta = (d: string) => send("response.output_text.delta", { ...at, delta: d, logprobs: [] });
    for (const t of p.text) if (!(await ex.token(delta(t)))) return;
    if (ex.b.errorIn200 !== undefined) return ex.endWith(responsesErrorEvent(ex.b.errorIn200, seq));
    if (ex.b.neverEnd) return ex.forever(p.text.length, delta);
    if (!ex.checkFail()) return;
    const text = p.text.join("");
    const itemStatus = p.truncated ? "incomplete" : "completed";
    if (!(await ex.write(send("response.output_text.done", { ...at, text, logprobs: [] })))) return;
    if (!(await ex.write(send("response.content_part.done", { ...at, part: outputTextPart(text) })))) return;
    const done = messageItem(p, itemStatus, [outputTextPart(text)]);
    if (!(await ex.write(send("response.output_item.done", { output_index: outputIndex, item: done })))) return;
    outputIndex++;
  }
  for (const [i, c] of p.toolCalls.entries()) {
    const at = { item_id: fcItemId(p, i), output_index: outputIndex };
    const added = functionCallItem(p, i, "in_progress", "");
    if (!(await ex.write(send("response.output_item.added", { output_index: outputIndex, item: added })))) return;
    for (const a of c.chunks) {
      if (!(await ex.token(send("response.function_call_arguments.delta", { ...at, delta: a })))) return;
    }
    if (!ex.checkFail()) return;
    const argsDone = send("response.function_call_arguments.done", { ...at, name: c.name, arguments: c.arguments });
    if (!(await ex.write(argsDone))) return;
    const done = functionCallItem(p, i, "completed", c.arguments);
    if (!(await ex.write(send("response.output_item.done", { output_index: outputIndex, item: done })))) return;
    outputIndex++;
  }
  if (!ex.checkFail()) return;
  const final = responseObject(p, ex.b, "final");
  const type = p.truncated ? "response.incomplete" : "response.completed";
  if (!(await ex.write(send(type, { response: final })))) return;
  ex.finish();
}

/** The Responses API's own `error` event. */
export function responsesErrorEvent(message: string, seq = 0): string {
  return namedSse("error", { type: "error", sequence_number: seq, code: "invalid_api_key", message, param: null });
}
