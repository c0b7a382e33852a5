// Summarises a V8 .cpuprofile (from `BENCH_PROFILE=DIR npm run bench`, or node --cpu-prof):
// the hottest functions by self time, and self time by file/package.
// Usage: node bench/profile-top.js FILE.cpuprofile [N]
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { fmt, ROOT, table } from "./lib.js";

const [file, topArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: node bench/profile-top.js FILE.cpuprofile [N]\n");
  process.exit(2);
}
const top = Number(topArg ?? 25);
const profile = JSON.parse(readFileSync(file, "utf8"));

// Self time per node from the sample stream (timeDeltas[i] is the time before sample i).
const selfUs = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
const IDLE = new Set(["(idle)", "(program)"]);
const idleIds = new Set(profile.nodes.filter((n) => IDLE.has(n.callFrame.functionName)).map((n) => n.id));
let idleUs = 0;
for (const id of idleIds) idleUs += selfUs.get(id) ?? 0;
/** Busy time: everything but (idle) and (program), so shares are of the work done. */
const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0) - idleUs;

function where(url) {
  if (!url) return "(native)";
  const path = url.replace(/^file:\/\//, "");
  const nm = path.lastIndexOf("node_modules/");
  if (nm >= 0) return path.slice(nm + "node_modules/".length);
  if (path.startsWith("node:")) return path;
  return relative(ROOT, path);
}

function packageOf(url) {
  const w = where(url);
  if (w.startsWith("node:")) return "node: (core)";
  if (w === "(native)") return "(native / GC / idle)";
  if (w.startsWith("dist/")) return `tollgate ${w.split("/").slice(0, 2).join("/")}`;
  const parts = w.split("/");
  return parts[0].startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0];
}

const label = (cf) => `${cf.functionName || "(anonymous)"}  ${where(cf.url)}${cf.url ? `:${cf.lineNumber + 1}` : ""}`;

const byFunction = new Map();
const byPackage = new Map();
for (const node of profile.nodes) {
  const us = selfUs.get(node.id) ?? 0;
  if (!us || idleIds.has(node.id)) continue;
  const cf = node.callFrame;
  const name = label(cf);
  byFunction.set(name, (byFunction.get(name) ?? 0) + us);
  const pkg = packageOf(cf.url);
  byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
}

// Inclusive time per function (a recursive function's time is counted once per stack).
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const inclusive = new Map();
function walk(id, onStack) {
  const node = nodes.get(id);
  let us = idleIds.has(id) ? 0 : (selfUs.get(id) ?? 0);
  const name = label(node.callFrame);
  const fresh = !onStack.has(name);
  if (fresh) onStack.add(name);
  for (const child of node.children ?? []) us += walk(child, onStack);
  if (fresh) {
    onStack.delete(name);
    inclusive.set(name, (inclusive.get(name) ?? 0) + us);
  }
  return us;
}
walk(profile.nodes[0].id, new Set());
const own = new Map([...inclusive].filter(([k]) => k.includes(" dist/")));

const rows = (m) =>
  [...m.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, us]) => [k, fmt(us / 1000), `${fmt((100 * us) / totalUs, 1)}%`]);

console.log(`${file}: ${fmt(totalUs / 1000)} ms busy (+${fmt(idleUs / 1000)} ms idle, not counted)\n`);
console.log(table(["function (self time)", "ms", "share"], rows(byFunction)));
console.log("");
console.log(table(["file / package (self time)", "ms", "share"], rows(byPackage)));
console.log("");
console.log(table(["tollgate function (inclusive time)", "ms", "share"], rows(own)));
