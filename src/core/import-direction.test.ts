import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The engine owns its contracts: the store, provider and format interfaces and the resolved config
 * live in core/, and config/ and the adapters (stores/, providers/, formats/, gateway/, library/,
 * integrations/, cli/) import core — never the reverse. Nothing in core loads a framework, a
 * database driver or an HTTP client.
 */
const CORE = import.meta.dirname;
const SRC = dirname(CORE);
const FORBIDDEN_PACKAGES = ["express", "fastify", "hono", "@hono/node-server", "ioredis", "better-sqlite3", "undici", "ai", "@ai-sdk/provider", "pino", "prom-client", "@opentelemetry/api"];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? [join(dir, e.name)] : [],
  );
}

function imports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^"'`;]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g)].map((m) => (m[1] ?? m[2])!);
}

describe("import direction", () => {
  const files = sources(CORE);

  it("finds the engine's sources", () => {
    expect(files.map((f) => relative(CORE, f))).toEqual(expect.arrayContaining(["engine.ts", "store.ts", "provider.ts", "format.ts", "config-types.ts", "gates/quota.ts"]));
  });

  it("core imports nothing outside core but node built-ins and small libraries", () => {
    const violations: string[] = [];
    for (const file of files) {
      for (const spec of imports(file)) {
        const where = `${relative(SRC, file)} imports ${spec}`;
        if (spec.startsWith(".")) {
          const target = relative(SRC, resolve(dirname(file), spec)).replace(/\.js$/, ".ts");
          if (!target.startsWith("core/")) violations.push(where);
        } else if (!spec.startsWith("node:") && FORBIDDEN_PACKAGES.some((p) => spec === p || spec.startsWith(`${p}/`))) {
          violations.push(where);
        }
      }
    }
    expect(violations).toEqual([]);
  });
});
