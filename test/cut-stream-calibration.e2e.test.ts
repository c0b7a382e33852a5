import { readFileSync } from "node:fs";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { countTokens } from "../src/testing/mock-upstream.js";
import { openaiUpstream, useGateway } from "./use-gateway.js";

/**
 * SPEC §7.8, issue 13 defect 7: a stream cut before the provider's usage came, on a model with no
 * OpenAI tokenizer, is charged a calibrated estimate of what it delivered, not its UTF-8 bytes
 * (about 4x the provider's count for English).
 */

const samples = (JSON.parse(readFileSync(new URL("./fixtures/token-calibration.json", import.meta.url), "utf8")) as { samples: { id: string; text: string }[] }).samples;
const PROSE = samples
  .filter((s) => s.id.startsWith("prose-en") || s.id === "docs-en")
  .map((s) => s.text)
  .join("\n\n");
/** Claude 3.5 Sonnet to 4.6 spend 1.16 tokens per o200k token on English prose (the fixture's source). */
const CLAUDE_PROSE_RATIO = 1.16;
const CALLER = "tg_calibration_alice";

const { gw, mock } = useGateway({
  config: (mock) => ({
    store: "memory:",
    providers: {
      anth: { type: "anthropic", base_url: mock.url, api_key: "env:UPSTREAM_KEY" },
      compat: openaiUpstream(mock, "env:UPSTREAM_KEY"),
    },
    models: {
      sonnet: { provider: "anth", upstream: "claude-sonnet-4-20250514" },
      flash: { provider: "compat", upstream: "gemini-2.5-flash", price: { input: 0.3, output: 2.5 } },
    },
    plans: { free: { models: ["sonnet", "flash"], budget: { daily: 10 } } },
    keys: [{ key: CALLER, user: "alice", plan: "free" }],
    routes: {
      chat: { path: "/chat", plans: ["free"], default_model: "sonnet", input: { max_output_tokens: 4000, max_prompt_chars: 100_000 } },
      capped: { path: "/capped", plans: ["free"], default_model: "flash", input: { max_output_tokens: 60 } },
    },
  }),
  env: { UPSTREAM_KEY: "sk-upstream-calibration" },
});

describe("a cut stream on a model without an OpenAI tokenizer", () => {
  it("Claude, cut by the client: charged close to Claude's count of what it delivered, not its bytes", async () => {
    mock.setBehavior({ text: PROSE, tokenIntervalMs: 5 });
    const client = new Anthropic({ baseURL: `${gw.url}/chat`, apiKey: CALLER, maxRetries: 0 });
    const abort = new AbortController();
    const stream = client.messages.stream({ model: "sonnet", max_tokens: 4000, messages: [{ role: "user", content: "Tell me a story" }] }, { signal: abort.signal });
    const { response } = await stream.withResponse();
    let received = "";
    stream.on("text", (t) => {
      received += t;
      if (received.length >= 900 && !abort.signal.aborted) abort.abort();
    });
    await stream.done().catch(() => {});
    await mock.waitForClose(mock.requests[0]!, 2_000);
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ ended: "client_disconnect", usage_source: "counted" });

    // What Claude would count: between what the client got and what the mock sent (in o200k tokens).
    const low = CLAUDE_PROSE_RATIO * countTokens(received);
    const high = CLAUDE_PROSE_RATIO * mock.requests[0]!.chunksSent;
    console.log(`cut Claude stream: ${received.length} chars received, charged ${rec.output_tokens} tokens; Claude's count ${Math.round(low)}-${Math.round(high)}; bytes ${Buffer.byteLength(received)}`);
    expect(rec.output_tokens).toBeGreaterThanOrEqual(Math.floor(low * 0.75));
    expect(rec.output_tokens).toBeLessThanOrEqual(Math.ceil(high * 1.25));
    expect(rec.output_tokens).toBeLessThan(Buffer.byteLength(received) / 2);
  });

  it("Gemini over an OpenAI-compatible API, no usage ever sent: input and output are estimates, not byte bounds", async () => {
    mock.setBehavior({ text: PROSE, tokenIntervalMs: 5, omitUsage: true });
    const client = new OpenAI({ baseURL: `${gw.url}/chat/v1`, apiKey: CALLER, maxRetries: 0 });
    const prompt = PROSE;
    const abort = new AbortController();
    const { data: stream, response } = await client.chat.completions
      .create({ model: "flash", stream: true, messages: [{ role: "user", content: prompt }] }, { signal: abort.signal })
      .withResponse();
    let received = "";
    try {
      for await (const chunk of stream) {
        received += chunk.choices[0]?.delta?.content ?? "";
        if (received.length >= 900) abort.abort();
      }
    } catch {
      // the abort
    }
    await mock.waitForClose(mock.requests[0]!, 2_000);
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ ended: "client_disconnect", usage_source: "counted" });
    // Gemini spends about one token per o200k token on English prose (the fixture's Gemma 3 counts).
    const promptTokens = countTokens(prompt);
    expect(rec.input_tokens).toBeGreaterThanOrEqual(Math.floor(promptTokens * 0.75));
    expect(rec.input_tokens).toBeLessThanOrEqual(Math.ceil(promptTokens * 1.25) + 16);
    expect(rec.output_tokens).toBeGreaterThanOrEqual(Math.floor(countTokens(received) * 0.75));
    expect(rec.output_tokens).toBeLessThanOrEqual(Math.ceil(mock.requests[0]!.chunksSent * 1.25));
    // The reservation still held the byte bound.
    expect(rec.estimated_cost_usd).toBeGreaterThan(rec.cost_usd);
  });

  it("cut by the output cap when the provider ignores max_tokens: charged about the cap, not the bytes", async () => {
    mock.setBehavior({ text: PROSE, ignoreMaxTokens: true, omitUsage: true, tokenIntervalMs: 1 });
    const client = new OpenAI({ baseURL: `${gw.url}/capped/v1`, apiKey: CALLER, maxRetries: 0 });
    const { data: stream, response } = await client.chat.completions.create({ model: "flash", stream: true, messages: [{ role: "user", content: "go" }] }).withResponse();
    let received = "";
    for await (const chunk of stream) received += chunk.choices[0]?.delta?.content ?? "";
    const rec = await gw.recordFor(response.headers.get("x-tollgate-request-id"));
    expect(rec).toMatchObject({ ended: "output_cap", usage_source: "counted" });
    // The cap is checked against the fewest tokens the estimate allows, so an honest stream is never
    // cut before its max_tokens; what was forwarded is charged.
    expect(countTokens(received)).toBeGreaterThanOrEqual(60);
    expect(rec.output_tokens).toBeGreaterThanOrEqual(60);
    expect(rec.output_tokens).toBeLessThanOrEqual(Math.ceil(60 * 1.25 * 1.1));
    expect(rec.output_tokens).toBeLessThan(Buffer.byteLength(received) / 2);
  });
});
