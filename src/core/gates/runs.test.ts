import { describe, expect, it } from "vitest";
import { testEngine } from "../../testing/test-engine.js";

const config = (runs: Record<string, unknown>) => ({
  providers: { sim: { type: "simulated" } },
  models: { m: { provider: "sim", upstream: "gpt-4o-mini", price: { input: 1, output: 1 } } },
  plans: { free: { models: ["m"] } },
  keys: [{ key: "tg_runs_ann", user: "ann", plan: "free" }],
  routes: { agent: { path: "/agent", plans: ["free"], default_model: "m", runs } },
});
const step = { messages: [{ role: "user", content: "next step" }] };

describe("runs (gate 3's step counters)", () => {
  it("max_steps: the step past the cap is 429 run_limit_exceeded; another run starts afresh", async () => {
    const t = testEngine(config({ max_steps: 2 }));
    const first = await t.send({ key: "tg_runs_ann", runId: "r1", body: step });
    const second = await t.send({ key: "tg_runs_ann", runId: "r1", body: step });
    expect([first.record.run_step, second.record.run_step]).toEqual([1, 2]);
    const third = await t.send({ key: "tg_runs_ann", runId: "r1", body: step });
    expect(third.refusal).toMatchObject({ code: "run_limit_exceeded", status: 429 });
    expect(third.refusal!.message).toMatch(/max_steps of 2/);
    expect((await t.send({ key: "tg_runs_ann", runId: "r2", body: step })).refusal).toBeUndefined();
  });

  it("max_duration: a step after the run's age is refused, judged by the clock", async () => {
    const t = testEngine(config({ max_duration: "10m" }));
    expect((await t.send({ key: "tg_runs_ann", runId: "r1", body: step })).refusal).toBeUndefined();
    t.clock.advance(9 * 60_000);
    expect((await t.send({ key: "tg_runs_ann", runId: "r1", body: step })).refusal).toBeUndefined();
    t.clock.advance(2 * 60_000);
    const late = await t.send({ key: "tg_runs_ann", runId: "r1", body: step });
    expect(late.refusal?.code).toBe("run_limit_exceeded");
    expect(late.refusal!.message).toMatch(/older than its max_duration of 600s/);
  });

  it("max: a caller may start so many runs per window; the window frees with time", async () => {
    const t = testEngine(config({ max: 2, window: "1h" }));
    for (const run of ["a", "b"]) expect((await t.send({ key: "tg_runs_ann", runId: run, body: step })).refusal).toBeUndefined();
    // A step of a run already started is not a new run.
    expect((await t.send({ key: "tg_runs_ann", runId: "a", body: step })).refusal).toBeUndefined();
    const third = await t.send({ key: "tg_runs_ann", runId: "c", body: step });
    expect(third.refusal?.code).toBe("run_limit_exceeded");
    t.clock.advance(third.refusal!.retryAfterSeconds! * 1000);
    expect((await t.send({ key: "tg_runs_ann", runId: "c", body: step })).refusal).toBeUndefined();
  });
});
