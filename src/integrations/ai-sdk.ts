import type { LanguageModelV3CallOptions, LanguageModelV3Middleware, LanguageModelV3StreamPart, LanguageModelV3Usage } from "@ai-sdk/provider";
import { toTollgateError } from "../core/engine.js";
import { TollgateError } from "../core/errors.js";
import { abortReason, meteredStream, readerOf, type Terminal } from "../core/metered-stream.js";
import { aiSdkCall, type AiSdkCall } from "../formats/ai-sdk-call.js";
import { Gate, type ModelCall } from "../library/gate.js";
import { installMethods } from "../library/subpath-methods.js";

/** The admitted call behind each transformed params object, from transformParams to wrapGenerate/wrapStream. */
const calls = new WeakMap<object, { call: ModelCall; stop: AbortController }>();

/**
 * Vercel AI SDK model middleware (`wrapLanguageModel({ model, middleware: gate.aiSdk() })`). Each
 * model call is one step of the run: it passes the model policy, gets its output clamped and its
 * worst-case cost reserved before the provider is called, is aborted with the gate, and settles
 * on the provider's usage (or the counted text when a stream is cut). A stream is cut at the
 * route's output cap even when the provider ignores the max tokens it was sent. Tool calls the
 * model makes count against max_tool_calls. A refusal never throws out of a stream: it ends the
 * stream with an error part, which the AI SDK hands to the app (`onError`, UI message streams).
 */
export function aiSdkMiddleware(gate: Gate): LanguageModelV3Middleware {
  return {
    specificationVersion: "v3",

    async transformParams({ type, params, model }) {
      const call = await gate.model(aiSdkCall, { modelId: model.modelId, stream: type === "stream", params } satisfies AiSdkCall);
      const stop = new AbortController();
      const signals = [gate.signal, stop.signal, params.abortSignal].filter((s): s is AbortSignal => !!s);
      const out: LanguageModelV3CallOptions = { ...(call.body as unknown as AiSdkCall).params, abortSignal: AbortSignal.any(signals) } as LanguageModelV3CallOptions;
      calls.set(out, { call, stop });
      return out;
    },

    async wrapGenerate({ doGenerate, params }) {
      const held = calls.get(params);
      if (!held) return doGenerate();
      const { call } = held;
      let result;
      try {
        result = await doGenerate();
        call.meter.started = true;
      } catch (err) {
        await call.end(failure(err, gate));
        throw err;
      }
      const toolCalls = result.content.filter((c) => c.type === "tool-call");
      for (const c of result.content) {
        if (c.type === "text" || c.type === "reasoning") call.meter.read({ text: c.text });
        if (c.type === "tool-call") call.meter.read({ text: c.input, toolCalls: 1 });
      }
      call.meter.usage = fromUsage(result.usage);
      await call.end({ ended: "complete" });
      for (const t of toolCalls) await gate.modelToolCall(t.toolName);
      return result;
    },

    async wrapStream({ doStream, params }) {
      const held = calls.get(params);
      if (!held) return doStream();
      const { call, stop } = held;
      let upstream;
      try {
        upstream = await doStream();
        call.streaming();
      } catch (err) {
        await call.end(failure(err, gate));
        throw err;
      }
      const meter = call.meter;
      const streamedInput = new Set<string>();
      let providerError = false;
      const stream = meteredStream<LanguageModelV3StreamPart>(readerOf(upstream.stream), {
        signal: gate.signal,
        async read(part) {
          switch (part.type) {
            case "text-delta":
            case "reasoning-delta":
              meter.read({ text: part.delta });
              break;
            case "tool-input-delta":
              streamedInput.add(part.id);
              meter.read({ text: part.delta });
              break;
            case "tool-call":
              meter.read({ text: streamedInput.has(part.toolCallId) ? undefined : part.input, toolCalls: 1 });
              try {
                await gate.modelToolCall(part.toolName);
              } catch (err) {
                if (!TollgateError.is(err)) throw err;
                return { end: { ended: "refused", error: err } };
              }
              break;
            case "finish":
              meter.usage = fromUsage(part.usage);
              break;
            case "error":
              providerError = true;
              break;
          }
          if (meter.capped) return { end: { ended: "output_cap" } };
          return { forward: [part] };
        },
        settle: (t) => call.end(t.ended === "complete" && providerError ? { ended: "upstream_error" } : t),
        stop: () => stop.abort({ tollgate: "output_cap" }),
        tail(t): LanguageModelV3StreamPart[] {
          // Cut at the cap: the step ends as if the model had stopped at its length limit.
          if (t.ended === "output_cap") return [{ type: "finish", finishReason: { unified: "length", raw: undefined }, usage: countedUsage(meter.counted) }];
          return t.error ? [{ type: "error", error: t.error }] : [];
        },
      });
      return { ...upstream, stream };
    },
  };
}

function failure(err: unknown, gate: Gate): Terminal {
  if (gate.signal.aborted) return { ended: abortReason(gate.signal) };
  return { ended: "upstream_error", error: toTollgateError(err, undefined) };
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

function countedUsage(output: number): LanguageModelV3Usage {
  return {
    inputTokens: { total: undefined, noCache: undefined, cacheRead: undefined, cacheWrite: undefined },
    outputTokens: { total: output, text: output, reasoning: undefined },
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
    this.expectModelCalls();
    return aiSdkMiddleware(this);
  },
});
