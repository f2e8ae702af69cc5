/**
 * WatchAvailability: the current availability of some SKUs (or of the whole
 * catalog), then every change, from whichever replica or worker made it.
 *
 * - Feed. Every process that changes availability rows sends a
 *   `holdfast_inventory` notification naming the SKUs after its commit (the
 *   reservation-service through InventoryAnnouncer, the worker inside its sweep
 *   and repair transactions). One AvailabilityHub per process LISTENs on a
 *   dedicated connection and re-reads the rows of the SKUs someone watches: one
 *   query per FLUSH_MS at most, whatever the number of streams, so a flash sale
 *   costs each replica a handful of reads a second, not one per stream and change.
 * - Order. A notification is sent after the change committed, and the row is read
 *   after the notification arrived, so the read sees that change or a later one.
 *   Rows carry their version; a stream sends a SKU only when its version is newer
 *   than the last one it sent, so versions never go back, and may skip (coalescing).
 * - No gap at the start: a stream subscribes before it reads its initial state,
 *   so a change committed meanwhile is delivered after the initial state.
 * - Lost notifications: when the hub's listener reconnects it re-reads every
 *   watched row; this process's own changes reach its hub directly (not only
 *   through the database); and every watched row is re-read every 30 s anyway, so a
 *   notification another process failed to send delays an update by at most that.
 */
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { WatchAvailabilityResponseSchema, type WatchAvailabilityRequest, type WatchAvailabilityResponse } from "@holdfast/contracts";
import { skuNotFound, ts } from "@holdfast/core";
import type { Logger } from "@holdfast/runtime";
import { HEARTBEAT_INTERVAL_DEFAULT_MS, INVENTORY_CHANNEL, NotificationListener, parseInventoryPayload, query, readInventoryRows, skuOrder, type Db, type InventoryRow } from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { toAvailability } from "./convert.js";
import { Mailbox, deliver } from "./streams.js";

/** Shortest time between two re-reads of changed rows (the coalescing window). */
const FLUSH_MS = 50;
/** Rows per message of an initial state (a whole catalog spans several). */
const INITIAL_CHUNK = 500;
/** Every watched row is re-read this often even without notifications (a lost one costs at most this). */
const SAFETY_REREAD_MS = 30_000;

type Watched = ReadonlySet<string> | "all";

interface Subscriber {
  skus: Watched;
  deliver(rows: readonly InventoryRow[]): void;
}

export class AvailabilityHub {
  private readonly listener: NotificationListener;
  private readonly subscribers = new Set<Subscriber>();
  /** Told which SKUs changed ("all": maybe any) at each flush, without any row read (the waitlist feed). */
  private readonly skuListeners = new Set<(skus: ReadonlySet<string> | "all") => void>();
  /** SKUs notified since the last flush; "all" after a reconnection. */
  private dirty: Set<string> | "all" = new Set();
  private timer: NodeJS.Timeout | undefined;
  private lastFlushAt = -Infinity;
  private flushing: Promise<void> | undefined;
  private sweep: NodeJS.Timeout | undefined;
  private closed = false;
  /** Wait before re-reading after a failed read; doubles up to 5 s, back to FLUSH_MS on success. */
  private retryMs = FLUSH_MS;

  constructor(
    private readonly db: Db,
    databaseUrl: string,
    private readonly logger: Logger,
  ) {
    this.listener = new NotificationListener({
      url: databaseUrl,
      applicationName: "holdfast-reservation-service:watch",
      channels: [INVENTORY_CHANNEL],
      onNotification: (_channel, payload) => {
        const skus = parseInventoryPayload(payload);
        if (skus === undefined) return logger.warn({ payload }, "ignoring a malformed holdfast_inventory notification");
        this.changed(skus);
      },
      onListening: (listening) => {
        if (!listening) return logger.warn("availability feed lost its database connection: reconnecting (streams stay open)");
        // (Re)connected: whatever was notified while away is unknown, so re-read everything watched.
        this.dirty = "all";
        this.schedule();
      },
      onError: (err) => logger.warn({ err }, "availability feed connection error"),
    });
  }

  start(): Promise<void> {
    // The safety net: a notification lost on its way (a failed send from another
    // process) is caught up with at the next full re-read.
    this.sweep = setInterval(() => {
      if (this.idle) return;
      this.dirty = "all";
      this.schedule();
    }, SAFETY_REREAD_MS);
    this.sweep.unref();
    return this.listener.start();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweep);
    clearTimeout(this.timer);
    await this.listener.close();
    await this.flushing;
  }

  /** This process changed these SKUs' rows (after commit): re-read them without waiting for the notification. */
  changed(skus: Iterable<string>): void {
    if (this.idle) return; // a stream that subscribes later reads its initial state then
    if (this.dirty !== "all") for (const sku of skus) this.dirty.add(sku);
    this.schedule();
  }

  /** Calls `listener` with the codes of the SKUs that changed (or "all"), once per flush; returns the unsubscribe. */
  onSkusChanged(listener: (skus: ReadonlySet<string> | "all") => void): () => void {
    this.skuListeners.add(listener);
    return () => this.skuListeners.delete(listener);
  }

  private get idle(): boolean {
    return this.subscribers.size === 0 && this.skuListeners.size === 0;
  }

  /** Calls `deliver` with the fresh rows of watched SKUs after each change; returns the unsubscribe. */
  subscribe(skus: Watched, deliver: (rows: readonly InventoryRow[]) => void): () => void {
    const subscriber = { skus, deliver };
    this.subscribers.add(subscriber);
    return () => this.subscribers.delete(subscriber);
  }

  private schedule(): void {
    if (this.closed || this.timer !== undefined || this.flushing !== undefined) return;
    const wait = Math.max(0, this.lastFlushAt + this.retryMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flush().finally(() => {
        this.flushing = undefined;
        // Changes that arrived during the read wait for the next window.
        if (this.dirty === "all" || this.dirty.size > 0) this.schedule();
      });
    }, wait);
    this.timer.unref();
  }

  private async flush(): Promise<void> {
    this.lastFlushAt = Date.now();
    const dirty = this.dirty;
    this.dirty = new Set();
    for (const listener of this.skuListeners) listener(dirty);
    if (this.subscribers.size === 0) return;
    // Which rows to read: of the dirty SKUs ("all": every SKU), those someone watches.
    const subscribers = [...this.subscribers];
    const watched = subscribers.some((s) => s.skus === "all") ? "all" : new Set(subscribers.flatMap((s) => [...(s.skus as ReadonlySet<string>)]));
    const wanted = dirty === "all" ? watched : watched === "all" ? dirty : new Set([...dirty].filter((sku) => watched.has(sku)));
    if (wanted !== "all" && wanted.size === 0) return;
    let rows: InventoryRow[];
    try {
      rows =
        wanted === "all"
          ? await query<InventoryRow>(this.db, `SELECT * FROM inventory`)
          : await query<InventoryRow>(this.db, `SELECT * FROM inventory WHERE sku_code = ANY(?::text[])`, [[...wanted]]);
    } catch (err) {
      // Try again at the next window: the same SKUs are still to be read.
      if (this.retryMs === FLUSH_MS) this.logger.warn({ err }, "could not read changed availability rows; retrying with backoff");
      this.retryMs = Math.min(this.retryMs * 2, 5_000);
      const since = this.dirty as Set<string> | "all"; // notified during the failed read
      this.dirty = dirty === "all" || since === "all" ? "all" : new Set([...dirty, ...since]);
      return;
    }
    this.retryMs = FLUSH_MS;
    for (const subscriber of this.subscribers) {
      const mine = subscriber.skus === "all" ? rows : rows.filter((r) => (subscriber.skus as ReadonlySet<string>).has(r.sku_code));
      if (mine.length > 0) subscriber.deliver(mine);
    }
  }
}

/** Rows waiting to be sent on one stream: the newest per SKU. */
class Pending extends Mailbox {
  private readonly rows = new Map<string, InventoryRow>();

  protected get filled(): boolean {
    return this.rows.size > 0;
  }

  put(rows: readonly InventoryRow[]): void {
    for (const row of rows) {
      const seen = this.rows.get(row.sku_code);
      if (seen === undefined || Number(seen.version) < Number(row.version)) this.rows.set(row.sku_code, row);
    }
    this.woken();
  }

  take(): InventoryRow[] {
    const rows = [...this.rows.values()];
    this.rows.clear();
    return rows;
  }
}

/** SKU order (ORDERS in resources.proto: by code, bytewise). */
const bySku = (a: InventoryRow, b: InventoryRow) => (a.sku_code < b.sku_code ? -1 : a.sku_code > b.sku_code ? 1 : 0);

export async function* watchAvailability(deps: Deps, call: Call, req: WatchAvailabilityRequest): AsyncGenerator<WatchAvailabilityResponse> {
  const codes = skuOrder(req.skus);
  const heartbeatMs = req.heartbeatInterval !== undefined ? durationMs(req.heartbeatInterval) : HEARTBEAT_INTERVAL_DEFAULT_MS;
  const pending = new Pending();
  // Subscribed before the initial read: a change committed in between arrives after it.
  const unsubscribe = deps.hub.subscribe(codes.length > 0 ? new Set(codes) : "all", (rows) => pending.put(rows));
  try {
    const initial =
      codes.length > 0
        ? await readInventoryRows(deps.db, codes)
        : await query<InventoryRow>(deps.db, `SELECT * FROM inventory ORDER BY sku_code`);
    const found = new Set(initial.map((r) => r.sku_code));
    const unknown = codes.filter((c) => !found.has(c));
    if (unknown.length > 0) throw skuNotFound(unknown);

    const sent = new Map<string, number>();
    const asOf = timestampNow();
    for (let i = 0; i === 0 || i < initial.length; i += INITIAL_CHUNK) {
      const chunk = initial.slice(i, i + INITIAL_CHUNK);
      for (const row of chunk) sent.set(row.sku_code, Number(row.version));
      const complete = i + INITIAL_CHUNK >= initial.length;
      yield create(WatchAvailabilityResponseSchema, { event: { case: "initialState", value: { availabilities: chunk.map(toAvailability), asOf, complete } } });
    }

    // Only rows newer than what was sent go out (stale ones: nothing, maybe a heartbeat).
    const next = () => {
      const fresh = pending.take().filter((row) => (sent.get(row.sku_code) ?? 0) < Number(row.version));
      if (fresh.length === 0) return [];
      fresh.sort(bySku);
      for (const row of fresh) sent.set(row.sku_code, Number(row.version));
      const newest = fresh.reduce((a, b) => (a.updated_at > b.updated_at ? a : b)).updated_at;
      return [create(WatchAvailabilityResponseSchema, { event: { case: "update", value: { availabilities: fresh.map(toAvailability), asOf: ts(newest), complete: true } } })];
    };
    const heartbeat = () => create(WatchAvailabilityResponseSchema, { event: { case: "heartbeat", value: { serverTime: timestampNow() } } });
    yield* deliver(pending, call.signal, heartbeatMs, next, heartbeat);
  } finally {
    unsubscribe();
  }
}
