// A stream's per-event work alone, in one process: the SSE parser (keeping each event's bytes, as
// the gateway does) and the meter over the fast mock's 50-token stream with its usage chunk, 54
// events, the relay's forward decision included. Steadier than a whole gateway for a lever on the
// per-event path; under callgrind, the difference of two runs is the count per stream:
//
//   node bench/stream-loop.js [DIR] [STREAMS] [WARMUP]          µs per stream of DIR's dist (this checkout's by default)
//   LOOP_CALLGRIND=1 node bench/stream-loop.js [DIR] [STREAMS]   instructions per stream (two callgrind runs: WARMUP only, then + STREAMS)
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(import.meta.url);
const dir = resolve(process.argv[2] ?? join(here, "..", ".."));
const streams = Number(process.argv[3] ?? 3000);
const warmup = Number(process.argv[4] ?? 3000);

if (process.env.LOOP_CALLGRIND) {
  const count = (n) => {
    const out = join(tmpdir(), `stream-loop-${process.pid}-${n}.cg`);
    execFileSync("valgrind", ["--tool=callgrind", `--callgrind-out-file=${out}`, process.execPath, here, dir, String(n), String(warmup)], { stdio: "ignore", env: { ...process.env, LOOP_CALLGRIND: "" } });
    let ir = 0;
    for (const f of readdirSync(tmpdir()).filter((f) => f.startsWith(`stream-loop-${process.pid}-${n}.cg`))) {
      const m = /^(?:summary|totals): (\d+)/m.exec(readFileSync(join(tmpdir(), f), "utf8"));
      if (m) ir += Number(m[1]);
      rmSync(join(tmpdir(), f));
    }
    return ir;
  };
  const none = count(0);
  console.log(`${dir}: ${Math.round((count(streams) - none) / streams)} instructions per stream (SSE parse + meter, 54 events)`);
} else {
  const { Meter } = await import(join(dir, "dist/core/metering/meter.js"));
  const { openaiChat } = await import(join(dir, "dist/formats/openai-chat.js"));
  const { SseParser } = await import(join(dir, "dist/providers/sse.js"));
  const inspection = openaiChat.inspect({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } });
  // The mock's stream (bench/fast-mock.js), each event in its own HTTP chunk as undici hands it over.
  const head = 'data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1765000000,"model":"gpt-4o-mini","system_fingerprint":"fp_mock","choices":[';
  const events = [`${head}{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}\n\n`];
  for (let i = 0; i < 50; i++) events.push(`${head}{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}\n\n`);
  events.push(`${head}{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n`, `${head}],"usage":{"prompt_tokens":26,"completion_tokens":50,"total_tokens":76}}\n\n`, "data: [DONE]\n\n");
  const chunks = events.map((e) => Buffer.from(e));
  let bytes = 0;
  const stream = () => {
    const meter = new Meter(openaiChat, inspection, "o200k_base", 800);
    const parsed = [];
    const parser = new SseParser((e) => parsed.push(e), true);
    for (const c of chunks) parser.feed(c);
    for (const e of parsed) if (meter.event(e).forward) bytes += e.raw.length;
    if (meter.usage?.outputTokens !== 50) throw new Error("the usage chunk was not read");
  };
  for (let i = 0; i < warmup; i++) stream();
  const t = process.hrtime.bigint();
  for (let i = 0; i < streams; i++) stream();
  if (streams > 0 && !process.env.LOOP_QUIET) console.log(`${dir}: ${(Number(process.hrtime.bigint() - t) / streams / 1000).toFixed(2)} µs per stream (SSE parse + meter, 54 events; ${bytes} bytes forwarded)`);
}
