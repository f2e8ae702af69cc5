/**
 * The waitlist RPCs (issue 6): JoinWaitlist, LeaveWaitlist, GetWaitlistEntry,
 * ListWaitlistEntries. Promotion itself (units returned -> the queue's head gets a
 * hold, in the returning transaction) lives in packages/schema/src/waitlist.ts, which
 * every stock-return path calls.
 *
 * Lock order: the SKU's inventory row first (FOR NO KEY UPDATE), then its entries. A
 * join draws its seq while holding the row lock, so seq order is commit order among
 * the SKU's entries, and the promoter (which holds the same lock) always sees the true
 * head. A leave locks the row before the entry for the same reason.
 */
import { create } from "@bufbuild/protobuf";
import {
  GetWaitlistEntryResponseSchema,
  InventoryReservationService,
  JoinWaitlistRequestSchema,
  JoinWaitlistResponseSchema,
  LeaveWaitlistRequestSchema,
  LeaveWaitlistResponseSchema,
  ListWaitlistEntriesResponseSchema,
  WaitlistEntryStatus,
  type GetWaitlistEntryRequest,
  type GetWaitlistEntryResponse,
  type JoinWaitlistRequest,
  type JoinWaitlistResponse,
  type LeaveWaitlistRequest,
  type LeaveWaitlistResponse,
  type ListWaitlistEntriesRequest,
  type ListWaitlistEntriesResponse,
  type WaitlistEntry,
} from "@holdfast/contracts";
import {
  closeWaiting,
  lockInventoryRows,
  moveWaitlistCounters,
  promoteWaiting,
  query,
  type Db,
  type Promotion,
  type ReservationRow,
  type SkuRow,
  type WaitlistEntryRow,
} from "@holdfast/schema";
import { isLockTimeout } from "@holdfast/runtime";
import {
  Idempotency,
  Refusal,
  Violations,
  assertOwnResource,
  customerScope,
  decodePageToken,
  effectivePageSize,
  encodePageToken,
  idempotencyKey,
  idempotencyKeyReused,
  lockTimeout,
  skuNotFound,
  splitPage,
  storedNames,
  waitlistDisabled,
  waitlistEntryAlreadyExists,
  waitlistEntryNotFound,
  waitlistFull,
} from "@holdfast/core";
import type { Knex } from "knex";
import type { Call, Deps } from "./context.js";
import { toReservation, toWaitlistEntry, type LineRow } from "./convert.js";

const method = (name: string) => `${InventoryReservationService.typeName}/${name}`;

/** Position inputs of WAITING entries: the WAITING entries of the same SKU with a smaller seq. */
export async function withPositions(db: Db, rows: readonly WaitlistEntryRow[]): Promise<WaitlistEntry[]> {
  const waiting = rows.filter((r) => r.status === "WAITING");
  const ahead = new Map<string, { count: number; units: number }>();
  if (waiting.length > 0) {
    const found = await query<{ id: string; count: number; units: number }>(
      db,
      `SELECT e.id, a.count::int AS count, a.units::bigint AS units
         FROM unnest(?::uuid[], ?::text[], ?::bigint[]) AS e(id, sku_code, seq)
         CROSS JOIN LATERAL (
           SELECT count(*) AS count, coalesce(sum(w.quantity), 0) AS units
             FROM waitlist_entries w
            WHERE w.sku_code = e.sku_code AND w.status = 'WAITING' AND w.seq < e.seq) a`,
      [waiting.map((r) => r.id), waiting.map((r) => r.sku_code), waiting.map((r) => r.seq)],
    );
    for (const f of found) ahead.set(f.id, { count: Number(f.count), units: Number(f.units) });
  }
  return rows.map((r) => toWaitlistEntry(r, ahead.get(r.id)));
}

async function reservationOf(db: Db, id: string): Promise<ReturnType<typeof toReservation>> {
  const [row] = await query<ReservationRow & { now: Date }>(db, `SELECT *, clock_timestamp() AS now FROM reservations WHERE id = ?`, [id]);
  const lines = await query<LineRow>(db, `SELECT sku_code, quantity FROM reservation_items WHERE reservation_id = ? ORDER BY sku_code`, [id]);
  return toReservation(row!, lines, row!.now);
}

/** What one join asks for. */
export interface JoinSpec {
  sku: string;
  customerId: string;
  quantity: number;
  maxWaitMs: number | undefined;
  requestId: string;
}

/**
 * Puts the customer at the end of the SKU's queue, in the caller's transaction, and
 * promotes what the SKU's available units serve (maybe this entry). Returns the entry
 * row (as it is after any promotion) and the promotions made, or a Refusal (recorded
 * outcomes: SKU_NOT_FOUND is thrown, WAITLIST_DISABLED / WAITLIST_ENTRY_ALREADY_EXISTS
 * refused). WAITLIST_FULL is thrown (RESOURCE_EXHAUSTED is not recorded).
 * For CreateHold(join_waitlist_if_short) too (not wired yet: see WAITLIST-WIP.md).
 */
export async function joinInTransaction(
  trx: Knex.Transaction,
  deps: Deps,
  call: Call,
  spec: JoinSpec,
): Promise<{ entry: WaitlistEntryRow; promotions: Promotion[] } | Refusal> {
  const [sku] = await query<SkuRow>(trx, `SELECT * FROM skus WHERE code = ?`, [spec.sku]);
  if (sku === undefined) throw skuNotFound([spec.sku]);
  if (sku.waitlist_disabled) return new Refusal(waitlistDisabled(spec.sku));
  const [row] = await lockInventoryRows(trx, [spec.sku]);
  if (row === undefined) throw skuNotFound([spec.sku]);
  const [existing] = await query<{ id: string }>(
    trx,
    `SELECT id FROM waitlist_entries WHERE sku_code = ? AND customer_id = ? AND status IN ('WAITING', 'PROMOTED')`,
    [spec.sku, spec.customerId],
  );
  if (existing !== undefined) return new Refusal(waitlistEntryAlreadyExists(spec.sku, existing.id));
  if (sku.max_waitlist_length !== null && row.waitlist_count >= sku.max_waitlist_length) throw waitlistFull(spec.sku, sku.max_waitlist_length);
  const [entry] = await query<WaitlistEntryRow>(
    trx,
    `INSERT INTO waitlist_entries (sku_code, customer_id, quantity, caller, request_id, expires_at)
     VALUES (?, ?, ?, ?, ?, CASE WHEN ?::bigint IS NULL THEN NULL ELSE now() + ?::bigint * interval '1 millisecond' END)
     RETURNING *`,
    [spec.sku, spec.customerId, spec.quantity, call.principal.id, spec.requestId, spec.maxWaitMs ?? null, spec.maxWaitMs ?? null],
  );
  await moveWaitlistCounters(trx, spec.sku, 1, spec.quantity);
  const promotions = await promoteWaiting(trx, [spec.sku], { actor: call.principal.id, requestId: spec.requestId }, deps.settings);
  const mine = promotions.find((p) => p.entry.id === entry!.id);
  return { entry: mine?.entry ?? entry!, promotions };
}

/** The request id stays attached to its entry (errors.proto, IDEMPOTENCY): a reuse past the window is refused. */
async function explainJoinError(db: Db, err: unknown, caller: string, requestId: string, sku: string): Promise<unknown> {
  const pg = err as { code?: string; constraint?: string };
  if (pg.code === "23505" && pg.constraint === "waitlist_entries_caller_request_id_sku_key") {
    const [existing] = await query<{ id: string }>(db, `SELECT id FROM waitlist_entries WHERE caller = ? AND request_id = ? ORDER BY seq LIMIT 1`, [caller, requestId]);
    return idempotencyKeyReused(requestId, { waitlistEntryId: existing?.id });
  }
  if (pg.code === "23505" && pg.constraint === "waitlist_entries_one_active_per_customer") {
    // Lost a race with a concurrent join of the same customer (the check above ran first under the same lock, so rare).
    return err;
  }
  if (isLockTimeout(err)) return lockTimeout({ skus: [sku] }, err);
  return err;
}

export async function joinWaitlist(deps: Deps, call: Call, req: JoinWaitlistRequest): Promise<JoinWaitlistResponse> {
  req = { ...req, customerId: customerScope(call.principal, req.customerId) };
  const v = new Violations().required("customer_id", req.customerId);
  const maxWaitMs = v.duration("max_wait", req.maxWait);
  v.throwIfAny();
  const key = idempotencyKey(call.principal.id, method("JoinWaitlist"), JoinWaitlistRequestSchema, req);
  let promotions: Promotion[] = [];
  const run = async () => {
    try {
      return await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call.signal).run(key, JoinWaitlistResponseSchema, async (trx) => {
        promotions = [];
        const joined = await joinInTransaction(trx, deps, call, { sku: req.sku, customerId: req.customerId, quantity: req.quantity, maxWaitMs, requestId: req.requestId });
        if (joined instanceof Refusal) return joined;
        promotions = joined.promotions;
        const [entry] = await withPositions(trx, [joined.entry]);
        const reservation = joined.entry.reservation_id === null ? undefined : await reservationOf(trx, joined.entry.reservation_id);
        return create(JoinWaitlistResponseSchema, { entry, reservation });
      });
    } catch (err) {
      throw await explainJoinError(deps.db, err, call.principal.id, req.requestId, req.sku);
    }
  };
  const response = await deps.inventory.around([req.sku], run());
  for (const p of promotions) deps.expiry.holdCreated(p.expiresAt);
  return response;
}

/** The entry, checked against a customer caller (someone else's or unknown: NOT_RESOURCE_OWNER). */
async function visibleEntry(db: Db, call: Call, id: string): Promise<WaitlistEntryRow> {
  const [row] = await query<WaitlistEntryRow>(db, `SELECT * FROM waitlist_entries WHERE id = ?`, [id]);
  assertOwnResource(call.principal, row?.customer_id);
  if (row === undefined) throw waitlistEntryNotFound(id);
  return row;
}

export async function leaveWaitlist(deps: Deps, call: Call, req: LeaveWaitlistRequest): Promise<LeaveWaitlistResponse> {
  const key = idempotencyKey(call.principal.id, method("LeaveWaitlist"), LeaveWaitlistRequestSchema, req);
  let sku: string | undefined;
  let promotions: Promotion[] = [];
  const run = async () => {
    try {
      return await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call.signal).run(key, LeaveWaitlistResponseSchema, async (trx) => {
        promotions = [];
        // Checked before any lock: someone else's entry is never locked or waited for.
        const seen = await visibleEntry(trx, call, req.waitlistEntryId);
        sku = seen.sku_code;
        if (seen.status !== "WAITING") return create(LeaveWaitlistResponseSchema, { entry: toWaitlistEntry(seen) });
        await lockInventoryRows(trx, [seen.sku_code]);
        const [locked] = await query<WaitlistEntryRow>(trx, `SELECT * FROM waitlist_entries WHERE id = ? FOR UPDATE`, [seen.id]);
        if (locked!.status !== "WAITING") return create(LeaveWaitlistResponseSchema, { entry: toWaitlistEntry(locked!) });
        const [closed] = await closeWaiting(trx, locked!.sku_code, [locked!], "CANCELLED");
        // A head that leaves may unblock the entries behind it (STRICT_FIFO).
        promotions = await promoteWaiting(trx, [locked!.sku_code], { actor: call.principal.id, requestId: req.requestId }, deps.settings);
        return create(LeaveWaitlistResponseSchema, { entry: toWaitlistEntry(closed!) });
      });
    } catch (err) {
      if (isLockTimeout(err)) throw lockTimeout({ skus: sku === undefined ? [] : [sku] }, err);
      throw err;
    }
  };
  const response = await run();
  if (sku !== undefined) deps.inventory.changed([sku]);
  for (const p of promotions) deps.expiry.holdCreated(p.expiresAt);
  return response;
}

export async function getWaitlistEntry(deps: Deps, call: Call, req: GetWaitlistEntryRequest): Promise<GetWaitlistEntryResponse> {
  const row = await visibleEntry(deps.db, call, req.waitlistEntryId);
  const [entry] = await withPositions(deps.db, [row]);
  return create(GetWaitlistEntryResponseSchema, { entry });
}

export async function listWaitlistEntries(deps: Deps, call: Call, req: ListWaitlistEntriesRequest): Promise<ListWaitlistEntriesResponse> {
  req = { ...req, customerId: customerScope(call.principal, req.customerId) };
  const statuses = storedNames(WaitlistEntryStatus, req.statuses);
  const filters = { customerId: req.customerId, statuses, sku: req.sku };
  const key = decodePageToken(req.pageToken, filters, ["number"]);
  const limit = effectivePageSize(req.pageSize);
  const conditions: string[] = [];
  const params: unknown[] = [];
  if (req.sku !== "") (conditions.push("sku_code = ?"), params.push(req.sku));
  if (req.customerId !== "") (conditions.push("customer_id = ?"), params.push(req.customerId));
  if (statuses.length > 0) (conditions.push("status = ANY(?::text[])"), params.push(statuses));
  if (key !== undefined) (conditions.push("seq > ?"), params.push(key[0]));
  const rows = await query<WaitlistEntryRow>(
    deps.db,
    `SELECT * FROM waitlist_entries ${conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : ""} ORDER BY seq LIMIT ?`,
    [...params, limit + 1],
  );
  const { page, more } = splitPage(rows, limit);
  const entries = await withPositions(deps.db, page);
  return create(ListWaitlistEntriesResponseSchema, {
    entries,
    nextPageToken: more ? encodePageToken(filters, [Number(page[page.length - 1]!.seq)]) : "",
  });
}
