import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";

// A new user's first hour: `npm pack`, install the tarball into a fresh strict TypeScript app with
// Express 5 and the AI SDK, type-check a route that reads req.tollgate (skipLibCheck off, so every
// published .d.ts is checked too), and run it without the optional better-sqlite3.

const ROOT = join(import.meta.dirname, "..");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const dev = pkg.devDependencies as Record<string, string>;
const registryUp = spawnSync("npm", ["ping"], { encoding: "utf8", timeout: 20_000 }).status === 0;

const APP_TS = `
import express from "express";
import { createOpenAI } from "@ai-sdk/openai";
import { streamText, wrapLanguageModel } from "ai";
import { createTollgate, type Gate } from "tollgate";
import { expressMiddleware, expressErrorHandler } from "tollgate/express";
import { aiSdkMiddleware } from "tollgate/ai-sdk";

const tg = await createTollgate({ config: "./tollgate.json" });
const app = express();
const openai = createOpenAI({ apiKey: "unused" });

app.post(
  "/api/chat",
  expressMiddleware(tg, { route: "chat", identify: (req) => (req.headers["x-user"] ? { user: String(req.headers["x-user"]), plan: "free" } : null) }),
  async (req, res) => {
    const gate: Gate = req.tollgate;
    const model = wrapLanguageModel({ model: openai.chat("gpt-4o-mini"), middleware: aiSdkMiddleware(gate) });
    const result = streamText({ model, prompt: "hello", abortSignal: gate.signal });
    result.pipeUIMessageStreamToResponse(res);
  },
);
app.post("/api/agent", tg.express({ route: "chat" }), async (req, res) => {
  await req.tollgate.step();
  res.json({ user: req.tollgate.identity.user, middleware: typeof req.tollgate.aiSdk });
});
app.use(expressErrorHandler());
export { app, tg };
`;

describe.skipIf(!registryUp)(`npm pack, installed into a fresh TypeScript app${registryUp ? "" : " (skipped: the npm registry is unreachable)"}`, () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "tg-pack-"));
    const out = execFileSync("npm", ["pack", "--ignore-scripts", "--pack-destination", dir, "--json"], { cwd: ROOT, encoding: "utf8" });
    const tarball = join(dir, JSON.parse(out)[0].filename);
    const app = join(dir, "app");
    mkdirSync(app);
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({
        name: "tg-app",
        private: true,
        type: "module",
        dependencies: { tollgate: `file:${tarball}`, express: dev.express, ai: dev.ai, "@ai-sdk/openai": dev["@ai-sdk/openai"] },
        // @types/json-schema: @ai-sdk/provider's own .d.ts imports it without declaring it (TS7016
        // under skipLibCheck: false in any AI SDK app, with or without tollgate).
        devDependencies: { "@types/express": dev["@types/express"], "@types/json-schema": "^7.0.15", typescript: dev.typescript },
      }),
    );
    writeFileSync(join(app, "tsconfig.json"), JSON.stringify({ compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, skipLibCheck: false, noEmit: true }, include: ["app.ts"] }));
    writeFileSync(join(app, "app.ts"), APP_TS);
    const config = { store: "memory:", providers: { sim: { type: "simulated" } }, models: { "gpt-4o-mini": { provider: "sim" } }, plans: { free: { models: ["gpt-4o-mini"] } }, routes: { chat: { path: "/chat", plans: ["free"] } } };
    writeFileSync(join(app, "tollgate.json"), JSON.stringify(config));
    // Without optional dependencies: a memory: or Redis user needs no native build.
    execFileSync("npm", ["install", "--omit=optional", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: app, stdio: "pipe", timeout: 540_000 });
    dir = app;
  }, 600_000);

  it("type-checks an Express route that reads req.tollgate, with tollgate/express and tollgate/ai-sdk (strict, skipLibCheck off)", () => {
    const tsc = spawnSync(process.execPath, [join(dir, "node_modules/typescript/bin/tsc"), "-p", dir], { encoding: "utf8" });
    expect(tsc.stdout + tsc.stderr).toBe("");
    expect(tsc.status).toBe(0);
  }, 120_000);

  it("runs on memory: without better-sqlite3, and says how to get it when sqlite: is configured", () => {
    const script = `
      import { createTollgate } from "tollgate";
      const tg = await createTollgate({ config: "./tollgate.json" });
      await tg.close();
      const cfg = JSON.parse((await import("node:fs")).readFileSync("./tollgate.json", "utf8"));
      try { await createTollgate({ config: { ...cfg, store: "sqlite:./t.db" } }); console.log("opened"); } catch (e) { console.log(e.message); }
    `;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: dir, encoding: "utf8", timeout: 60_000 });
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain("store sqlite: needs the better-sqlite3 package");
    expect(run.stdout).toContain("npm install better-sqlite3");
  }, 120_000);
});
