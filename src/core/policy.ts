import { isIP } from "node:net";
import type { ResolvedConfig } from "./config-types.js";
import { TollgateError } from "./errors.js";
import type { Store } from "./store.js";
import { ipGroup, normaliseIp } from "./client-ip.js";
import type { Identity } from "./identity.js";
import type { Micros } from "./money.js";

/**
 * Operator decisions about one caller, made at run time through the admin API: a block, and
 * budgets that replace the configured ones of its user (or address), its org and its key — for
 * good, or until a time, after which they lapse by themselves (the store drops the held value).
 *
 * They live in the store as *held values*: a reservation, never settled, whose amount is the value
 * and whose lease is how long it lasts. Every store already makes reservations atomic, shared
 * between gateway processes, durable (SQLite, Redis), expiring and releasable by id, so policies
 * need no new store primitive — and one `peek` reads all of a caller's policies in one round trip.
 * An amount is the value plus one, so that a budget of $0 is distinguishable from no override.
 */

export type SubjectKind = "user" | "ip";

/** Whom a policy applies to: an end user (as gate 1 names it) or an address group (IPv4, IPv6 /64). */
export interface Subject {
  kind: SubjectKind;
  id: string;
}

/** Whose budget an override replaces: a caller's (user or address), an org's or a key's. */
export interface BudgetSubject {
  kind: SubjectKind | "org" | "key";
  id: string;
}

export interface CallerPolicy {
  /** Which of the caller's subjects an operator blocked. */
  blocked: SubjectKind[];
  /** Replaces the plan's per-user budgets while set. */
  budget: BudgetOverride;
  /** Replaces the caller's org's budgets while set. */
  org: BudgetOverride;
  /** Replaces the caller's key's budgets while set (`total` too). */
  key: BudgetOverride;
}

export interface BudgetOverride {
  daily?: Micros;
  monthly?: Micros;
  /** Keys only: a lifetime cap. */
  total?: Micros;
  /** Epoch ms when the override lapses; absent: it lasts until cleared. */
  until?: number;
}

const PERIODS = ["d", "m", "t"] as const;
type OverridePeriod = (typeof PERIODS)[number];
const FIELD = { d: "daily", m: "monthly", t: "total" } as const;

/** A policy without an end lasts this long; the window must cover the longest lease. */
const POLICY_WINDOW_MS = 100 * 365 * 86_400_000;
export const FOREVER_MS = POLICY_WINDOW_MS - 86_400_000;

const TAGS = { user: "u", ip: "ip", org: "o", key: "k" } as const;
const tag = (s: BudgetSubject) => `${TAGS[s.kind]}:${s.id}`;
export const blockKey = (s: Subject) => `pol:block:${tag(s)}`;
const budgetKey = (s: BudgetSubject, period: OverridePeriod) => `pol:bud:${period}:${tag(s)}`;
/** When an override lapses, in epoch seconds (held beside it, with the same lease, to be shown). */
const untilKey = (s: BudgetSubject) => `pol:bud:until:${tag(s)}`;
const policyCounter = (key: string) => ({ key, windowMs: POLICY_WINDOW_MS });

/** An address as an IP subject: grouped the way gate 1 groups callers, so a block covers the /64. */
export function ipSubject(raw: string): Subject | undefined {
  const ip = normaliseIp(raw);
  return isIP(ip) ? { kind: "ip", id: ipGroup(ip) } : undefined;
}

/** The subject a caller's per-user budget is kept under: its user, or its address when anonymous. */
export function budgetSubject(id: Identity): Subject {
  return id.kind === "anonymous" ? { kind: "ip", id: id.ipGroup } : { kind: "user", id: id.user };
}

/** Refuses (404) an override for an org the config does not define or a key no one holds. */
export async function checkBudgetSubject(config: ResolvedConfig, store: Store, subject: BudgetSubject): Promise<void> {
  const { kind, id } = subject;
  if (kind === "org" && !config.orgs[id]) {
    throw new TollgateError("not_found", `no org ${JSON.stringify(id.slice(0, 64))} under orgs: (known: ${Object.keys(config.orgs).join(", ") || "none"})`);
  }
  if (kind === "key" && !config.keys.some((k) => k.id === id) && !(await store.listKeys()).some((k) => k.id === id)) {
    throw new TollgateError("not_found", `no key with id ${JSON.stringify(id.slice(0, 64))}`);
  }
}

/**
 * Everything operators decided about this caller, in one store round trip: blocks, and the budget
 * overrides of its user, its org and its key (those it has).
 */
export async function callerPolicy(store: Store, id: Identity): Promise<CallerPolicy> {
  const user: Subject = { kind: "user", id: id.user };
  const ip: Subject = { kind: "ip", id: id.ipGroup };
  const owner = budgetSubject(id);
  const keys = [blockKey(user), blockKey(ip), budgetKey(owner, "d"), budgetKey(owner, "m")];
  const org: BudgetSubject | undefined = id.org !== undefined ? { kind: "org", id: id.org } : undefined;
  const key: BudgetSubject | undefined = id.keyId !== null ? { kind: "key", id: id.keyId } : undefined;
  if (org) keys.push(budgetKey(org, "d"), budgetKey(org, "m"));
  if (key) keys.push(...PERIODS.map((p) => budgetKey(key, p)));
  const totals = await store.peek(keys.map(policyCounter));
  const blocked: SubjectKind[] = [];
  if (totals[0]! > 0) blocked.push("user");
  if (totals[1]! > 0) blocked.push("ip");
  const k = org ? 6 : 4;
  return {
    blocked,
    budget: { daily: held(totals[2]!), monthly: held(totals[3]!) },
    org: org ? { daily: held(totals[4]!), monthly: held(totals[5]!) } : {},
    key: key ? { daily: held(totals[k]!), monthly: held(totals[k + 1]!), total: held(totals[k + 2]!) } : {},
  };
}

/** Which of these subjects are blocked now, in one round trip. */
export async function blockedSubjects(store: Store, subjects: Subject[]): Promise<boolean[]> {
  const totals = await store.peek(subjects.map((s) => ({ key: blockKey(s), windowMs: POLICY_WINDOW_MS })));
  return totals.map((t) => t > 0);
}

export async function block(store: Store, subject: Subject, forMs: number = FOREVER_MS): Promise<void> {
  await hold(store, blockKey(subject), 0, forMs);
}

export async function unblock(store: Store, subject: Subject): Promise<void> {
  await store.release(blockKey(subject));
}

export async function readBudgetOverride(store: Store, subject: BudgetSubject): Promise<BudgetOverride> {
  return (await readBudgetOverrides(store, [subject]))[0]!;
}

/** The overrides of many subjects (a listing), in one round trip. */
export async function readBudgetOverrides(store: Store, subjects: BudgetSubject[]): Promise<BudgetOverride[]> {
  const periodsOf = (s: BudgetSubject) => (s.kind === "key" ? PERIODS : PERIODS.slice(0, 2));
  const keys = subjects.flatMap((s) => [...periodsOf(s).map((p) => budgetKey(s, p)), untilKey(s)]);
  const totals = await store.peek(keys.map(policyCounter));
  let i = 0;
  return subjects.map((s) => {
    const out: BudgetOverride = {};
    for (const p of periodsOf(s)) {
      const v = held(totals[i++]!);
      if (v !== undefined) out[FIELD[p]] = v;
    }
    const until = held(totals[i++]!);
    if (until !== undefined && Object.keys(out).length) out.until = until * 1000;
    return out;
  });
}

/**
 * Sets (or, with undefined, clears) each period's override, for `forMs` (default: until cleared).
 * Only keys have a `total`.
 */
export async function setBudgetOverride(store: Store, subject: BudgetSubject, budget: BudgetOverride, forMs?: number, now = Date.now()): Promise<void> {
  const periods = subject.kind === "key" ? PERIODS : PERIODS.slice(0, 2);
  for (const period of periods) {
    const value = budget[FIELD[period]];
    if (value === undefined) await store.release(budgetKey(subject, period));
    else await hold(store, budgetKey(subject, period), value, forMs ?? FOREVER_MS);
  }
  if (forMs === undefined) await store.release(untilKey(subject));
  else await hold(store, untilKey(subject), Math.ceil((now + forMs) / 1000), forMs);
}

/**
 * Replaces the value held under `key`. The reservation id is the key itself, so a later release
 * finds it; max = amount refuses a second holder, which only a concurrent writer could be: the
 * release-then-reserve is retried once so the last writer wins.
 */
async function hold(store: Store, key: string, value: number, forMs: number): Promise<void> {
  const amount = value + 1;
  const lease = Math.min(Math.max(1, forMs), FOREVER_MS);
  for (let attempt = 0; attempt < 2; attempt++) {
    await store.release(key);
    const r = await store.reserve(key, [{ key, max: amount, amount, windowMs: POLICY_WINDOW_MS }], lease);
    if (r.ok) return;
  }
  throw new Error(`could not set ${key}: another writer holds it`);
}

const held = (total: number): number | undefined => (total > 0 ? total - 1 : undefined);
