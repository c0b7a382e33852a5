/**
 * Money is integer micro-dollars (1 USD = 1_000_000 micros) held in JS numbers that must stay safe
 * integers. Nothing in an accounting path multiplies or divides a float: decimal input goes through
 * its string form, and products that could pass 2^53 go through BigInt.
 */

export type Micros = number;

export const MICROS_PER_USD = 1_000_000;
const MICROS_PER_USD_BIG = 1_000_000n;
const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

// Digits with an optional fraction and exponent: what String(number) produces ("0.1", "1e-7",
// "1.5e+21") plus what a person writes in a config file (".5", "5.", "0.50").
const DECIMAL = /^(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/**
 * Exact decimal USD -> micros. A number is read through String(n), which is the shortest decimal
 * that round-trips, so 0.1 becomes exactly 100_000 rather than whatever 0.1 * 1e6 rounds to.
 *
 * More than 6 decimals ROUND UP to the next micro: this parses prices and limits, and rounding a
 * price down would under-charge every request by the lost fraction. "0.0000001" -> 1.
 *
 * @throws RangeError for negative values, NaN, Infinity, malformed strings, or results that do
 * not fit a safe integer (~9 billion USD).
 */
export function parseUsd(value: number | string): Micros {
  let text: string;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new RangeError(`not a finite amount of USD: ${value}`);
    if (value < 0) throw new RangeError(`negative amount of USD: ${value}`);
    text = String(value); // -0 prints as "0"
  } else if (typeof value === "string") {
    text = value.trim();
  } else {
    throw new RangeError(`not an amount of USD: ${String(value)}`);
  }
  if (text.startsWith("-")) throw new RangeError(`negative amount of USD: ${text}`);
  const m = DECIMAL.exec(text);
  const intPart = m?.[1] ?? "";
  const fracPart = m?.[2] ?? "";
  if (!m || intPart.length + fracPart.length === 0) throw new RangeError(`not a decimal amount of USD: ${JSON.stringify(text)}`);

  const digits = (intPart + fracPart).replace(/^0+/, "");
  if (digits === "") return 0;
  const exponent = m[3] === undefined ? 0 : Number(m[3]);
  // Position of the value's last digit relative to the micro: value = digits * 10^shift micros.
  const shift = exponent - fracPart.length + 6;
  if (!Number.isSafeInteger(shift) || digits.length + shift > 16) {
    if (shift > 0) throw new RangeError(`amount of USD too large: ${text}`);
    // A vanishingly small positive amount: still never rounds to zero.
    if (!Number.isSafeInteger(shift) || -shift >= digits.length) return 1;
  }

  let micros: bigint;
  if (shift >= 0) {
    micros = BigInt(digits) * 10n ** BigInt(shift);
  } else {
    const cut = -shift;
    if (cut >= digits.length) return 1; // 0 < value < 1 micro
    const whole = BigInt(digits.slice(0, digits.length - cut));
    const rest = digits.slice(digits.length - cut);
    micros = /[1-9]/.test(rest) ? whole + 1n : whole;
  }
  if (micros > MAX_SAFE_BIG) throw new RangeError(`amount of USD too large: ${text}`);
  return Number(micros);
}

/**
 * Exact decimal text for output: at least two decimals, trailing zeros beyond them trimmed.
 * 5_000_000 -> "5.00", 12_300 -> "0.0123", 12_345 -> "0.012345", -1_500_000 -> "-1.50".
 */
export function formatUsd(m: Micros): string {
  if (!Number.isSafeInteger(m)) throw new RangeError(`not an integer amount of micros: ${m}`);
  const sign = m < 0 ? "-" : "";
  const abs = Math.abs(m);
  const fraction = abs % MICROS_PER_USD;
  const whole = (abs - fraction) / MICROS_PER_USD;
  let frac = String(fraction).padStart(6, "0").replace(/0+$/, "");
  if (frac.length < 2) frac = frac.padEnd(2, "0");
  return `${sign}${whole}.${frac}`;
}

/** USD as a JS number, for JSON output only: never feed it back into accounting. */
export function microsToUsdNumber(m: Micros): number {
  return m / MICROS_PER_USD;
}

/** USD per 1M tokens -> integer micros per 1M tokens. The same scale as parseUsd, named for call sites. */
export function pricePerMillionToMicros(usdPerMillion: number | string): number {
  return parseUsd(usdPerMillion);
}

/**
 * Cost of `tokens` at `microsPerMillion` micros per 1M tokens, rounded UP to a whole micro so a
 * nonzero amount of paid tokens never costs zero. Exact: doubles while the product is a safe integer
 * (then % and the division by 1e6 are exact), BigInt beyond.
 */
export function tokenCost(tokens: number, microsPerMillion: number): Micros {
  if (!Number.isSafeInteger(tokens) || tokens < 0) throw new RangeError(`token count must be a non-negative integer: ${tokens}`);
  if (!Number.isSafeInteger(microsPerMillion) || microsPerMillion < 0) {
    throw new RangeError(`price must be a non-negative integer of micros per 1M tokens: ${microsPerMillion}`);
  }
  if (tokens === 0 || microsPerMillion === 0) return 0;
  // If the true product reaches 2^53 the rounded double does too, so this test is exact.
  const product = tokens * microsPerMillion;
  if (product <= Number.MAX_SAFE_INTEGER) {
    const rest = product % 1_000_000;
    return (product - rest) / 1_000_000 + (rest > 0 ? 1 : 0);
  }
  const big = BigInt(tokens) * BigInt(microsPerMillion);
  const cost = (big + MICROS_PER_USD_BIG - 1n) / MICROS_PER_USD_BIG;
  if (cost > MAX_SAFE_BIG) throw new RangeError(`cost too large: ${tokens} tokens at ${microsPerMillion} micros per 1M`);
  return Number(cost);
}
