// Section 3: the pre-flight estimate's cost, in-process: input tokens of an 8,000-character prompt.
import { period } from "../dist/core/calendar.js";
import { estimateInputTokens, tokenizerFor } from "../dist/core/metering/tokens.js";
import { median, quantile } from "./lib.js";

export const PROMPT_CHARS = 8_000;

const WORDS = (
  "the of and to in is that it for on with as was be by this are from at or an have not they " +
  "which one you had but all were we when there can been has more if will their would so what " +
  "about out up into some could them other than then its time only new these two may first also " +
  "after any our how work well even because most through over such where much should people just " +
  "budget request model gateway provider token limit stream policy customer invoice quarterly " +
  "analysis summary performance deployment infrastructure configuration reliability engineering " +
  "understanding approximately unfortunately international responsibility characteristics"
).split(" ");

/** A deterministic pseudo-random generator (mulberry32), so every run prompts the same text. */
function rng(seed) {
  let h = seed >>> 0;
  return () => {
    h = (h + 0x6d2b79f5) >>> 0;
    let t = h;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** English-like prose of exactly `chars` characters: sentences, commas, numbers, paragraphs. */
export function englishPrompt(seed, chars = PROMPT_CHARS) {
  const r = rng(seed);
  const parts = [];
  let length = 0;
  while (length < chars) {
    const n = 6 + Math.floor(r() * 14);
    const words = [];
    for (let i = 0; i < n; i++) {
      let w = WORDS[Math.floor(r() * WORDS.length)];
      if (r() < 0.04) w = String(Math.floor(r() * 10_000));
      if (i > 0 && i < n - 1 && r() < 0.08) w += ",";
      words.push(w);
    }
    words[0] = words[0][0].toUpperCase() + words[0].slice(1);
    const sentence = words.join(" ") + (r() < 0.1 ? "?" : ".") + (r() < 0.15 ? "\n\n" : " ");
    parts.push(sentence);
    length += sentence.length;
  }
  // Flat (not a rope), like a string parsed out of a request body.
  return Buffer.from(parts.join("").slice(0, chars)).toString("utf8");
}

/** The same characters in a new, flat string, as parsing another request body produces. */
const copyOf = (text) => Buffer.from(text, "utf8").toString("utf8");

const shape = (text) => ({ messages: [{ role: "user", text }], toolDefinitions: [], attachments: [] });

/** Median and p99 µs of `fn(i)` timed one call at a time; `setup(i)` runs untimed before each. */
function timeEach(iterations, fn, setup) {
  const us = [];
  for (let i = 0; i < iterations; i++) {
    setup?.(i);
    const t0 = performance.now();
    fn(i);
    us.push((performance.now() - t0) * 1000);
  }
  us.sort((a, b) => a - b);
  return { medianUs: quantile(us, 0.5), p99Us: quantile(us, 0.99), iterations };
}

/** Median µs per call over batches of `batch` calls: for calls too short to time one by one. */
function timeBatched(batches, batch, fn) {
  const us = [];
  for (let b = 0; b < batches; b++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) fn(i);
    us.push(((performance.now() - t0) * 1000) / batch);
  }
  return { medianUs: median(us), p99Us: quantile([...us].sort((a, b) => a - b), 0.99), iterations: batches * batch };
}

export function preflight() {
  const openaiModel = "gpt-4o-mini";
  const bytesModel = "claude-sonnet-4-20250514";
  const o200k = tokenizerFor(openaiModel);
  const bytes = tokenizerFor(bytesModel);
  const fixed = englishPrompt(1);
  // More distinct prompts than the count cache holds (1,024 entries / 4M chars = 500 of these),
  // cycled in order, so every estimate misses the cache as a stream of different prompts would.
  const varied = Array.from({ length: 1_200 }, (_, i) => englishPrompt(1_000 + i));

  const copies = [];
  const t0 = performance.now();
  const tokens = estimateInputTokens(shape(fixed), o200k, openaiModel);
  const coldMs = performance.now() - t0;

  // Warm-up: JIT and the cache entry for `fixed`.
  for (let i = 0; i < 200; i++) estimateInputTokens(shape(englishPrompt(500_000 + i)), o200k, openaiModel);
  for (let i = 0; i < 2_000; i++) estimateInputTokens(shape(copyOf(fixed)), o200k, openaiModel);
  for (let i = 0; i < 2_000; i++) estimateInputTokens(shape(fixed), bytes, bytesModel);

  const rows = [
    {
      key: "o200k_varied",
      label: `${openaiModel} (o200k), different text each time`,
      tokens,
      ...timeEach(varied.length * 2, (i) => estimateInputTokens(shape(varied[i % varied.length]), o200k, openaiModel)),
    },
    {
      key: "o200k_repeated",
      label: `${openaiModel} (o200k), same text again (cache hit)`,
      tokens,
      // A fresh copy each time, as a new request body gives: its hash is not cached on the string.
      ...timeEach(5_000, () => estimateInputTokens(shape(copies.pop()), o200k, openaiModel), () => copies.push(copyOf(fixed))),
    },
    {
      key: "bytes",
      label: `${bytesModel} (bytes bound)`,
      tokens: estimateInputTokens(shape(fixed), bytes, bytesModel),
      ...timeBatched(200, 100, () => estimateInputTokens(shape(fixed), bytes, bytesModel)),
    },
  ];
  return { promptChars: fixed.length, coldFirstEstimateMs: coldMs, rows };
}

/**
 * Budget bookkeeping that does not depend on the prompt: the calendar periods (day and month) a
 * plan budget's counters are keyed by. The gateway works them out for every request with a plan
 * budget, in gate 3 (the "already spent" peek) and again in gate 6 (the reservation).
 */
export function budgetPeriods() {
  const now = Date.now();
  const both = (tz) => () => {
    period("day", now, tz);
    period("month", now, tz);
  };
  return [
    ["periods_utc", "UTC"],
    ["periods_tz", "America/New_York"],
  ].map(([key, tz]) => {
    for (let i = 0; i < 5_000; i++) both(tz)();
    return { key, label: `daily + monthly period (${tz})`, ...timeBatched(200, 50, both(tz)) };
  });
}
