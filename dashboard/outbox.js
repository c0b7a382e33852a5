// @ts-check
// The alerts and export outbox panel: what waits per sink and kind, and the failed messages with a
// Retry each. It shows what GET /admin/outbox gives (sink names, never a webhook's URL or secret).

/**
 * @typedef {(tag: string, text: string | number | null | undefined, cls?: string) => HTMLElement} Cell
 * @typedef {{ sink: string, kind: string, state: "pending" | "failed", count: number }} OutboxCount
 */

/**
 * One row per sink and kind, pending and failed side by side (the answer has one per state).
 * @param {OutboxCount[]} counts
 * @param {Cell} cell
 */
export function countRows(counts, cell) {
  /** @type {Map<string, { sink: string, kind: string, pending: number, failed: number }>} */
  const rows = new Map();
  for (const c of counts) {
    const key = `${c.sink}\u0000${c.kind}`;
    const row = rows.get(key) ?? { sink: c.sink, kind: c.kind, pending: 0, failed: 0 };
    row[c.state] += c.count;
    rows.set(key, row);
  }
  return [...rows.values()]
    .sort((a, b) => a.sink.localeCompare(b.sink) || a.kind.localeCompare(b.kind))
    .map((r) => [cell("td", r.sink), cell("td", r.kind, "code"), cell("td", r.pending.toLocaleString("en-US"), "num"), cell("td", r.failed.toLocaleString("en-US"), r.failed ? "num state exhausted" : "num")]);
}

/**
 * @param {any[]} items the failed messages (GET /admin/outbox?state=failed)
 * @param {Cell} cell
 */
export function failedRows(items, cell) {
  return items.map((i) => [
    cell("td", i.id, "code"),
    cell("td", i.sink),
    cell("td", i.kind, "code"),
    cell("td", i.attempts, "num"),
    cell("td", i.last_error, "error-text"),
    cell("td", new Date(i.created_at).toLocaleString()),
    retryCell(i),
  ]);
}

/** @param {any} item */
function retryCell(item) {
  const td = document.createElement("td");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Retry";
  button.className = "retry";
  button.dataset.action = "outbox-retry";
  button.dataset.id = item.id;
  button.dataset.sink = item.sink;
  td.append(button);
  return td;
}

/**
 * Makes a failed message pending again in its own sink (the same id may sit in several).
 * @param {(path: string, init?: RequestInit) => Promise<any>} api
 * @param {string} id
 * @param {string} sink
 * @returns {Promise<string>} what to tell the operator
 */
export async function retry(api, id, sink) {
  const answer = await api(`/admin/outbox/${encodeURIComponent(id)}/retry?sink=${encodeURIComponent(sink)}`, { method: "POST" });
  const states = answer.data.map((/** @type {any} */ i) => i.state).join(", ");
  return `Retried ${id} (${sink}): ${states}.`;
}
