import Fastify from "fastify";
import { createTollgate } from "tollgate";
import "tollgate/fastify"; // tg.fastify and the type of req.tollgate
import { CONFIG, runAgent, summarize } from "../agent.mjs";

const tg = await createTollgate({ config: CONFIG });
const app = Fastify({ bodyLimit: 20 * 1024 * 1024 });
app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

await app.register(async (agent) => {
  await agent.register(tg.fastify, { route: "agent" });
  agent.post("/api/agent", async (req) => runAgent(req.tollgate, req.body ?? {}));
});
await app.register(async (uploads) => {
  await uploads.register(tg.fastify, { route: "summarize" });
  uploads.post("/api/summarize", async (req) => summarize(req.tollgate, req.body));
});

const url = await app.listen({ port: Number(process.env.PORT ?? 3000), host: "127.0.0.1" });
console.log(`fastify example listening on ${url}`);
