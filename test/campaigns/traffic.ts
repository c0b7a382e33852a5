/**
 * A seeded day of traffic on one gateway: honest users (established ones, agent users, anonymous
 * visitors and a launch surge of new sign-ups) and the five distributed campaigns of issue 17.
 * Every call carries its actor in the prompt, so the provider's own ledger (what the mock upstream
 * was asked to generate) says who was served which model and what it cost.
 */
import { prng } from "../../src/cli/demo.js";
import { countPromptTokens, type RecordedRequest } from "../../src/testing/mock-upstream.js";

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;

export type Group = "honest" | "surge" | "visitor" | "flood" | "farm" | "shared" | "rotator";
export const ATTACKS = ["flood", "farm", "shared", "rotator"] as const satisfies readonly Group[];

export interface Call {
  /** Scenario time, ms from the start of the day. */
  at: number;
  group: Group;
  actor: string;
  /** No key: anonymous. */
  key?: string;
  ip: string;
  route: "chat" | "agent";
  runId?: string;
  body: { model: string; max_tokens: number; messages: { role: "user"; content: string }[] };
}

export const FRONTIER = "frontier";
export const CHEAP = "cheap";
/** USD per 1M tokens, so tokens x price is micro-dollars. */
export const PRICES: Record<string, { upstream: string; input: number; output: number }> = {
  [FRONTIER]: { upstream: "gpt-4o", input: 2.5, output: 10 },
  [CHEAP]: { upstream: "gpt-4o-mini", input: 0.15, output: 0.6 },
};
export const MAX_PROMPT_CHARS = 4000;
/** When the residential-proxy flood runs: five minutes into the launch. */
export const FLOOD_WINDOW = [2 * HOUR + 5 * MINUTE, 2 * HOUR + 10 * MINUTE] as const;
export const OUTPUT_TOKENS = 250;

const WORDS = ["the", "plan", "of", "a", "quarterly", "report", "and", "its", "summary", "for", "our", "team", "please", "review"];

export interface Population {
  /** Static keys the config must carry: user, plan. */
  keys: { key: string; user: string; plan: "free" | "pro" }[];
  /** Users with a history: first seen days before the scenario starts. */
  established: string[];
  calls: Call[];
}

/** The day's traffic, the same for every seed-equal run. */
export function population(seed = 17): Population {
  const rnd = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const between = (from: number, to: number) => from + rnd() * (to - from);
  const keys: Population["keys"] = [];
  const established: string[] = [];
  const calls: Call[] = [];
  const prompt = (actor: string, chars: number) => {
    let text = `[${actor}]`;
    while (text.length < chars) text += ` ${WORDS[int(0, WORDS.length - 1)]}`;
    return text.slice(0, chars);
  };
  const call = (c: Omit<Call, "body">, chars: number): void => {
    calls.push({ ...c, body: { model: FRONTIER, max_tokens: OUTPUT_TOKENS, messages: [{ role: "user", content: prompt(c.actor, chars) }] } });
  };
  const nearCap = () => int(Math.ceil(0.92 * MAX_PROMPT_CHARS), MAX_PROMPT_CHARS - 5);
  const ordinary = () => int(60, 1500);

  // Established users, half pro and half free, each at home; a quarter also call from an office and a phone.
  for (let i = 0; i < 40; i++) {
    const user = `member-${i}`;
    keys.push({ key: `tg_member_${i}`, user, plan: i % 2 ? "free" : "pro" });
    established.push(user);
    const places = [`81.${i}.${int(0, 255)}.${int(1, 254)}`];
    if (i % 4 === 0) places.push(`82.${i}.${int(0, 255)}.9`, `100.${64 + i}.${int(0, 255)}.77`);
    for (let n = int(15, 25); n > 0; n--) call({ at: between(0, 8 * HOUR), group: "honest", actor: user, key: `tg_member_${i}`, ip: places[int(0, places.length - 1)]!, route: "chat" }, ordinary());
  }
  // Agent users: four runs a day, a run id per run, 3-8 steps each.
  for (let i = 0; i < 5; i++) {
    const user = `agent-${i}`;
    keys.push({ key: `tg_agent_${i}`, user, plan: "pro" });
    established.push(user);
    const ip = `83.${i}.1.${int(1, 254)}`;
    for (let r = 0; r < 4; r++) {
      const start = between(0, 7.5 * HOUR);
      for (let s = int(3, 8); s > 0; s--) call({ at: start + s * 20_000, group: "honest", actor: user, key: `tg_agent_${i}`, ip, route: "agent", runId: `${user}-run-${r}` }, ordinary());
    }
  }
  // A launch: 100 new users sign up within half an hour, each making 2-4 calls in its first hour.
  for (let i = 0; i < 100; i++) {
    const user = `launch-${i}`;
    keys.push({ key: `tg_launch_${i}`, user, plan: "free" });
    const signup = between(2 * HOUR, 2.5 * HOUR);
    const ip = `90.${i}.${int(0, 255)}.${int(1, 254)}`;
    for (let n = int(2, 4), k = 0; k < n; k++) call({ at: k === 0 ? signup : between(signup, signup + HOUR), group: "surge", actor: user, key: `tg_launch_${i}`, ip, route: "chat" }, ordinary());
  }
  // Anonymous visitors, reported apart: they share the anonymous pool's fate.
  for (let i = 0; i < 30; i++) {
    const ip = `95.${i}.${int(0, 255)}.${int(1, 254)}`;
    for (let n = int(1, 3); n > 0; n--) call({ at: between(0, 8 * HOUR), group: "visitor", actor: `visitor-${i}`, ip, route: "chat" }, ordinary());
  }

  // Ten of them arrive while the flood runs below: they share the anonymous pool with it.
  for (let i = 30; i < 40; i++) call({ at: between(FLOOD_WINDOW[0], FLOOD_WINDOW[1]), group: "visitor", actor: `visitor-${i}`, ip: `95.${i}.${int(0, 255)}.${int(1, 254)}`, route: "chat" }, ordinary());

  // 1. Residential-proxy flood: 1,200 anonymous exits (1,000 IPv4 across 100 /16s, 200 IPv6 /64s),
  // one or two cap-length calls each, within five minutes of the launch.
  for (let i = 0; i < 1200; i++) {
    const ip = i < 1000 ? `${11 + (i % 100)}.${int(0, 255)}.${int(0, 255)}.${int(1, 254)}` : `2a0${i % 4}:${((i * 7919) % 65536).toString(16)}:${int(0, 65535).toString(16)}:${i.toString(16)}::${int(1, 65535).toString(16)}`;
    for (let n = int(1, 2); n > 0; n--) call({ at: between(...FLOOD_WINDOW), group: "flood", actor: `exit-${i}`, ip, route: "chat" }, nearCap());
  }
  // 3. A slow signup farm: 120 free keys, each alone on its /24, created over four hours, each making
  // 7-8 near-cap calls over its first two hours.
  for (let i = 0; i < 120; i++) {
    const user = `farm-${i}`;
    keys.push({ key: `tg_farm_${i}`, user, plan: "free" });
    const created = between(1 * HOUR, 5 * HOUR);
    const ip = `${120 + (i % 60)}.${i}.${int(0, 255)}.${int(1, 254)}`;
    for (let n = int(7, 8), k = 0; k < n; k++) call({ at: k === 0 ? created : between(created, created + 2 * HOUR), group: "farm", actor: user, key: `tg_farm_${i}`, ip, route: "chat" }, nearCap());
  }
  // 4. Key sharing: one pro key with a history, used from 40 addresses in 30 /16s.
  keys.push({ key: "tg_shared", user: "sharer", plan: "pro" });
  established.push("sharer");
  const sharedIps = Array.from({ length: 40 }, (_, i) => `${190 + (i % 30)}.${int(0, 255)}.${int(0, 255)}.${int(1, 254)}`);
  for (let n = 0; n < 400; n++) call({ at: between(3 * HOUR, 7 * HOUR), group: "shared", actor: "sharer", key: "tg_shared", ip: sharedIps[int(0, 39)]!, route: "chat" }, ordinary());
  // 5. Rotating run ids: a stolen pro key making 4-step runs, a fresh x-tollgate-run each time.
  keys.push({ key: "tg_rotator", user: "rotator", plan: "pro" });
  established.push("rotator");
  for (let r = 0; r < 60; r++) {
    const start = 4 * HOUR + r * 3 * MINUTE;
    for (let s = 0; s < 4; s++) call({ at: start + s * 10_000, group: "rotator", actor: "rotator", key: "tg_rotator", ip: "185.7.3.21", route: "agent", runId: `stolen-${r}` }, ordinary());
  }

  calls.sort((a, b) => a.at - b.at);
  return { keys, established, calls };
}

export interface Outcome {
  status: number;
  /** The model served, for a served call. */
  model?: string;
}

export interface GroupFigures {
  calls: number;
  served: number;
  /** Served by the cheaper model instead of the one asked for. */
  downgraded: number;
  /** From the provider's ledger. */
  frontierCalls: number;
  spendMicros: number;
}

/**
 * What each group asked for and got: served and downgraded from the answers, frontier calls and
 * spend from the provider's ledger (the mock upstream's requests, priced per token).
 */
export function figures(calls: Call[], outcomes: Outcome[], ledger: RecordedRequest[]): Record<Group, GroupFigures> {
  const groups = Object.fromEntries((["honest", "surge", "visitor", "flood", "farm", "shared", "rotator"] as Group[]).map((g) => [g, { calls: 0, served: 0, downgraded: 0, frontierCalls: 0, spendMicros: 0 }])) as Record<Group, GroupFigures>;
  const groupOf = new Map<string, Group>(calls.map((c) => [c.actor, c.group]));
  calls.forEach((c, i) => {
    const g = groups[c.group];
    g.calls++;
    const o = outcomes[i]!;
    if (o.status === 200) {
      g.served++;
      if (o.model !== FRONTIER) g.downgraded++;
    }
  });
  for (const req of ledger) {
    const actor = /^\[([^\]]+)\]/.exec(req.body?.messages?.[0]?.content ?? "")?.[1];
    const group = actor && groupOf.get(actor);
    if (!group) continue;
    const price = Object.values(PRICES).find((p) => p.upstream === req.body.model)!;
    const output = Math.min(OUTPUT_TOKENS, req.body.max_completion_tokens ?? req.body.max_tokens ?? OUTPUT_TOKENS);
    groups[group].spendMicros += Math.ceil(countPromptTokens("chat", req.body) * price.input + output * price.output);
    if (price === PRICES[FRONTIER]) groups[group].frontierCalls++;
  }
  return groups;
}

/** The figures as a table, for the test's output. */
export function table(title: string, rows: Record<string, Record<Group, GroupFigures>>): string {
  const lines = [title, "run        group     calls  served  downgraded  frontier  spend$"];
  for (const [run, groups] of Object.entries(rows)) {
    for (const [g, f] of Object.entries(groups)) {
      lines.push(`${run.padEnd(10)} ${g.padEnd(8)} ${String(f.calls).padStart(6)} ${String(f.served).padStart(7)} ${String(f.downgraded).padStart(11)} ${String(f.frontierCalls).padStart(9)} ${(f.spendMicros / 1e6).toFixed(3).padStart(7)}`);
    }
  }
  return lines.join("\n");
}
