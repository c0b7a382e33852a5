#!/usr/bin/env node
// The lower bound of a refusal in Node: a bare node:http server answering every request with a
// fixed 401 JSON body (the body is not read, as tollgate does not read a refused request's body
// before answering). What a refusal costs tollgate beyond this is the gateway's own work.
import { createServer } from "node:http";

const PORT = Number(process.env.PORT || 18083);
const body = Buffer.from(JSON.stringify({ error: { message: "invalid API key", type: "invalid_request_error", param: null, code: "unauthorized" } }));
createServer((req, res) => {
  res.writeHead(401, { "content-type": "application/json", "content-length": body.length });
  res.end(body);
  req.resume();
}).listen(PORT, process.env.HOST || "127.0.0.1");
