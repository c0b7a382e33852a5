import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { ConfigError, formatPath, type ConfigIssue } from "./errors.js";
import { configSchema, type RawConfig } from "./schema.js";

/** Reads a YAML or JSON config file; `env:NAME` strings are replaced from `env`. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): RawConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([{ path: "", message: `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true });
  } catch (err) {
    throw new ConfigError([{ path: "", message: `${file} is not valid YAML/JSON: ${(err as Error).message.split("\n")[0]}` }]);
  }
  return parseConfig(doc, env);
}

/** Validates a config object (the file's shape). */
export function parseConfig(doc: unknown, env: NodeJS.ProcessEnv = process.env): RawConfig {
  const issues: ConfigIssue[] = [];
  const substituted = substituteEnv(doc, [], env, issues);
  if (issues.length) throw new ConfigError(issues);
  const result = configSchema.safeParse(substituted ?? {});
  if (!result.success) throw new ConfigError(result.error.issues.flatMap(describeIssue));
  return result.data;
}

function substituteEnv(value: unknown, path: PropertyKey[], env: NodeJS.ProcessEnv, issues: ConfigIssue[]): unknown {
  if (typeof value === "string" && value.startsWith("env:")) {
    const name = value.slice(4);
    const v = env[name];
    if (v === undefined || v === "") {
      issues.push({ path: formatPath(path), message: `environment variable ${name} is not set` });
      return value;
    }
    return v;
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, [...path, i], env, issues));
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, [...path, k], env, issues);
    return out;
  }
  return value;
}

function describeIssue(issue: z.core.$ZodIssue): ConfigIssue[] {
  const path = formatPath(issue.path);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => {
      const hint = suggest(key, knownKeysAt(issue.path));
      return { path: path ? `${path}.${key}` : key, message: `unknown key${hint ? ` (did you mean "${hint}"?)` : ""}` };
    });
  }
  if (issue.code === "invalid_type" && issue.message.includes("received undefined")) {
    return [{ path, message: "required" }];
  }
  if (issue.code === "invalid_union") {
    return [{ path, message: issue.message === "Invalid input" ? "invalid value" : issue.message }];
  }
  return [{ path, message: issue.message }];
}

/** The keys the schema accepts at a path, for "did you mean" hints. */
function knownKeysAt(path: ReadonlyArray<PropertyKey>): string[] {
  let schema: any = configSchema;
  for (const seg of path) {
    schema = unwrap(schema);
    if (!schema) return [];
    const def = schema._zod?.def;
    if (def?.type === "object") schema = def.shape[seg as string];
    else if (def?.type === "record") schema = def.valueType;
    else if (def?.type === "array") schema = def.element;
    else return [];
  }
  schema = unwrap(schema);
  const def = schema?._zod?.def;
  return def?.type === "object" ? Object.keys(def.shape) : [];
}

function unwrap(schema: any): any {
  while (schema?._zod?.def && ["optional", "default", "prefault", "nullable", "pipe"].includes(schema._zod.def.type)) {
    schema = schema._zod.def.innerType ?? schema._zod.def.in;
  }
  return schema;
}

function suggest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 4)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
