import { expect } from "vitest";
import { FLOOD_WINDOW, MINUTE, table, type Call, type Group, type GroupFigures, type Outcome } from "./traffic.js";

export interface Run {
  figures: Record<Group, GroupFigures>;
  calls: Call[];
  outcomes: Outcome[];
}

/** What share of a campaign's frontier calls and spend got through, against the unprotected run. */
const BOUNDS: Record<"flood" | "farm" | "shared" | "rotator", { frontier: number; spend: number }> = {
  flood: { frontier: 0.05, spend: 0.05 },
  // Downgraded farm calls are still served, by the cheaper model: spend falls less than frontier calls.
  farm: { frontier: 0.05, spend: 0.08 },
  shared: { frontier: 0.05, spend: 0.05 },
  // Four runs an hour are let through before run_churn weighs in: 16 of 240 steps.
  rotator: { frontier: 0.1, spend: 0.1 },
};

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** Honest calls (established users and the launch surge) served while the flood ran, and the minute its window still held it. */
export function honestDuringFlood(run: Run): { calls: number; served: number } {
  let calls = 0;
  let served = 0;
  run.calls.forEach((c, i) => {
    if ((c.group !== "honest" && c.group !== "surge") || c.at < FLOOD_WINDOW[0] || c.at > FLOOD_WINDOW[1] + MINUTE) return;
    calls++;
    if (run.outcomes[i]!.status === 200) served++;
  });
  return { calls, served };
}

/** Prints the figures and asserts issue 17's done-when: campaigns cut to a small fraction, honest calls served. */
export function judge(title: string, before: Run, after: Run): void {
  const lines = [table(title, { before: before.figures, after: after.figures })];
  for (const [g, bound] of Object.entries(BOUNDS) as [keyof typeof BOUNDS, (typeof BOUNDS)[keyof typeof BOUNDS]][]) {
    const frontier = after.figures[g].frontierCalls / before.figures[g].frontierCalls;
    const spend = after.figures[g].spendMicros / before.figures[g].spendMicros;
    lines.push(`${g.padEnd(8)} frontier calls ${after.figures[g].frontierCalls}/${before.figures[g].frontierCalls} (${pct(frontier)}), spend ${pct(spend)} of unprotected`);
    expect(frontier, `${g} frontier share`).toBeLessThanOrEqual(bound.frontier);
    expect(spend, `${g} spend share`).toBeLessThanOrEqual(bound.spend);
  }
  const honest = (f: Record<Group, GroupFigures>) => (f.honest.served + f.surge.served) / (f.honest.calls + f.surge.calls);
  const [b, a] = [honestDuringFlood(before), honestDuringFlood(after)];
  lines.push(`honest served: ${pct(honest(before.figures))} unprotected, ${pct(honest(after.figures))} protected; launch surge ${after.figures.surge.served}/${after.figures.surge.calls} (${after.figures.surge.downgraded} downgraded)`);
  lines.push(`honest served while the flood ran: ${b.served}/${b.calls} unprotected, ${a.served}/${a.calls} protected`);
  lines.push(`anonymous visitors served: ${before.figures.visitor.served}/${before.figures.visitor.calls} unprotected, ${after.figures.visitor.served}/${after.figures.visitor.calls} protected`);
  console.log(lines.join("\n"));
  expect(honest(after.figures)).toBeGreaterThanOrEqual(0.995);
  expect(after.figures.surge.served / after.figures.surge.calls).toBeGreaterThanOrEqual(0.995);
  expect(a.served / a.calls).toBeGreaterThanOrEqual(0.995);
}
