// The mock upstream in its own process, for the throughput runs: the load generator then has the
// bench process to itself. Usage: node bench/mock-server.js '<behavior JSON>'.
// IPC: { id, behavior } -> setBehavior, answers { id }.
import { MockUpstream } from "../dist/testing/mock-upstream.js";

const mock = await MockUpstream.start({ behavior: JSON.parse(process.argv[2] ?? "{}") });
// The mock records every request; a throughput run makes hundreds of thousands, nobody reads them.
setInterval(() => (mock.requests.length = 0), 500).unref();
process.on("message", (m) => {
  if (m?.behavior) mock.setBehavior(m.behavior);
  process.send?.({ id: m?.id });
});
process.on("SIGTERM", () => mock.close().then(() => process.exit(0)));
process.on("disconnect", () => mock.close().then(() => process.exit(0)));
process.stdout.write(`mock listening on ${mock.url}\n`);
