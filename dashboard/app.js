// @ts-check
// The tollgate dashboard: one module, no framework. It polls /admin/overview (one read of the usage
// records for everything on the page) and follows /admin/tail for the live tail. Everything callers
// control (user ids, IPs, model names, signals) is written with textContent, never as HTML.

// @ts-ignore: served by the gateway from node_modules/uplot; its types come from the uplot package.
import uPlotModule from "./vendor/uPlot.esm.js";
import * as outbox from "./outbox.js";

/** @type {typeof import("uplot")} */
const uPlot = uPlotModule;

const KEY_STORAGE = "tollgate.adminKey";
const POLL_MS = 3000;
const TAIL_ROWS = 50;
const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"];

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) ?? "",
  /** @type {import("uplot") | undefined} */
  chart: undefined,
  chartShape: "",
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  timer: undefined,
  /** @type {AbortController | undefined} */
  tail: undefined,
  seen: new Set(),
};

/**
 * @param {string} path
 * @param {RequestInit} [init]
 */
async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...init.headers, authorization: `Bearer ${state.key}`, "content-type": "application/json" } });
  if (res.status === 401) {
    logout("That admin key was not accepted.");
    throw new Error("unauthorized");
  }
  const body = await res.json();
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return body;
}

// ---- formatting -------------------------------------------------------------------------------

/** @param {number} usd */
function money(usd) {
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${usd.toFixed(6)}`;
  if (usd < 100) return `$${usd.toFixed(4)}`;
  return `$${usd.toFixed(2)}`;
}
/** @param {number} n */
const count = (n) => n.toLocaleString("en-US");
/** @param {string} ts */
const clock = (ts) => new Date(ts).toLocaleTimeString();

/**
 * A table cell (or a node) with text only.
 * @param {string} tag
 * @param {string | number | null | undefined} text
 * @param {string} [cls]
 */
function el(tag, text, cls) {
  const node = document.createElement(tag);
  node.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) node.className = cls;
  return node;
}

/**
 * @param {string} tableId
 * @param {HTMLElement[][]} rows
 * @param {string} empty
 */
function fillTable(tableId, rows, empty) {
  const body = /** @type {HTMLTableSectionElement} */ ($(tableId).querySelector("tbody"));
  const cols = $(tableId).querySelectorAll("thead th").length;
  body.replaceChildren(
    ...(rows.length
      ? rows.map((cells) => {
          const tr = document.createElement("tr");
          tr.append(...cells);
          return tr;
        })
      : [Object.assign(el("td", empty, "muted"), { colSpan: cols })].map((td) => {
          const tr = document.createElement("tr");
          tr.append(td);
          return tr;
        })),
  );
}

// ---- blocking ---------------------------------------------------------------------------------

/**
 * A Block / Unblock button for one subject.
 * @param {"user" | "ip"} kind
 * @param {string | null} id
 * @param {boolean} blocked
 */
function blockButton(kind, id, blocked) {
  const td = document.createElement("td");
  if (!id || id === "-") return td;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = blocked ? "Unblock" : "Block";
  button.className = blocked ? "unblock" : "block";
  button.dataset.kind = kind;
  button.dataset.id = id;
  button.dataset.action = blocked ? "unblock" : "block";
  td.append(button);
  return td;
}

/**
 * @param {"user" | "ip"} kind
 * @param {string} id
 * @param {string} [forDuration]
 */
async function block(kind, id, forDuration) {
  const body = /** @type {Record<string, string>} */ ({ [kind]: id, reason: "dashboard" });
  if (forDuration) body.for = forDuration;
  await api("/admin/blocks", { method: "POST", body: JSON.stringify(body) });
  $("block-result").textContent = `Blocked ${kind} ${id}${forDuration ? ` for ${forDuration}` : ""}.`;
}

/**
 * @param {"user" | "ip"} kind
 * @param {string} id
 */
async function unblock(kind, id) {
  await api(`/admin/blocks/${kind}/${encodeURIComponent(id)}`, { method: "DELETE" });
  $("block-result").textContent = `Unblocked ${kind} ${id}.`;
}

document.addEventListener("click", async (event) => {
  const target = /** @type {HTMLElement} */ (event.target);
  if (!(target instanceof HTMLButtonElement) || !target.dataset.action) return;
  const kind = /** @type {"user" | "ip"} */ (target.dataset.kind);
  const id = target.dataset.id ?? "";
  const action = target.dataset.action;
  const result = $(action === "outbox-retry" ? "outbox-result" : "block-result");
  target.disabled = true;
  try {
    if (action === "outbox-retry") result.textContent = await outbox.retry(api, id, target.dataset.sink ?? "");
    else if (action === "block") await block(kind, id);
    else await unblock(kind, id);
    await refresh();
  } catch (err) {
    result.textContent = `Failed: ${/** @type {Error} */ (err).message}`;
  } finally {
    target.disabled = false;
  }
});

// ---- rendering --------------------------------------------------------------------------------

/** @param {any} o the /admin/overview answer */
function render(o) {
  $("kpi-spend").textContent = money(o.totals.cost_usd);
  $("kpi-requests").textContent = count(o.totals.requests);
  $("kpi-denied").textContent = count(o.totals.denied);
  $("kpi-downgraded").textContent = count(o.totals.downgraded);
  $("kpi-tokens").textContent = count(o.totals.input_tokens + o.totals.output_tokens);

  renderChart(/** @type {HTMLSelectElement} */ ($("chart-by")).value === "model" ? o.by_model : o.by_route);

  /** @param {any} r @param {"user" | "ip"} kind */
  const spender = (r, kind) => [el("td", r.group), el("td", count(r.requests), "num"), el("td", count(r.denied), "num"), el("td", count(r.input_tokens + r.output_tokens), "num"), el("td", money(r.cost_usd), "num"), blockButton(kind, r.group, r.blocked)];
  fillTable("top-users", o.top_users.map((/** @type {any} */ r) => spender(r, "user")), "No traffic in this window.");
  fillTable("top-ips", o.top_ips.map((/** @type {any} */ r) => spender(r, "ip")), "No traffic in this window.");
  fillTable("refusals", o.refusals.map((/** @type {any} */ r) => [el("td", r.code, "code"), el("td", count(r.count), "num"), el("td", clock(r.last_ts))]), "Nothing refused.");
  /** @param {Record<string, number>} signals */
  const signalList = (signals) =>
    Object.entries(signals)
      .map(([name, n]) => `${name} ×${n}`)
      .join(", ");
  // A farm of 120 keys on 120 /24s is one row here, however many rows its callers take below.
  fillTable(
    "flagged-cohorts",
    o.flagged_cohorts.map((/** @type {any} */ r) => [
      el("td", r.cohort, "code"),
      el("td", r.group),
      el("td", count(r.users), "num"),
      el("td", count(r.networks), "num"),
      el("td", count(r.downgraded), "num"),
      el("td", count(r.blocked), "num"),
      el("td", signalList(r.signals), "signals"),
      el("td", clock(r.last_ts)),
    ]),
    "Nothing was downgraded or blocked.",
  );
  fillTable(
    "flagged",
    o.flagged.map((/** @type {any} */ r) => [el("td", r.user), el("td", r.ip), el("td", count(r.downgraded), "num"), el("td", count(r.blocked), "num"), el("td", signalList(r.signals), "signals"), el("td", clock(r.last_ts)), blockButton("user", r.user, r.blocked_now.user)]),
    "No caller was downgraded or blocked.",
  );
  // The tail streams this process's records; the store's recent ones add other processes'.
  for (const r of o.recent) addTailRow(r);
}

/** @param {any[]} rows the /admin/budgets answer's data: one row per budget of each level */
function renderBudgets(rows) {
  const order = { gateway: 0, org: 1, key: 2, route: 3, user: 4 };
  const sorted = [...rows].sort((a, b) => (order[/** @type {keyof typeof order} */ (a.level)] ?? 9) - (order[/** @type {keyof typeof order} */ (b.level)] ?? 9));
  fillTable(
    "budgets",
    sorted.map((/** @type {any} */ r) => [
      el("td", r.level),
      el("td", r.subject ?? "–"),
      el("td", r.period),
      el("td", money(r.limit_usd), "num"),
      el("td", r.used_usd === null ? null : money(r.used_usd), "num"),
      el("td", r.reserved_usd == null ? null : money(r.reserved_usd), "num"),
      el("td", r.remaining_usd === null ? null : money(r.remaining_usd), "num"),
      el("td", r.state ?? "–", `state ${r.state ?? ""}`),
      el("td", r.resets_at ? `${new Date(r.resets_at).toLocaleString()}${r.timezone && r.timezone !== "UTC" ? ` (${r.timezone})` : ""}${r.until ? `, override until ${clock(r.until)}` : ""}` : r.until ? `override until ${clock(r.until)}` : null),
    ]),
    "No budgets configured.",
  );
}

/** @param {any} page the failed page of /admin/outbox (its counts cover both states), or why it failed */
function renderOutbox(page) {
  if (page instanceof Error) {
    fillTable("outbox-counts", [], `No outbox: ${page.message}`);
    fillTable("outbox-failed", [], "–");
    return;
  }
  fillTable("outbox-counts", outbox.countRows(page.counts, el), "Nothing waiting (or no alerts and export configured).");
  fillTable("outbox-failed", outbox.failedRows(page.data, el), "No failed messages.");
  $("outbox-failed-total").textContent = page.total > page.data.length ? `oldest ${page.data.length} of ${page.total}` : "";
}

/** @param {any} s a series answer: buckets (epoch ms) and per-group cost_usd arrays */
function renderChart(s) {
  const container = $("spend-chart");
  const groups = s.series.length ? s.series : [{ group: "all", cost_usd: s.total.cost_usd }];
  /** @type {import("uplot").AlignedData} */
  const data = [s.buckets.map((/** @type {number} */ t) => t / 1000), ...groups.map((/** @type {any} */ g) => g.cost_usd)];
  const spend = s.total.cost_usd.reduce((/** @type {number} */ a, /** @type {number} */ b) => a + b, 0);
  container.dataset.spend = String(spend);
  container.dataset.points = String(s.total.requests.filter((/** @type {number} */ n) => n > 0).length);
  $("chart-caption").textContent = `per ${s.bucket_ms >= 3_600_000 ? `${s.bucket_ms / 3_600_000}h` : `${s.bucket_ms / 60_000}m`} bucket`;
  const shape = `${groups.map((/** @type {any} */ g) => g.group).join("|")}:${container.clientWidth}`;
  if (state.chart && state.chartShape === shape) {
    state.chart.setData(data);
    return;
  }
  state.chart?.destroy();
  state.chartShape = shape;
  state.chart = new uPlot(
    {
      width: Math.max(320, container.clientWidth),
      height: 260,
      scales: { x: { time: true } },
      axes: [{ stroke: "#9aa4b2", grid: { stroke: "#2a313c" } }, { stroke: "#9aa4b2", grid: { stroke: "#2a313c" }, size: 70, values: (/** @type {unknown} */ _u, /** @type {number[]} */ vals) => vals.map((v) => money(v)) }],
      series: [
        {},
        ...groups.map((/** @type {any} */ g, /** @type {number} */ i) => ({
          label: g.group,
          stroke: COLORS[i % COLORS.length],
          fill: `${COLORS[i % COLORS.length]}22`,
          width: 2,
          points: { show: false },
          value: (/** @type {unknown} */ _u, /** @type {number | null} */ v) => (v === null ? "–" : money(v)),
        })),
      ],
    },
    data,
    container,
  );
}

/** @param {any} r a usage record */
function addTailRow(r) {
  if (state.seen.has(r.request_id)) return;
  state.seen.add(r.request_id);
  const body = /** @type {HTMLTableSectionElement} */ ($("tail").querySelector("tbody"));
  const tr = document.createElement("tr");
  tr.className = r.decision;
  const decision = r.decision === "deny" ? `deny: ${r.code}` : r.decision;
  tr.append(
    el("td", clock(r.ts)),
    el("td", r.user),
    el("td", r.ip),
    el("td", r.route),
    el("td", r.model ?? r.model_requested),
    el("td", decision, "code"),
    el("td", count(r.input_tokens + r.output_tokens), "num"),
    el("td", money(r.cost_usd), "num"),
    el("td", r.ended),
  );
  tr.dataset.ts = r.ts;
  const after = [...body.rows].find((row) => (row.dataset.ts ?? "") < r.ts);
  body.insertBefore(tr, after ?? null);
  while (body.rows.length > TAIL_ROWS) body.deleteRow(body.rows.length - 1);
  if (state.seen.size > 5000) state.seen = new Set([...state.seen].slice(-1000));
}

// ---- live tail (SSE over fetch, since EventSource cannot send the bearer) -----------------------

async function followTail() {
  state.tail?.abort();
  const abort = new AbortController();
  state.tail = abort;
  $("tail-state").textContent = "live";
  try {
    const res = await fetch("/admin/tail?backlog=25", { headers: { authorization: `Bearer ${state.key}` }, signal: abort.signal });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame
          .split("\n")
          .filter((l) => l.startsWith("data: "))
          .map((l) => l.slice(6))
          .join("\n");
        if (data) addTailRow(JSON.parse(data));
      }
    }
  } catch {
    // Reconnects below; the overview's recent records fill the gap meanwhile.
  }
  if (abort.signal.aborted || !state.key) return;
  state.tail = undefined;
  $("tail-state").textContent = "reconnecting…";
  setTimeout(() => state.key && !state.tail && followTail(), 3000);
}

// ---- lifecycle --------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(state.timer);
  const since = /** @type {HTMLSelectElement} */ ($("window")).value;
  try {
    // A store without an outbox answers 404 there; the rest of the page does not wait on it.
    const [overview, budgets, failed] = await Promise.all([
      api(`/admin/overview?since=${encodeURIComponent(since)}&top=10`),
      api("/admin/budgets?top=10"),
      api("/admin/outbox?state=failed&limit=50").catch((/** @type {Error} */ err) => err),
    ]);
    render(overview);
    renderBudgets(budgets.data);
    renderOutbox(failed);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("status").className = "status ok";
  } catch (err) {
    $("status").textContent = `error: ${/** @type {Error} */ (err).message}`;
    $("status").className = "status bad";
  }
  if (state.key) state.timer = setTimeout(refresh, document.hidden ? POLL_MS * 5 : POLL_MS);
}

/** @param {string} [message] */
function logout(message) {
  state.key = "";
  sessionStorage.removeItem(KEY_STORAGE);
  clearTimeout(state.timer);
  state.tail?.abort();
  state.tail = undefined;
  $("app").hidden = true;
  $("controls").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message ?? "";
}

function enter() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("controls").hidden = false;
  refresh();
  followTail();
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.key = /** @type {HTMLInputElement} */ ($("login-key")).value.trim();
  try {
    await api("/admin/overview?since=1m&top=1");
  } catch {
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, state.key);
  /** @type {HTMLInputElement} */ ($("login-key")).value = "";
  enter();
});

$("block-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = /** @type {"user" | "ip"} */ (/** @type {HTMLSelectElement} */ ($("block-kind")).value);
  const id = /** @type {HTMLInputElement} */ ($("block-id")).value.trim();
  try {
    await block(kind, id, /** @type {HTMLSelectElement} */ ($("block-for")).value || undefined);
    await refresh();
  } catch (err) {
    $("block-result").textContent = `Failed: ${/** @type {Error} */ (err).message}`;
  }
});

$("logout").addEventListener("click", () => logout());
$("window").addEventListener("change", refresh);
$("chart-by").addEventListener("change", refresh);
window.addEventListener("resize", () => {
  state.chartShape = "";
  refresh();
});

if (state.key) enter();
