import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill();
  child = undefined;
});

async function start(example: string): Promise<string> {
  child = spawn(process.execPath, [join(ROOT, "examples", example, "server.mjs")], { cwd: ROOT, env: { ...process.env, PORT: "0" }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve, reject) => {
    // Only bounds a hung start (a failing one exits at once). At load 20 an app importing its
    // framework, the AI SDK and tollgate took over 15 s to listen, with nothing on stderr.
    const timer = setTimeout(() => {
      child?.kill("SIGKILL");
      reject(new Error(`${example} did not start: ${err}`));
    }, 45_000);
    child!.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!.replace(/\/$/, ""));
      }
    });
    child!.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${example} exited ${code}: ${err}`));
    });
  });
}

const call = async (url: string, path: string, body: BodyInit, key: string | null = "tg_example_key", type = "application/json") => {
  const res = await fetch(url + path, { method: "POST", headers: { "content-type": type, ...(key ? { authorization: `Bearer ${key}` } : {}) }, body });
  return { status: res.status, body: await res.json().catch(() => null) };
};

for (const example of ["express", "fastify", "hono", "next"]) {
  describe(`examples/${example}`, () => {
    it("runs the agent route and the summarise-upload route under the gate", async () => {
      const url = await start(example);

      const ok = await call(url, "/api/agent", JSON.stringify({ steps: 3 }));
      expect(ok.status).toBe(200);
      expect(ok.body.notes).toHaveLength(3);
      expect(ok.body.docs).toBe(6); // retrieval(10) x 3 steps, capped at max_docs: 6

      const runaway = await call(url, "/api/agent", JSON.stringify({ steps: 8 }));
      expect(runaway.status).toBe(429);
      expect(runaway.body.error.code).toBe("run_limit_exceeded");

      expect((await call(url, "/api/agent", "{}", null)).status).toBe(401);

      const big = await call(url, "/api/summarize", new Uint8Array(6 * 1024 * 1024), "tg_example_key", "application/octet-stream");
      expect(big.status).toBe(413);
      expect(big.body.error.code).toBe("input_too_large");
      const file = () => call(url, "/api/summarize", new Uint8Array(2048), "tg_example_key", "application/octet-stream");
      expect((await file()).status).toBe(200);
      expect((await file()).status).toBe(200);
      const third = await file();
      expect(third.status).toBe(429);
      expect(third.body.error.code).toBe("rate_limited");
    }, 90_000);
  });
}

for (const example of ["express", "next"]) {
  describe(`examples/${example}: streaming chat`, () => {
    it("streams a UI message answer for the app's own user and refuses a spent budget with 402 before any token", async () => {
      const url = await start(example);
      const ask = (cookie: string | null) =>
        fetch(url + "/api/chat", { method: "POST", headers: { "content-type": "application/json", ...(cookie ? { cookie } : {}) }, body: JSON.stringify({ messages: [{ role: "user", parts: [{ type: "text", text: "hi" }] }] }) });

      const ok = await ask("session=alice");
      expect(ok.status).toBe(200);
      expect(ok.headers.get("x-tollgate-model")).toBe("gpt-4o-mini");
      const text = await ok.text();
      expect(text).toContain('"type":"text-delta"');
      expect(text).not.toContain('"type":"error"');

      // identify() put this user on the trial plan, whose budget cannot cover one call.
      const broke = await ask("session=trial-bob");
      expect(broke.status).toBe(402);
      expect((await broke.json()).error).toMatchObject({ code: "budget_exceeded", message: expect.stringMatching(/trial plan's daily budget/) });

      expect((await ask(null)).status).toBe(401);
    }, 90_000);
  });
}
