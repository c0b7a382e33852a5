// The engine alone, in process: identify, gates, store, meter, usage record, metrics, with a
// provider that answers at once, on one of the shared harness's configs. What limits, budgets and
// stores cost per request without the HTTP server, sockets or upstream around them.
//
//   node bench/engine-loop.js CHECKOUT nolimits|memory|sqlite [N] [C]      CPU µs per request (noisy)
//   CG=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.out \
//     node bench/engine-loop.js CHECKOUT memory 5000                       instructions (noise-free)
//
// CHECKOUT is a built checkout (its dist/ is loaded). N requests are measured after 22,000 of
// warm-up, C at a time (16): fewer leave TurboFan compiling inside the count (bench/instructions.sh
// with its default 150 of warm-up counts mostly compilation). Under callgrind, divide the
// "totals:" of the output file by N. The memory store's usage records are dropped between rounds.
import { execSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import YAML from "yaml";

const [checkout, configName = "memory", nArg, cArg] = process.argv.slice(2);
if (!checkout || !["nolimits", "memory", "sqlite"].includes(configName)) {
  process.stderr.write("usage: node bench/engine-loop.js CHECKOUT nolimits|memory|sqlite [N] [C]\n");
  process.exit(2);
}
const N = Number(nArg ?? 36_000);
const C = Number(cArg ?? 16);
const load = (path) => import(pathToFileURL(join(resolve(checkout), "dist", path)).href);
const { parseConfig } = await load("config/load.js");
const { resolveConfig } = await load("config/resolve.js");
const { openaiChat } = await load("formats/openai-chat.js");
const { Engine } = await load("core/engine.js");
const { MemoryStore } = await load("stores/memory.js");
const { SqliteStore } = await load("stores/sqlite.js");
const { Metrics } = await load("observability/metrics.js");

const shared = process.env.SHARED_BENCH ?? [join(import.meta.dirname, "../../shared/bench"), join(import.meta.dirname, "../../../shared/bench")].find((d) => {
  try {
    return readFileSync(join(d, "tollgate-bench.yaml")) !== undefined;
  } catch {
    return false;
  }
});
process.env.MOCK_URL = "http://127.0.0.1:1/v1"; // never called: the provider below answers
const file = join(shared, `tollgate-bench${configName === "sqlite" ? "" : `-${configName}`}.yaml`);
const config = resolveConfig(parseConfig(YAML.parse(readFileSync(file, "utf8"))));
const inner = configName === "sqlite" ? SqliteStore.open(join(mkdtempSync(join(tmpdir(), "tg-engine-loop-")), "bench.db")) : new MemoryStore();
const metrics = new Metrics(config);
const store = metrics.instrumentStore(inner);
const answer = {
  id: "chatcmpl-bench",
  object: "chat.completion",
  created: 1,
  model: "gpt-4o-mini",
  choices: [{ index: 0, message: { role: "assistant", content: "Hello there, friend." }, finish_reason: "stop" }],
  usage: { prompt_tokens: 20, completion_tokens: 16, total_tokens: 36 },
};
const provider = { name: "mock", supports: () => true, call: async () => ({ kind: "json", body: structuredClone(answer) }), close: async () => {} };
const engine = new Engine({ config, store, providers: { mock: provider }, onRecord: (r) => metrics.record(r), warn: () => {} });
const body = () => ({
  model: "gpt-4o-mini",
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Say hello in one short sentence." },
  ],
  max_tokens: 256,
  temperature: 0,
});

let failed = 0;
/** One request as the gateway runs it: admitted before the body, prepared, called, finished. */
async function request() {
  const ex = engine.open({ route: "main", endpoint: "chat_completions", ip: "127.0.0.1", credentials: { token: "sk-bench-mock" } });
  try {
    await engine.admit(ex, { bodyPending: true });
    await engine.prepare(ex, openaiChat, body());
    const { meter } = await engine.call(ex, new AbortController().signal);
    await engine.finish(ex, { ended: "complete", meter });
  } catch (err) {
    if (failed++ === 0) console.error(err);
  }
}
async function run(n) {
  let left = n;
  await Promise.all(Array.from({ length: C }, async () => {
    while (left-- > 0) await request();
  }));
  // The memory store keeps every usage record; a growing heap would make later rounds slower.
  if (inner.usage) inner.usage.length = 0;
}

await run(22_000);
if (process.env.CG) {
  execSync(`callgrind_control -i on ${process.pid}`);
  await run(N);
  execSync(`callgrind_control -i off ${process.pid}`);
  console.log(`${checkout} ${configName}: ${N} requests counted${failed ? `, ${failed} failed` : ""}`);
} else {
  const rounds = [];
  for (let r = 0; r < 12; r++) {
    const before = process.cpuUsage();
    await run(N / 12);
    const used = process.cpuUsage(before);
    rounds.push((used.user + used.system) / (N / 12));
  }
  rounds.sort((a, b) => a - b);
  console.log(`${checkout} ${configName}: CPU µs/request min ${rounds[0].toFixed(1)}, median ${rounds[6].toFixed(1)}${failed ? `, ${failed} failed` : ""}`);
}
await store.close();
process.exit(failed ? 1 : 0);
