import express from "express";
import { createTollgate, errorMessage } from "tollgate";
import "tollgate/express"; // tg.express(), tg.expressErrors() and the type of req.tollgate
import { CONFIG, runAgent, summarize } from "../agent.mjs";
import { chat, identifySession } from "../chat.mjs";

const tg = await createTollgate({ config: CONFIG });
const app = express();

app.post("/api/agent", tg.express({ route: "agent" }), express.json(), async (req, res) => {
  res.json(await runAgent(req.tollgate, req.body));
});
app.post("/api/summarize", tg.express({ route: "summarize" }), express.raw({ type: "*/*", limit: "20mb" }), async (req, res) => {
  res.json(await summarize(req.tollgate, req.body));
});
// The app's session says who is calling; no tollgate key needed.
app.post("/api/chat", tg.express({ route: "chat", identify: (req) => identifySession(req.headers.cookie) }), express.json(), async (req, res) => {
  // onError: errorMessage is the one line useChat needs to show tollgate's message (budget, limits).
  (await chat(req.tollgate, req.body)).pipeUIMessageStreamToResponse(res, { onError: errorMessage });
});
app.use(tg.expressErrors());

const server = app.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`express example listening on http://127.0.0.1:${server.address().port}`);
});
