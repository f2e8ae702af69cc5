// The browser page of test/browser/availability.test.ts: watches the availability
// of some SKUs with @connectrpc/connect-web (Connect protocol, over fetch) and
// shows it live. Bundled with esbuild at test time (test/support/browser.ts);
// type-checked by its own tsconfig (DOM, no Node).
//
// Query string: baseUrl (the reservation-service's HTTP port), token (a bearer
// JWT), skus (comma-separated), heartbeat (seconds, optional).
//
// It renders one row per SKU, <tr data-sku="…" data-available="…" data-on-hand="…"
// data-reserved="…" data-version="…">, and a status line #status whose
// data-state is connecting | live | ended | error (the text says more).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { InventoryReservationService, type Availability, type AvailabilityState } from "@holdfast/contracts";

type State = "connecting" | "live" | "ended" | "error";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("baseUrl") ?? "";
const token = params.get("token") ?? "";
const skus = (params.get("skus") ?? "")
  .split(",")
  .map((s) => s.trim())
  .filter((s) => s !== "");
const heartbeatSeconds = Number(params.get("heartbeat") ?? "0");

const statusLine = document.getElementById("status")!;
const rowsBody = document.getElementById("rows")!;

/** Newest row shown per SKU: an update whose version is not newer is dropped. */
const shown = new Map<string, Availability>();
let messages = 0;

function setStatus(state: State, text: string): void {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

function cell(row: HTMLTableRowElement, field: string, value: string): void {
  let td = row.querySelector<HTMLTableCellElement>(`td[data-field="${field}"]`);
  if (td === null) {
    td = document.createElement("td");
    td.dataset.field = field;
    row.appendChild(td);
  }
  td.textContent = value;
}

function render(availability: Availability): void {
  const previous = shown.get(availability.sku);
  if (previous !== undefined && availability.version <= previous.version) return;
  shown.set(availability.sku, availability);
  let row = rowsBody.querySelector<HTMLTableRowElement>(`tr[data-sku="${CSS.escape(availability.sku)}"]`);
  if (row === null) {
    row = document.createElement("tr");
    row.dataset.sku = availability.sku;
    rowsBody.appendChild(row);
  }
  const values = {
    available: String(availability.available),
    onHand: String(availability.onHand),
    reserved: String(availability.reserved),
    version: String(availability.version),
  };
  Object.assign(row.dataset, values);
  cell(row, "sku", availability.sku);
  cell(row, "available", values.available);
  cell(row, "on-hand", values.onHand);
  cell(row, "reserved", values.reserved);
  cell(row, "version", values.version);
}

function apply(state: AvailabilityState | undefined): void {
  for (const availability of state?.availabilities ?? []) render(availability);
}

function asOf(state: AvailabilityState | undefined): string {
  const ts = state?.asOf;
  return ts === undefined ? "" : ` as of ${new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)).toISOString()}`;
}

async function watch(): Promise<void> {
  if (baseUrl === "" || token === "") throw new ConnectError("the page needs baseUrl and token in its query string", Code.InvalidArgument);
  const transport = createConnectTransport({ baseUrl, useBinaryFormat: true });
  const client = createClient(InventoryReservationService, transport);
  setStatus("connecting", `connecting to ${baseUrl}`);
  const stream = client.watchAvailability(
    { skus, heartbeatInterval: heartbeatSeconds > 0 ? { seconds: BigInt(heartbeatSeconds) } : undefined },
    { headers: { authorization: `Bearer ${token}` } },
  );
  let complete = false;
  for await (const message of stream) {
    messages++;
    statusLine.dataset.messages = String(messages);
    switch (message.event.case) {
      case "initialState":
        apply(message.event.value);
        complete ||= message.event.value.complete;
        setStatus(complete ? "live" : "connecting", `${complete ? "live" : "receiving initial state"}${asOf(message.event.value)}`);
        break;
      case "update":
        apply(message.event.value);
        setStatus("live", `live, updated${asOf(message.event.value)}`);
        break;
      case "heartbeat":
        setStatus(complete ? "live" : "connecting", `${complete ? "live" : "connecting"}, heartbeat at ${new Date().toISOString()}`);
        break;
      default:
        break;
    }
  }
  setStatus("ended", "the server ended the stream");
}

watch().catch((err: unknown) => {
  const error = ConnectError.from(err);
  setStatus("error", `error: ${Code[error.code]}: ${error.rawMessage}`);
  statusLine.dataset.code = Code[error.code];
});
