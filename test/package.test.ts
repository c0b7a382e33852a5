import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

// What `npm pack` ships, read from the built dist/ (`npm test` builds before it runs vitest).

const ROOT = join(import.meta.dirname, "..");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const declared = new Set(Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.optionalDependencies }));
const exportTargets = Object.entries(pkg.exports as Record<string, string | { types: string; default: string }>);

/** The modules a built file imports (type imports in .d.ts files included; `lazy`: dynamic imports too). */
function importsOf(file: string, lazy = true): string[] {
  const text = readFileSync(file, "utf8");
  const pattern = lazy ? /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"'$]+)["']/g : /(?:\bfrom\s*|\bimport\s+)["']([^"'$]+)["']/g;
  return [...text.matchAll(pattern)].map((m) => m[1]!);
}

/** Every file reachable from `entry` through relative imports (`lazy`: dynamic ones too). */
function graph(entry: string, lazy = true): string[] {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of importsOf(file, lazy).filter((s) => s.startsWith("."))) {
      const target = resolve(dirname(file), spec);
      visit(file.endsWith(".d.ts") ? target.replace(/\.js$/, ".d.ts") : target);
    }
  };
  visit(entry);
  return [...seen];
}

const packageName = (spec: string) => (spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
const isBuiltin = (spec: string) => spec.startsWith("node:") || builtinModules.includes(spec.split("/")[0]!);

describe("the published package", () => {
  const packed: string[] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT, encoding: "utf8" }))[0].files.map((f: { path: string }) => f.path);

  it("ships the license, the docs the README links to, and every export's files", () => {
    expect(pkg.license).toBe("Apache-2.0");
    expect(readFileSync(join(ROOT, "LICENSE"), "utf8")).toMatch(/Apache License\s+Version 2\.0, January 2004/);
    expect(pkg.repository?.url).toMatch(/^git\+https:\/\//);
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const linkedDocs = [...readme.matchAll(/\]\((docs\/[^)#\s]+)\)/g)].map((m) => m[1]!);
    for (const doc of linkedDocs.filter((d) => d.endsWith(".md"))) linkedDocs.push(...[...readFileSync(join(ROOT, doc), "utf8").matchAll(/\]\(([\w-]+\.md)\)/g)].map((m) => `docs/${m[1]}`));
    expect(linkedDocs).toContain("docs/config.md");
    const targets = exportTargets.flatMap(([, t]) => (typeof t === "string" ? [t] : [t.types, t.default])).map((t) => t.replace(/^\.\//, ""));
    for (const file of ["LICENSE", "README.md", "package.json", "dist/cli/main.js", ...linkedDocs, ...targets]) expect(packed, file).toContain(file);
    expect(packed.filter((f) => /\.test\.(js|d\.ts)$/.test(f))).toEqual([]);
  });

  it("has subpath entries for each adapter and the AI SDK middleware", () => {
    expect(Object.keys(pkg.exports)).toEqual(expect.arrayContaining([".", "./express", "./fastify", "./hono", "./fetch", "./ai-sdk", "./testing"]));
  });

  it("imports, in its published types and code, nothing it does not declare", () => {
    const built = packed.filter((f) => f.startsWith("dist/") && /\.(js|d\.ts)$/.test(f));
    const undeclared = new Set<string>();
    for (const file of built) {
      for (const spec of importsOf(join(ROOT, file))) {
        if (spec.startsWith(".")) continue;
        if (isBuiltin(spec)) {
          // Node's own modules are typed by @types/node, which the types then need.
          if (file.endsWith(".d.ts") && !declared.has("@types/node")) undeclared.add(`${spec} (${file})`);
          continue;
        }
        if (!declared.has(packageName(spec)) && packageName(spec) !== pkg.name) undeclared.add(`${spec} (${file})`);
      }
    }
    expect([...undeclared]).toEqual([]);
  });

  it("keeps framework packages optional: peers an app brings, and better-sqlite3 only for sqlite: stores", () => {
    for (const peer of ["@ai-sdk/provider", "fastify", "hono"]) {
      expect(pkg.peerDependenciesMeta?.[peer]?.optional, peer).toBe(true);
      expect(pkg.dependencies?.[peer], peer).toBeUndefined();
    }
    expect(pkg.dependencies["better-sqlite3"]).toBeUndefined();
    expect(pkg.optionalDependencies["better-sqlite3"]).toBeDefined();
  });

  it("loads no adapter and names no framework from its core entry, in code or in types", () => {
    const entry = pkg.exports["."] as { types: string; default: string };
    for (const file of [...graph(join(ROOT, entry.default)), ...graph(join(ROOT, entry.types))]) {
      expect(existsSync(file), file).toBe(true);
      const rel = relative(ROOT, file);
      expect(rel, "the core entry reaches an adapter").not.toMatch(/integrations\/(express|fastify|hono|fetch|ai-sdk)\./);
      const frameworks = importsOf(file).filter((s) => /^(express|fastify|hono|ai|@ai-sdk\/.*)$/.test(packageName(s)));
      expect(frameworks, rel).toEqual([]);
    }
    // better-sqlite3 is loaded only when a sqlite: store is opened.
    const eager = graph(join(ROOT, entry.default), false).filter((file) => importsOf(file, false).includes("better-sqlite3"));
    expect(eager.map((f) => relative(ROOT, f))).toEqual([]);
  });
});
