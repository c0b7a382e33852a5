import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { ResolvedConfig } from "../config/resolve.js";

/** The page's files, at the package root (shipped in the npm package), plus uPlot from node_modules. */
const DASHBOARD_DIR = fileURLToPath(new URL("../../dashboard/", import.meta.url));
const require = createRequire(import.meta.url);

const FILES: Record<string, { file: () => string; type: string }> = {
  "/dashboard": { file: () => DASHBOARD_DIR + "index.html", type: "text/html; charset=utf-8" },
  "/dashboard/": { file: () => DASHBOARD_DIR + "index.html", type: "text/html; charset=utf-8" },
  "/dashboard/app.js": { file: () => DASHBOARD_DIR + "app.js", type: "text/javascript; charset=utf-8" },
  "/dashboard/outbox.js": { file: () => DASHBOARD_DIR + "outbox.js", type: "text/javascript; charset=utf-8" },
  "/dashboard/style.css": { file: () => DASHBOARD_DIR + "style.css", type: "text/css; charset=utf-8" },
  "/dashboard/vendor/uPlot.esm.js": { file: () => require.resolve("uplot/dist/uPlot.esm.js"), type: "text/javascript; charset=utf-8" },
  "/dashboard/vendor/uPlot.min.css": { file: () => require.resolve("uplot/dist/uPlot.min.css"), type: "text/css; charset=utf-8" },
};

/**
 * The page holds no data: it asks for the admin key and sends it as a bearer to /admin/*. What it
 * renders comes from callers (user ids, model names), so the policy allows scripts and styles from
 * this origin only — an injected <script> or inline handler would not run — and the page itself
 * writes text with textContent, never as HTML.
 */
const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};

/** GET /dashboard and its assets; read once, then served from memory. Absent without an admin_key. */
export function createDashboard(config: ResolvedConfig) {
  const cache = new Map<string, Buffer>();
  return async function dashboard(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const asset = FILES[path];
    if (!config.adminKey || !asset || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(config.adminKey ? "not found\n" : "the dashboard is disabled (no admin_key)\n");
      return;
    }
    let body = cache.get(path);
    if (!body) {
      try {
        body = await readFile(asset.file());
      } catch {
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("dashboard files are missing from this installation\n");
        return;
      }
      cache.set(path, body);
    }
    res.writeHead(200, { ...SECURITY_HEADERS, "content-type": asset.type, "content-length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  };
}
