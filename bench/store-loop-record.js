// What the store loops (redis-store-loop.js, sqlite-store-loop.js) append per request.

/** A usage record the size of a bench request's (~0.55 KB of JSON). */
export function record(id) {
  return {
    ts: new Date().toISOString(), request_id: id, route: "main", key_id: "k_bench", user: "bench-user", plan: "bench", ip: "127.0.0.1",
    model: "gpt-4o-mini", provider: "mock", upstream_model: "gpt-4o-mini", decision: "allow", status: 200, stream: false,
    input_tokens: 12, output_tokens: 16, cached_input_tokens: 0, reasoning_tokens: 0, cost_usd: 0.0000114, estimated_cost_usd: 0.000482,
    latency_ms: 3, upstream_latency_ms: 2, ttft_ms: null, tool_calls: 0, finish_reason: "stop", signals: [], flags: [], run_id: null,
  };
}
