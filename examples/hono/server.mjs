import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { createTollgate } from "tollgate";
import "tollgate/hono"; // tg.hono() and the type of c.get("tollgate")
import { CONFIG, runAgent, summarize } from "../agent.mjs";

const tg = await createTollgate({ config: CONFIG });
const app = new Hono();

app.post("/api/agent", tg.hono({ route: "agent" }), async (c) => c.json(await runAgent(c.get("tollgate"), await c.req.json().catch(() => ({})))));
app.post("/api/summarize", tg.hono({ route: "summarize" }), async (c) => c.json(await summarize(c.get("tollgate"), new Uint8Array(await c.req.arrayBuffer()))));

const server = serve({ fetch: app.fetch, port: Number(process.env.PORT ?? 3000), hostname: "127.0.0.1" }, (info) => {
  console.log(`hono example listening on http://127.0.0.1:${info.port}`);
});
void server;
