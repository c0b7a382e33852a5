import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UsageRecord } from "../src/core/usage-record.js";
import { HAVE_CHROMIUM, launchChromium, requireChromium, SKIP_BROWSER } from "./chromium.js";

/**
 * The proof-of-work round trip in a real browser: examples/pow's page fetches a challenge from the
 * app (tg.fetchChallenge), solves it with altcha-lib's Web Crypto solver in Chromium, and its chat
 * request is served; the same solution sent again is refused 403 challenge_required.
 */
const ROOT = join(import.meta.dirname, "..");
let app: ChildProcess | undefined;
let url = "";
let stdout = "";
let page: Page;
let closeBrowser: (() => Promise<void>) | undefined;

beforeAll(async () => {
  requireChromium();
  if (!HAVE_CHROMIUM) return void console.warn("challenge-browser: /usr/bin/chromium is missing, skipping the Chromium round trip");
  app = spawn(process.execPath, [join(ROOT, "examples", "pow", "server.mjs")], { cwd: ROOT, env: { ...process.env, PORT: "0" }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  app.stderr!.on("data", (d) => (stderr += d));
  url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`examples/pow did not start: ${stderr}`)), 20_000);
    app!.stdout!.on("data", (d) => {
      stdout += d;
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    app!.once("exit", (code) => reject(new Error(`examples/pow exited ${code}: ${stderr}`)));
  });
  const browser = await launchChromium();
  closeBrowser = browser.close;
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
}, 60_000);

afterAll(async () => {
  await closeBrowser?.();
  app?.kill();
});

/** The usage records the example app printed (server.log: usage), app requests only. */
function records(): UsageRecord[] {
  return stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as UsageRecord)
    .filter((r) => r.endpoint === "app");
}

async function answered(): Promise<{ status: string; text: string }> {
  await page.waitForSelector("#answer[data-status]", { timeout: 60_000 });
  return page.$eval("#answer", (el) => ({ status: (el as HTMLElement).dataset.status!, text: el.textContent ?? "" }));
}

describe.skipIf(SKIP_BROWSER)("proof of work in Chromium (examples/pow)", () => {
  it("the page solves the challenge and is served; the replayed solution is refused", { timeout: 90_000 }, async () => {
    await page.goto(url);
    await page.click("#send");
    const served = await answered();
    expect(served.status).toBe("200");
    expect(served.text.length).toBeGreaterThan(0);
    const { solveMs, tries } = await page.$eval("#status", (el) => ({ solveMs: Number((el as HTMLElement).dataset.solveMs), tries: Number((el as HTMLElement).dataset.tries) }));
    expect(tries).toBeGreaterThan(0);
    console.log(`challenge-browser: Chromium solved in ${solveMs} ms, ${tries} tries (${((solveMs * 1000) / tries).toFixed(0)} us per try)`);

    await page.click("#replay");
    await page.waitForSelector('#answer[data-status="403"]', { timeout: 30_000 });
    expect(await page.textContent("#answer")).toContain("challenge_required");
    expect(await page.textContent("#answer")).toContain("already used");

    // The app's records: one request served (with its model call's cost on its own record), one refused as a replay.
    await expect.poll(() => records().length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
    const [ok, replay] = records();
    expect(ok).toMatchObject({ decision: "allow", ended: "complete", plan: "anonymous" });
    expect(replay).toMatchObject({ decision: "deny", code: "challenge_required", cost_usd: 0 });
    expect(replay!.signals).toContain("challenge:replayed");
  });
});
