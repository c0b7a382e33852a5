import { configJsonSchema } from "./schema.js";

/**
 * docs/config.md, rendered from the config schema: every key with its type, default and
 * description. `npm run docs:config` writes it; reference.test.ts fails when the file and the
 * schema disagree, so the reference cannot drift from what `tollgate check` accepts.
 */
export function configReference(): string {
  const rows: Row[] = [];
  walk(configJsonSchema() as JsonSchema, "", true, rows);
  // A section per top-level key that holds others; single values share the first section.
  const sections = new Map<string, Row[]>([["Top-level values", []]]);
  for (const row of rows) {
    const top = row.key.split(/[.[]/)[0]!;
    const nested = rows.some((r) => r.key.startsWith(`${top}.`) || r.key.startsWith(`${top}[`));
    const title = nested ? `\`${top}\`` : "Top-level values";
    sections.set(title, [...(sections.get(title) ?? []), row]);
  }
  const out = [HEADER];
  for (const [title, list] of sections) {
    out.push(`## ${title}\n`, "| Key | Type | Default | Description |", "| --- | --- | --- | --- |");
    for (const r of list) out.push(`| \`${r.key}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.description)} |`);
    out.push("");
  }
  return out.join("\n");
}

/** Keys without a description: reference.test.ts keeps this empty. */
export function undescribedKeys(): string[] {
  const rows: Row[] = [];
  walk(configJsonSchema() as JsonSchema, "", true, rows);
  return rows.filter((r) => !r.description).map((r) => r.key);
}

const HEADER = `# Configuration reference

<!-- Generated from src/config/schema.ts by \`npm run docs:config\`; edit the schema, not this file. -->

A YAML (or JSON) file, or an object of the same shape passed to \`createTollgate({ config })\`.
\`tollgate check --config FILE\` validates one and names every field at fault; \`tollgate schema\`
prints the JSON Schema for editors.

- Any string value may be \`env:NAME\`: it reads the environment variable NAME, and a missing one
  is a config error.
- An unknown or misspelled key is an error: a limit that is written down but not enforced is the
  worst failure a gateway can have.
- Durations are \`Ns\`, \`Nm\`, \`Nh\` or \`Nd\` (\`"30s"\`, \`"1d"\`).
- Money is US dollars as a decimal number (\`0.50\`); prices are US dollars per 1M tokens.
- \`<name>\` is a name of your choice; \`[]\` is each item of a list.
- Default \`required\` means the key must be given; \`—\` means absent is allowed and turns the
  feature off (or the description says what absent means).
`;

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
}

interface Row {
  key: string;
  type: string;
  default: string;
  description: string;
}

/** `item`: a map's value or a list's item, which its parent's row already describes. */
function walk(node: JsonSchema, key: string, required: boolean, rows: Row[], item = false): void {
  if (key && !item) rows.push({ key, type: typeOf(node), default: defaultOf(node, required), description: node.description ?? "" });
  if (node.properties) {
    for (const [name, child] of Object.entries(node.properties)) walk(child, key ? `${key}.${name}` : name, node.required?.includes(name) ?? false, rows);
  } else if (typeof node.additionalProperties === "object") {
    walk(node.additionalProperties, `${key}.<name>`, true, rows, true);
  } else if (node.items?.properties) {
    walk(node.items, `${key}[]`, true, rows, true);
  }
}

function typeOf(node: JsonSchema): string {
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (node.anyOf) return [...new Set(node.anyOf.map(typeOf))].join(" | ");
  if (node.type === "array") return node.items?.properties ? "list of objects" : `list of ${typeOf(node.items ?? {})}`;
  if (node.type === "object") return node.additionalProperties && typeof node.additionalProperties === "object" ? "map" : "object";
  return Array.isArray(node.type) ? node.type.join(" | ") : (node.type ?? "any");
}

function defaultOf(node: JsonSchema, required: boolean): string {
  // An object's own keys list their defaults; a list's or a map's default is shown as it is.
  if (node.default !== undefined) return node.properties ? "(see its keys)" : `\`${JSON.stringify(node.default)}\``;
  return required ? "required" : "—";
}

/** A table cell: one line, its pipes escaped. */
function cell(text: string): string {
  return text.replace(/\n/g, " ").replace(/\|/g, "\\|");
}
