import { isIP } from "node:net";
import type { Store } from "./store.js";
import { ipGroup, normaliseIp } from "./client-ip.js";
import type { Identity } from "./identity.js";
import type { Micros } from "./money.js";

/**
 * Operator decisions about one caller, made at run time through the admin API: a block, and a
 * budget that replaces the plan's per-user daily/monthly budget.
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

export interface CallerPolicy {
  /** Which of the caller's subjects an operator blocked. */
  blocked: SubjectKind[];
  /** Replaces the plan's per-user budgets while set. */
  budget: { daily?: Micros; monthly?: Micros };
}

export interface BudgetOverride {
  daily?: Micros;
  monthly?: Micros;
}

/** A policy without an end lasts this long; the window must cover the longest lease. */
const POLICY_WINDOW_MS = 100 * 365 * 86_400_000;
export const FOREVER_MS = POLICY_WINDOW_MS - 86_400_000;

const tag = (s: Subject) => `${s.kind === "user" ? "u" : "ip"}:${s.id}`;
export const blockKey = (s: Subject) => `pol:block:${tag(s)}`;
const budgetKey = (s: Subject, period: "d" | "m") => `pol:bud:${period}:${tag(s)}`;

/** An address as an IP subject: grouped the way gate 1 groups callers, so a block covers the /64. */
export function ipSubject(raw: string): Subject | undefined {
  const ip = normaliseIp(raw);
  return isIP(ip) ? { kind: "ip", id: ipGroup(ip) } : undefined;
}

/** The subject a caller's per-user budget is kept under: its user, or its address when anonymous. */
export function budgetSubject(id: Identity): Subject {
  return id.kind === "anonymous" ? { kind: "ip", id: id.ipGroup } : { kind: "user", id: id.user };
}

/** Everything operators decided about this caller, in one store round trip. */
export async function callerPolicy(store: Store, id: Identity): Promise<CallerPolicy> {
  const user: Subject = { kind: "user", id: id.user };
  const ip: Subject = { kind: "ip", id: id.ipGroup };
  const owner = budgetSubject(id);
  const [u, a, d, m] = await store.peek(
    [blockKey(user), blockKey(ip), budgetKey(owner, "d"), budgetKey(owner, "m")].map((key) => ({ key, windowMs: POLICY_WINDOW_MS })),
  );
  const blocked: SubjectKind[] = [];
  if (u! > 0) blocked.push("user");
  if (a! > 0) blocked.push("ip");
  return { blocked, budget: { daily: held(d!), monthly: held(m!) } };
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

export async function readBudgetOverride(store: Store, subject: Subject): Promise<BudgetOverride> {
  const [d, m] = await store.peek([budgetKey(subject, "d"), budgetKey(subject, "m")].map((key) => ({ key, windowMs: POLICY_WINDOW_MS })));
  return { daily: held(d!), monthly: held(m!) };
}

/** Sets (or, with undefined, clears) each period's override. */
export async function setBudgetOverride(store: Store, subject: Subject, budget: BudgetOverride, forMs: number = FOREVER_MS): Promise<void> {
  for (const period of ["d", "m"] as const) {
    const value = period === "d" ? budget.daily : budget.monthly;
    if (value === undefined) await store.release(budgetKey(subject, period));
    else await hold(store, budgetKey(subject, period), value, forMs);
  }
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
