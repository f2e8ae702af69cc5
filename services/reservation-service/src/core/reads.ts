/**
 * The read RPCs: GetReservation, ListReservations, GetAvailability, ListAuditEvents
 * and ListAvailabilitySnapshots. Each answer comes from ONE SQL statement, so it is
 * one consistent snapshot (a header and its lines, a page and the clock the expiry
 * rule is judged by, the availability rows of many SKUs) without the round trips of
 * an explicit transaction.
 *
 * Pagination (AIP-158, the contract's PAGINATION): keyset cursors on the listing's
 * sort key, encoded by page-token.ts together with a fingerprint of the filters
 * (page_size is not part of it: a client may change it between pages). Timestamps in
 * a key are PostgreSQL's microseconds, not JavaScript's milliseconds: a millisecond
 * key would skip or repeat rows that share a millisecond.
 */
import { create } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  AuditOperation,
  GetAvailabilityResponseSchema,
  GetReservationResponseSchema,
  ListAuditEventsResponseSchema,
  ListAvailabilitySnapshotsResponseSchema,
  ListReservationsResponseSchema,
  ReservationStatus,
  ReservationType,
  type GetAvailabilityRequest,
  type GetAvailabilityResponse,
  type GetReservationRequest,
  type GetReservationResponse,
  type ListAuditEventsRequest,
  type ListAuditEventsResponse,
  type ListAvailabilitySnapshotsRequest,
  type ListAvailabilitySnapshotsResponse,
  type ListReservationsRequest,
  type ListReservationsResponse,
  type Reservation,
} from "@holdfast/contracts";
import {
  isValidSkuCode,
  query,
  type AuditEventRow,
  type Db,
  type InventoryRow,
  type InventorySnapshotRow,
  type ReservationRow,
} from "@holdfast/schema";
import type { Call, Deps } from "./context.js";
import { enumName, storedNames, ts } from "@holdfast/core";
import { toAuditEvent, toAvailability, toReservation, toSnapshot, type LineRow } from "./convert.js";
import { invalidPageToken, reservationNotFound, skuNotFound } from "@holdfast/core";
import { decodePageToken, encodePageToken, isoMicros, keyUuid, micros, splitPage } from "@holdfast/core";
import { Violations, assertOwnResource, customerScope, effectivePageSize } from "@holdfast/core";

// ---------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------

/**
 * A protobuf Timestamp as whole microseconds since the epoch (PostgreSQL's
 * resolution), rounded UP. Both time filters compare a stored microsecond value t
 * with the bound b: t >= b <=> t >= ceil(b), and t < b <=> t < ceil(b).
 */
function timestampMicros(t: Timestamp): bigint {
  // Clamped to the last microsecond of year 9999 (Timestamp's own maximum): rounding
  // 9999-12-31T23:59:59.999999999 up would name a year PostgreSQL's input refuses.
  const us = t.seconds * 1_000_000n + BigInt(Math.ceil(t.nanos / 1000));
  return us > MAX_TIMESTAMP_MICROS ? MAX_TIMESTAMP_MICROS : us;
}

/** 9999-12-31T23:59:59.999999Z in microseconds since the epoch. */
const MAX_TIMESTAMP_MICROS = 253_402_300_799_999_999n;

/** start_time / end_time filters, validated (end before start is BAD_REQUEST), in microseconds. */
export function timeRange(v: Violations, start: Timestamp | undefined, end: Timestamp | undefined): { startUs?: bigint; endUs?: bigint } {
  const startOk = v.timestamp("start_time", start) !== undefined;
  const endOk = v.timestamp("end_time", end) !== undefined;
  const startUs = startOk && start ? timestampMicros(start) : undefined;
  const endUs = endOk && end ? timestampMicros(end) : undefined;
  if (startUs !== undefined && endUs !== undefined && endUs < startUs) v.add("end_time", "must not be before start_time");
  return { startUs, endUs };
}

// ---------------------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------------------

/**
 * The expiry rule in SQL: a stored HELD hold is reported EXPIRED once expires_at is
 * not after now() (convert.ts toReservation, the contract's Reservation.status).
 * Compared at millisecond resolution because toReservation sees both instants as
 * JavaScript Dates (pg truncates to milliseconds): a hold expiring within the same
 * millisecond as now() must land on the same side of the filter as in the message.
 */
const LAPSED = `date_trunc('milliseconds', r.expires_at) <= date_trunc('milliseconds', now())`;

/**
 * A reservation as read: the header (r), its lines in SKU order and the database's
 * clock for the expiry rule. The lines come as one json array from a correlated
 * subquery (primary key (reservation_id, sku_code) of reservation_items), so header
 * and lines are read by one statement, from one snapshot. sku_code is COLLATE "C",
 * so ORDER BY sku_code is the contract's SKU order.
 */
const RESERVATION_PROJECTION = `
  r.*,
  (SELECT coalesce(json_agg(json_build_object('sku_code', i.sku_code, 'quantity', i.quantity) ORDER BY i.sku_code), '[]'::json)
     FROM reservation_items i
    WHERE i.reservation_id = r.id) AS lines,
  now() AS db_now`;

type ReadReservationRow = ReservationRow & { lines: LineRow[]; db_now: Date };

const toMessage = (row: ReadReservationRow): Reservation => toReservation(row, row.lines, row.db_now);

/** Reads reservations with their lines (SKU order) and the database clock, for other modules too. */
export async function loadReservations(db: Db, ids: string[]): Promise<Reservation[]> {
  if (ids.length === 0) return [];
  const rows = await query<ReadReservationRow>(db, `SELECT ${RESERVATION_PROJECTION} FROM reservations r WHERE r.id = ANY(?::uuid[])`, [
    [...new Set(ids)],
  ]);
  const byId = new Map(rows.map((row) => [row.id, toMessage(row)]));
  return ids.flatMap((id) => byId.get(id) ?? []);
}

export async function getReservation(deps: Deps, call: Call, req: GetReservationRequest): Promise<GetReservationResponse> {
  const [reservation] = await loadReservations(deps.db, [req.reservationId]);
  // A customer learns nothing about a reservation that is not theirs, not even that it exists.
  assertOwnResource(call.principal, reservation?.customerId);
  if (reservation === undefined) throw reservationNotFound(req.reservationId);
  return create(GetReservationResponseSchema, { reservation });
}

/**
 * ListReservations, newest first (created_at DESC, id DESC), keyset-paginated on
 * (created_at, id). Each filter combination is driven by the index the schema made
 * for it, scanned backwards and stopped after page_size + 1 rows:
 *
 * - sku: reservation_items_sku_created_idx (sku_code, created_at, reservation_id);
 *   lines copy their header's created_at, so the line order is the header order.
 * - customer_id: reservations_customer_created_idx (customer_id, created_at, id).
 * - statuses only: reservations_status_created_idx (status, created_at, id), one
 *   backward scan per stored status (a LATERAL per status, each LIMITed, then merged):
 *   a single scan with status = ANY(...) cannot return rows in created_at order, so it
 *   would read and sort every matching row.
 * - none (or only type): reservations_created_idx (created_at, id).
 * The other filters are checked on the rows the scan yields.
 *
 * Status filter and the expiry rule: the filter applies to the status as REPORTED,
 * the one the returned messages carry. A stored HELD hold whose expires_at has passed
 * reads as EXPIRED, so it matches EXPIRED and not HELD: filtering on HELD returns only
 * live holds, filtering on EXPIRED returns swept and not-yet-swept expired holds.
 */
export async function listReservations(deps: Deps, call: Call, req: ListReservationsRequest): Promise<ListReservationsResponse> {
  // A customer lists its own reservations only (customer_id empty or its own).
  req = { ...req, customerId: customerScope(call.principal, req.customerId) };
  const statuses = storedNames(ReservationStatus, req.statuses);
  const type = enumName(ReservationType, req.type);
  const filters = { customerId: req.customerId, statuses, sku: req.sku, type };
  const key = decodePageToken(req.pageToken, filters, ["number", "string"]);
  const limit = effectivePageSize(req.pageSize);

  // Reported status -> stored statuses: EXPIRED also reads stored HELD rows, which the
  // expiry rule then splits between HELD (live) and EXPIRED (lapsed).
  const wantHeld = statuses.includes("HELD");
  const wantExpired = statuses.includes("EXPIRED");
  const stored = wantExpired && !wantHeld ? [...statuses, "HELD"].sort() : statuses;

  // Conditions on the header row r (the driving scan's own column comes first).
  const { conditions, params, where } = filterBuilder();
  if (req.customerId !== "") where("r.customer_id = ?", req.customerId);
  if (type !== null) where("r.type = ?", type);
  if (wantHeld !== wantExpired) where(`(r.status <> 'HELD' OR ${wantHeld ? "NOT " : ""}(${LAPSED}))`);

  const keyset = (createdAt: string, id: string) => {
    if (key !== undefined) where(`(${createdAt}, ${id}) < (?::timestamptz, ?::uuid)`, isoMicros(key[0] as number), keyUuid(key[1] as string));
  };

  let page: string;
  let pageParams: unknown[];
  if (req.sku !== "") {
    keyset("i.created_at", "i.reservation_id");
    if (stored.length > 0) {
      // Also on the line's copy of the status: it lets the partial index of live holds
      // (reservation_items_held_sku_expires_idx) serve HELD without walking the SKU's
      // whole history, and skips the header lookup for lines of other statuses.
      where("i.status = ANY(?::text[]) AND r.status = ANY(?::text[])", stored, stored);
    }
    page = `
      SELECT r.*
        FROM reservation_items i
        JOIN reservations r ON r.id = i.reservation_id
       WHERE i.sku_code = ? ${conditions.map((c) => `AND ${c}`).join(" ")}
       ORDER BY i.created_at DESC, i.reservation_id DESC
       LIMIT ?`;
    pageParams = [req.sku, ...params, limit + 1];
  } else if (stored.length > 0 && req.customerId === "") {
    keyset("r.created_at", "r.id");
    page = `
      SELECT r.*
        FROM unnest(?::text[]) AS s(status)
       CROSS JOIN LATERAL (
               SELECT r.*
                 FROM reservations r
                WHERE r.status = s.status ${conditions.map((c) => `AND ${c}`).join(" ")}
                ORDER BY r.created_at DESC, r.id DESC
                LIMIT ?) r
       ORDER BY r.created_at DESC, r.id DESC
       LIMIT ?`;
    pageParams = [stored, ...params, limit + 1, limit + 1];
  } else {
    keyset("r.created_at", "r.id");
    if (stored.length > 0) where("r.status = ANY(?::text[])", stored);
    page = `
      SELECT r.*
        FROM reservations r
       ${conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : ""}
       ORDER BY r.created_at DESC, r.id DESC
       LIMIT ?`;
    pageParams = [...params, limit + 1];
  }

  // Lines and the clock are added to the (at most limit + 1) rows of the page only, in
  // the same statement, so the expiry rule is judged by the clock the filter used.
  const rows = await query<ReadReservationRow & { created_us: number }>(
    deps.db,
    `SELECT ${RESERVATION_PROJECTION}, ${micros("r.created_at")} AS created_us
       FROM (${page}) r
      ORDER BY r.created_at DESC, r.id DESC`,
    pageParams,
  );
  const { page: result, more } = splitPage(rows, limit);
  const last = result[result.length - 1];
  return create(ListReservationsResponseSchema, {
    reservations: result.map(toMessage),
    nextPageToken: more ? encodePageToken(filters, [last.created_us, last.id]) : "",
  });
}

// ---------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------

/**
 * Every requested SKU's inventory row and the clock, from ONE statement: one snapshot
 * for all SKUs (the contract's "one consistent read"), and as_of is that statement's
 * now(). The LEFT JOIN from the requested codes keeps a row per code, so unknown codes
 * are found by the same read (and there is always a row to carry now()). Primary key
 * lookups on inventory.
 */
export async function getAvailability(deps: Deps, _call: Call, req: GetAvailabilityRequest): Promise<GetAvailabilityResponse> {
  const codes = [...new Set(req.skus)]; // request order, duplicates dropped
  const rows = await query<Omit<InventoryRow, "sku_code"> & { sku_code: string | null; code: string; as_of: Date }>(
    deps.db,
    `SELECT q.code, now() AS as_of, i.*
       FROM unnest(?::text[]) WITH ORDINALITY AS q(code, ord)
       LEFT JOIN inventory i ON i.sku_code = q.code
      ORDER BY q.ord`,
    [codes],
  );
  const unknown = rows.filter((r) => r.sku_code === null).map((r) => r.code);
  if (unknown.length > 0) throw skuNotFound(unknown);
  return create(GetAvailabilityResponseSchema, {
    availabilities: rows.map((r) => toAvailability(r as InventoryRow)),
    asOf: ts(rows[0].as_of),
  });
}

// ---------------------------------------------------------------------------------------
// Ledger
// ---------------------------------------------------------------------------------------

/**
 * ListAuditEvents in ascending id order, keyset on id. With a SKU the scan is
 * audit_events_sku_id_idx (sku_code, id); with a reservation,
 * audit_events_reservation_id_idx (reservation_id, id); otherwise the primary key.
 * Operations and the time window are checked on the rows the scan yields.
 */
export async function listAuditEvents(deps: Deps, _call: Call, req: ListAuditEventsRequest): Promise<ListAuditEventsResponse> {
  const v = new Violations();
  const { startUs, endUs } = timeRange(v, req.startTime, req.endTime);
  v.throwIfAny();

  const operations = storedNames(AuditOperation, req.operations);
  const filters = {
    sku: req.sku,
    reservationId: req.reservationId,
    operations,
    start: startUs?.toString() ?? null,
    end: endUs?.toString() ?? null,
  };
  const key = decodePageToken(req.pageToken, filters, ["number"]);
  const limit = effectivePageSize(req.pageSize);

  const { conditions, params, where } = filterBuilder();
  if (req.sku !== "") where("a.sku_code = ?", req.sku);
  if (req.reservationId !== "") where("a.reservation_id = ?::uuid", req.reservationId);
  if (operations.length > 0) where("a.operation = ANY(?::text[])", operations);
  if (startUs !== undefined) where("a.occurred_at >= ?::timestamptz", isoMicros(startUs));
  if (endUs !== undefined) where("a.occurred_at < ?::timestamptz", isoMicros(endUs));
  if (key !== undefined) where("a.id > ?", key[0]);

  const rows = await query<AuditEventRow>(
    deps.db,
    `SELECT a.*
       FROM audit_events a
      ${conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : ""}
      ORDER BY a.id
      LIMIT ?`,
    [...params, limit + 1],
  );
  const { page, more } = splitPage(rows, limit);
  return create(ListAuditEventsResponseSchema, {
    events: page.map(toAuditEvent),
    nextPageToken: more ? encodePageToken(filters, [page[page.length - 1].id]) : "",
  });
}

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

/**
 * ListAvailabilitySnapshots, oldest first: (taken_at, sku_code, id) ascending, keyset
 * on all three (taken_at in microseconds). Without a SKU the scan is
 * inventory_snapshots_taken_sku_idx (taken_at, sku_code, id); with one,
 * inventory_snapshots_sku_taken_idx (sku_code, taken_at, id), where the SKU is fixed
 * and the order (and the keyset) is (taken_at, id). id is the recording order of
 * rows of two passes with the same taken_at and SKU.
 */
export async function listAvailabilitySnapshots(
  deps: Deps,
  _call: Call,
  req: ListAvailabilitySnapshotsRequest,
): Promise<ListAvailabilitySnapshotsResponse> {
  const v = new Violations();
  const { startUs, endUs } = timeRange(v, req.startTime, req.endTime);
  v.throwIfAny();

  const filters = { sku: req.sku, start: startUs?.toString() ?? null, end: endUs?.toString() ?? null };
  const key = decodePageToken(req.pageToken, filters, ["number", "string", "number"]);
  const limit = effectivePageSize(req.pageSize);

  const { conditions, params, where } = filterBuilder();
  if (req.sku !== "") where("s.sku_code = ?", req.sku);
  if (startUs !== undefined) where("s.taken_at >= ?::timestamptz", isoMicros(startUs));
  if (endUs !== undefined) where("s.taken_at < ?::timestamptz", isoMicros(endUs));
  if (key !== undefined) {
    const [takenUs, sku, id] = key as [number, string, number];
    if (!isValidSkuCode(sku)) throw invalidPageToken("is not a token issued by this server");
    if (req.sku !== "") where("(s.taken_at, s.id) > (?::timestamptz, ?)", isoMicros(takenUs), id);
    else where("(s.taken_at, s.sku_code, s.id) > (?::timestamptz, ?, ?)", isoMicros(takenUs), sku, id);
  }

  const rows = await query<InventorySnapshotRow & { taken_us: number }>(
    deps.db,
    `SELECT s.*, ${micros("s.taken_at")} AS taken_us
       FROM inventory_snapshots s
      ${conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : ""}
      ORDER BY s.taken_at, s.sku_code, s.id
      LIMIT ?`,
    [...params, limit + 1],
  );
  const { page, more } = splitPage(rows, limit);
  const last = page[page.length - 1];
  return create(ListAvailabilitySnapshotsResponseSchema, {
    snapshots: page.map(toSnapshot),
    nextPageToken: more ? encodePageToken(filters, [last.taken_us, last.sku_code, last.id]) : "",
  });
}

/**
 * Collects the WHERE conditions of a list query and their bound values, in order.
 * Conditions are fixed SQL text; request data only ever travels in `params`.
 */
function filterBuilder() {
  const conditions: string[] = [];
  const params: unknown[] = [];
  const where = (condition: string, ...values: unknown[]) => {
    conditions.push(condition);
    params.push(...values);
  };
  return { conditions, params, where };
}
