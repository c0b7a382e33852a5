import { isIP } from "node:net";
import { ipGroup, ipNetwork } from "../core/client-ip.js";
import { budgetReport } from "../core/budget-report.js";
import { TollgateError } from "../core/errors.js";
import { ipScoreKey, netScoreKey, userScoreKey } from "../core/gates/abuse.js";
import { parseUsd } from "../core/money.js";
import { parseDuration } from "../core/duration.js";
import { block, blockedSubjects, checkBudgetSubject, ipSubject, readBudgetOverride, setBudgetOverride, unblock, type BudgetSubject, type Subject } from "../core/policy.js";
import { optString } from "../formats/fields.js";
import { durationParam, intParam, jsonBody, timeParam, usd, type AdminCall, type AdminRoute } from "./admin-params.js";

/**
 * Operator decisions about callers: blocks (the caller's next request is refused 403 `blocked`),
 * per-caller budget overrides (replace the plan's daily/monthly budget), and suspicion scores.
 */
export const POLICY_ROUTES: AdminRoute[] = [
  { method: "GET", path: /^\/admin\/blocks$/, handle: listBlocks },
  { method: "POST", path: /^\/admin\/blocks$/, handle: placeBlock },
  { method: "GET", path: /^\/admin\/blocks\/(user|ip)\/(.+)$/, handle: readBlock },
  { method: "DELETE", path: /^\/admin\/blocks\/(user|ip)\/(.+)$/, handle: liftBlock },
  { method: "GET", path: /^\/admin\/budgets$/, handle: listBudgets },
  { method: "GET", path: /^\/admin\/budgets\/(user|ip|org|key)\/(.+)$/, handle: readBudget },
  { method: "PUT", path: /^\/admin\/budgets\/(user|ip|org|key)\/(.+)$/, handle: putBudget },
  { method: "DELETE", path: /^\/admin\/budgets\/(user|ip|org|key)\/(.+)$/, handle: clearBudget },
  { method: "GET", path: /^\/admin\/scores$/, handle: scores },
  { method: "DELETE", path: /^\/admin\/scores\/(user|ip)\/(.+)$/, handle: forgive },
];

/** User ids come from keys, JWT claims and x-tollgate-user; anything longer is not one. */
const MAX_USER_ID = 512;

/** A subject from an admin path or body: a user id, or an address (grouped like gate 1 groups it). */
export function subjectOf(kind: string, raw: string, param = kind): Subject {
  if (kind === "user") {
    if (!raw || raw.length > MAX_USER_ID) throw new TollgateError("invalid_request", `${param}: expected a user id`, { param });
    return { kind: "user", id: raw };
  }
  // An IPv6 group as listings print it ("2001:db8:0:1::/64") names itself.
  const group = /^(.+)::\/64$/.exec(raw);
  if (group && isIP(`${group[1]}::`) === 6) return { kind: "ip", id: raw };
  const subject = ipSubject(raw);
  if (!subject) throw new TollgateError("invalid_request", `${param}: expected an IP address`, { param });
  return subject;
}

const fromPath = (call: AdminCall) => subjectOf(call.params[0]!, call.params[1]!);
const tagOf = (s: Subject) => `${s.kind}:${s.id}`;

async function placeBlock(call: AdminCall) {
  const body = await jsonBody(call.req);
  const user = optString(body, "user");
  const ip = optString(body, "ip");
  if ((user === undefined) === (ip === undefined)) throw new TollgateError("invalid_request", "name exactly one of user or ip", { param: user === undefined ? "user" : "ip" });
  const subject = user !== undefined ? subjectOf("user", user) : subjectOf("ip", ip!);
  const forMs = durationParam(optString(body, "for"), "for");
  const reason = optString(body, "reason")?.slice(0, 200);
  await block(call.engine.store, subject, forMs);
  call.blockedHere.add(tagOf(subject));
  call.observability?.logs.ops.info({ admin: "block", subject, for_ms: forMs ?? null, reason: reason ?? null }, "an operator blocked a caller");
  const until = forMs !== undefined ? new Date(Date.now() + forMs).toISOString() : null;
  return { status: 201, body: { ...subject, blocked: true, until } };
}

async function readBlock(call: AdminCall) {
  const subject = fromPath(call);
  const [blocked] = await blockedSubjects(call.engine.store, [subject]);
  return { body: { ...subject, blocked } };
}

async function liftBlock(call: AdminCall) {
  const subject = fromPath(call);
  await unblock(call.engine.store, subject);
  call.blockedHere.delete(tagOf(subject));
  call.observability?.logs.ops.info({ admin: "unblock", subject }, "an operator lifted a block");
  return { body: { ...subject, blocked: false } };
}

/**
 * The store can tell whether a subject is blocked but cannot list blocks, so this checks every
 * caller seen in the records of the period (default 7 days), and those this process blocked.
 */
async function listBlocks(call: AdminCall) {
  const since = timeParam(call.query, "since", "7d", Date.now())!;
  const tags = new Set(call.blockedHere);
  for (const r of await call.engine.store.queryUsage({ since })) {
    if (r.user) tags.add(`user:${r.user}`);
    if (r.ip) tags.add(`ip:${ipGroup(r.ip)}`);
  }
  const subjects = [...tags].map((t): Subject => {
    const i = t.indexOf(":");
    return { kind: t.slice(0, i) as Subject["kind"], id: t.slice(i + 1) };
  });
  const state = await blockedSubjects(call.engine.store, subjects);
  return { body: { data: subjects.filter((_, i) => state[i]) } };
}

/** The subject of a budget path: a caller, or an org / key the gateway knows. */
async function budgetSubjectOf(call: AdminCall): Promise<BudgetSubject> {
  const [kind, id] = call.params as [BudgetSubject["kind"], string];
  if (kind === "user" || kind === "ip") return subjectOf(kind, id);
  const subject = { kind, id };
  await checkBudgetSubject(call.engine.config, call.engine.store, subject);
  return subject;
}

/** Every budget level and where it stands (`tollgate budgets`); users: those who spent most since ?since= (31d). */
async function listBudgets(call: AdminCall) {
  const { config, store } = call.engine;
  const since = timeParam(call.query, "since", "31d", Date.now())!;
  const records = await store.queryUsage({ since });
  return { body: { data: await budgetReport(config, store, records, { topUsers: intParam(call.query, "top", 20, 500) }) } };
}

async function readBudget(call: AdminCall, subject?: BudgetSubject) {
  subject ??= await budgetSubjectOf(call);
  const o = await readBudgetOverride(call.engine.store, subject);
  const money = (v: number | undefined) => (v === undefined ? null : usd(v));
  return {
    body: {
      ...subject,
      daily_usd: money(o.daily),
      monthly_usd: money(o.monthly),
      ...(subject.kind === "key" ? { total_usd: money(o.total) } : {}),
      until: o.until !== undefined ? new Date(o.until).toISOString() : null,
    },
  };
}

/**
 * Replaces the override: a period left out (or null) goes back to the configured budget. `for` (a
 * duration) or `until` (an ISO-8601 time or a duration from now) makes it temporary: it lapses by
 * itself, in every process and app sharing the store.
 */
async function putBudget(call: AdminCall) {
  const subject = await budgetSubjectOf(call);
  const body = await jsonBody(call.req);
  const money = (field: "daily_usd" | "monthly_usd" | "total_usd") => {
    const v = body[field];
    if (v === undefined || v === null) return undefined;
    if (field === "total_usd" && subject.kind !== "key") throw new TollgateError("invalid_request", "total_usd: only a key has a lifetime budget", { param: field });
    if (typeof v !== "number" && typeof v !== "string") throw new TollgateError("invalid_request", `${field}: expected US dollars`, { param: field });
    try {
      return parseUsd(v);
    } catch (err) {
      throw new TollgateError("invalid_request", `${field}: ${(err as Error).message}`, { param: field });
    }
  };
  const override = { daily: money("daily_usd"), monthly: money("monthly_usd"), total: money("total_usd") };
  const now = Date.now();
  const forMs = lapseParam(optString(body, "for"), optString(body, "until"), now);
  await setBudgetOverride(call.engine.store, subject, override, forMs, now);
  call.observability?.logs.ops.info(
    { admin: "budget", subject, daily_usd: body.daily_usd ?? null, monthly_usd: body.monthly_usd ?? null, total_usd: body.total_usd ?? null, for_ms: forMs ?? null },
    "an operator set a budget",
  );
  return readBudget(call, subject);
}

/** How long an override lasts: `for` a duration, or `until` a time (or a duration from now). */
export function lapseParam(forRaw: string | undefined, untilRaw: string | undefined, now: number): number | undefined {
  if (forRaw !== undefined && untilRaw !== undefined) throw new TollgateError("invalid_request", "until: give for or until, not both", { param: "until" });
  if (untilRaw === undefined) return durationParam(forRaw, "for");
  const after = parseDuration(untilRaw);
  if (after !== undefined && after > 0) return after;
  const at = /^\d{4}-\d{2}-\d{2}T/.test(untilRaw) ? Date.parse(untilRaw) : NaN;
  if (Number.isNaN(at)) throw new TollgateError("invalid_request", 'until: expected an ISO-8601 time like "2026-12-24T18:00:00Z" or a duration from now like "2h"', { param: "until" });
  if (at <= now) throw new TollgateError("invalid_request", `until: ${untilRaw} has passed`, { param: "until" });
  return at - now;
}

async function clearBudget(call: AdminCall) {
  const subject = await budgetSubjectOf(call);
  await setBudgetOverride(call.engine.store, subject, {});
  call.observability?.logs.ops.info({ admin: "budget_clear", subject }, "an operator cleared a budget");
  return readBudget(call, subject);
}

/**
 * Current suspicion scores (decayed to now). With ?user= / ?ip= those callers; otherwise the
 * callers seen in the period (default 1h), highest first.
 */
async function scores(call: AdminCall) {
  const { store, config } = call.engine;
  const halfLife = config.abuse.halfLifeMs;
  let users = call.query.getAll("user");
  let ips = call.query.getAll("ip");
  if (!users.length && !ips.length) {
    const since = timeParam(call.query, "since", "1h", Date.now())!;
    const seen = await store.queryUsage({ since });
    users = [...new Set(seen.map((r) => r.user).filter((u): u is string => !!u))];
    ips = [...new Set(seen.map((r) => r.ip).filter((u): u is string => !!u))];
  }
  const limit = intParam(call.query, "limit", 50, 1000);
  // Reading a score takes a store call each: the candidates are capped, most recent first.
  users = users.slice(-500);
  ips = ips.map((ip) => subjectOf("ip", ip).id).slice(-500);
  const networks = [...new Set(ips.map((g) => ipNetwork(g.replace(/::\/64$/, "::"))))];
  const read = (key: string) => store.score(key, 0, halfLife);
  const rows = [
    ...(await Promise.all(users.map(async (id) => ({ kind: "user", id, score: await read(userScoreKey(id)) })))),
    ...(await Promise.all([...new Set(ips)].map(async (id) => ({ kind: "ip", id, score: await read(ipScoreKey(id)) })))),
    ...(await Promise.all(networks.map(async (id) => ({ kind: "network", id, score: await read(netScoreKey(id)) })))),
  ];
  const { downgradeAt, blockAt } = config.abuse;
  return {
    body: {
      downgrade_at: downgradeAt ?? null,
      block_at: blockAt ?? null,
      data: rows
        .filter((r) => r.score >= 0.01)
        .sort((a, b) => b.score - a.score)
        .slice(0, limit)
        .map((r) => ({ ...r, score: Math.round(r.score * 100) / 100 })),
    },
  };
}

/** Sets a caller's suspicion score back to zero: the operator's answer to a false positive. */
async function forgive(call: AdminCall) {
  const subject = fromPath(call);
  const key = subject.kind === "user" ? userScoreKey(subject.id) : ipScoreKey(subject.id);
  const halfLife = call.engine.config.abuse.halfLifeMs;
  const current = await call.engine.store.score(key, 0, halfLife);
  if (current !== 0) await call.engine.store.score(key, -current, halfLife);
  call.observability?.logs.ops.info({ admin: "forgive", subject, score: current }, "an operator reset a suspicion score");
  return { body: { ...subject, score: 0 } };
}
