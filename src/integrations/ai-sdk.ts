import type { LanguageModelV3CallOptions, LanguageModelV3Middleware, LanguageModelV3StreamPart, LanguageModelV3Usage } from "@ai-sdk/provider";
import type { Ended } from "../core/usage-record.js";
import { aiSdkCall, type AiSdkCall } from "../formats/ai-sdk-call.js";
import { Gate, type ModelCall } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";

/** The admitted call behind each transformed params object, from transformParams to wrapGenerate/wrapStream. */
const calls = new WeakMap<object, ModelCall>();

/**
 * Vercel AI SDK model middleware (`wrapLanguageModel({ model, middleware: gate.aiSdk() })`). Each
 * model call is one step of the run: it passes the model policy, gets its output clamped and its
 * worst-case cost reserved before the provider is called, is aborted with the gate, and settles
 * on the provider's usage (or the counted text when a stream is cut). Tool calls the model makes
 * count against max_tool_calls; past it the call fails with run_limit_exceeded, whatever the
 * agent loop's own stopWhen says.
 */
export function aiSdkMiddleware(gate: Gate): LanguageModelV3Middleware {
  return {
    specificationVersion: "v3",

    async transformParams({ type, params, model }) {
      const call = await gate.model(aiSdkCall, { modelId: model.modelId, stream: type === "stream", params } satisfies AiSdkCall);
      const signals = [gate.signal, params.abortSignal].filter((s): s is AbortSignal => !!s);
      const out: LanguageModelV3CallOptions = { ...(call.body as unknown as AiSdkCall).params, abortSignal: AbortSignal.any(signals) } as LanguageModelV3CallOptions;
      calls.set(out, call);
      return out;
    },

    async wrapGenerate({ doGenerate, params }) {
      const call = calls.get(params);
      if (!call) return doGenerate();
      let result;
      try {
        result = await doGenerate();
      } catch (err) {
        await call.fail(err);
        throw err;
      }
      const toolCalls = result.content.filter((c) => c.type === "tool-call");
      const text = result.content.map((c) => (c.type === "text" || c.type === "reasoning" ? c.text : c.type === "tool-call" ? c.input : "")).join("");
      // Tool calls are counted by gate.toolCall below, which also enforces max_tool_calls.
      await call.settle({ ...fromUsage(result.usage), outputText: result.usage.outputTokens.total === undefined ? text : undefined });
      for (const t of toolCalls) await gate.toolCall(t.toolName);
      return result;
    },

    async wrapStream({ doStream, params }) {
      const call = calls.get(params);
      if (!call) return doStream();
      let upstream;
      try {
        upstream = await doStream();
      } catch (err) {
        await call.fail(err);
        throw err;
      }
      const reader = upstream.stream.getReader();
      let text = "";
      let usage: LanguageModelV3Usage | undefined;
      let settled: Promise<void> | undefined;
      const settle = (ended: Ended) =>
        (settled ??= call.settle({ ...(usage ? fromUsage(usage) : {}), outputText: usage?.outputTokens.total === undefined ? text : undefined }, ended));
      const stream = new ReadableStream<LanguageModelV3StreamPart>({
        async pull(controller) {
          let next;
          try {
            next = await reader.read();
          } catch (err) {
            await settle(gate.signal.aborted ? "client_disconnect" : "upstream_error");
            controller.error(err);
            return;
          }
          if (next.done) {
            await settle("complete");
            controller.close();
            return;
          }
          const part = next.value;
          if (part.type === "text-delta" || part.type === "reasoning-delta" || part.type === "tool-input-delta") text += part.delta;
          if (part.type === "finish") usage = part.usage;
          if (part.type === "tool-call") {
            try {
              await gate.toolCall(part.toolName);
            } catch (err) {
              await settle("complete");
              await reader.cancel().catch(() => {});
              controller.error(err);
              return;
            }
          }
          controller.enqueue(part);
        },
        async cancel(reason) {
          await settle("client_disconnect");
          await reader.cancel(reason);
        },
      });
      return { ...upstream, stream };
    },
  };
}

function fromUsage(u: LanguageModelV3Usage) {
  return {
    inputTokens: u.inputTokens.total,
    outputTokens: u.outputTokens.total,
    cachedInputTokens: u.inputTokens.cacheRead,
    cacheWriteTokens: u.inputTokens.cacheWrite,
    reasoningTokens: u.outputTokens.reasoning,
  };
}

declare module "../library/gate.js" {
  interface Gate {
    /** Vercel AI SDK middleware for `wrapLanguageModel` (`aiSdkMiddleware(gate)`): every model call through it is metered and capped. */
    aiSdk(): LanguageModelV3Middleware;
  }
}

installMethods(Gate.prototype, {
  aiSdk(this: Gate) {
    return aiSdkMiddleware(this);
  },
});
