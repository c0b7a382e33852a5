import { fileURLToPath } from "node:url";

/** The bundled demo config, at the package root. */
export const DEMO_CONFIG = fileURLToPath(new URL("../../tollgate.demo.yaml", import.meta.url));

export function demoBanner(url: string): string {
  return `
Demo keys (simulated provider, no network needed):
  tg_demo_alice_free       user alice, plan free  ($0.10/day)
  tg_demo_bob_pro          user bob, plan pro     (may use gpt-4o)
  tg_demo_backend_service  service key: send x-tollgate-user to act for an end user

Try it:
  curl ${url}/chat/v1/chat/completions \\
    -H "Authorization: Bearer tg_demo_alice_free" -H "Content-Type: application/json" \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'

Usage records are printed below, one JSON line per request. Ctrl-C stops the gateway.

`;
}
