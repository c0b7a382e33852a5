// A Next.js-style route module (app/api/agent/route.ts): Web-standard Request in, Response out.
import { createTollgate, errorMessage } from "tollgate";
import "tollgate/fetch"; // tg.fetch()
import { CONFIG, runAgent, summarize } from "../agent.mjs";
import { chat, identifySession } from "../chat.mjs";

const tg = await createTollgate({ config: CONFIG });

export const agentPOST = tg.fetch(async (req, gate) => Response.json(await runAgent(gate, await req.json().catch(() => ({})))), { route: "agent" });
export const summarizePOST = tg.fetch(async (req, gate) => Response.json(await summarize(gate, new Uint8Array(await req.arrayBuffer()))), { route: "summarize" });
// onError: errorMessage is the one line useChat needs to show tollgate's message (budget, limits).
export const chatPOST = tg.fetch(async (req, gate) => (await chat(gate, await req.json().catch(() => ({})))).toUIMessageStreamResponse({ onError: errorMessage }), { route: "chat", identify: (req) => identifySession(req.headers.get("cookie")) });
