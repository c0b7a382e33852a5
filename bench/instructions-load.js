// Load for bench/instructions.sh: N requests, C at a time (keep-alive), the bench's stream or nonstream body; fails on any bad answer.
import { Agent, request } from "undici";
const [url, n, c, scenario] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const MESSAGES = [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Say hello in one short sentence." }];
const body = JSON.stringify({ model: "gpt-4o-mini", messages: MESSAGES, max_tokens: 256, temperature: 0, ...(scenario === "stream" ? { stream: true, stream_options: { include_usage: true } } : {}) });
// refusal: a bad key, answered 401 (bench/run.js's refusal scenario).
const key = scenario === "refusal" ? "sk-not-a-key" : "sk-bench-mock";
const want = scenario === "refusal" ? 401 : 200;
const agent = new Agent({ connections: c });
let left = n, bad = 0;
async function worker() {
  while (left-- > 0) {
    const r = await request(url, { method: "POST", dispatcher: agent, headers: { "content-type": "application/json", authorization: `Bearer ${key}` }, body });
    const t = await r.body.text();
    if (r.statusCode !== want || (scenario === "stream" && !t.includes("[DONE]"))) bad++;
  }
}
await Promise.all(Array.from({ length: c }, worker));
if (bad) { console.error(`${bad} bad responses`); process.exit(1); }
await agent.close();
