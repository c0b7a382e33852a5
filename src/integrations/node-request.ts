import type { IncomingMessage, ServerResponse } from "node:http";
import { clientIp } from "../core/client-ip.js";
import type { AdmitRequest } from "../library/tollgate.js";

/** What the Node-based adapters (Express, Fastify) read from a request: never trusted, only passed to gate 1. */
export function admitFromNode(req: IncomingMessage, res: ServerResponse, route: string, trustProxy: number): AdmitRequest {
  const header = (name: string) => {
    const v = req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const auth = /^Bearer\s+(.+)$/i.exec(header("authorization") ?? "");
  const controller = new AbortController();
  // The response closing before it finished means the client went away.
  res.once("close", () => {
    if (!res.writableFinished) controller.abort();
  });
  return {
    route,
    ip: clientIp(req.socket.remoteAddress, header("x-forwarded-for"), trustProxy),
    token: auth?.[1]?.trim() ?? header("x-api-key")?.trim(),
    actAsUser: header("x-tollgate-user"),
    actAsPlan: header("x-tollgate-plan"),
    runId: header("x-tollgate-run"),
    signal: controller.signal,
  };
}
