// The dashboard page (served at /dashboard/ by the reservation-service; bundled
// by scripts/build-web.mjs). It calls the service it was served by with
// @connectrpc/connect-web (Connect protocol over same-origin fetch):
//   - ListSkus for the catalog, WatchAvailability (whole catalog) for live rows;
//   - GetFlashSaleReport for the report of a SKU over a window, drawn with the
//     same figures and ECharts options as the static report (report-charts.ts).
// The page holds no secret: the user pastes a token (kept in sessionStorage) or
// passes it in the fragment (#token=…, never sent to the server, removed from
// the address bar once read).
//
// What tests select on: #status[data-state] (no-token | connecting | live |
// reconnecting | auth-error | error) with data-code; one tr[data-sku] per SKU
// with data-available, data-on-hand, data-reserved, data-allocated,
// data-waitlist-length, data-waitlist-units, data-demand-status, data-version;
// #report-status[data-state] (idle | loading | shown | unimplemented |
// auth-error | error); tr[data-figure] in #report-figures; the charts' canvases
// in .chart[data-chart].
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { timestampDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { InventoryReservationService, type Availability, type FlashSaleReport } from "@holdfast/contracts";
import { CHART_KEYS, demandStatusName, reportCharts, reportFigures, type ReportCharts } from "@holdfast/dashboard/report-charts";
import { REPORT_CHART_PARTS } from "@holdfast/dashboard/echarts-parts";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([...REPORT_CHART_PARTS, CanvasRenderer]);

const TOKEN_KEY = "holdfast.dashboard.token";
const REPORT_REFRESH_MS = 5_000;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10_000;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

// ---------------------------------------------------------------------------
// The token

/** Takes a token from the fragment (#token=…) into sessionStorage and removes it from the address bar. */
function adoptFragmentToken(): void {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromFragment = fragment.get("token");
  if (fromFragment === null) return;
  if (fromFragment.trim() !== "") sessionStorage.setItem(TOKEN_KEY, fromFragment.trim());
  fragment.delete("token");
  const rest = fragment.toString();
  history.replaceState(history.state, "", `${location.pathname}${location.search}${rest === "" ? "" : `#${rest}`}`);
}

const currentToken = () => sessionStorage.getItem(TOKEN_KEY) ?? "";

/** Who the token says it is (read, not verified: the server verifies it). */
function describeToken(token: string): string {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) as { role?: unknown; sub?: unknown; exp?: unknown };
    const expires = typeof payload.exp === "number" ? `, expires ${new Date(payload.exp * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC` : "";
    return `token for ${String(payload.role ?? "?")}:${String(payload.sub ?? "?")}${expires}`;
  } catch {
    return "token (not a readable JWT)";
  }
}

// ---------------------------------------------------------------------------
// The client

const withToken: Interceptor = (next) => async (req) => {
  req.header.set("authorization", `Bearer ${currentToken()}`);
  return await next(req);
};

const client: Client<typeof InventoryReservationService> = createClient(
  InventoryReservationService,
  createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [withToken] }),
);

const isAuthError = (err: ConnectError) => err.code === Code.Unauthenticated || err.code === Code.PermissionDenied;

function explain(err: ConnectError): string {
  if (err.code === Code.Unauthenticated) return `the service refused the token (Unauthenticated: ${err.rawMessage}): paste a valid one`;
  if (err.code === Code.PermissionDenied) return `the token's role may not do this (PermissionDenied: ${err.rawMessage})`;
  return `${Code[err.code]}: ${err.rawMessage}`;
}

// ---------------------------------------------------------------------------
// Status line

const statusLine = $<HTMLParagraphElement>("status");

function setStatus(state: string, text: string, code?: Code): void {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
  if (code === undefined) delete statusLine.dataset.code;
  else statusLine.dataset.code = Code[code];
}

// ---------------------------------------------------------------------------
// Availability rows

const rows = $<HTMLTableSectionElement>("sku-rows");
const names = new Map<string, string>();
const shown = new Map<string, Availability>();
const reportSku = $<HTMLSelectElement>("report-sku");

const formatUpdate = (ts: Timestamp | undefined) => (ts === undefined ? "" : timestampDate(ts).toISOString().slice(11, 23));

function cell(row: HTMLTableRowElement, field: string, numeric: boolean): HTMLTableCellElement {
  let td = row.querySelector<HTMLTableCellElement>(`td[data-field="${field}"]`);
  if (td === null) {
    td = document.createElement("td");
    td.dataset.field = field;
    if (numeric) td.className = "num";
    row.appendChild(td);
  }
  return td;
}

/** The SKU's row, created in code order. */
function rowOf(sku: string): HTMLTableRowElement {
  const existing = rows.querySelector<HTMLTableRowElement>(`tr[data-sku="${CSS.escape(sku)}"]`);
  if (existing !== null) return existing;
  const row = document.createElement("tr");
  row.dataset.sku = sku;
  const before = [...rows.querySelectorAll<HTMLTableRowElement>("tr[data-sku]")].find((r) => (r.dataset.sku ?? "") > sku) ?? null;
  rows.insertBefore(row, before);
  $("no-skus").hidden = true;
  const option = document.createElement("option");
  option.value = sku;
  option.textContent = sku;
  const optionBefore = [...reportSku.options].find((o) => o.value > sku) ?? null;
  reportSku.insertBefore(option, optionBefore);
  return row;
}

function renderName(sku: string): void {
  if (!shown.has(sku)) return;
  cell(rowOf(sku), "name", false).textContent = names.get(sku) ?? "";
}

function renderAvailability(availability: Availability): void {
  const previous = shown.get(availability.sku);
  // Versions only go forward: an update that is not newer is stale.
  if (previous !== undefined && availability.version <= previous.version) return;
  shown.set(availability.sku, availability);
  const row = rowOf(availability.sku);
  const demand = demandStatusName(availability.demandStatus);
  Object.assign(row.dataset, {
    onHand: String(availability.onHand),
    reserved: String(availability.reserved),
    allocated: String(availability.allocated),
    available: String(availability.available),
    waitlistLength: String(availability.waitlistLength),
    waitlistUnits: String(availability.waitlistUnits),
    demandStatus: demand,
    version: String(availability.version),
  });
  cell(row, "sku", false).textContent = availability.sku;
  cell(row, "name", false).textContent = names.get(availability.sku) ?? "";
  cell(row, "on-hand", true).textContent = String(availability.onHand);
  cell(row, "reserved", true).textContent = String(availability.reserved);
  cell(row, "allocated", true).textContent = String(availability.allocated);
  cell(row, "available", true).textContent = String(availability.available);
  cell(row, "waitlist-length", true).textContent = String(availability.waitlistLength);
  cell(row, "waitlist-units", true).textContent = String(availability.waitlistUnits);
  const badge = document.createElement("span");
  badge.className = "demand";
  badge.dataset.demandStatus = demand;
  badge.textContent = demand;
  cell(row, "demand", false).replaceChildren(badge);
  cell(row, "updated", false).textContent = formatUpdate(availability.updateTime);
  const action = cell(row, "report", false);
  if (action.firstChild === null) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "report";
    button.addEventListener("click", () => {
      reportSku.value = availability.sku;
      void showReport();
    });
    action.appendChild(button);
  }
  if (previous !== undefined) {
    row.classList.remove("changed");
    void row.offsetWidth; // restart the highlight
    row.classList.add("changed");
  }
}

function clearRows(): void {
  rows.replaceChildren();
  reportSku.replaceChildren();
  shown.clear();
  names.clear();
}

// ---------------------------------------------------------------------------
// Catalog and live stream

/** Every SKU, page by page: names for the rows, and their availability as a first state. */
async function loadCatalog(signal: AbortSignal): Promise<void> {
  let pageToken = "";
  do {
    const page = await client.listSkus({ pageSize: 500, pageToken }, { signal });
    for (const sku of page.skus) {
      names.set(sku.code, sku.name);
      if (sku.availability !== undefined) renderAvailability(sku.availability);
      renderName(sku.code);
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  $("no-skus").hidden = shown.size > 0;
}

let catalogReload: number | undefined;
/** A SKU created after the catalog was read: read the catalog again for its name (once per burst). */
function reloadCatalogSoon(signal: AbortSignal): void {
  if (catalogReload !== undefined) return;
  catalogReload = window.setTimeout(() => {
    catalogReload = undefined;
    loadCatalog(signal).catch(() => undefined);
  }, 300);
}

/** Watches the whole catalog until aborted; reconnects with backoff unless the token is refused. */
async function watchLoop(signal: AbortSignal): Promise<void> {
  let delay = RECONNECT_MIN_MS;
  while (!signal.aborted) {
    try {
      setStatus("connecting", "connecting…");
      await loadCatalog(signal);
      let complete = false;
      for await (const message of client.watchAvailability({}, { signal })) {
        const event = message.event;
        if (event.case === "initialState" || event.case === "update") {
          for (const availability of event.value.availabilities) {
            if (!names.has(availability.sku)) reloadCatalogSoon(signal);
            renderAvailability(availability);
          }
          if (event.case === "initialState") complete ||= event.value.complete;
          $("no-skus").hidden = shown.size > 0;
        }
        if (complete) {
          delay = RECONNECT_MIN_MS;
          setStatus("live", `live: ${shown.size} SKU${shown.size === 1 ? "" : "s"}, last message ${new Date().toISOString().slice(11, 19)} UTC`);
        }
      }
      if (signal.aborted) return;
      setStatus("reconnecting", "the service ended the stream; reconnecting…");
    } catch (err) {
      if (signal.aborted) return;
      const error = ConnectError.from(err);
      if (isAuthError(error)) {
        setStatus("auth-error", explain(error), error.code);
        return;
      }
      setStatus("reconnecting", `${explain(error)}; reconnecting in ${Math.round(delay / 1000)} s`, error.code);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, RECONNECT_MAX_MS);
  }
}

// ---------------------------------------------------------------------------
// The report

const reportStatus = $<HTMLParagraphElement>("report-status");
const reportWindow = $<HTMLSelectElement>("report-window");
const reportAuto = $<HTMLInputElement>("report-auto");
const charts = new Map<keyof ReportCharts, echarts.ECharts>();
let reportRequest: AbortController | undefined;
let reportTimer: number | undefined;

function setReportStatus(state: string, text: string, code?: Code): void {
  reportStatus.dataset.state = state;
  reportStatus.textContent = text;
  if (code === undefined) delete reportStatus.dataset.code;
  else reportStatus.dataset.code = Code[code];
}

function renderReport(report: FlashSaleReport): void {
  const tables = reportFigures(report).map((group) => {
    const table = document.createElement("table");
    table.createCaption().textContent = group.title;
    const body = table.createTBody();
    for (const figure of group.figures) {
      const row = body.insertRow();
      row.dataset.figure = figure.key;
      if (figure.alert === true) row.className = "alert";
      const th = document.createElement("th");
      th.textContent = figure.label;
      const td = document.createElement("td");
      td.textContent = figure.value;
      row.append(th, td);
    }
    return table;
  });
  $("report-figures").replaceChildren(...tables);
  const options = reportCharts(report);
  for (const key of CHART_KEYS) {
    let chart = charts.get(key);
    if (chart === undefined) {
      chart = echarts.init($(`chart-${key}`), null, { renderer: "canvas" });
      charts.set(key, chart);
    }
    chart.setOption(options[key], { notMerge: true });
  }
}

async function showReport(): Promise<void> {
  const sku = reportSku.value;
  if (sku === "") {
    setReportStatus("idle", "Choose a SKU.");
    return;
  }
  reportRequest?.abort();
  const request = new AbortController();
  reportRequest = request;
  const minutes = Number(reportWindow.value);
  setReportStatus("loading", `loading the report of ${sku}…`);
  try {
    const { report } = await client.getFlashSaleReport(
      { sku, startTime: timestampFromMs(Date.now() - minutes * 60_000), topCustomersLimit: 10 },
      { signal: request.signal },
    );
    if (report === undefined) throw new ConnectError("the response has no report", Code.Internal);
    renderReport(report);
    reportStatus.dataset.sku = sku;
    setReportStatus("shown", `${sku}, last ${minutes} min, generated ${report.generateTime === undefined ? "" : timestampDate(report.generateTime).toISOString().slice(11, 19)} UTC`);
  } catch (err) {
    if (request.signal.aborted) return;
    const error = ConnectError.from(err);
    if (error.code === Code.Unimplemented) setReportStatus("unimplemented", "This service does not serve flash-sale reports yet (GetFlashSaleReport is Unimplemented).", error.code);
    else setReportStatus(isAuthError(error) ? "auth-error" : "error", `report: ${explain(error)}`, error.code);
  }
  scheduleReport();
}

function scheduleReport(): void {
  window.clearTimeout(reportTimer);
  reportTimer = reportAuto.checked ? window.setTimeout(() => void showReport(), REPORT_REFRESH_MS) : undefined;
}

// ---------------------------------------------------------------------------
// Wiring

let session: AbortController | undefined;

function start(): void {
  session?.abort();
  reportRequest?.abort();
  clearRows();
  const token = currentToken();
  $("principal").textContent = token === "" ? "" : describeToken(token);
  if (token === "") {
    setStatus("no-token", "No token yet: paste one above, or open this page as /dashboard/#token=…");
    return;
  }
  session = new AbortController();
  void watchLoop(session.signal);
}

$<HTMLFormElement>("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("token-input");
  const token = input.value.trim();
  input.value = "";
  if (token === "") return;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  start();
});

$<HTMLFormElement>("report-form").addEventListener("submit", (event) => {
  event.preventDefault();
  void showReport();
});
reportAuto.addEventListener("change", scheduleReport);
window.addEventListener("resize", () => charts.forEach((chart) => chart.resize()));
window.addEventListener("hashchange", () => {
  if (!location.hash.includes("token=")) return;
  adoptFragmentToken();
  start();
});
// A policy violation is a bug of this page: say so in the console (the browser test fails on it).
document.addEventListener("securitypolicyviolation", (event) => console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`));

adoptFragmentToken();
start();
