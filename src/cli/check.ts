import type { ResolvedConfig } from "../config/resolve.js";
import { formatDuration } from "../core/duration.js";
import { formatUsd } from "../core/money.js";

/** What `tollgate check` prints: the config as tollgate understood it, secrets masked. */
export function describeConfig(c: ResolvedConfig, file: string): string {
  const usd = (m: number | undefined) => (m === undefined ? "-" : `$${formatUsd(m)}`);
  const perM = (m: number | undefined) => (m === undefined ? "-" : `$${formatUsd(m)}/1M`);
  const lines = [`config ${file} is valid`, ""];
  lines.push(`server   ${c.server.host}:${c.server.port}  timeout ${formatDuration(c.server.timeoutMs)}  first byte ${formatDuration(c.server.firstByteTimeoutMs)}  idle ${formatDuration(c.server.idleTimeoutMs)}  body ${formatDuration(c.server.bodyTimeoutMs)}  keep-alive ${formatDuration(c.server.keepAliveTimeoutMs)}, ≤ ${c.server.maxBodyBytes} bytes  trust_proxy ${c.server.trustProxy}`);
  lines.push(`store    ${c.store}  (on error: ${c.onStoreError})`);
  lines.push(`admin    ${c.adminKey ? "enabled (key ****)" : "disabled"}`);
  if (c.budget.daily !== undefined || c.budget.monthly !== undefined) lines.push(`budget   gateway daily ${usd(c.budget.daily)}  monthly ${usd(c.budget.monthly)}`);
  lines.push("", "providers");
  for (const p of Object.values(c.providers)) {
    lines.push(`  ${p.name.padEnd(14)} ${p.type.padEnd(10)} ${p.baseUrl ?? ""}${p.apiKey ? "  key ****" : ""}`);
  }
  lines.push("", "models");
  for (const m of Object.values(c.models)) {
    const src = m.price.source === "catalog" ? `catalog ${m.price.catalogId ?? ""}` : "config";
    const extra = [m.price.cachedInput !== undefined ? `cached ${perM(m.price.cachedInput)}` : "", m.price.cacheWrite !== undefined ? `cache write ${perM(m.price.cacheWrite)}` : "", m.price.tiers?.length ? `${m.price.tiers.length} long-context tier(s)` : ""].filter(Boolean).join(", ");
    lines.push(`  ${m.name.padEnd(14)} -> ${m.provider}/${m.upstream}  in ${perM(m.price.input)}  out ${perM(m.price.output)}${extra ? `  (${extra})` : ""}  [${src}]${m.requires.length ? `  requires ${m.requires.join(", ")}` : ""}`);
  }
  lines.push("", "plans");
  for (const p of Object.values(c.plans)) {
    lines.push(`  ${p.name.padEnd(14)} models ${p.models.join(", ")}  daily ${usd(p.budget.daily)}  monthly ${usd(p.budget.monthly)}${p.paid ? "  paid" : ""}`);
  }
  lines.push("", "routes");
  for (const r of c.routes) {
    lines.push(`  ${r.name.padEnd(14)} ${r.path || "/"}  plans ${r.plans.join(", ")}  default ${r.defaultModel ?? "-"}  max output ${r.input.maxOutputTokens} (${r.input.onExcessOutputTokens})`);
    for (const l of r.limits) {
      const amount = l.unit === "usd" ? usd(l.max) : `${l.max} ${l.unit}`;
      const window = l.unit === "concurrent" ? "at once" : `per ${formatDuration(l.windowMs)}`;
      const plans = l.plans ? ` (plans ${[...l.plans].join(", ")})` : "";
      lines.push(`    limit ${l.id}: ${amount} ${window} per ${l.per}${plans}`);
    }
    const ch = r.challenge;
    if (ch) lines.push(`    challenge for ${ch.for}${ch.minScore !== undefined ? ` and scores from ${ch.minScore}` : ""}: difficulty ${ch.base}-${ch.max}  ttl ${formatDuration(ch.ttlMs)}  secret ****`);
  }
  lines.push("", `keys     ${c.keys.length} static (${c.keys.map((k) => `${k.id} ${k.user ?? "service"}/${k.plan}`).join(", ") || "none"})`);
  return lines.join("\n") + "\n";
}
