// Load for bench/instructions.sh: N requests, C at a time (keep-alive), the bench's stream or nonstream body; fails on any bad answer.
import { Agent, request } from "undici";
const [url, n, c, scenario] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const MESSAGES = [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Say hello in one short sentence." }];
// refusal: a bad key, answered 401 (bench/run.js's refusal scenario); ratelimited, forbidden and
// budget: a known key's 429, 403 and 402 (bench/run.js's scenarios of the same names).
const model = scenario === "forbidden" ? "gpt-4o" : "gpt-4o-mini";
const body = JSON.stringify({ model, messages: MESSAGES, max_tokens: 256, temperature: 0, ...(scenario === "stream" ? { stream: true, stream_options: { include_usage: true } } : {}) });
const key = { refusal: "sk-not-a-key", ratelimited: "sk-bench-limited", budget: "sk-bench-broke" }[scenario] ?? "sk-bench-mock";
const want = { refusal: 401, ratelimited: 429, forbidden: 403, budget: 402 }[scenario] ?? 200;
const agent = new Agent({ connections: c });
let left = n, bad = 0;
async function worker() {
  while (left-- > 0) {
    const r = await request(url, { method: "POST", dispatcher: agent, headers: { "content-type": "application/json", authorization: `Bearer ${key}` }, body });
    const t = await r.body.text();
    // The limited key's window serves one request a minute.
    if ((r.statusCode !== want && !(scenario === "ratelimited" && r.statusCode === 200)) || (scenario === "stream" && !t.includes("[DONE]"))) bad++;
  }
}
await Promise.all(Array.from({ length: c }, worker));
if (bad) { console.error(`${bad} bad responses`); process.exit(1); }
await agent.close();
