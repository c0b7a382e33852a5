import express from "express";
import { createTollgate } from "tollgate";
import "tollgate/express"; // tg.express(), tg.expressErrors() and the type of req.tollgate
import { CONFIG, runAgent, summarize } from "../agent.mjs";

const tg = await createTollgate({ config: CONFIG });
const app = express();

app.post("/api/agent", tg.express({ route: "agent" }), express.json(), async (req, res) => {
  res.json(await runAgent(req.tollgate, req.body));
});
app.post("/api/summarize", tg.express({ route: "summarize" }), express.raw({ type: "*/*", limit: "20mb" }), async (req, res) => {
  res.json(await summarize(req.tollgate, req.body));
});
app.use(tg.expressErrors());

const server = app.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`express example listening on http://127.0.0.1:${server.address().port}`);
});
