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
import { timestampDate } from "@bufbuild/protobuf/wkt";
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
  promoteAndExpireWaiting,
  lockInventoryRows,
  moveWaitlistCounters,
  promoteWaiting,
  query,
  type Db,
  type Promotion,
  type SkuRow,
  type WaitlistEntryRow,
} from "@holdfast/schema";
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
  explainWriteError,
  skuNotFound,
  splitPage,
  storedNames,
  waitlistDisabled,
  waitlistEntryAlreadyExists,
  waitlistEntryNotFound,
  waitlistFull,
} from "@holdfast/core";
import type { Call, Deps } from "./context.js";
import { toWaitlistEntry } from "./convert.js";
import { loadReservations } from "./reads.js";
import { admitAttempt, customerLimitExcess, lockCustomerLimits } from "./fairness-controls.js";

const method = (name: string) => `${InventoryReservationService.typeName}/${name}`;

/**
 * Waitlist entries as they stand at read time, in queue order: the rows `where` picks
 * (a condition on `e`, then `tail`: ORDER BY / LIMIT), each with its place among the
 * live WAITING entries of its SKU and whether it has lapsed unswept (toWaitlistEntry).
 *
 * One statement, so places and statuses come from one snapshot. The places are a
 * window over the WAITING entries of the SKUs the picked rows wait on (an ordered
 * scan of waitlist_entries_waiting_sku_seq_idx per SKU): one pass however many of
 * them are picked, where a count per entry would be quadratic in a long queue. An
 * entry past its own max_wait holds no place any more, even before the worker sweeps
 * it, so the entries behind it move up at once.
 */
export async function readEntries(db: Db, where: string, params: readonly unknown[], tail = ""): Promise<Array<{ row: WaitlistEntryRow; entry: WaitlistEntry }>> {
  const rows = await query<WaitlistEntryRow & { place: string | null; units_ahead: string | null; lapsed: boolean }>(
    db,
    `WITH e AS (SELECT * FROM waitlist_entries e WHERE ${where} ${tail}),
     live AS (
       SELECT w.id, count(*) OVER q AS place, sum(w.quantity) OVER q - w.quantity AS units_ahead
         FROM waitlist_entries w
        WHERE w.status = 'WAITING' AND (w.expires_at IS NULL OR w.expires_at > now())
          AND w.sku_code IN (SELECT e.sku_code FROM e WHERE e.status = 'WAITING')
       WINDOW q AS (PARTITION BY w.sku_code ORDER BY w.seq))
     SELECT e.*, live.place, live.units_ahead,
            CASE e.status WHEN 'WAITING' THEN live.id IS NULL
                          WHEN 'PROMOTED' THEN (r.status = 'HELD' AND r.expires_at <= now()) IS TRUE
                          ELSE false END AS lapsed
       FROM e
       LEFT JOIN live ON live.id = e.id
       LEFT JOIN reservations r ON r.id = e.reservation_id
      ORDER BY e.seq`,
    params,
  );
  return rows.map((r) => ({
    row: r,
    entry: toWaitlistEntry(r, { place: r.place === null ? null : Number(r.place), unitsAhead: Number(r.units_ahead ?? 0), lapsed: r.lapsed }),
  }));
}

/** The entries of these rows as they stand now (re-read: inside a transaction, with its own writes). */
export async function withPositions(db: Db, rows: readonly WaitlistEntryRow[]): Promise<WaitlistEntry[]> {
  if (rows.length === 0) return [];
  return (await readEntries(db, "e.id = ANY(?::uuid[])", [rows.map((r) => r.id)])).map((r) => r.entry);
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
  trx: Db,
  deps: Deps,
  call: Call,
  spec: JoinSpec,
): Promise<{ entry: WaitlistEntryRow; promotions: Promotion[] } | Refusal> {
  const [sku] = await query<SkuRow>(trx, `SELECT * FROM skus WHERE code = ?`, [spec.sku]);
  if (sku === undefined) throw skuNotFound([spec.sku]);
  if (sku.waitlist_disabled) return new Refusal(waitlistDisabled(spec.sku));
  // max_units_per_customer counts WAITING entries: the customer's lock is taken before
  // the SKU's row lock (the lock order of every adder), so a promotion can never take
  // the customer past it; the units are counted once lapsed entries have left (below).
  const limited = await lockCustomerLimits(trx, spec.customerId, [{ sku: spec.sku, quantity: spec.quantity }], [sku]);
  const [locked] = await lockInventoryRows(trx, [spec.sku]);
  if (locked === undefined) throw skuNotFound([spec.sku]);
  // Entries that lapsed (max_wait) without being swept yet leave the queue first, and
  // whoever a lapsed head was blocking is promoted: the customer's own lapsed entry no
  // longer stands in the way of joining again, nor counts against the length limit.
  const origin = { actor: call.principal.id, requestId: spec.requestId };
  const before = await promoteAndExpireWaiting(trx, [spec.sku], origin, deps.settings);
  // Counted now: the customer's own lapsed entry, just closed, no longer counts.
  const overLimit = await customerLimitExcess(trx, spec.customerId, limited);
  if (overLimit !== undefined) return overLimit;
  // Entries now waiting (the row read under the lock, less what just left the queue).
  const waiting = locked.waitlist_count - before.expired.length - before.promotions.length;
  const [existing] = await query<{ id: string }>(
    trx,
    `SELECT id FROM waitlist_entries WHERE sku_code = ? AND customer_id = ? AND status IN ('WAITING', 'PROMOTED')`,
    [spec.sku, spec.customerId],
  );
  if (existing !== undefined) return new Refusal(waitlistEntryAlreadyExists(spec.sku, existing.id));
  if (sku.max_waitlist_length !== null && waiting >= sku.max_waitlist_length) throw waitlistFull(spec.sku, sku.max_waitlist_length);
  const [entry] = await query<WaitlistEntryRow>(
    trx,
    `INSERT INTO waitlist_entries (sku_code, customer_id, quantity, caller, request_id, expires_at)
     VALUES (?, ?, ?, ?, ?, CASE WHEN ?::bigint IS NULL THEN NULL ELSE now() + ?::bigint * interval '1 millisecond' END)
     RETURNING *`,
    [spec.sku, spec.customerId, spec.quantity, call.principal.id, spec.requestId, spec.maxWaitMs ?? null, spec.maxWaitMs ?? null],
  );
  await moveWaitlistCounters(trx, spec.sku, 1, spec.quantity);
  const promotions = [...before.promotions, ...(await promoteWaiting(trx, [spec.sku], origin, deps.settings))];
  const mine = promotions.find((p) => p.entry.id === entry!.id);
  return { entry: mine?.entry ?? entry!, promotions };
}

export async function joinWaitlist(deps: Deps, call: Call, req: JoinWaitlistRequest): Promise<JoinWaitlistResponse> {
  req = { ...req, customerId: customerScope(call.principal, req.customerId) };
  const v = new Violations().required("customer_id", req.customerId);
  const maxWaitMs = v.duration("max_wait", req.maxWait);
  v.throwIfAny();
  // The attempt rate limit (shared with CreateHold), before the transaction.
  await admitAttempt(deps.db, req.customerId, [req.sku]);
  const key = idempotencyKey(call.principal.id, method("JoinWaitlist"), JoinWaitlistRequestSchema, req);
  let promotions: Promotion[] = [];
  const run = async () => {
    try {
      return await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call).run(key, JoinWaitlistResponseSchema, async (trx) => {
        promotions = [];
        const joined = await joinInTransaction(trx, deps, call, { sku: req.sku, customerId: req.customerId, quantity: req.quantity, maxWaitMs, requestId: req.requestId });
        if (joined instanceof Refusal) return joined;
        promotions = joined.promotions;
        const [entry] = await withPositions(trx, [joined.entry]);
        const [reservation] = joined.entry.reservation_id === null ? [] : await loadReservations(trx, [joined.entry.reservation_id]);
        return create(JoinWaitlistResponseSchema, { entry, reservation });
      });
    } catch (err) {
      // The request id stays attached to its entry (errors.proto, IDEMPOTENCY).
      throw await explainWriteError(deps.db, err, key, [req.sku]);
    }
  };
  const response = await deps.inventory.around([req.sku], run());
  deps.expiry.promoted(promotions);
  // A waiting entry with a max_wait: the worker expires it then (and promotes whom it blocked).
  const waitsUntil = response.entry?.status === WaitlistEntryStatus.WAITING ? response.entry.expireTime : undefined;
  if (!response.replayed && waitsUntil !== undefined) deps.expiry.holdCreated(timestampDate(waitsUntil));
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
      return await new Idempotency(deps.db, deps.settings.idempotencyWindowMs, call).run(key, LeaveWaitlistResponseSchema, async (trx) => {
        promotions = [];
        // Checked before any lock: someone else's entry is never locked or waited for.
        const seen = await visibleEntry(trx, call, req.waitlistEntryId);
        sku = seen.sku_code;
        if (seen.status !== "WAITING") return create(LeaveWaitlistResponseSchema, { entry: toWaitlistEntry(seen) });
        // The SKU's row is locked first (by the promotion), then the entry. An entry past its
        // max_wait has expired (even if not swept yet), so it is not cancelled; lapsed
        // entries leave first, and whoever they blocked is promoted.
        const origin = { actor: call.principal.id, requestId: req.requestId };
        promotions = (await promoteAndExpireWaiting(trx, [seen.sku_code], origin, deps.settings)).promotions;
        const [locked] = await query<WaitlistEntryRow>(trx, `SELECT * FROM waitlist_entries WHERE id = ? FOR UPDATE`, [seen.id]);
        if (locked!.status !== "WAITING") return create(LeaveWaitlistResponseSchema, { entry: toWaitlistEntry(locked!) });
        const [closed] = await closeWaiting(trx, locked!.sku_code, [locked!], "CANCELLED");
        // A head that leaves may unblock the entries behind it (STRICT_FIFO).
        promotions.push(...(await promoteWaiting(trx, [locked!.sku_code], origin, deps.settings)));
        return create(LeaveWaitlistResponseSchema, { entry: toWaitlistEntry(closed!) });
      });
    } catch (err) {
      throw await explainWriteError(deps.db, err, key, sku === undefined ? [] : [sku]);
    }
  };
  const response = await run();
  if (sku !== undefined) deps.inventory.changed([sku]);
  deps.expiry.promoted(promotions);
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
  const rows = await readEntries(deps.db, conditions.length > 0 ? conditions.join(" AND ") : "true", [...params, limit + 1], "ORDER BY e.seq LIMIT ?");
  const { page, more } = splitPage(rows, limit);
  return create(ListWaitlistEntriesResponseSchema, {
    entries: page.map((r) => r.entry),
    nextPageToken: more ? encodePageToken(filters, [Number(page[page.length - 1]!.row.seq)]) : "",
  });
}
