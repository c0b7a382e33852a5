// Serves the route module the way Next.js would, on plain Node.
import { serve } from "@hono/node-server";
import { agentPOST, chatPOST, summarizePOST } from "./route.mjs";

const routes = { "/api/agent": agentPOST, "/api/summarize": summarizePOST, "/api/chat": chatPOST };
serve({ fetch: (req) => routes[new URL(req.url).pathname]?.(req) ?? new Response("not found", { status: 404 }), port: Number(process.env.PORT ?? 3000), hostname: "127.0.0.1" }, (info) => {
  console.log(`next-style example listening on http://127.0.0.1:${info.port}`);
});
