/**
 * GetFlashSaleReport: how a burst of demand for one SKU was served (docs/fairness.md
 * defines every field). The SQL here only loads the window's rows; every figure is
 * computed by the pure functions of @holdfast/core fairness.ts, which are tested on
 * hand-made logs.
 *
 * Sources, all read in ONE read-only REPEATABLE READ transaction, so the attempts, the
 * holds, the ledger and the waitlist are one snapshot and the figures agree with each
 * other (units granted vs the ledger's steps, promotions vs grants):
 * - hold_attempts (the request log) by hold_attempts_sku_received_idx;
 * - the SKU's holds created in the window by reservation_items_sku_created_idx (a
 *   promoted hold's line is stamped with the promotion's time);
 * - the SKU's ledger (audit_events_sku_id_idx): the last event before the window for
 *   the starting availability, then the window's events in ledger (id) order;
 * - the SKU's waitlist entries (waitlist_entries_sku_seq_idx) that waited or were
 *   promoted during the window.
 *
 * Clocks: received_at is the reservation-service host's clock (core/clock.ts), the
 * other times are PostgreSQL's (transaction or statement time). On one machine they
 * agree; across hosts, skew between them shifts "satisfiable on arrival" by as much.
 *
 * Cost: the window's rows are loaded into memory (a few dozen bytes per attempt); a
 * report over a 31-day window of a very busy SKU is a heavy call, meant for operators
 * and dashboards, not for a request path.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  CustomerShareSchema,
  ErrorReason,
  FlashSaleReportSchema,
  FlashSaleTimelineBucketSchema,
  GetFlashSaleReportResponseSchema,
  LatencyHistogramBucketSchema,
  RefusalCountSchema,
  type FlashSaleReport,
  type GetFlashSaleReportRequest,
  type GetFlashSaleReportResponse,
} from "@holdfast/contracts";
import { query, type Db, type HoldAttemptOutcome, type InventoryRow, type WaitlistPromotionPolicy } from "@holdfast/schema";
import {
  Violations,
  attemptTotals,
  availabilityLookup,
  chooseInterval,
  durationDistribution,
  durationFromMicros,
  expiredAndResold,
  fifoInversions,
  isoMicros,
  jainIndex,
  largestShare,
  latencyHistogram,
  offeredUnderStrictFifo,
  oversellUnits,
  refusalCounts,
  skuNotFound,
  MAX_TIMELINE_BUCKETS,
  timeline,
  timelineBucketCount,
  timeToGrantSamples,
  topCustomers,
  topCustomersLimit,
  undersell,
  unitsPerCustomer,
  type AttemptRecord,
  type AvailabilityTimeline,
  type GrantRecord,
  type StockEvent,
  type WaitingSpan,
} from "@holdfast/core";
import type { Call, Deps } from "./context.js";
import { demandStatus } from "./convert.js";
import { timeRange } from "./reads.js";

/** Longest window a report covers (the contract's limit). */
const MAX_WINDOW_US = 31 * 86_400 * 1_000_000;

/** A timestamptz column as whole µs since the epoch (extract(epoch) is exact numeric since PostgreSQL 14). */
const us = (column: string) => `floor(extract(epoch FROM ${column}) * 1000000)::bigint`;

// ---------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------

/** The SKU's live row, its waitlist policy, and the clock the report is generated at. */
const SKU_NOW = `
SELECT i.*, s.waitlist_promotion_policy, ${us("now()")} AS now_us
  FROM inventory i
  JOIN skus s ON s.code = i.sku_code
 WHERE i.sku_code = ?`;

const ATTEMPTS = `
SELECT ${us("received_at")} AS received_us, customer_id, quantity, outcome, reason, replayed, latency_us
  FROM hold_attempts
 WHERE sku_code = ? AND received_at >= ?::timestamptz AND received_at < ?::timestamptz`;

/**
 * Holds of the SKU created in the window (CreateHold or a promotion; direct allocations
 * are not grants of a flash sale's holds). confirmed: the hold became an allocation by
 * generate time, whatever happened to it after (fulfilled or cancelled).
 */
const GRANTS = `
SELECT r.customer_id, i.quantity, ${us("i.created_at")} AS granted_us, r.confirmed_at IS NOT NULL AS confirmed
  FROM reservation_items i
  JOIN reservations r ON r.id = i.reservation_id
 WHERE i.sku_code = ? AND i.created_at >= ?::timestamptz AND i.created_at < ?::timestamptz
   AND r.type = 'HOLD'`;

/**
 * Availability at the window's start: the after-values of the last ledger event
 * before it. occurred_at is the writing transaction's start, so "last" is by id among
 * the events that started before the window.
 */
const LEDGER_BEFORE = `
SELECT on_hand_after - reserved_after - allocated_after AS available
  FROM audit_events
 WHERE sku_code = ? AND occurred_at < ?::timestamptz
 ORDER BY id DESC
 LIMIT 1`;

/** The window's ledger events in ledger order: the availability steps, expiries, grants and restocks. */
const LEDGER_WINDOW = `
SELECT ${us("occurred_at")} AS at_us, operation, delta_on_hand, delta_reserved,
       on_hand_after - reserved_after - allocated_after AS available
  FROM audit_events
 WHERE sku_code = ? AND occurred_at >= ?::timestamptz AND occurred_at < ?::timestamptz
 ORDER BY id`;

/**
 * Entries that waited during the window or were created or promoted in it. closed_at ≥
 * promoted_at ≥ created_at, so "not closed before the window" keeps exactly those
 * (entries closed before the window's start neither waited in it nor were promoted in
 * it). waiting_until: the promotion, else the closing (expired or cancelled while
 * waiting), else still waiting.
 */
const WAITLIST = `
SELECT ${us("w.created_at")} AS joined_us,
       ${us("coalesce(w.promoted_at, w.closed_at)")} AS waiting_until_us,
       ${us("w.promoted_at")} AS promoted_us,
       coalesce(r.confirmed_at IS NOT NULL, false) AS confirmed
  FROM waitlist_entries w
  LEFT JOIN reservations r ON r.id = w.reservation_id
 WHERE w.sku_code = ? AND w.created_at < ?::timestamptz
   AND (w.closed_at IS NULL OR w.closed_at >= ?::timestamptz)`;

interface SkuNowRow extends InventoryRow {
  waitlist_promotion_policy: WaitlistPromotionPolicy | null;
  now_us: number;
}

interface AttemptRow {
  received_us: number;
  customer_id: string;
  quantity: number;
  outcome: HoldAttemptOutcome;
  reason: string | null;
  replayed: boolean;
  latency_us: number;
}

interface GrantRow {
  customer_id: string;
  quantity: number;
  granted_us: number;
  confirmed: boolean;
}

interface LedgerRow {
  at_us: number;
  operation: string;
  delta_on_hand: number;
  delta_reserved: number;
  available: number;
}

interface WaitlistRow {
  joined_us: number;
  waiting_until_us: number | null;
  promoted_us: number | null;
  confirmed: boolean;
}

/** Everything a report is computed from. */
interface ReportRows {
  sku: SkuNowRow;
  window: { startUs: number; endUs: number; open: boolean };
  attempts: AttemptRow[];
  grants: GrantRow[];
  availableBefore: number;
  ledger: LedgerRow[];
  waitlist: WaitlistRow[];
}

// ---------------------------------------------------------------------------------------
// The RPC
// ---------------------------------------------------------------------------------------

export async function getFlashSaleReport(deps: Deps, call: Call, req: GetFlashSaleReportRequest): Promise<GetFlashSaleReportResponse> {
  const v = new Violations();
  const range = timeRange(v, req.startTime, req.endTime);
  const intervalMs = v.duration("timeline_interval", req.timelineInterval);
  if (req.topCustomersLimit < 0) v.add("top_customers_limit", "must not be negative (0 = 10)");
  v.throwIfAny();

  const rows = await deps.db.transaction(
    async (trx) => {
      const [sku] = await query<SkuNowRow>(trx, SKU_NOW, [req.sku]);
      if (sku === undefined) throw skuNotFound([req.sku]);
      const startUs = Number(range.startUs!);
      const open = range.endUs === undefined;
      const endUs = open ? Math.max(startUs, sku.now_us) : Number(range.endUs);
      checkWindow(startUs, endUs, intervalMs, open);
      return loadRows(trx, sku, { startUs, endUs, open });
    },
    { isolationLevel: "repeatable read", readOnly: true },
  );
  const report = buildReport(rows, {
    intervalUs: intervalMs !== undefined && intervalMs > 0 ? intervalMs * 1000 : chooseInterval((rows.window.endUs - rows.window.startUs) / 1000) * 1000,
    topCustomers: topCustomersLimit(req.topCustomersLimit),
    showCustomerIds: call.principal.role === "admin",
  });
  return create(GetFlashSaleReportResponseSchema, { report });
}

/** The window's limits: at most 31 days, and at most MAX_TIMELINE_BUCKETS buckets of a requested interval. */
function checkWindow(startUs: number, endUs: number, intervalMs: number | undefined, open: boolean): void {
  const v = new Violations();
  if (endUs - startUs > MAX_WINDOW_US) {
    v.add(open ? "start_time" : "end_time", open ? "must be at most 31 days ago when end_time is unset" : "must be at most 31 days after start_time");
  } else if (intervalMs !== undefined && intervalMs > 0 && timelineBucketCount(endUs - startUs, intervalMs * 1000) > MAX_TIMELINE_BUCKETS) {
    v.add("timeline_interval", `gives more than ${MAX_TIMELINE_BUCKETS} buckets over the window; choose a longer interval`);
  }
  v.throwIfAny();
}

async function loadRows(db: Db, sku: SkuNowRow, window: ReportRows["window"]): Promise<ReportRows> {
  const code = sku.sku_code;
  const start = isoMicros(window.startUs);
  const end = isoMicros(window.endUs);
  // One connection (the transaction's): the statements run one after another.
  const attempts = await query<AttemptRow>(db, ATTEMPTS, [code, start, end]);
  const grants = await query<GrantRow>(db, GRANTS, [code, start, end]);
  const [before] = await query<{ available: number }>(db, LEDGER_BEFORE, [code, start]);
  const ledger = await query<LedgerRow>(db, LEDGER_WINDOW, [code, start, end]);
  const waitlist = await query<WaitlistRow>(db, WAITLIST, [code, end, start]);
  return { sku, window, attempts, grants, availableBefore: before?.available ?? 0, ledger, waitlist };
}

// ---------------------------------------------------------------------------------------
// From rows to the message
// ---------------------------------------------------------------------------------------

function buildReport(rows: ReportRows, options: { intervalUs: number; topCustomers: number; showCustomerIds: boolean }): FlashSaleReport {
  const { startUs, endUs, open } = rows.window;
  const inWindow = (t: number | null) => t !== null && t >= startUs && t < endUs;

  const attempts: AttemptRecord[] = rows.attempts.map((a) => ({
    receivedAtUs: a.received_us,
    customerId: a.customer_id,
    quantity: a.quantity,
    outcome: a.outcome,
    reason: a.reason,
    replayed: a.replayed,
    latencyUs: a.latency_us,
  }));
  const grants: GrantRecord[] = rows.grants.map((g) => ({ customerId: g.customer_id, units: g.quantity, grantedAtUs: g.granted_us }));
  const ledger: AvailabilityTimeline = { initial: rows.availableBefore, steps: rows.ledger.map((e) => ({ atUs: e.at_us, available: e.available })) };
  // What a new buyer could get: under STRICT_FIFO, nothing while anyone waits.
  const strictFifo = (rows.sku.waitlist_promotion_policy ?? "STRICT_FIFO") === "STRICT_FIFO";
  const spans: WaitingSpan[] = rows.waitlist.map((w) => ({ fromUs: w.joined_us, toUs: w.waiting_until_us }));
  const offered = strictFifo ? offeredUnderStrictFifo(ledger, spans, startUs) : ledger;

  const totals = attemptTotals(attempts);
  const unitsAtEnd = open ? rows.sku.available : availabilityLookup(ledger).before(endUs);
  const perCustomer = unitsPerCustomer(attempts, grants);
  const unitsGranted = grants.reduce((sum, g) => sum + g.units, 0);
  const fifo = fifoInversions(attempts, offered);
  const counted = attempts.filter((a) => !a.replayed);
  const promoted = rows.waitlist.filter((w) => inWindow(w.promoted_us));
  const resale = expiredAndResold(rows.ledger.map(stockEvent));

  return create(FlashSaleReportSchema, {
    sku: rows.sku.sku_code,
    startTime: timestampFromMicros(startUs),
    endTime: timestampFromMicros(endUs),
    generateTime: timestampFromMicros(rows.sku.now_us),
    requests: BigInt(totals.requests),
    uniqueCustomers: BigInt(totals.uniqueCustomers),
    unitsRequested: BigInt(totals.unitsRequested),
    unitsAtStart: BigInt(ledger.initial),
    unitsRestocked: BigInt(rows.ledger.filter((e) => e.operation === "STOCK_ADJUSTED").reduce((sum, e) => sum + e.delta_on_hand, 0)),
    unitsAvailableAtEnd: BigInt(unitsAtEnd),
    requestsGranted: BigInt(totals.requestsGranted),
    requestsRefused: BigInt(totals.requestsRefused),
    requestsWaitlisted: BigInt(totals.requestsWaitlisted),
    unitsGranted: BigInt(unitsGranted),
    unitsAllocated: BigInt(rows.grants.filter((g) => g.confirmed).reduce((sum, g) => sum + g.quantity, 0)),
    oversellUnits: BigInt(oversellUnits(ledger)),
    undersellUnits: BigInt(undersell(attempts, offered, unitsAtEnd).units),
    fifoInversions: BigInt(fifo.inversions),
    fifoInversionRate: fifo.rate,
    jainFairnessIndex: jainIndex(perCustomer.values()),
    largestCustomerShare: largestShare(perCustomer.values()),
    timeToGrant: durationDistribution(timeToGrantSamples(attempts, grants)),
    unitsExpired: BigInt(resale.unitsExpired),
    unitsResold: BigInt(resale.unitsResold),
    waitlistJoins: BigInt(rows.waitlist.filter((w) => inWindow(w.joined_us)).length),
    waitlistPromotions: BigInt(promoted.length),
    waitlistPromotionsAllocated: BigInt(promoted.filter((w) => w.confirmed).length),
    refusals: refusalCounts(attempts).map((r) => create(RefusalCountSchema, { reason: errorReason(r.reason), requests: BigInt(r.requests), units: BigInt(r.units) })),
    demandStatus: demandStatus(rows.sku),
    timeline: timeline({ startUs, endUs, intervalUs: options.intervalUs, attempts, grants, availability: ledger }).map((b) =>
      create(FlashSaleTimelineBucketSchema, {
        startTime: timestampFromMicros(b.startUs),
        requests: BigInt(b.requests),
        requestsGranted: BigInt(b.requestsGranted),
        requestsRefused: BigInt(b.requestsRefused),
        unitsGranted: BigInt(b.unitsGranted),
        availableAtEnd: BigInt(b.availableAtEnd),
      }),
    ),
    timelineInterval: durationFromMicros(options.intervalUs),
    requestLatency: durationDistribution(counted.map((a) => a.latencyUs)),
    requestLatencyHistogram: latencyHistogram(counted.map((a) => a.latencyUs)).map((b) =>
      create(LatencyHistogramBucketSchema, { upperBound: b.upperBoundUs === null ? undefined : durationFromMicros(b.upperBoundUs), count: BigInt(b.count) }),
    ),
    topCustomers: topCustomers(perCustomer, options.topCustomers).map((c) =>
      create(CustomerShareSchema, { customerId: options.showCustomerIds ? c.customerId : "", unitsGranted: BigInt(c.unitsGranted), share: c.share }),
    ),
  });
}

/** A ledger event as re-selling sees it: expiries return units, holds and promotions take them. */
function stockEvent(e: LedgerRow): StockEvent {
  const kind = e.operation === "HOLD_EXPIRED" ? "EXPIRED" : e.operation === "HOLD_CREATED" || e.operation === "WAITLIST_PROMOTED" ? "GRANTED" : "OTHER";
  return { kind, units: Math.abs(e.delta_reserved), availableAfter: e.available };
}

/** A logged reason (an ErrorReason name) as the enum; UNSPECIFIED for a name this build does not know. */
function errorReason(name: string): ErrorReason {
  const value = (ErrorReason as unknown as Record<string, unknown>)[name];
  return typeof value === "number" ? (value as ErrorReason) : ErrorReason.UNSPECIFIED;
}

function timestampFromMicros(t: number): Timestamp {
  const ms = Math.floor(t / 1000);
  const stamp = timestampFromMs(ms);
  stamp.nanos += (t - ms * 1000) * 1000;
  return stamp;
}
