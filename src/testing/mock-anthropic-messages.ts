/** The mock upstream's Anthropic Messages replies, whole and streamed. */
import { namedSse, type Exchange } from "./mock-exchange.js";
import { hasMessageItem, type MockBehavior, type Plan } from "./mock-plan.js";

const anthropicStop = (p: Plan) => (p.toolCalls.length ? "tool_use" : p.truncated ? "max_tokens" : "end_turn");
const toolUseId = (p: Plan, i: number) => `toolu_mock_${p.n}_${i}`;

function parseInput(args: string): unknown {
  try {
    return JSON.parse(args);
  } catch {
    return {};
  }
}

function anthropicUsage(p: Plan, outputTokens: unknown) {
  return {
    input_tokens: p.reportedInput,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    output_tokens: outputTokens,
    service_tier: "standard",
  };
}

export function anthropicMessage(p: Plan, b: MockBehavior) {
  const content: unknown[] = [];
  if (hasMessageItem(p)) content.push({ type: "text", text: p.text.join("") });
  p.toolCalls.forEach((c, i) =>
    content.push({ type: "tool_use", id: toolUseId(p, i), name: c.name, input: parseInput(c.arguments) }),
  );
  return {
    id: `msg_mock_${p.n}`,
    type: "message",
    role: "assistant",
    model: p.model,
    content,
    stop_reason: anthropicStop(p),
    stop_sequence: null,
    ...(b.omitUsage ? {} : { usage: anthropicUsage(p, p.reportedOutput) }),
  };
}

export async function streamMessages(ex: Exchange, p: Plan): Promise<void> {
  const send = (type: string, fields: Record<string, unknown> = {}) => namedSse(type, { type, ...fields });
  const start = {
    id: `msg_mock_${p.n}`,
    type: "message",
    role: "assistant",
    model: p.model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
    ...(ex.b.omitUsage ? {} : { usage: anthropicUsage(p, 1) }),
  };
  if (!(await ex.write(send("message_start", { message: start })))) return;

  let index = 0;
  let pinged = false;
  // Anthropic sends one ping right after the first content_block_start.
  const ping = (): Promise<boolean> => {
    if (pinged) return Promise.resolve(true);
    pinged = true;
    return ex.write(send("ping"));
  };
  if (hasMessageItem(p)) {
    if (!(await ex.write(send("content_block_start", { index, content_block: { type: "text", text: "" } })))) return;
    if (!(await ping())) return;
    const delta = (t: string) => send("content_block_delta", { index, delta: { type: "text_delta", text: t } });
    for (const t of p.text) if (!(await ex.token(delta(t)))) return;
    if (ex.b.errorIn200 !== undefined) return ex.endWith(messagesErrorEvent(ex.b.errorIn200));
    if (ex.b.neverEnd) return ex.forever(p.text.length, delta);
    if (!ex.checkFail()) return;
    if (!(await ex.write(send("content_block_stop", { index })))) return;
    index++;
  }
  for (const [i, c] of p.toolCalls.entries()) {
    const block = { type: "tool_use", id: toolUseId(p, i), name: c.name, input: {} };
    if (!(await ex.write(send("content_block_start", { index, content_block: block })))) return;
    if (!(await ping())) return;
    for (const a of c.chunks) {
      const d = send("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: a } });
      if (!(await ex.token(d))) return;
    }
    if (!ex.checkFail()) return;
    if (!(await ex.write(send("content_block_stop", { index })))) return;
    index++;
  }
  if (!ex.checkFail()) return;
  const usage = ex.b.omitUsage ? {} : { usage: { output_tokens: p.reportedOutput } };
  if (!(await ex.write(send("message_delta", { delta: { stop_reason: anthropicStop(p), stop_sequence: null }, ...usage })))) return;
  if (!(await ex.write(send("message_stop")))) return;
  ex.finish();
}

/** Anthropic's `event: error` (overloaded, or a proxy's authentication failure). */
export function messagesErrorEvent(message: string): string {
  return namedSse("error", { type: "error", error: { type: "authentication_error", message } });
}
